//go:build integration

// Smoke tests of the real-service stack (deploy/stack/up.sh): each one fails when its
// service is unreachable. Run: go test -tags integration -count=1 ./pkg/testkit/testenv/
package testenv_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/connsec"
	"github.com/ivms/ams/pkg/testkit/testenv"
)

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestKafkaTransactions produces a committed, an aborted and another committed transaction
// and checks that a read-committed consumer sees exactly the committed records, while a
// read-uncommitted one also sees the aborted ones.
func TestKafkaTransactions(t *testing.T) {
	ctx := testContext(t)
	const partitions = 3
	topic := testenv.Unique(t, "smoke_tx")
	admin := testenv.KafkaClient(t)
	testenv.CreateTopics(t, admin, partitions, topic)

	producer := testenv.KafkaClient(t,
		kgo.TransactionalID(testenv.Unique(t, "smoke_txid")),
		kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
	)

	// Every partition gets records of all three transactions, in order, so reading the last
	// committed records of a partition means the aborted ones before them were passed.
	txn := func(prefix string, n int, end kgo.TransactionEndTry) []string {
		t.Helper()
		if err := producer.BeginTransaction(); err != nil {
			t.Fatalf("begin transaction: %v", err)
		}
		var values []string
		var recs []*kgo.Record
		for i := range n {
			v := fmt.Sprintf("%s-%d", prefix, i)
			values = append(values, v)
			recs = append(recs, &kgo.Record{Partition: int32(i % partitions), Value: []byte(v)})
		}
		if err := producer.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatalf("produce %s: %v", prefix, err)
		}
		if err := producer.EndTransaction(ctx, end); err != nil {
			t.Fatalf("end transaction %s (commit=%v): %v", prefix, bool(end), err)
		}
		return values
	}
	committed := txn("committed1", 30, kgo.TryCommit)
	aborted := txn("aborted", 15, kgo.TryAbort)
	committed = append(committed, txn("committed2", 30, kgo.TryCommit)...)

	all := append(slices.Clone(committed), aborted...)
	slices.Sort(committed)
	slices.Sort(all)

	readCommitted := consumeValues(ctx, t, topic, len(committed), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if !slices.Equal(readCommitted, committed) {
		t.Errorf("read committed: got %d records %v, want the %d committed ones %v",
			len(readCommitted), readCommitted, len(committed), committed)
	}
	readUncommitted := consumeValues(ctx, t, topic, len(all), kgo.FetchIsolationLevel(kgo.ReadUncommitted()))
	if !slices.Equal(readUncommitted, all) {
		t.Errorf("read uncommitted: got %d records, want %d (committed and aborted)", len(readUncommitted), len(all))
	}
}

// consumeValues reads topic from the start until want records arrived (then polls briefly for
// extra ones) and returns their values sorted.
func consumeValues(ctx context.Context, t *testing.T, topic string, want int, opts ...kgo.Opt) []string {
	t.Helper()
	opts = append(opts, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	cl := testenv.KafkaClient(t, opts...)
	var got []string
	var extraUntil time.Time
	for {
		pollCtx, cancel := context.WithTimeout(ctx, time.Second)
		fetches := cl.PollFetches(pollCtx)
		cancel()
		if ctx.Err() != nil {
			t.Fatalf("consume %s: got %d of %d records before timeout", topic, len(got), want)
		}
		fetches.EachError(func(topic string, p int32, err error) {
			if pollCtx.Err() == nil {
				t.Fatalf("fetch %s/%d: %v", topic, p, err)
			}
		})
		fetches.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
		if len(got) >= want && extraUntil.IsZero() {
			extraUntil = time.Now().Add(500 * time.Millisecond)
		}
		if !extraUntil.IsZero() && time.Now().After(extraUntil) {
			break
		}
	}
	cl.Close()
	slices.Sort(got)
	return got
}

func TestRedis(t *testing.T) {
	ctx := testContext(t)
	rdb := redis.NewClient(testenv.RedisOptions())
	t.Cleanup(func() { _ = rdb.Close() })
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("redis %s unreachable (is deploy/stack/up.sh running?): %v", testenv.RedisAddr(), err)
	}
	prefix := testenv.Unique(t, "smoke") + ":"
	key, counter, hash := prefix+"k", prefix+"counter", prefix+"h"
	t.Cleanup(func() { _ = rdb.Del(context.Background(), key, counter, hash).Err() })

	if err := rdb.Set(ctx, key, "v1", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if v, err := rdb.Get(ctx, key).Result(); err != nil || v != "v1" {
		t.Fatalf("GET = %q, %v; want v1", v, err)
	}
	if ok, err := rdb.Expire(ctx, key, time.Minute).Result(); err != nil || !ok {
		t.Fatalf("EXPIRE = %v, %v; want true", ok, err)
	}
	if ttl, err := rdb.TTL(ctx, key).Result(); err != nil || ttl <= 0 || ttl > time.Minute {
		t.Fatalf("TTL = %v, %v; want within (0, 1m]", ttl, err)
	}

	pipe := rdb.Pipeline()
	incrs := make([]*redis.IntCmd, 100)
	for i := range incrs {
		incrs[i] = pipe.Incr(ctx, counter)
	}
	pipe.HSet(ctx, hash, "a", "1", "b", "2")
	pipe.Expire(ctx, hash, time.Minute)
	hget := pipe.HGetAll(ctx, hash)
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatalf("pipeline: %v", err)
	}
	for i, c := range incrs {
		if c.Val() != int64(i+1) {
			t.Fatalf("pipelined INCR #%d = %d", i, c.Val())
		}
	}
	if h := hget.Val(); len(h) != 2 || h["a"] != "1" || h["b"] != "2" {
		t.Fatalf("pipelined HGETALL = %v", h)
	}
}

func TestClickHouse(t *testing.T) {
	ctx := testContext(t)
	conn, err := clickhouse.Open(testenv.ClickHouseOptions("default"))
	if err != nil {
		t.Fatalf("clickhouse open: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if err := conn.Ping(ctx); err != nil {
		t.Fatalf("clickhouse %s unreachable (is deploy/stack/up.sh running?): %v", testenv.ClickHouseAddr(), err)
	}

	db := testenv.Unique(t, "smoke")
	if err := conn.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		if err := conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db); err != nil {
			t.Errorf("drop database %s: %v", db, err)
		}
	})
	if err := conn.Exec(ctx, "CREATE TABLE "+db+".t (ts DateTime, sn String, n UInt32) "+
		"ENGINE = MergeTree() PARTITION BY toYYYYMM(ts) ORDER BY (sn, ts)"); err != nil {
		t.Fatalf("create table: %v", err)
	}

	// ClickHouse 18.16: the INSERT must name its columns for batches to work.
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".t (ts, sn, n)")
	if err != nil {
		t.Fatalf("prepare batch: %v", err)
	}
	const rows = 10_000
	base := time.Date(2026, 1, 31, 23, 0, 0, 0, time.UTC) // spans two monthly partitions
	var wantSum uint64
	for i := range rows {
		n := uint32(i)
		wantSum += uint64(n)
		if err := batch.Append(base.Add(time.Duration(i)*time.Second), fmt.Sprintf("SN%03d", i%100), n); err != nil {
			t.Fatalf("append row %d: %v", i, err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatalf("send batch: %v", err)
	}

	var count, sum uint64
	if err := conn.QueryRow(ctx, "SELECT count(), sum(n) FROM "+db+".t").Scan(&count, &sum); err != nil {
		t.Fatalf("select: %v", err)
	}
	if count != rows || sum != wantSum {
		t.Fatalf("count, sum = %d, %d; want %d, %d", count, sum, rows, wantSum)
	}
	var sns uint64
	if err := conn.QueryRow(ctx, "SELECT uniqExact(sn) FROM "+db+".t WHERE toYYYYMM(ts) = 202602").Scan(&sns); err != nil {
		t.Fatalf("select partition: %v", err)
	}
	if sns != 100 {
		t.Fatalf("distinct sn in 2026-02 = %d, want 100", sns)
	}
}

func mqttConnect(t *testing.T, name string) mqtt.Client {
	t.Helper()
	opts := testenv.MQTTOptions(testenv.Unique(t, name)).
		SetCleanSession(true).
		SetConnectTimeout(5 * time.Second).
		SetAutoReconnect(false).
		SetConnectRetry(false)
	c := mqtt.NewClient(opts)
	if err := waitToken(c.Connect()); err != nil {
		t.Fatalf("mqtt %s unreachable (is deploy/stack/up.sh running?): %v", testenv.MQTTURL(), err)
	}
	t.Cleanup(func() { c.Disconnect(250) })
	return c
}

func waitToken(tok mqtt.Token) error {
	if !tok.WaitTimeout(10 * time.Second) {
		return fmt.Errorf("no answer within 10s")
	}
	return tok.Error()
}

func TestMQTTRoundTrip(t *testing.T) {
	topic := "ams/" + testenv.Unique(t, "smoke")
	got := make(chan string, 10)
	sub := mqttConnect(t, "smoke_sub")
	if err := waitToken(sub.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) {
		got <- string(m.Payload())
	})); err != nil {
		t.Fatalf("subscribe %s: %v", topic, err)
	}
	pub := mqttConnect(t, "smoke_pub")
	if err := waitToken(pub.Publish(topic, 1, false, "hello")); err != nil {
		t.Fatalf("publish: %v", err)
	}
	select {
	case m := <-got:
		if m != "hello" {
			t.Fatalf("received %q, want hello", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
}

// TestMQTTSharedSubscription checks that two members of one shared subscription on a
// device-style topic (leading slash) together receive every message exactly once.
func TestMQTTSharedSubscription(t *testing.T) {
	base := "/ams/" + testenv.Unique(t, "smoke") + "/pub" // /ams/#: the stack broker's test topics
	filter := "$share/" + testenv.Unique(t, "g") + "/" + base + "/+"
	const n = 200

	var mu sync.Mutex
	counts := map[string]int{}
	perSub := [2]int{}
	done := make(chan struct{})
	total := 0
	for i := range perSub {
		c := mqttConnect(t, fmt.Sprintf("smoke_shared%d", i))
		if err := waitToken(c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) {
			mu.Lock()
			defer mu.Unlock()
			counts[string(m.Payload())]++
			perSub[i]++
			if total++; total == n {
				close(done)
			}
		})); err != nil {
			t.Fatalf("subscribe %s: %v", filter, err)
		}
	}

	pub := mqttConnect(t, "smoke_shared_pub")
	for i := range n {
		if err := waitToken(pub.Publish(fmt.Sprintf("%s/dev%d", base, i%10), 1, false, fmt.Sprintf("m%d", i))); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	select {
	case <-done:
	case <-time.After(15 * time.Second):
	}
	time.Sleep(300 * time.Millisecond) // let any duplicate arrive
	mu.Lock()
	defer mu.Unlock()
	for i := range n {
		if c := counts[fmt.Sprintf("m%d", i)]; c != 1 {
			t.Errorf("message m%d received %d times, want exactly once", i, c)
		}
	}
	if total != n {
		t.Errorf("received %d messages in all, want %d", total, n)
	}
	t.Logf("shared subscription %s: subscriber split %v", filter, perSub)
}

// TestSecureStackRefusesPlaintext: on a secure stack (the env file sets TLS and SASL), a Kafka
// client without them and a Redis client without TLS or password are refused, and the same
// clients with testenv's options get in.
func TestSecureStackRefusesPlaintext(t *testing.T) {
	if len(testenv.KafkaOpts()) == 0 || testenv.RedisOptions().TLSConfig == nil {
		t.Skip("the stack is not secure (AMS_STACK_SECURE=0 or no env file sourced): nothing to refuse")
	}
	ctx := testContext(t)
	testenv.KafkaClient(t) // with TLS and SCRAM: reachable, or the test fails

	plain, err := kgo.NewClient(kgo.SeedBrokers(testenv.KafkaBrokers()...), kgo.RequestRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := plain.Ping(pctx); err == nil {
		t.Error("a plaintext Kafka client without SASL was answered")
	}
	// TLS alone (the stack's CA) without SCRAM.
	tlsOnly, err := connsec.Kafka{TLS: connsec.TLSFromEnv(os.Getenv, "AMS_KAFKA")}.Opts()
	if err != nil {
		t.Fatal(err)
	}
	noSASL, err := kgo.NewClient(append(tlsOnly, kgo.SeedBrokers(testenv.KafkaBrokers()...), kgo.RequestRetries(0))...)
	if err != nil {
		t.Fatal(err)
	}
	defer noSASL.Close()
	if err := noSASL.Ping(pctx); err == nil {
		t.Error("a TLS Kafka client without SASL was answered")
	}

	good := redis.NewClient(testenv.RedisOptions())
	defer good.Close()
	if err := good.Ping(ctx).Err(); err != nil {
		t.Fatalf("redis with TLS and ACL user: %v", err)
	}
	o := testenv.RedisOptions()
	o.TLSConfig = nil
	plainRedis := redis.NewClient(o)
	defer plainRedis.Close()
	if err := plainRedis.Ping(ctx).Err(); err == nil {
		t.Error("a plaintext Redis client was answered")
	}
	o = testenv.RedisOptions()
	o.Username, o.Password = "", ""
	anon := redis.NewClient(o)
	defer anon.Close()
	if err := anon.Ping(ctx).Err(); err == nil {
		t.Error("a Redis client without user and password was answered")
	}
}
