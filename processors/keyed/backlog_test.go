package keyed_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/processors/keyed/internal/counter"
)

// TestBacklogHoldsTimers is issue 12 §4's presence flap: the processor is
// down for longer than the idle timeout while heartbeats queue up. On
// restore every stored deadline is due by the Clock, but the timers of keys
// whose input waits in the backlog must not fire: a timer fires only once
// its partition's input is caught up or has been processed past the
// deadline. Key "a" sends every 30s (timeout 1 min) and must never go idle;
// "b" went silent and goes idle once, as soon as the backlog shows a minute
// without it (while the backlog is still being worked off, in batches of
// two). The old runtime, firing by the Clock alone, sent "a:idle:1" (and
// every "z" key's) at the restore.
func TestBacklogHoldsTimers(t *testing.T) {
	c := newCluster(t, 1)
	seeds := c.ListenAddrs()
	clock := newFakeClock()
	t0 := clock.Now()
	h := counter.Handler{Out: topicOut, IdleAfter: time.Minute}
	cfg := config(seeds, clock, t)
	cfg.MaxRecords = 2

	produceAt := func(recs ...*kgo.Record) {
		t.Helper()
		cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.DefaultProduceTopic(topicIn))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	rec := func(key string, at time.Duration) *kgo.Record {
		return &kgo.Record{Key: []byte(key), Value: []byte("x"), Timestamp: t0.Add(at)}
	}

	in := start(t, cfg, h)
	in.waitReady(t)
	produceAt(rec("a", 0), rec("b", 0), rec("z", 0))
	out := newLogReader(t, seeds, topicOut)
	out.until(t, 30*time.Second, countsDone([]string{"a", "b", "z"}, 1))
	in.Stop(t)

	// Five minutes down; a and z keep sending, b is silent.
	clock.Advance(5 * time.Minute)
	var backlog []*kgo.Record
	for at := 10 * time.Second; at <= 5*time.Minute; at += 10 * time.Second {
		backlog = append(backlog, rec("z", at))
		if at%(30*time.Second) == 0 {
			backlog = append(backlog, rec("a", at))
		}
	}
	produceAt(backlog...)

	in = start(t, cfg, h)
	out.until(t, 30*time.Second, func(vals []string) bool {
		return countsDone([]string{"a", "z"}, 11)(vals) && countsDone([]string{"z"}, 31)(vals) &&
			slices.Contains(vals, "b:idle:1")
	})
	time.Sleep(300 * time.Millisecond) // an early firing that raced would show now
	vals := out.until(t, time.Second, func([]string) bool { return true })
	in.Stop(t)

	var idle []string
	for _, v := range vals {
		if strings.Contains(v, ":idle:") {
			idle = append(idle, v)
		}
	}
	if !slices.Equal(idle, []string{"b:idle:1"}) {
		t.Fatalf("idle outputs %v, want only b:idle:1 (outputs %v)", idle, vals)
	}
	// b's timer fired on the strength of the backlog, not of the Clock:
	// after a's and z's records of the first minute, before the last ones.
	at := slices.Index(vals, "b:idle:1")
	if before := slices.Index(vals, "z:7"); before < 0 || at < before {
		t.Fatalf("b went idle before the backlog passed its deadline: %v", vals)
	}
	if last := slices.Index(vals, "z:31"); at > last {
		t.Fatalf("b went idle only after the backlog was worked off: %v", vals)
	}
}
