package keyedtest_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ivms/ams/processors/keyed"
	"github.com/ivms/ams/processors/keyed/internal/counter"
	"github.com/ivms/ams/processors/keyed/keyedtest"
)

func values(out []keyed.Output) string {
	var s []string
	for _, o := range out {
		s = append(s, string(o.Value))
	}
	return strings.Join(s, ",")
}

func in(key, v string) keyed.Input {
	var b []byte
	if v != "" {
		b = []byte(v)
	}
	return keyed.Input{Topic: "in", Key: key, Value: b}
}

func TestFeedAdvanceRestore(t *testing.T) {
	h := counter.Handler{Out: "out", IdleAfter: time.Minute}
	tt := keyedtest.New[counter.State](h, keyedtest.WithTB(t))

	if got := values(tt.Feed(in("a", "x"))); got != "a:1" {
		t.Fatalf("feed 1: %s", got)
	}
	tt.Advance(30 * time.Second)
	if got := values(tt.Feed(in("a", "x"))); got != "a:2" {
		t.Fatalf("feed 2: %s", got)
	}
	tt.Feed(in("b", "x"))
	if at, ok := tt.Deadline("a"); !ok || !at.Equal(keyedtest.Start.Add(90*time.Second)) {
		t.Fatalf("deadline of a: %v %v", at, ok)
	}
	if got := values(tt.Advance(59 * time.Second)); got != "" {
		t.Fatalf("early timers: %s", got)
	}
	// Both keys fall due at the same instant: key order.
	if got := values(tt.Advance(time.Second)); got != "a:idle:2,b:idle:1" {
		t.Fatalf("timers: %s", got)
	}
	if got := values(tt.Advance(time.Hour)); got != "" {
		t.Fatalf("timer fired twice: %s", got)
	}

	tt.Feed(in("c", "x"))
	tt.Restore()
	if s := tt.State("a"); s == nil || s.Count != 2 || !s.Idle {
		t.Fatalf("state of a after restore: %+v", s)
	}
	// c's timer is re-armed from its restored state.
	if got := values(tt.Advance(time.Minute)); got != "c:idle:1" {
		t.Fatalf("timer after restore: %s", got)
	}
	if got := values(tt.Feed(in("a", ""))); got != "a:deleted" {
		t.Fatalf("tombstone: %s", got)
	}
	tt.Restore()
	if got := strings.Join(tt.Keys(), ","); got != "b,c" {
		t.Fatalf("keys after delete and restore: %s", got)
	}
}

type mutating struct{ counter.Handler }

func (m mutating) Process(now time.Time, key string, st *counter.State, in keyed.Input) (*counter.State, []keyed.Output, error) {
	if st != nil {
		st.Count += 100 // the bug the tester must catch
		return st, nil, nil
	}
	return m.Handler.Process(now, key, st, in)
}

type failing struct{ counter.Handler }

var errBoom = errors.New("boom")

func (f failing) Process(time.Time, string, *counter.State, keyed.Input) (*counter.State, []keyed.Output, error) {
	return nil, nil, errBoom
}

func TestContractViolations(t *testing.T) {
	tt := keyedtest.New[counter.State](mutating{counter.Handler{Out: "out"}})
	if _, err := tt.FeedErr(in("a", "x")); err != nil {
		t.Fatal(err)
	}
	if _, err := tt.FeedErr(in("a", "x")); err == nil || !strings.Contains(err.Error(), "modified the state") {
		t.Fatalf("mutation not caught: %v", err)
	}

	tf := keyedtest.New[counter.State](failing{counter.Handler{Out: "out"}})
	if _, err := tf.FeedErr(in("a", "x")); !errors.Is(err, errBoom) {
		t.Fatalf("handler error: %v", err)
	}
	defer func() {
		if r := recover(); r == nil {
			t.Fatal("Feed without WithTB did not panic on a handler error")
		}
	}()
	tf.Feed(in("a", "x"))
}
