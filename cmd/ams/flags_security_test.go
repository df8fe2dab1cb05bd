package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/cmd/internal/roles"
	"github.com/ivms/ams/pkg/namespace"
)

// roleFlagSet declares the flags of role ("ingest", "sink redis", ...) on a new flag set.
func roleFlagSet(t *testing.T, role string) *flag.FlagSet {
	t.Helper()
	fs := flag.NewFlagSet(role, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if name, ok := strings.CutPrefix(role, "sink "); ok {
		for _, k := range sinkKinds() {
			if k.name == name {
				k.flags(fs)
				return fs
			}
		}
		t.Fatalf("no sink %s", name)
	}
	for _, c := range commands() {
		if c.name == role {
			c.flags(fs)
			return fs
		}
	}
	t.Fatalf("no command %s", role)
	return nil
}

// nameFlags are the flags a namespace derives; every role that has one must get it.
var nameFlags = []string{"topic-prefix", "process-group", "transactional-id-prefix", "egress-group",
	"sink-group", "mqtt-share-group", "redis-prefix", "clickhouse-database"}

var namespacedRoles = []string{"ingest", "process", "egress", "sink redis", "sink clickhouse", "api", "migrate"}

// namesOf parses role's flags with AMS_NAMESPACE=ns (and args), applies the namespace and
// returns every name flag's value.
func namesOf(t *testing.T, role, ns string, args ...string) map[string]string {
	t.Helper()
	fs := roleFlagSet(t, role)
	env := map[string]string{"AMS_NAMESPACE": ns}
	if err := parseFlags(fs, args, func(k string) string { return env[k] }); err != nil {
		t.Fatalf("%s: %v", role, err)
	}
	if err := roles.ApplyNamespace(fs); err != nil {
		t.Fatalf("%s: %v", role, err)
	}
	out := map[string]string{}
	for _, n := range nameFlags {
		if f := fs.Lookup(n); f != nil {
			out[n] = f.Value.String()
		}
	}
	return out
}

// TestNamespaceSetsEveryName: with -namespace, every role's name flags take the namespace's
// names; two namespaces (and none) share no name across all roles.
func TestNamespaceSetsEveryName(t *testing.T) {
	seen := map[string]string{} // value -> namespace that uses it
	for _, ns := range []string{"", "blue", "green"} {
		for _, role := range namespacedRoles {
			for flagName, v := range namesOf(t, role, ns) {
				if ns != "" && v == "" {
					t.Errorf("namespace %q: %s -%s is empty", ns, role, flagName)
				}
				if v == "" {
					continue
				}
				if other, ok := seen[v]; ok && other != ns {
					t.Errorf("%s -%s = %q is used by namespace %q and %q", role, flagName, v, other, ns)
				}
				seen[v] = ns
			}
		}
	}
	blue := namespace.Derive("blue")
	got := namesOf(t, "sink redis", "blue")
	if got["topic-prefix"] != "blue." || got["sink-group"] != blue.SinkRedisGroup || got["redis-prefix"] != blue.RedisPrefix {
		t.Errorf("sink redis in blue: %v", got)
	}
	if got := namesOf(t, "sink clickhouse", "blue"); got["sink-group"] != blue.SinkClickHouseGroup || got["clickhouse-database"] != "blue_ams" {
		t.Errorf("sink clickhouse in blue: %v", got)
	}
	if got := namesOf(t, "ingest", "blue"); got["mqtt-share-group"] != "blue_ams" {
		t.Errorf("ingest in blue: %v", got)
	}
	if got := namesOf(t, "media-hook", "blue"); got["redis-prefix"] != blue.RedisPrefix {
		t.Errorf("media-hook in blue: %v", got)
	}
	if got := namesOf(t, "process", "blue"); got["process-group"] != blue.ProcessGroup || got["transactional-id-prefix"] != blue.TransactionalIDPrefix {
		t.Errorf("process in blue: %v", got)
	}
}

// TestNamespaceExplicitFlagWins: a name given on the command line or in its own variable is
// kept; the others still come from the namespace.
func TestNamespaceExplicitFlagWins(t *testing.T) {
	got := namesOf(t, "egress", "blue", "-egress-group", "mine")
	if got["egress-group"] != "mine" || got["topic-prefix"] != "blue." {
		t.Errorf("egress: %v", got)
	}
	fs := roleFlagSet(t, "sink redis")
	env := map[string]string{"AMS_NAMESPACE": "blue", "AMS_REDIS_PREFIX": "x:"}
	if err := parseFlags(fs, nil, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if err := roles.ApplyNamespace(fs); err != nil {
		t.Fatal(err)
	}
	if v := fs.Lookup("redis-prefix").Value.String(); v != "x:" {
		t.Errorf("redis-prefix from AMS_REDIS_PREFIX = %q, want x:", v)
	}
	if v := fs.Lookup("sink-group").Value.String(); v != namespace.Derive("blue").SinkRedisGroup {
		t.Errorf("sink-group = %q", v)
	}
	fs = roleFlagSet(t, "ingest")
	if err := parseFlags(fs, []string{"-namespace", "Bad.Name"}, noEnv); err != nil {
		t.Fatal(err)
	}
	if err := roles.ApplyNamespace(fs); err == nil {
		t.Error("an invalid namespace was accepted")
	}
}

func TestReplicationPolicy(t *testing.T) {
	if _, err := roles.ReplicationPolicy(1, false); err == nil || !strings.Contains(err.Error(), "-allow-unsafe-replication") {
		t.Errorf("rf 1 without -allow-unsafe-replication: %v", err)
	}
	for _, c := range []struct {
		rf    int
		allow bool
		want  int16
	}{{1, true, 1}, {2, false, 1}, {3, false, 2}, {5, false, 4}} {
		if got, err := roles.ReplicationPolicy(c.rf, c.allow); err != nil || got != c.want {
			t.Errorf("rf %d: min.insync %d, %v; want %d", c.rf, got, err, c.want)
		}
	}
	if _, err := roles.ReplicationPolicy(0, true); err == nil {
		t.Error("rf 0 accepted")
	}
}

// TestMigrateRefusesReplicationOne: `ams migrate -replication 1` stops before connecting
// anywhere and names the flag that would allow it.
func TestMigrateRefusesReplicationOne(t *testing.T) {
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"migrate", "-replication", "1", "-kafka-brokers", "127.0.0.1:1"}, &out, &errb, noEnv)
	if code != 1 || !strings.Contains(errb.String(), "-allow-unsafe-replication") {
		t.Fatalf("exit %d, stderr %q; want 1 and a hint at -allow-unsafe-replication", code, errb.String())
	}
}

// TestKafkaFlagsBuildSecurity: the Kafka flags (or their variables) give every role's
// clients TLS and SASL; bad settings fail at start-up; the password is never logged.
func TestKafkaFlagsBuildSecurity(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte("hunter2-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, role := range append(namespacedRoles, "sink clickhouse") {
		fs := roleFlagSet(t, role)
		env := map[string]string{"AMS_KAFKA_TLS": "true", "AMS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
			"AMS_KAFKA_SASL_USERNAME": "ams", "AMS_KAFKA_SASL_PASSWORD_FILE": pwFile}
		if err := parseFlags(fs, nil, func(k string) string { return env[k] }); err != nil {
			t.Fatalf("%s: %v", role, err)
		}
		for _, n := range []string{"kafka-tls-ca-file", "kafka-tls-cert-file", "kafka-tls-key-file", "kafka-tls-server-name", "kafka-sasl-password"} {
			if fs.Lookup(n) == nil {
				t.Errorf("%s has no -%s", role, n)
			}
		}
	}

	k := roles.DefaultKafka()
	fs := flag.NewFlagSet("k", flag.ContinueOnError)
	k.Flags(fs)
	if err := parseFlags(fs, []string{"-kafka-tls", "-kafka-sasl-mechanism", "SCRAM-SHA-512", "-kafka-sasl-username", "ams",
		"-kafka-sasl-password", "hunter2-secret"}, noEnv); err != nil {
		t.Fatal(err)
	}
	opts, err := k.ClientOpts()
	if err != nil || len(opts) != 2 {
		t.Fatalf("opts: %d, %v; want TLS and SASL", len(opts), err)
	}
	cl, err := k.Client()
	if err != nil {
		t.Fatal(err)
	}
	if m := cl.OptValues(kgo.SASL); len(m) != 1 {
		t.Errorf("client SASL option: %v", m)
	}
	cl.Close()
	var logs bytes.Buffer
	k.LogSecurity(slog.New(slog.NewTextHandler(&logs, nil)))
	if strings.Contains(logs.String(), "hunter2") || !strings.Contains(logs.String(), "sasl=SCRAM-SHA-512") {
		t.Errorf("security log: %s", logs.String())
	}

	k.Security.Mechanism = "GSSAPI"
	if _, err := k.ClientOpts(); err == nil {
		t.Error("unknown mechanism accepted")
	}
}

func TestMQTTTLSFlags(t *testing.T) {
	m := roles.DefaultMQTT()
	fs := flag.NewFlagSet("m", flag.ContinueOnError)
	m.Flags(fs)
	if err := parseFlags(fs, []string{"-mqtt-url", "tcp://127.0.0.1:1883", "-mqtt-tls-server-name", "broker"}, noEnv); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Connection(); err == nil {
		t.Error("TLS settings with a tcp:// URL accepted (they would be unused)")
	}
	for _, u := range []string{"ssl://127.0.0.1:8883", "wss://127.0.0.1:8084/mqtt"} {
		m.URL = u
		_, tc, err := m.Connection()
		if err != nil || tc == nil || tc.ServerName != "broker" {
			t.Errorf("%s: %v, %v", u, tc, err)
		}
	}
	m.URL, m.TLS.ServerName = "ws://127.0.0.1:8083/mqtt", ""
	if _, tc, err := m.Connection(); err != nil || tc != nil {
		t.Errorf("ws://: %v, %v; want no TLS", tc, err)
	}
	m.URL = "http://x"
	if _, _, err := m.Connection(); err == nil {
		t.Error("http:// accepted")
	}
}

// TestRedisAndClickHouseSecurityFlags: password files are read, TLS is configured from the
// flags, and a bad setting is an error at start-up.
func TestRedisAndClickHouseSecurityFlags(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := roles.DefaultRedis()
	fs := flag.NewFlagSet("r", flag.ContinueOnError)
	r.Flags(fs)
	if err := parseFlags(fs, []string{"-redis-username", "ams", "-redis-password-file", pw, "-redis-tls"}, noEnv); err != nil {
		t.Fatal(err)
	}
	rdb, err := r.Client()
	if err != nil {
		t.Fatal(err)
	}
	o := rdb.Options()
	if o.Username != "ams" || o.Password != "s3cret" || o.TLSConfig == nil {
		t.Errorf("redis options: user %q, password set %v, tls %v", o.Username, o.Password == "s3cret", o.TLSConfig != nil)
	}
	rdb.Close()
	r.TLS.CAFile = filepath.Join(dir, "missing.pem")
	if _, err := r.Client(); err == nil {
		t.Error("redis: a missing CA file was accepted")
	}
	r.TLS.CAFile, r.Password = "", "inline"
	if _, err := r.Client(); err == nil {
		t.Error("redis: a password and a password file were both accepted")
	}

	c := roles.DefaultClickHouse()
	fs = flag.NewFlagSet("c", flag.ContinueOnError)
	c.Flags(fs)
	if err := parseFlags(fs, []string{"-clickhouse-password-file", pw, "-clickhouse-tls-server-name", "ch.example"}, noEnv); err != nil {
		t.Fatal(err)
	}
	co, err := c.Options()
	if err != nil {
		t.Fatal(err)
	}
	if co.Password != "s3cret" || co.TLS == nil || co.TLS.ServerName != "ch.example" {
		t.Errorf("clickhouse options: password set %v, tls %+v", co.Password == "s3cret", co.TLS)
	}
	var logs bytes.Buffer
	r.LogSecurity(slog.New(slog.NewTextHandler(&logs, nil)))
	if strings.Contains(logs.String(), "s3cret") || strings.Contains(logs.String(), "inline") {
		t.Errorf("redis security log shows the password: %s", logs.String())
	}
}

// noEnv is an environment without variables.
func noEnv(string) string { return "" }
