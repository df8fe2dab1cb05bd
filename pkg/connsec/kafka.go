package connsec

import (
	"fmt"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// SASL mechanisms Kafka accepts here, as named by Kafka's sasl.mechanism.
const (
	MechanismNone        = ""
	MechanismPlain       = "PLAIN"
	MechanismScramSHA256 = "SCRAM-SHA-256"
	MechanismScramSHA512 = "SCRAM-SHA-512"
)

// Kafka is the security of a Kafka client: TLS and SASL.
type Kafka struct {
	TLS TLS
	// Mechanism is "" (no SASL), PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
	// (case-insensitive).
	Mechanism string
	Username  string
	// Password, or PasswordFile holding it (only one of the two).
	Password     string
	PasswordFile string
}

// Opts returns the franz-go options (kgo.DialTLSConfig, kgo.SASL) for k,
// none when k asks for neither TLS nor SASL. SASL without TLS is allowed
// (SASL_PLAINTEXT) but PLAIN then sends the password in clear: callers
// should warn (see Kafka.Warnings).
func (k Kafka) Opts() ([]kgo.Opt, error) {
	var opts []kgo.Opt
	tc, err := k.TLS.Config()
	if err != nil {
		return nil, fmt.Errorf("kafka %w", err)
	}
	if tc != nil {
		// DialTLSConfig clones tc per dial and sets ServerName to the
		// dialled broker's host when tc names none.
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	m, err := k.mechanism()
	if err != nil {
		return nil, err
	}
	if m != nil {
		opts = append(opts, kgo.SASL(m))
	}
	return opts, nil
}

func (k Kafka) mechanism() (sasl.Mechanism, error) {
	name := strings.ToUpper(strings.TrimSpace(k.Mechanism))
	if name == MechanismNone {
		if k.Username != "" || k.Password != "" || k.PasswordFile != "" {
			return nil, fmt.Errorf("kafka sasl: a username or password is set but no SASL mechanism")
		}
		return nil, nil
	}
	pass, err := Secret("kafka sasl password", k.Password, k.PasswordFile)
	if err != nil {
		return nil, err
	}
	if k.Username == "" || pass == "" {
		return nil, fmt.Errorf("kafka sasl %s: needs a username and a password", name)
	}
	switch name {
	case MechanismPlain:
		return plain.Auth{User: k.Username, Pass: pass}.AsMechanism(), nil
	case MechanismScramSHA256:
		return scram.Auth{User: k.Username, Pass: pass}.AsSha256Mechanism(), nil
	case MechanismScramSHA512:
		return scram.Auth{User: k.Username, Pass: pass}.AsSha512Mechanism(), nil
	default:
		return nil, fmt.Errorf("kafka sasl mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", k.Mechanism)
	}
}

// Warnings lists what is insecure about k, for a start-up log line: no TLS,
// no SASL, a password sent in clear.
func (k Kafka) Warnings() []string {
	var w []string
	m := strings.ToUpper(strings.TrimSpace(k.Mechanism))
	if !k.TLS.On() {
		w = append(w, "kafka: no TLS (traffic and credentials readable on the network)")
	}
	if m == MechanismNone {
		w = append(w, "kafka: no SASL (the broker must authenticate this client otherwise)")
	}
	if m == MechanismPlain && !k.TLS.On() {
		w = append(w, "kafka: SASL PLAIN without TLS sends the password in clear")
	}
	return w
}

// KafkaFromEnv reads k from the same AMS_* variables as ams's flags
// (AMS_KAFKA_TLS, AMS_KAFKA_TLS_CA_FILE, AMS_KAFKA_TLS_CERT_FILE,
// AMS_KAFKA_TLS_KEY_FILE, AMS_KAFKA_TLS_SERVER_NAME, AMS_KAFKA_SASL_MECHANISM,
// AMS_KAFKA_SASL_USERNAME, AMS_KAFKA_SASL_PASSWORD, AMS_KAFKA_SASL_PASSWORD_FILE),
// for tools and tests that have no flags.
func KafkaFromEnv(getenv func(string) string) Kafka {
	return Kafka{
		TLS:          TLSFromEnv(getenv, "AMS_KAFKA"),
		Mechanism:    getenv("AMS_KAFKA_SASL_MECHANISM"),
		Username:     getenv("AMS_KAFKA_SASL_USERNAME"),
		Password:     getenv("AMS_KAFKA_SASL_PASSWORD"),
		PasswordFile: getenv("AMS_KAFKA_SASL_PASSWORD_FILE"),
	}
}
