package testenv

import (
	"crypto/tls"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/connsec"
)

// The stack's security settings come from the same AMS_* variables as ams's flags, which
// deploy/stack/up.sh writes to $AMS_STACK_DIR/env (the Makefile sources it):
//
//	Kafka       AMS_KAFKA_TLS, AMS_KAFKA_TLS_CA_FILE, AMS_KAFKA_TLS_CERT_FILE, AMS_KAFKA_TLS_KEY_FILE,
//	            AMS_KAFKA_TLS_SERVER_NAME, AMS_KAFKA_SASL_MECHANISM, AMS_KAFKA_SASL_USERNAME,
//	            AMS_KAFKA_SASL_PASSWORD, AMS_KAFKA_SASL_PASSWORD_FILE
//	Redis       AMS_REDIS_TLS, AMS_REDIS_TLS_* (as Kafka), AMS_REDIS_USERNAME, AMS_REDIS_PASSWORD,
//	            AMS_REDIS_PASSWORD_FILE
//	ClickHouse  AMS_CLICKHOUSE_TLS, AMS_CLICKHOUSE_TLS_*, AMS_CLICKHOUSE_USERNAME,
//	            AMS_CLICKHOUSE_PASSWORD, AMS_CLICKHOUSE_PASSWORD_FILE
//
// Unset, they leave the connection plaintext and anonymous (the stack of `AMS_STACK_SECURE=0`).
// A setting that cannot be used (a missing CA file, an unknown SASL mechanism) panics with
// the reason: every test would fail on it anyway, and this way the message says why.

// KafkaOpts returns the franz-go options, beyond the seed brokers, that a test client or an
// in-process role needs to reach the stack's Kafka (TLS and SASL when the stack runs secure).
// Every Kafka client an integration test builds, directly or inside a role's config
// (KafkaOpts fields), appends these.
func KafkaOpts() []kgo.Opt {
	opts, err := connsec.KafkaFromEnv(os.Getenv).Opts()
	if err != nil {
		panic(fmt.Sprintf("testenv: kafka security settings from the environment: %v", err))
	}
	return opts
}

// KafkaSeedOpts returns kgo.SeedBrokers(KafkaBrokers()...) followed by KafkaOpts().
func KafkaSeedOpts() []kgo.Opt {
	return append([]kgo.Opt{kgo.SeedBrokers(KafkaBrokers()...)}, KafkaOpts()...)
}

// RedisOptions returns go-redis options for the stack's Redis: RedisAddr, and the TLS
// config, ACL user and password of the environment. Callers may change other fields (DB,
// timeouts) before goredis.NewClient.
func RedisOptions() *goredis.Options {
	tc, err := connsec.TLSFromEnv(os.Getenv, "AMS_REDIS").Config()
	if err != nil {
		panic(fmt.Sprintf("testenv: redis %v", err))
	}
	pass, err := connsec.Secret("redis password", os.Getenv("AMS_REDIS_PASSWORD"), os.Getenv("AMS_REDIS_PASSWORD_FILE"))
	if err != nil {
		panic(fmt.Sprintf("testenv: %v", err))
	}
	return &goredis.Options{
		Addr: RedisAddr(), Username: os.Getenv("AMS_REDIS_USERNAME"), Password: pass, TLSConfig: tc,
		DialTimeout: 5 * time.Second,
	}
}

// ClickHouseConn is what a ClickHouse client needs besides the database: the stack's
// addresses, user, password and TLS config.
type ClickHouseConn struct {
	Addr               []string
	Username, Password string
	// TLS is nil for a plaintext connection.
	TLS *tls.Config
}

// ClickHouseSettings returns the stack's ClickHouse connection settings (ClickHouseAddr,
// AMS_CLICKHOUSE_USERNAME or "default", the password and TLS of the environment).
func ClickHouseSettings() ClickHouseConn {
	tc, err := connsec.TLSFromEnv(os.Getenv, "AMS_CLICKHOUSE").Config()
	if err != nil {
		panic(fmt.Sprintf("testenv: clickhouse %v", err))
	}
	pass, err := connsec.Secret("clickhouse password", os.Getenv("AMS_CLICKHOUSE_PASSWORD"), os.Getenv("AMS_CLICKHOUSE_PASSWORD_FILE"))
	if err != nil {
		panic(fmt.Sprintf("testenv: %v", err))
	}
	user := envOr("AMS_CLICKHOUSE_USERNAME", "default")
	return ClickHouseConn{Addr: splitComma(ClickHouseAddr()), Username: user, Password: pass, TLS: tc}
}

// ClickHouseOptions returns clickhouse-go options (native protocol) for the stack's
// ClickHouse with database as the connection's current database ("" means "default").
func ClickHouseOptions(database string) *clickhouse.Options {
	s := ClickHouseSettings()
	if database == "" {
		database = "default"
	}
	return &clickhouse.Options{
		Addr:        s.Addr,
		Protocol:    clickhouse.Native,
		Auth:        clickhouse.Auth{Database: database, Username: s.Username, Password: s.Password},
		TLS:         s.TLS,
		DialTimeout: 5 * time.Second,
	}
}

func splitComma(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// NewKafkaClient returns kgo.NewClient(KafkaSeedOpts() followed by opts): a client of the
// stack's Kafka, for code without a testing.TB (benchmarks' helpers, cleanups). The caller
// closes it.
func NewKafkaClient(opts ...kgo.Opt) (*kgo.Client, error) {
	return kgo.NewClient(append(KafkaSeedOpts(), opts...)...)
}
