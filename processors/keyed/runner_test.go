package keyed_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/processors/keyed"
	"github.com/ivms/ams/processors/keyed/internal/counter"
)

const (
	topicIn        = "in"
	topicOut       = "out"
	topicChangelog = "state"
)

// fakeClock is a Clock the test moves.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("KEYED_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func newCluster(t *testing.T, partitions int32) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	createTopics(t, c.ListenAddrs(), partitions)
	return c
}

func createTopics(t *testing.T, seeds []string, partitions int32) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tp := range []struct {
		name string
		cfg  map[string]*string
	}{
		{topicIn, nil},
		{topicOut, nil},
		{topicChangelog, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}},
	} {
		if _, err := adm.CreateTopic(ctx, partitions, 1, tp.cfg, tp.name); err != nil {
			t.Fatal(err)
		}
	}
}

type instance struct {
	r    *keyed.Runner[counter.State]
	reg  *prometheus.Registry
	stop context.CancelFunc
	done chan struct{} // closed when Run returned, with err set
	err  error
}

func (i *instance) Stop(t *testing.T) {
	t.Helper()
	i.stop()
	select {
	case <-i.done:
		if i.err != nil {
			t.Fatalf("runner: %v", i.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("runner did not stop")
	}
}

func config(seeds []string, clock *fakeClock, t *testing.T) keyed.Config {
	return keyed.Config{
		Name:                  "counter",
		Brokers:               seeds,
		Group:                 "counter-group",
		Inputs:                []string{topicIn},
		Changelog:             topicChangelog,
		Outputs:               []string{topicOut},
		TransactionalIDPrefix: "counter-",
		TimerTick:             20 * time.Millisecond,
		Clock:                 clock.Now,
		Logger:                testLogger(t),
		KafkaOpts: []kgo.Opt{
			kgo.HeartbeatInterval(100 * time.Millisecond),
			kgo.FetchMaxWait(100 * time.Millisecond),
		},
	}
}

func start(t *testing.T, cfg keyed.Config, h counter.Handler) *instance {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	r, err := keyed.NewRunner[counter.State](cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	i := &instance{r: r, reg: reg, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(i.done)
		i.err = r.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-i.done:
		case <-time.After(30 * time.Second):
		}
	})
	return i
}

// waitReady waits until the instance is ready (joined, restored).
func (i *instance) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := i.r.Ready(context.Background())
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func produceInputs(t *testing.T, seeds []string, keys []string, each int, tombstone bool) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.DefaultProduceTopic(topicIn))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for n := range each {
		for _, k := range keys {
			recs = append(recs, &kgo.Record{Key: []byte(k), Value: []byte(fmt.Sprint(n))})
		}
	}
	if tombstone {
		for _, k := range keys {
			recs = append(recs, &kgo.Record{Key: []byte(k)})
		}
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func keysN(prefix string, n int) []string {
	ks := make([]string, n)
	for i := range ks {
		ks[i] = fmt.Sprintf("%s%03d", prefix, i)
	}
	return ks
}

// committedLog reads topic read-committed from the start until want(values)
// holds or the timeout passes, and returns the values.
type logReader struct {
	cl   *kgo.Client
	vals []string
	recs []*kgo.Record
}

func newLogReader(t *testing.T, seeds []string, topic string) *logReader {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(100*time.Millisecond),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &logReader{cl: cl}
}

func (l *logReader) until(t *testing.T, timeout time.Duration, done func([]string) bool) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !done(l.vals) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out with %d records", len(l.vals))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		fs := l.cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			l.vals = append(l.vals, string(r.Value))
			l.recs = append(l.recs, r)
		})
	}
	return l.vals
}

// checkCounts verifies that, per key, the counted outputs are exactly 1..n
// in order, once each, and returns how many idle outputs each key has.
func checkCounts(t *testing.T, vals []string, keys []string, n int) map[string]int {
	t.Helper()
	next := map[string]int{}
	idle := map[string]int{}
	for _, v := range vals {
		parts := strings.Split(v, ":")
		switch {
		case len(parts) == 2 && parts[1] == "deleted":
		case len(parts) == 2:
			var c int
			fmt.Sscan(parts[1], &c)
			if c != next[parts[0]]+1 {
				t.Fatalf("key %s: output %d after %d (duplicate or gap)", parts[0], c, next[parts[0]])
			}
			next[parts[0]] = c
		case len(parts) == 3 && parts[1] == "idle":
			idle[parts[0]]++
		default:
			t.Fatalf("unexpected output %q", v)
		}
	}
	for _, k := range keys {
		if next[k] != n {
			t.Fatalf("key %s: %d outputs, want %d", k, next[k], n)
		}
	}
	return idle
}

func countsDone(keys []string, n int) func([]string) bool {
	want := map[string]bool{}
	for _, k := range keys {
		want[fmt.Sprintf("%s:%d", k, n)] = true
	}
	return func(vals []string) bool {
		seen := 0
		for _, v := range vals {
			if want[v] {
				seen++
			}
		}
		return seen == len(want)
	}
}

func idleDone(keys []string) func([]string) bool {
	return func(vals []string) bool {
		seen := map[string]bool{}
		for _, v := range vals {
			if p := strings.Split(v, ":"); len(p) == 3 && p[1] == "idle" {
				seen[p[0]] = true
			}
		}
		return len(seen) >= len(keys)
	}
}

// changelogState reads the changelog read-committed and returns the latest
// state per key (absent when deleted).
func changelogState(t *testing.T, seeds []string) map[string]*counter.State {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...))
	if err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(context.Background(), topicChangelog)
	cl.Close()
	if err != nil {
		t.Fatal(err)
	}
	rd := newLogReader(t, seeds, topicChangelog)
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	states := map[string]*counter.State{}
	// Read until a poll brings nothing new (the end offsets include markers).
	idle := 0
	for idle < 5 {
		before := len(rd.recs)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		fs := rd.cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) { rd.recs = append(rd.recs, r) })
		if len(rd.recs) == before {
			idle++
		}
	}
	for _, r := range rd.recs {
		if r.Value == nil {
			delete(states, string(r.Key))
			continue
		}
		st, err := counter.Handler{}.DecodeState(string(r.Key), r.Value)
		if err != nil {
			t.Fatal(err)
		}
		states[string(r.Key)] = st
	}
	_ = total
	return states
}

func TestCountsTimersAndTombstones(t *testing.T) {
	c := newCluster(t, 4)
	seeds := c.ListenAddrs()
	clock := newFakeClock()
	h := counter.Handler{Out: topicOut, IdleAfter: time.Minute}
	in := start(t, config(seeds, clock, t), h)
	in.waitReady(t)

	keys := keysN("k", 40)
	produceInputs(t, seeds, keys, 25, false)
	out := newLogReader(t, seeds, topicOut)
	vals := out.until(t, 30*time.Second, countsDone(keys, 25))
	if idle := checkCounts(t, vals, keys, 25); len(idle) != 0 {
		t.Fatalf("timers fired before their deadline: %v", idle)
	}

	clock.Advance(2 * time.Minute)
	out.until(t, 30*time.Second, idleDone(keys))
	time.Sleep(200 * time.Millisecond) // a second firing would show now
	vals = out.until(t, time.Second, func([]string) bool { return true })
	for k, n := range checkCounts(t, vals, keys, 25) {
		if n != 1 {
			t.Fatalf("key %s: %d idle outputs", k, n)
		}
	}

	produceInputs(t, seeds, keys[:10], 0, true)
	out.until(t, 30*time.Second, func(vals []string) bool {
		n := 0
		for _, v := range vals {
			if strings.HasSuffix(v, ":deleted") {
				n++
			}
		}
		return n == 10
	})
	in.Stop(t)

	states := changelogState(t, seeds)
	if len(states) != 30 {
		t.Fatalf("changelog has %d keys, want 30", len(states))
	}
	for _, k := range keys[10:] {
		if s := states[k]; s == nil || s.Count != 25 || !s.Idle {
			t.Fatalf("changelog state of %s: %+v", k, s)
		}
	}
	if got := metric(t, in.reg, "ams_keyed_timers_fired_total"); got != 40 {
		t.Fatalf("timers fired metric: %v", got)
	}
}

// metric reads one counter by name (and label value) from a registry.
func metric(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				ok := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						ok = true
					}
				}
				if !ok {
					continue next
				}
			}
			if m.Counter != nil {
				sum += m.Counter.GetValue()
			}
			if m.Gauge != nil {
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

func TestAbortRollsBackAndReprocesses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault kfake.Fault
	}{
		// End: the offset commit fails -> aborted, (false, nil).
		{"txn-offset-commit", kfake.Fault{Keys: []kmsg.Key{kmsg.TxnOffsetCommit}, Err: kerr.UnknownServerError}},
		// End: EndTxn(commit) answers TRANSACTION_ABORTABLE -> retried as an abort.
		{"end-txn", kfake.Fault{Keys: []kmsg.Key{kmsg.EndTxn}, Err: kerr.TransactionAbortable, TopLevel: true,
			When: func(r kmsg.Request) bool { return r.(*kmsg.EndTxnRequest).Commit }}},
		// An output's produce fails -> the runner aborts.
		{"produce", kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topicOut, Err: kerr.PolicyViolation}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, 4)
			seeds := c.ListenAddrs()
			clock := newFakeClock()
			in := start(t, config(seeds, clock, t), counter.Handler{Out: topicOut})
			in.waitReady(t)

			keys := keysN("k", 20)
			produceInputs(t, seeds, keys, 5, false)
			out := newLogReader(t, seeds, topicOut)
			out.until(t, 30*time.Second, countsDone(keys, 5))

			// Fail the next transaction, then keep feeding.
			tc.fault.Count = 1
			fh := c.Fault(tc.fault)
			produceInputs(t, seeds, keys, 5, false)
			vals := out.until(t, 30*time.Second, countsDone(keys, 10))
			if fh.Hits() != 1 {
				t.Fatalf("fault hit %d times", fh.Hits())
			}
			checkCounts(t, vals, keys, 10) // no gap, no duplicate: state rolled back, batch redone
			if n := metric(t, in.reg, "ams_keyed_transactions_total", "result", "aborted"); n < 1 {
				t.Fatalf("aborted transactions: %v", n)
			}
			in.Stop(t)
			states := changelogState(t, seeds)
			for _, k := range keys {
				if s := states[k]; s == nil || s.Count != 10 {
					t.Fatalf("changelog state of %s: %+v", k, s)
				}
			}
		})
	}
}

func waitMetric(t *testing.T, reg *prometheus.Registry, name string, ok func(float64) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for v := metric(t, reg, name); !ok(v); v = metric(t, reg, name) {
		if time.Now().After(deadline) {
			t.Fatalf("metric %s stuck at %v", name, v)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRebalanceRestoresStateAndTimers moves partitions between two
// instances: the counts continue where they were and every key's timer
// fires once, wherever its partition went.
func TestRebalanceRestoresStateAndTimers(t *testing.T) {
	c := newCluster(t, 4)
	seeds := c.ListenAddrs()
	clock := newFakeClock()
	h := counter.Handler{Out: topicOut, IdleAfter: time.Minute}
	a := start(t, config(seeds, clock, t), h)
	a.waitReady(t)

	keys := keysN("k", 40)
	produceInputs(t, seeds, keys, 10, false)
	out := newLogReader(t, seeds, topicOut)
	out.until(t, 30*time.Second, countsDone(keys, 10))

	// B joins: an eager rebalance revokes all of A's partitions, hands
	// half to B (restored from the changelog) and half back to A (parked
	// state, caught up: no changelog record to read).
	b := start(t, config(seeds, clock, t), h)
	waitMetric(t, b.reg, "ams_keyed_restore_records_total", func(v float64) bool { return v > 0 })
	a.waitReady(t)
	b.waitReady(t)
	if n := metric(t, a.reg, "ams_keyed_restore_records_total"); n != 0 {
		t.Fatalf("A re-read %v changelog records for partitions it kept", n)
	}
	if ka, kb := metric(t, a.reg, "ams_keyed_state_keys"), metric(t, b.reg, "ams_keyed_state_keys"); ka+kb != 40 || ka == 0 || kb == 0 {
		t.Fatalf("keys: A %v, B %v", ka, kb)
	}

	produceInputs(t, seeds, keys, 10, false)
	out.until(t, 30*time.Second, countsDone(keys, 20))

	clock.Advance(2 * time.Minute)
	out.until(t, 30*time.Second, idleDone(keys))

	// A leaves: B owns everything.
	a.Stop(t)
	produceInputs(t, seeds, keys, 5, false)
	out.until(t, 30*time.Second, countsDone(keys, 25))
	time.Sleep(200 * time.Millisecond)
	vals := out.until(t, time.Second, func([]string) bool { return true })
	idle := checkCounts(t, vals, keys, 25)
	for _, k := range keys {
		if idle[k] != 1 {
			t.Fatalf("key %s: %d idle outputs", k, idle[k])
		}
	}
	// Every key's timer is armed again (new inputs): it fires once more.
	clock.Advance(2 * time.Minute)
	out.until(t, 30*time.Second, func(vals []string) bool {
		n := 0
		for _, v := range vals {
			if strings.Contains(v, ":idle:25") {
				n++
			}
		}
		return n == len(keys)
	})
	b.Stop(t)
}

func TestTopologyIsChecked(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, _ := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx := context.Background()
	adm.CreateTopic(ctx, 4, 1, nil, topicIn)
	adm.CreateTopic(ctx, 3, 1, nil, topicChangelog) // wrong count, not compacted
	cfg := config(c.ListenAddrs(), newFakeClock(), t)
	r, err := keyed.NewRunner[counter.State](cfg, counter.Handler{Out: topicOut})
	if err != nil {
		t.Fatal(err)
	}
	err = r.Run(ctx)
	if !errors.Is(err, kafkatopics.ErrLayout) {
		t.Fatalf("Run: %v", err)
	}
	for _, want := range []string{"topic out is missing", "not co-partitioned", "not compacted"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}
