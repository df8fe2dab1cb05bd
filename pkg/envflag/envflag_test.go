package envflag

import (
	"bytes"
	"flag"
	"strings"
	"testing"
	"time"
)

func TestParsePrecedence(t *testing.T) {
	env := map[string]string{
		"AMS_KAFKA_BROKERS": "env:9092",
		"AMS_TIMEOUT":       "5s",
		"AMS_COUNT":         "7",
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	brokers := fs.String("kafka-brokers", "def:9092", "brokers")
	timeout := fs.Duration("timeout", time.Second, "timeout")
	count := fs.Int("count", 1, "count")
	other := fs.String("other", "keep", "untouched")
	if err := Parse(fs, []string{"-count=3"}, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if *brokers != "env:9092" {
		t.Errorf("brokers = %q, want the environment's", *brokers)
	}
	if *timeout != 5*time.Second {
		t.Errorf("timeout = %v, want 5s", *timeout)
	}
	if *count != 3 {
		t.Errorf("count = %d, want the flag's 3 over the environment's 7", *count)
	}
	if *other != "keep" {
		t.Errorf("other = %q, want default", *other)
	}
}

func TestParseBadEnv(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.Duration("timeout", time.Second, "timeout")
	err := Parse(fs, nil, func(k string) string {
		if k == "AMS_TIMEOUT" {
			return "soon"
		}
		return ""
	})
	if err == nil || !strings.Contains(err.Error(), "AMS_TIMEOUT") {
		t.Fatalf("err = %v, want one naming AMS_TIMEOUT", err)
	}
}

func TestEnvNameAndUsage(t *testing.T) {
	if got := EnvName("rsa-private-key.file"); got != "AMS_RSA_PRIVATE_KEY_FILE" {
		t.Errorf("EnvName = %q", got)
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.String("mqtt-url", "tcp://127.0.0.1:1883", "broker")
	var b bytes.Buffer
	Markdown(&b, "ingest", fs)
	if want := "| ingest | `-mqtt-url` | `AMS_MQTT_URL` | `tcp://127.0.0.1:1883` | broker |\n"; b.String() != want {
		t.Errorf("Markdown = %q, want %q", b.String(), want)
	}
}
