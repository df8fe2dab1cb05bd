// Package testenv gives integration tests the addresses of the real-service test stack
// (deploy/stack/up.sh) and small helpers to keep their names apart.
//
// Addresses default to the loopback stack and are overridden by the environment:
//
//	AMS_KAFKA_BROKERS    comma-separated, default 127.0.0.1:9092
//	AMS_REDIS_ADDR       default 127.0.0.1:6379
//	AMS_MQTT_URL         default tcp://127.0.0.1:1883
//	AMS_CLICKHOUSE_ADDR  native protocol, default 127.0.0.1:9000
//
// Tests that use it carry the build tag `integration` and fail (never skip) when a service
// is unreachable. Every name a test creates comes from Unique, so runs can overlap and repeat.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Default addresses of the loopback stack started by deploy/stack/up.sh.
const (
	DefaultKafkaBroker    = "127.0.0.1:9092"
	DefaultRedisAddr      = "127.0.0.1:6379"
	DefaultMQTTURL        = "tcp://127.0.0.1:1883"
	DefaultClickHouseAddr = "127.0.0.1:9000"
)

// adminTimeout bounds each admin round trip a helper makes, so an unreachable broker fails
// the test instead of hanging it.
const adminTimeout = 30 * time.Second

// KafkaBrokers returns the bootstrap brokers: AMS_KAFKA_BROKERS split on commas (blanks
// dropped), or 127.0.0.1:9092.
func KafkaBrokers() []string {
	var out []string
	for _, b := range strings.Split(os.Getenv("AMS_KAFKA_BROKERS"), ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	if len(out) == 0 {
		return []string{DefaultKafkaBroker}
	}
	return out
}

// RedisAddr returns AMS_REDIS_ADDR or 127.0.0.1:6379 (host:port for go-redis).
func RedisAddr() string { return envOr("AMS_REDIS_ADDR", DefaultRedisAddr) }

// MQTTURL returns AMS_MQTT_URL or tcp://127.0.0.1:1883 (a paho broker URL).
func MQTTURL() string { return envOr("AMS_MQTT_URL", DefaultMQTTURL) }

// ClickHouseAddr returns AMS_CLICKHOUSE_ADDR or 127.0.0.1:9000 (native protocol host:port).
func ClickHouseAddr() string { return envOr("AMS_CLICKHOUSE_ADDR", DefaultClickHouseAddr) }

func envOr(key, def string) string {
	if v := strings.TrimSpace(os.Getenv(key)); v != "" {
		return v
	}
	return def
}

// Unique returns prefix + "_" + 12 random lowercase hex digits. With a prefix of letters,
// digits and underscores the result is a valid Kafka topic, consumer group, ClickHouse
// database or table identifier, Redis key prefix and MQTT topic level, different on every call.
func Unique(t testing.TB, prefix string) string {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("testenv.Unique: random suffix: %v", err)
	}
	return prefix + "_" + hex.EncodeToString(b[:])
}

// KafkaClient returns a client seeded with KafkaBrokers (opts are applied after the seeds)
// that is closed when the test ends. It fails the test when the cluster does not answer a
// metadata request within 30 s.
func KafkaClient(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	all := append(KafkaSeedOpts(), opts...)
	cl, err := kgo.NewClient(all...)
	if err != nil {
		t.Fatalf("testenv: new kafka client: %v", err)
	}
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	if err := cl.Ping(ctx); err != nil {
		t.Fatalf("testenv: kafka %v unreachable (is deploy/stack/up.sh running?): %v", KafkaBrokers(), err)
	}
	return cl
}

// CreateTopics creates the named topics (replication factor 1) with the given number of
// partitions through client, waits until every partition has a leader, and deletes them
// when the test ends. Any failure fails the test.
func CreateTopics(t testing.TB, client *kgo.Client, partitions int32, names ...string) {
	t.Helper()
	if len(names) == 0 {
		return
	}
	adm := kadm.NewClient(client)
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()

	resp, err := adm.CreateTopics(ctx, partitions, 1, nil, names...)
	if err != nil {
		t.Fatalf("testenv: create topics %v: %v", names, err)
	}
	// Registered before checking each topic's result, so the ones that were created are
	// deleted even when another failed.
	t.Cleanup(func() { deleteTopics(t, client, names) })
	for _, r := range resp.Sorted() {
		if r.Err != nil {
			t.Fatalf("testenv: create topic %s: %v", r.Topic, r.Err)
		}
	}
	if err := waitLeaders(ctx, adm, partitions, names); err != nil {
		t.Fatalf("testenv: topics %v: %v", names, err)
	}
}

// waitLeaders polls metadata until each topic lists the given partitions, each with a leader.
func waitLeaders(ctx context.Context, adm *kadm.Client, partitions int32, names []string) error {
	for {
		err := leadersReady(ctx, adm, partitions, names)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("partitions without a leader: %w", errors.Join(err, ctx.Err()))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func leadersReady(ctx context.Context, adm *kadm.Client, partitions int32, names []string) error {
	details, err := adm.ListTopics(ctx, names...)
	if err != nil {
		return fmt.Errorf("list topics: %w", err)
	}
	for _, name := range names {
		d, ok := details[name]
		switch {
		case !ok:
			return fmt.Errorf("topic %s not in metadata", name)
		case d.Err != nil:
			return fmt.Errorf("topic %s: %w", name, d.Err)
		case int32(len(d.Partitions)) != partitions:
			return fmt.Errorf("topic %s has %d of %d partitions", name, len(d.Partitions), partitions)
		}
		for _, p := range d.Partitions {
			if p.Err != nil || p.Leader < 0 {
				return fmt.Errorf("topic %s partition %d: leader %d: %v", name, p.Partition, p.Leader, p.Err)
			}
		}
	}
	return nil
}

// deleteTopics runs at cleanup with a client of its own (the test's client may be closed by
// then), seeded from the test client's seed brokers.
func deleteTopics(t testing.TB, client *kgo.Client, names []string) {
	seeds, _ := client.OptValue(kgo.SeedBrokers).([]string)
	if len(seeds) == 0 {
		seeds = KafkaBrokers()
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seeds...)}, KafkaOpts()...)...)
	if err != nil {
		t.Errorf("testenv: delete topics %v: new client: %v", names, err)
		return
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	resp, err := kadm.NewClient(cl).DeleteTopics(ctx, names...)
	if err != nil {
		t.Errorf("testenv: delete topics %v: %v", names, err)
		return
	}
	for _, r := range resp.Sorted() {
		if r.Err != nil {
			t.Errorf("testenv: delete topic %s: %v", r.Topic, r.Err)
		}
	}
}

// Decoder decodes a record value into v (schemas.Registry).
type Decoder interface {
	Decode(b []byte, v any) error
}

// Consume decodes every record of topic, from the start, into out until the
// test ends; a record that does not decode fails the test.
func Consume[T any](t *testing.T, dec Decoder, topic string, out chan<- T) {
	t.Helper()
	cl := KafkaClient(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(100*time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for {
			fs := cl.PollFetches(ctx)
			if ctx.Err() != nil {
				return
			}
			fs.EachRecord(func(r *kgo.Record) {
				var v T
				if err := dec.Decode(r.Value, &v); err != nil {
					t.Errorf("decode %s record: %v", topic, err)
					return
				}
				select {
				case out <- v:
				case <-ctx.Done():
				}
			})
		}
	}()
}
