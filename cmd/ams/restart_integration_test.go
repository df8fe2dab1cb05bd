//go:build integration

package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/devicestate"
	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/testkit/mqttconform"
	"github.com/ivms/ams/pkg/testkit/testenv"
	"github.com/ivms/ams/schemas"
)

// The restart tests (issue 11, section 2): each role runs with a stable
// -instance-id and the default session timeout (30 s), under a steady load
// on its input topic; it is killed with SIGKILL and restarted with the same
// id 2 s later. Static group membership gives it its partitions back at
// once: every partition's first input produced after the restart must be
// processed within restartBound of the restart (with dynamic membership the
// group waited for the dead member's session to expire: 30 to 45 s). The
// measured seconds are logged ("resumed after").

const (
	restartPartitions = 4
	restartBound      = 10 * time.Second
)

// produced is one input record of the load.
type produced struct {
	i         int
	partition int32
	offset    int64
	at        time.Time
}

// restartRig is one restart test: private topics, a load producer and the
// role's arguments.
type restartRig struct {
	t       *testing.T
	id      string
	names   kafkatopics.Names
	kafka   *kgo.Client
	reg     *schemas.Registry
	args    []string // the role's command line, without -instance-id
	kafkaAr []string

	mu   sync.Mutex
	recs []produced
}

func newRestartRig(t *testing.T) *restartRig {
	t.Helper()
	r := &restartRig{t: t, id: testenv.Unique(t, "rs")}
	r.names = kafkatopics.WithPrefix(r.id + ".")
	var err error
	if r.reg, err = schemas.NewRegistry(); err != nil {
		t.Fatal(err)
	}
	r.kafka = testenv.KafkaClient(t, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = kadm.NewClient(r.kafka).DeleteTopics(ctx, r.names.All()...)
	})
	if err := kafkatopics.Ensure(ctx, kadm.NewClient(r.kafka), r.names,
		kafkatopics.Layout{Partitions: restartPartitions, Replication: 1}); err != nil {
		t.Fatalf("create topics: %v", err)
	}
	r.kafkaAr = []string{
		"-kafka-brokers", strings.Join(testenv.KafkaBrokers(), ","),
		"-topic-prefix", r.id + ".",
		"-partitions", fmt.Sprint(restartPartitions),
		"-ops-addr", "127.0.0.1:0",
	}
	return r
}

// load produces gen(i) to topic, record i on partition i%partitions, about
// 200 records a second, until the test ends.
func (r *restartRig) load(topic string, gen func(i int) (key string, v any)) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	r.t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ctx.Err() == nil; {
			var batch []*kgo.Record
			for range restartPartitions {
				key, v := gen(i)
				b, err := r.reg.Encode(v)
				if err != nil {
					r.t.Errorf("encode: %v", err)
					return
				}
				batch = append(batch, &kgo.Record{Topic: topic, Partition: int32(i % restartPartitions), Key: []byte(key), Value: b,
					Context: context.WithValue(context.Background(), loadIndex{}, i)})
				i++
			}
			at := time.Now()
			res := r.kafka.ProduceSync(ctx, batch...)
			if ctx.Err() != nil {
				return
			}
			if err := res.FirstErr(); err != nil {
				r.t.Errorf("load: %v", err)
				return
			}
			r.mu.Lock()
			for _, pr := range res {
				r.recs = append(r.recs, produced{i: pr.Record.Context.Value(loadIndex{}).(int), partition: pr.Record.Partition,
					offset: pr.Record.Offset, at: at})
			}
			r.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
		}
	}()
}

type loadIndex struct{}

// firstAfter returns, per partition, the first input produced at or after t
// (waiting until every partition has one).
func (r *restartRig) firstAfter(t0 time.Time) map[int32]produced {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		out := map[int32]produced{}
		r.mu.Lock()
		for _, p := range r.recs {
			if _, ok := out[p.partition]; !ok && !p.at.Before(t0) {
				out[p.partition] = p
			}
		}
		r.mu.Unlock()
		if len(out) == restartPartitions {
			return out
		}
	}
	r.t.Fatal("the load produced nothing after the restart")
	return nil
}

// killAndRestart starts the role with instance id "stable-0", waits until
// it processes inputs of every partition, kills it with SIGKILL under load,
// restarts it with the same id 2 s later and returns how long after the
// restart (process start) every partition's first new input was processed.
// done reports whether input p was processed.
//
// At the end a SIGTERM stops it: a static member must leave its group
// explicitly (franz-go does not), so the group is empty right after.
func (r *restartRig) killAndRestart(name, group string, done func(p produced) bool) time.Duration {
	t := r.t
	t.Helper()
	args := append(append([]string{}, r.args...), "-instance-id", "stable-0")
	proc := mqttconform.StartProcess(t, name, amsBinary, args...)
	waitAll := func(first map[int32]produced, timeout time.Duration) bool {
		for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(25 * time.Millisecond) {
			all := true
			for _, p := range first {
				if !done(p) {
					all = false
					break
				}
			}
			if all {
				return true
			}
		}
		return false
	}
	if !waitAll(r.firstAfter(time.Now()), 60*time.Second) {
		t.Fatalf("%s processes nothing before the kill", name)
	}
	time.Sleep(time.Second)
	proc.Kill()
	time.Sleep(2 * time.Second)
	t0 := time.Now()
	proc = mqttconform.StartProcess(t, name+"-restarted", amsBinary, args...)
	first := r.firstAfter(t0)
	if !waitAll(first, 45*time.Second) {
		t.Fatalf("%s did not resume within 45 s of its restart", name)
	}
	took := time.Since(t0)
	t.Logf("%s resumed after %.2f s (SIGKILL, restart with the same -instance-id)", name, took.Seconds())
	if took > restartBound {
		t.Errorf("%s resumed %.1f s after its restart, want within %v", name, took.Seconds(), restartBound)
	}
	if err := proc.Term(20 * time.Second); err != nil {
		t.Errorf("%s after SIGTERM: %v", name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gs, err := kadm.NewClient(r.kafka).DescribeGroups(ctx, group)
	if err != nil {
		t.Fatalf("describe group %s: %v", group, err)
	}
	if g := gs[group]; len(g.Members) != 0 {
		t.Errorf("group %s after a graceful stop: %d members (%s), want none: the static member did not leave", group, len(g.Members), g.State)
	}
	return took
}

// consumeOffsets follows topic (read committed) and records, per source
// partition, the highest source offset its records name.
type offsetWatch struct {
	mu  sync.Mutex
	max map[int32]int64
}

func (w *offsetWatch) done(p produced) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	m, ok := w.max[p.partition]
	return ok && m >= p.offset
}

func (w *offsetWatch) see(p int32, off int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if m, ok := w.max[p]; !ok || off > m {
		w.max[p] = off
	}
}

func (r *restartRig) watch(topic string, source func(rec *kgo.Record) (int32, int64, bool)) *offsetWatch {
	w := &offsetWatch{max: map[int32]int64{}}
	cl := testenv.KafkaClient(r.t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(50*time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	r.t.Cleanup(func() { cancel(); <-stopped })
	go func() {
		defer close(stopped)
		for ctx.Err() == nil {
			cl.PollFetches(ctx).EachRecord(func(rec *kgo.Record) {
				if p, off, ok := source(rec); ok {
					w.see(p, off)
				}
			})
		}
	}()
	return w
}

func TestRestartProcessor(t *testing.T) {
	r := newRestartRig(t)
	dir := t.TempDir()
	kek := filepath.Join(dir, "kek.hex")
	e2eWriteFile(t, kek, hex.EncodeToString(e2eRandomBytes(t, 32))+"\n")
	priv, err := filepath.Abs("testdata/cloud_rsa_private.pem")
	if err != nil {
		t.Fatal(err)
	}
	r.args = append(append([]string{"process"}, r.kafkaAr...),
		"-process-group", r.id+"-process", "-transactional-id-prefix", r.id+"-process-",
		"-rsa-private-key-file", priv, "-kek-file", kek)
	// Frames of devices without a session: each becomes a reject naming its
	// source record, written in the processor's transaction.
	r.load(r.names.UplinkRaw, func(i int) (string, any) {
		sn := fmt.Sprintf("RS%05d", i%500)
		return sn, &schemas.UplinkRaw{Kind: schemas.UplinkFrame, SN: sn, Topic: "/ivms/pub/" + sn,
			Payload: []byte(`{"cmdType":2}`), IngestTime: time.Now().UTC(), Ingest: "restart-test"}
	})
	w := r.watch(r.names.Rejects, func(rec *kgo.Record) (int32, int64, bool) {
		var rj schemas.Reject
		if r.reg.Decode(rec.Value, &rj) != nil || rj.SourceTopic != r.names.UplinkRaw {
			return 0, 0, false
		}
		return rj.SourcePartition, rj.SourceOffset, true
	})
	r.killAndRestart("process", r.id+"-process", w.done)
}

func TestRestartEgress(t *testing.T) {
	r := newRestartRig(t)
	broker := mqttconform.StartMosquitto(t, 1000)
	r.args = append(append([]string{"egress"}, r.kafkaAr...),
		"-mqtt-url", broker.URL, "-egress-id", "ams-egress-"+r.id, "-egress-group", r.id+"-egress",
		"-mqtt-connections", "1", "-commit-interval", "200ms")
	r.load(r.names.Downlink, func(i int) (string, any) {
		sn := fmt.Sprintf("RS%05d", i%500)
		return sn, &schemas.Downlink{FrameID: fmt.Sprint(i), SN: sn, Topic: "/ivms/sub/" + sn, Payload: []byte(`{"cmdType":2}`),
			CmdType: 2, MsgID: fmt.Sprint(i), Purpose: "heartbeat_reply", CreatedAt: time.Now().UTC()}
	})
	var mu sync.Mutex
	seen := map[int]bool{} // load indexes (frame ids) with a receipt
	r.watch(r.names.DownlinkReceipts, func(rec *kgo.Record) (int32, int64, bool) {
		var rc schemas.DownlinkReceipt
		var i int
		if r.reg.Decode(rec.Value, &rc) == nil {
			if _, err := fmt.Sscan(rc.FrameID, &i); err == nil {
				mu.Lock()
				seen[i] = true
				mu.Unlock()
			}
		}
		return 0, 0, false
	})
	done := func(p produced) bool {
		mu.Lock()
		defer mu.Unlock()
		return seen[p.i]
	}
	r.killAndRestart("egress", r.id+"-egress", done)
}

func TestRestartRedisSink(t *testing.T) {
	r := newRestartRig(t)
	prefix := r.id + ":"
	rdb := goredis.NewClient(testenv.RedisOptions())
	t.Cleanup(func() {
		ctx := context.Background()
		if keys, _ := rdb.Keys(ctx, prefix+"*").Result(); len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
		rdb.Close()
	})
	r.args = append(append([]string{"sink", "redis"}, r.kafkaAr...),
		"-redis-addr", testenv.RedisAddr(), "-redis-prefix", prefix, "-sink-group", r.id+"-sink-redis")
	r.load(r.names.Registry, func(i int) (string, any) {
		sn := fmt.Sprintf("RS%07d", i)
		return sn, &schemas.Registration{SN: sn, TokenSHA256: strings.Repeat("ab", 32), Name: sn, UpdatedAt: time.Now().UTC(), UpdatedBy: "restart-test"}
	})
	st := devicestate.NewStore(rdb, devicestate.Keys{Prefix: prefix})
	r.killAndRestart("sink-redis", r.id+"-sink-redis", func(p produced) bool {
		ok, err := st.Registered(context.Background(), fmt.Sprintf("RS%07d", p.i))
		return err == nil && ok
	})
}

func TestRestartClickHouseSink(t *testing.T) {
	r := newRestartRig(t)
	db := r.id
	conn, err := ch.Open(&ch.Options{Addr: []string{testenv.ClickHouseAddr()}, Auth: ch.Auth{Database: "default", Username: "default"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
		conn.Close()
	})
	chArgs := []string{"-clickhouse-addr", testenv.ClickHouseAddr(), "-clickhouse-database", db}
	migrate := append(append([]string{"migrate"}, r.kafkaAr[:6]...), chArgs...)
	if out, err := exec.Command(amsBinary, migrate...).CombinedOutput(); err != nil {
		t.Fatalf("ams migrate: %v\n%s", err, out)
	}
	r.args = append(append(append([]string{"sink", "clickhouse"}, r.kafkaAr...), chArgs...),
		"-sink-group", r.id+"-sink-clickhouse", "-batch-interval", "200ms")
	r.load(r.names.UplinkRaw, func(i int) (string, any) {
		sn := fmt.Sprintf("RS%05d", i%500)
		return sn, &schemas.UplinkRaw{Kind: schemas.UplinkFrame, SN: sn, Topic: "/ivms/pub/" + sn,
			Payload: []byte(`{"cmdType":2}`), IngestTime: time.Now().UTC(), Ingest: "restart-test"}
	})
	r.killAndRestart("sink-clickhouse", r.id+"-sink-clickhouse", func(p produced) bool {
		var n uint64
		err := conn.QueryRow(context.Background(), fmt.Sprintf("SELECT count() FROM %s.uplink_raw WHERE src_partition = %d AND src_offset = %d",
			db, p.partition, p.offset)).Scan(&n)
		return err == nil && n > 0
	})
}
