package keyed_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/processors/keyed"
	"github.com/ivms/ams/processors/keyed/internal/counter"
)

// rewrapHandler is the counter whose states padded "old" are stale (as a
// state sealed under a previous KEK): due at once, and its Timer rewrites
// them, the way the device processor re-seals.
type rewrapHandler struct{ counter.Handler }

func (h rewrapHandler) Stale(st *counter.State) bool { return st != nil && st.Pad == "old" }

func (h rewrapHandler) Deadline(st *counter.State) (time.Time, bool) {
	if h.Stale(st) {
		return time.Unix(0, 0), true
	}
	return h.Handler.Deadline(st)
}

func (h rewrapHandler) Timer(now time.Time, key string, st *counter.State) (*counter.State, []keyed.Output, error) {
	if h.Stale(st) {
		n := *st
		n.Pad = ""
		return &n, nil, nil
	}
	return h.Handler.Timer(now, key, st)
}

// writeChangelog writes key/value records to the changelog, each in the
// partition of its key (as the inputs are partitioned).
func writeChangelog(t *testing.T, seeds []string, kv ...string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := 0; i+1 < len(kv); i += 2 {
		r := &kgo.Record{Topic: topicChangelog, Key: []byte(kv[i]), Value: []byte(kv[i+1])}
		if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

func startWith[H keyed.Handler[counter.State]](t *testing.T, cfg keyed.Config, h H) *instance {
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

// TestStaleStatesRewritten: states the Handler reports stale are counted
// per partition (ams_keyed_state_stale_keys) and rewritten by its timers
// after the restore, until the gauge is 0; the changelog then holds a
// rewritten record for every key, and the counts carry on.
func TestStaleStatesRewritten(t *testing.T) {
	c := newCluster(t, 2)
	seeds := c.ListenAddrs()
	keys := keysN("k", 30)
	for _, k := range keys {
		writeChangelog(t, seeds, k, `{"n":7,"last":"2026-01-01T00:00:00Z","pad":"old"}`)
	}
	cfg := config(seeds, newFakeClock(), t)
	cfg.MaxRecords = 4 // several transactions of timers per partition
	in := startWith(t, cfg, rewrapHandler{counter.Handler{Out: topicOut}})
	in.waitReady(t)
	waitMetric(t, in.reg, "ams_keyed_timers_fired_total", func(v float64) bool { return v >= float64(len(keys)) })
	waitMetric(t, in.reg, "ams_keyed_state_stale_keys", func(v float64) bool { return v == 0 })
	if n := metric(t, in.reg, "ams_keyed_changelog_records_total"); n < float64(len(keys)) {
		t.Fatalf("%v changelog records written, want one per key (%d)", n, len(keys))
	}
	produceInputs(t, seeds, keys, 1, false)
	out := newLogReader(t, seeds, topicOut)
	vals := out.until(t, 30*time.Second, func(vals []string) bool { return len(vals) >= len(keys) })
	for _, v := range vals {
		if !strings.HasSuffix(v, ":8") {
			t.Fatalf("output %q: the count did not carry on from 7", v)
		}
	}
	in.Stop(t)
	states := changelogState(t, seeds)
	for _, k := range keys {
		if s := states[k]; s == nil || s.Pad != "" || s.Count != 8 {
			t.Fatalf("changelog state of %s: %+v", k, s)
		}
	}
}

// TestRestoreUndecodable: an undecodable changelog record that a later
// record of its key supersedes never stops a restore; one that is its
// key's latest stops the partition (the runner returns the error) unless
// SkipCorruptState, which keeps the key's last good state and counts the
// skip.
func TestRestoreUndecodable(t *testing.T) {
	c := newCluster(t, 1)
	seeds := c.ListenAddrs()
	good := func(n string) string { return `{"n":` + n + `,"last":"2026-01-01T00:00:00Z"}` }
	writeChangelog(t, seeds,
		"superseded", "not json", "superseded", good("5"),
		"corrupt", good("3"), "corrupt", "not json",
		"lost", "not json")

	cfg := config(seeds, newFakeClock(), t)
	strict := startWith(t, cfg, counter.Handler{Out: topicOut})
	select {
	case <-strict.done:
		if strict.err == nil || !strings.Contains(strict.err.Error(), "the latest record of 2 keys does not decode") {
			t.Fatalf("runner ended with %v, want the restore refused for 2 keys", strict.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the runner restored a changelog whose latest records do not decode")
	}

	cfg.SkipCorruptState = true
	in := startWith(t, cfg, counter.Handler{Out: topicOut})
	in.waitReady(t)
	if n := metric(t, in.reg, "ams_keyed_restore_skipped_total"); n != 2 {
		t.Fatalf("skipped %v records, want 2 (corrupt, lost)", n)
	}
	keys := []string{"superseded", "corrupt", "lost"}
	produceInputs(t, seeds, keys, 1, false)
	out := newLogReader(t, seeds, topicOut)
	vals := out.until(t, 30*time.Second, func(vals []string) bool { return len(vals) >= len(keys) })
	want := map[string]bool{"superseded:6": true, "corrupt:4": true, "lost:1": true}
	for _, v := range vals {
		if !want[v] {
			t.Errorf("output %q, want one of %v (last good state kept, none: started over)", v, want)
		}
	}
	in.Stop(t)
	if errors.Is(in.err, context.Canceled) {
		t.Fatal(in.err)
	}
}
