package roles

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/connsec"
	"github.com/ivms/ams/pkg/devicestate"
	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/mqttconn"
	"github.com/ivms/ams/sinks/chsink"
)

// Shared option groups. Every default is the loopback address of `make up`'s
// service, so a role started with no configuration talks to the local stack.

// Output is where a role writes: its log (Stderr) and its results (Stdout,
// for migrate, config, registry, ...). Nil means os.Stderr and os.Stdout.
type Output struct {
	Stdout io.Writer
	Stderr io.Writer
}

// SetOutput sets both writers (the flag layer calls it with the process's).
func (o *Output) SetOutput(stdout, stderr io.Writer) { o.Stdout, o.Stderr = stdout, stderr }

func (o Output) stdout() io.Writer {
	if o.Stdout == nil {
		return os.Stdout
	}
	return o.Stdout
}

func (o Output) stderr() io.Writer {
	if o.Stderr == nil {
		return os.Stderr
	}
	return o.Stderr
}

// Log configures the process's slog logger.
type Log struct {
	Level  string // debug, info, warn, error
	Format string // text or json
}

// DefaultLog is info level, text.
func DefaultLog() Log { return Log{Level: "info", Format: "text"} }

// Flags declares -log-level and -log-format.
func (l *Log) Flags(fs *flag.FlagSet) {
	fs.StringVar(&l.Level, "log-level", l.Level, "log level: debug, info, warn, error")
	fs.StringVar(&l.Format, "log-format", l.Format, "log format: text or json")
}

// Logger returns the logger writing to w.
func (l Log) Logger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(l.Level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", l.Level, err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch l.Format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log format %q: want text or json", l.Format)
	}
}

// Kafka is the connection of every role that talks to Kafka.
type Kafka struct {
	Brokers     string // comma-separated
	TopicPrefix string
	Partitions  int
	Replication int
	Namespace   string
	Security    connsec.Kafka
	// Opts are extra franz-go options after the security ones (tests,
	// ams-dev); not a flag.
	Opts []kgo.Opt
}

// DefaultKafka is the local stack's broker, 12 partitions, replication 3.
func DefaultKafka() Kafka {
	return Kafka{Brokers: "127.0.0.1:9092", Partitions: 12, Replication: 3}
}

// Flags declares the Kafka flags (the -kafka-tls* and -kafka-sasl-* ones included).
func (k *Kafka) Flags(fs *flag.FlagSet) {
	fs.StringVar(&k.Brokers, "kafka-brokers", k.Brokers, "Kafka bootstrap brokers, comma-separated")
	fs.StringVar(&k.TopicPrefix, "topic-prefix", k.TopicPrefix, "prefix of every Kafka topic name (isolates test runs)")
	fs.IntVar(&k.Partitions, "partitions", k.Partitions, "partition count of every ams topic (all topics share it)")
	fs.IntVar(&k.Replication, "replication", k.Replication, "replication factor of topics created by migrate (min.insync.replicas is set to one less, at least 1)")
	fs.StringVar(&k.Namespace, "namespace", k.Namespace, "namespace of this stack: derives the topic prefix, consumer groups, transactional ids, MQTT share group, Redis prefix and ClickHouse database (explicit flags still win)")
	s := &k.Security
	tlsFlags(fs, &s.TLS, "kafka", "the Kafka brokers", true)
	fs.StringVar(&s.Mechanism, "kafka-sasl-mechanism", s.Mechanism, "Kafka SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (empty: no SASL)")
	fs.StringVar(&s.Username, "kafka-sasl-username", s.Username, "Kafka SASL user")
	fs.StringVar(&s.Password, "kafka-sasl-password", s.Password, "Kafka SASL password (prefer -kafka-sasl-password-file; never logged)")
	fs.StringVar(&s.PasswordFile, "kafka-sasl-password-file", s.PasswordFile, "file holding the Kafka SASL password")
}

// Seeds returns the brokers as a list.
func (k Kafka) Seeds() []string { return SplitList(k.Brokers) }

// Names returns the topic names under the prefix.
func (k Kafka) Names() kafkatopics.Names { return kafkatopics.WithPrefix(k.TopicPrefix) }

// ClientOpts returns the options of every Kafka client of a role: the
// security ones (TLS dialer, SASL), then Opts.
func (k Kafka) ClientOpts() ([]kgo.Opt, error) {
	sec, err := k.Security.Opts()
	if err != nil {
		return nil, err
	}
	return append(sec, k.Opts...), nil
}

// Client builds a Kafka client seeded with the brokers, with ClientOpts and
// then extra.
func (k Kafka) Client(extra ...kgo.Opt) (*kgo.Client, error) {
	opts, err := k.ClientOpts()
	if err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(append(append([]kgo.Opt{kgo.SeedBrokers(k.Seeds()...)}, opts...), extra...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	return cl, nil
}

// LogSecurity logs how the role reaches Kafka (never a secret) and warns
// about what is open.
func (k Kafka) LogSecurity(log *slog.Logger) {
	s := k.Security
	mech := s.Mechanism
	if mech == "" {
		mech = "none"
	}
	log.Info("kafka connection", "brokers", k.Brokers, "tls", s.TLS.On(), "sasl", mech, "sasl_user", s.Username)
	for _, w := range s.Warnings() {
		log.Warn(w)
	}
}

// tlsFlags declares the TLS flags of one client connection: -{svc}-tls,
// -{svc}-tls-ca-file, -{svc}-tls-cert-file, -{svc}-tls-key-file,
// -{svc}-tls-server-name (withSwitch false leaves out -{svc}-tls, for MQTT
// whose URL scheme says whether TLS is on).
func tlsFlags(fs *flag.FlagSet, t *connsec.TLS, svc, what string, withSwitch bool) {
	if withSwitch {
		fs.BoolVar(&t.Enabled, svc+"-tls", t.Enabled, "connect to "+what+" with TLS (the system's CAs unless -"+svc+"-tls-ca-file; implied by any -"+svc+"-tls-* flag)")
	}
	fs.StringVar(&t.CAFile, svc+"-tls-ca-file", t.CAFile, "PEM file of the CA certificates that sign "+what+"'s certificate")
	fs.StringVar(&t.CertFile, svc+"-tls-cert-file", t.CertFile, "PEM client certificate presented to "+what+" (with -"+svc+"-tls-key-file)")
	fs.StringVar(&t.KeyFile, svc+"-tls-key-file", t.KeyFile, "PEM key of -"+svc+"-tls-cert-file")
	fs.StringVar(&t.ServerName, svc+"-tls-server-name", t.ServerName, "name checked against "+what+"'s certificate (default: the host dialled)")
}

// tlsConfig is t.Config with the service named in its error.
func tlsConfig(t connsec.TLS, svc string) (*tls.Config, error) {
	c, err := t.Config()
	if err != nil {
		return nil, fmt.Errorf("%s %w", svc, err)
	}
	return c, nil
}

// MQTT is the broker connection of a role with its own credentials (ingest,
// egress); simulate uses URL and TLS only.
type MQTT struct {
	URL            string
	Username       string
	Password       string
	PasswordFile   string
	TLS            connsec.TLS // used for ssl://, tls://, mqtts:// and wss:// URLs
	KeepAlive      time.Duration
	ConnectTimeout time.Duration
}

// DefaultMQTT is the local stack's broker with pkg/mqttconn's timings.
func DefaultMQTT() MQTT {
	return MQTT{URL: "tcp://127.0.0.1:1883", KeepAlive: mqttconn.DefaultKeepAlive, ConnectTimeout: mqttconn.DefaultConnectTimeout}
}

// Flags declares the MQTT flags of a role that connects with its own credentials.
func (m *MQTT) Flags(fs *flag.FlagSet) {
	fs.StringVar(&m.URL, "mqtt-url", m.URL, "MQTT broker URL: tcp://host:port, ssl:// (TLS), ws://, wss:// (TLS)")
	fs.StringVar(&m.Username, "mqtt-username", m.Username, "MQTT username of this role (its own credentials, never a device's)")
	fs.StringVar(&m.Password, "mqtt-password", m.Password, "MQTT password of this role (prefer -mqtt-password-file; never logged)")
	m.TLSFlags(fs)
	fs.StringVar(&m.PasswordFile, "mqtt-password-file", m.PasswordFile, "file holding this role's MQTT password (alternative to -mqtt-password)")
	fs.DurationVar(&m.KeepAlive, "mqtt-keepalive", m.KeepAlive, "MQTT keep-alive")
	fs.DurationVar(&m.ConnectTimeout, "mqtt-connect-timeout", m.ConnectTimeout, "MQTT connect and subscribe timeout")
}

// TLSFlags declares the -mqtt-tls-* flags only.
func (m *MQTT) TLSFlags(fs *flag.FlagSet) {
	tlsFlags(fs, &m.TLS, "mqtt", "the MQTT broker (ssl:// and wss:// URLs)", false)
}

// Connection returns the role's MQTT password (from the value or its file)
// and the TLS config of its URL (nil for tcp:// and ws://).
func (m MQTT) Connection() (password string, tc *tls.Config, err error) {
	password, err = connsec.Secret("mqtt password", m.Password, m.PasswordFile)
	if err != nil {
		return "", nil, err
	}
	tc, err = m.TLSConfig()
	if err != nil {
		return "", nil, err
	}
	return password, tc, nil
}

// LogSecurity logs how the role reaches the broker (never the password).
func (m MQTT) LogSecurity(log *slog.Logger, tc *tls.Config) {
	log.Info("mqtt connection", "url", m.URL, "tls", tc != nil, "user", m.Username)
	if tc == nil {
		log.Warn("mqtt: no TLS (use ssl:// or wss:// with -mqtt-tls-ca-file): the role's credentials are readable on the network")
	}
}

// MQTTTLSScheme reports whether an MQTT URL's scheme means TLS.
func MQTTTLSScheme(raw string) (bool, error) {
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

// TLSConfig returns the TLS config for the URL: nil for tcp:// and ws://
// (and an error if TLS files were given for such a URL: they would be
// silently unused), the files' config (system CAs without a CA file) for
// ssl:// and wss://.
func (m MQTT) TLSConfig() (*tls.Config, error) {
	on, err := MQTTTLSScheme(m.URL)
	if err != nil {
		return nil, err
	}
	if !on {
		if m.TLS.On() {
			return nil, fmt.Errorf("mqtt: TLS files given but the URL %q is not ssl:// or wss://", m.URL)
		}
		return nil, nil
	}
	s := m.TLS
	s.Enabled = true
	return tlsConfig(s, "mqtt")
}

// Redis is the connection of every role that talks to Redis.
type Redis struct {
	Addr         string
	Username     string
	Password     string
	PasswordFile string
	DB           int
	Prefix       string
	TLS          connsec.TLS
}

// DefaultRedis is the local stack's Redis, database 0, the sink's key prefix.
func DefaultRedis() Redis {
	return Redis{Addr: "127.0.0.1:6379", Prefix: devicestate.DefaultPrefix}
}

// Flags declares the Redis flags.
func (r *Redis) Flags(fs *flag.FlagSet) {
	fs.StringVar(&r.Addr, "redis-addr", r.Addr, "Redis address (host:port)")
	fs.StringVar(&r.Username, "redis-username", r.Username, "Redis ACL user (empty: default)")
	fs.StringVar(&r.Password, "redis-password", r.Password, "Redis password (prefer -redis-password-file; never logged)")
	fs.IntVar(&r.DB, "redis-db", r.DB, "Redis database number")
	fs.StringVar(&r.Prefix, "redis-prefix", r.Prefix, "prefix of every Redis key (isolates test runs; the sink and the API must agree)")
	tlsFlags(fs, &r.TLS, "redis", "Redis", true)
	fs.StringVar(&r.PasswordFile, "redis-password-file", r.PasswordFile, "file holding the Redis password (alternative to -redis-password)")
}

// Client returns a Redis client with the TLS and credentials of r (it
// connects lazily).
func (r Redis) Client() (*goredis.Client, error) {
	pass, err := connsec.Secret("redis password", r.Password, r.PasswordFile)
	if err != nil {
		return nil, err
	}
	tc, err := tlsConfig(r.TLS, "redis")
	if err != nil {
		return nil, err
	}
	return goredis.NewClient(&goredis.Options{Addr: r.Addr, Username: r.Username, Password: pass, DB: r.DB, TLSConfig: tc}), nil
}

// open logs how the role reaches Redis and returns its client.
func (r Redis) open(log *slog.Logger) (*goredis.Client, error) {
	r.LogSecurity(log)
	return r.Client()
}

// LogSecurity logs how the role reaches Redis (never the password).
func (r Redis) LogSecurity(log *slog.Logger) {
	tlsOn := r.TLS.On()
	log.Info("redis connection", "addr", r.Addr, "tls", tlsOn, "user", r.Username, "password", r.Password != "" || r.PasswordFile != "")
	if !tlsOn {
		log.Warn("redis: no TLS (traffic and password readable on the network)")
	}
}

// Keys returns the key layout under the prefix.
func (r Redis) Keys() devicestate.Keys { return devicestate.Keys{Prefix: r.Prefix} }

// ClickHouse is the connection of every role that talks to ClickHouse.
type ClickHouse struct {
	Addr         string // comma-separated
	Database     string
	Username     string
	Password     string
	PasswordFile string
	TLS          connsec.TLS
	Cluster      string // -clickhouse-cluster (migrate and the sink only)
}

// DefaultClickHouse is the local stack's server, database ams, user default.
func DefaultClickHouse() ClickHouse {
	return ClickHouse{Addr: "127.0.0.1:9000", Database: "ams", Username: "default"}
}

// Flags declares the ClickHouse flags (not -clickhouse-cluster: ClusterFlag).
func (c *ClickHouse) Flags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "clickhouse-addr", c.Addr, "ClickHouse native-protocol addresses, comma-separated")
	fs.StringVar(&c.Database, "clickhouse-database", c.Database, "ClickHouse database of the ams tables")
	fs.StringVar(&c.Username, "clickhouse-username", c.Username, "ClickHouse user")
	fs.StringVar(&c.Password, "clickhouse-password", c.Password, "ClickHouse password (prefer -clickhouse-password-file; never logged)")
	tlsFlags(fs, &c.TLS, "clickhouse", "ClickHouse (native protocol, its secure port)", true)
	fs.StringVar(&c.PasswordFile, "clickhouse-password-file", c.PasswordFile, "file holding the ClickHouse password (alternative to -clickhouse-password)")
}

// ClusterFlag declares -clickhouse-cluster (migrate and the ClickHouse sink).
func (c *ClickHouse) ClusterFlag(fs *flag.FlagSet, usage string) {
	fs.StringVar(&c.Cluster, "clickhouse-cluster", c.Cluster, usage)
}

// Options returns the sink package's connection options.
func (c ClickHouse) Options() (chsink.Options, error) {
	pass, err := connsec.Secret("clickhouse password", c.Password, c.PasswordFile)
	if err != nil {
		return chsink.Options{}, err
	}
	tc, err := tlsConfig(c.TLS, "clickhouse")
	if err != nil {
		return chsink.Options{}, err
	}
	return chsink.Options{Addr: SplitList(c.Addr), Database: c.Database, Username: c.Username, Password: pass, TLS: tc, Cluster: c.Cluster}, nil
}

// SplitList splits a comma-separated list, dropping empty items.
func SplitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
