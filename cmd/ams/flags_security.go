package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/connsec"
	"github.com/ivms/ams/pkg/namespace"
)

// tlsFlags are the TLS flags of one client connection: -{svc}-tls,
// -{svc}-tls-ca-file, -{svc}-tls-cert-file, -{svc}-tls-key-file,
// -{svc}-tls-server-name (withSwitch false leaves out -{svc}-tls, for MQTT
// whose URL scheme says whether TLS is on).
type tlsFlags struct {
	svc string
	set connsec.TLS
}

func (t *tlsFlags) register(fs *flag.FlagSet, svc, what string, withSwitch bool) {
	t.svc = svc
	if withSwitch {
		fs.BoolVar(&t.set.Enabled, svc+"-tls", false, "connect to "+what+" with TLS (the system's CAs unless -"+svc+"-tls-ca-file; implied by any -"+svc+"-tls-* flag)")
	}
	fs.StringVar(&t.set.CAFile, svc+"-tls-ca-file", "", "PEM file of the CA certificates that sign "+what+"'s certificate")
	fs.StringVar(&t.set.CertFile, svc+"-tls-cert-file", "", "PEM client certificate presented to "+what+" (with -"+svc+"-tls-key-file)")
	fs.StringVar(&t.set.KeyFile, svc+"-tls-key-file", "", "PEM key of -"+svc+"-tls-cert-file")
	fs.StringVar(&t.set.ServerName, svc+"-tls-server-name", "", "name checked against "+what+"'s certificate (default: the host dialled)")
}

func (t *tlsFlags) config() (*tls.Config, error) {
	c, err := t.set.Config()
	if err != nil {
		return nil, fmt.Errorf("%s %w", t.svc, err)
	}
	return c, nil
}

// kafkaSecurityFlags are the TLS and SASL flags of every Kafka client.
type kafkaSecurityFlags struct {
	tls          tlsFlags
	mechanism    string
	username     string
	password     string
	passwordFile string
}

func (k *kafkaSecurityFlags) register(fs *flag.FlagSet) {
	k.tls.register(fs, "kafka", "the Kafka brokers", true)
	fs.StringVar(&k.mechanism, "kafka-sasl-mechanism", "", "Kafka SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (empty: no SASL)")
	fs.StringVar(&k.username, "kafka-sasl-username", "", "Kafka SASL user")
	fs.StringVar(&k.password, "kafka-sasl-password", "", "Kafka SASL password (prefer -kafka-sasl-password-file; never logged)")
	fs.StringVar(&k.passwordFile, "kafka-sasl-password-file", "", "file holding the Kafka SASL password")
}

func (k *kafkaSecurityFlags) setting() connsec.Kafka {
	return connsec.Kafka{TLS: k.tls.set, Mechanism: k.mechanism, Username: k.username, Password: k.password, PasswordFile: k.passwordFile}
}

// opts returns the security options (TLS dialer, SASL) of every Kafka client of
// a role, for role configs that take extra franz-go options.
func (k *kafkaFlags) opts() ([]kgo.Opt, error) { return k.sec.setting().Opts() }

// client builds a Kafka client seeded with -kafka-brokers, with the security
// options and then extra.
func (k *kafkaFlags) client(extra ...kgo.Opt) (*kgo.Client, error) {
	sec, err := k.opts()
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append(append([]kgo.Opt{kgo.SeedBrokers(k.seeds()...)}, sec...), extra...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	return cl, nil
}

// logSecurity logs how the role reaches Kafka (never a secret) and warns about
// what is open.
func (k *kafkaFlags) logSecurity(log *slog.Logger) {
	s := k.sec.setting()
	mech := s.Mechanism
	if mech == "" {
		mech = "none"
	}
	log.Info("kafka connection", "brokers", k.brokers, "tls", s.TLS.On(), "sasl", mech, "sasl_user", s.Username)
	for _, w := range s.Warnings() {
		log.Warn(w)
	}
}

// applyNamespace sets every name flag of fs that was not given (on the
// command line or in the environment) from -namespace. It returns the names
// of the namespace (the defaults without one), for the names a role derives
// in code (MQTT client ids).
func applyNamespace(fs *flag.FlagSet) (namespace.Names, error) {
	ns := ""
	if f := fs.Lookup("namespace"); f != nil {
		ns = f.Value.String()
	}
	if err := namespace.Validate(ns); err != nil {
		return namespace.Names{}, err
	}
	n := namespace.Derive(ns)
	if ns == "" {
		return n, nil
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	derived := map[string]string{
		"topic-prefix":            n.TopicPrefix,
		"process-group":           n.ProcessGroup,
		"transactional-id-prefix": n.TransactionalIDPrefix,
		"egress-group":            n.EgressGroup,
		"mqtt-share-group":        n.MQTTShareGroup,
		"redis-prefix":            n.RedisPrefix,
		"clickhouse-database":     n.ClickHouseDatabase,
	}
	if f := fs.Lookup("sink-group"); f != nil {
		switch f.DefValue {
		case namespace.DefaultSinkRedisGroup:
			derived["sink-group"] = n.SinkRedisGroup
		case namespace.DefaultSinkClickHouseGroup:
			derived["sink-group"] = n.SinkClickHouseGroup
		default:
			return n, fmt.Errorf("namespace: no derived name for -sink-group (default %q)", f.DefValue)
		}
	}
	for name, v := range derived {
		if fs.Lookup(name) == nil || given[name] {
			continue
		}
		if err := fs.Set(name, v); err != nil {
			return n, fmt.Errorf("namespace %q: -%s: %w", ns, name, err)
		}
	}
	return n, nil
}

// redisSecurityFlags are the TLS and password-file flags of a Redis client.
type redisSecurityFlags struct {
	tls          tlsFlags
	passwordFile string
}

func (r *redisSecurityFlags) register(fs *flag.FlagSet) {
	r.tls.register(fs, "redis", "Redis", true)
	fs.StringVar(&r.passwordFile, "redis-password-file", "", "file holding the Redis password (alternative to -redis-password)")
}

// clickHouseSecurityFlags are the TLS and password-file flags of a ClickHouse client.
type clickHouseSecurityFlags struct {
	tls          tlsFlags
	passwordFile string
}

func (c *clickHouseSecurityFlags) register(fs *flag.FlagSet) {
	c.tls.register(fs, "clickhouse", "ClickHouse (native protocol, its secure port)", true)
	fs.StringVar(&c.passwordFile, "clickhouse-password-file", "", "file holding the ClickHouse password (alternative to -clickhouse-password)")
}

// mqttTLSFlags are the TLS flags of a role's MQTT connections; TLS is on when
// the URL's scheme is ssl://, tls://, mqtts:// or wss://.
type mqttTLSFlags struct {
	tls          tlsFlags
	passwordFile string
}

func (m *mqttTLSFlags) register(fs *flag.FlagSet, withPasswordFile bool) {
	m.tls.register(fs, "mqtt", "the MQTT broker (ssl:// and wss:// URLs)", false)
	if withPasswordFile {
		fs.StringVar(&m.passwordFile, "mqtt-password-file", "", "file holding this role's MQTT password (alternative to -mqtt-password)")
	}
}

// mqttTLSScheme reports whether an MQTT URL's scheme means TLS.
func mqttTLSScheme(raw string) (bool, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return false, fmt.Errorf("mqtt url %q: %w", raw, err)
	}
	switch strings.ToLower(u.Scheme) {
	case "ssl", "tls", "mqtts", "tcps", "wss":
		return true, nil
	case "tcp", "mqtt", "ws":
		return false, nil
	default:
		return false, fmt.Errorf("mqtt url %q: scheme %q, want tcp, ssl, ws or wss", raw, u.Scheme)
	}
}

// config returns the TLS config for an MQTT URL: nil for tcp:// and ws://
// (and an error if TLS files were given for such a URL: they would be
// silently unused), the files' config (system CAs without a CA file) for
// ssl:// and wss://.
func (m *mqttTLSFlags) config(rawURL string) (*tls.Config, error) {
	on, err := mqttTLSScheme(rawURL)
	if err != nil {
		return nil, err
	}
	if !on {
		if m.tls.set.On() {
			return nil, fmt.Errorf("mqtt: TLS files given but the URL %q is not ssl:// or wss://", rawURL)
		}
		return nil, nil
	}
	s := m.tls.set
	s.Enabled = true
	c, err := s.Config()
	if err != nil {
		return nil, fmt.Errorf("mqtt %w", err)
	}
	return c, nil
}
