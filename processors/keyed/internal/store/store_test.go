package store_test

import (
	"testing"
	"time"

	"github.com/ivms/ams/processors/keyed"
	"github.com/ivms/ams/processors/keyed/internal/counter"
	"github.com/ivms/ams/processors/keyed/internal/store"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestRollbackRestoresStatesAndTimers(t *testing.T) {
	h := counter.Handler{Out: "out", IdleAfter: time.Minute}
	s := store.New[counter.State, keyed.Input, keyed.Output](h)
	in := keyed.Input{Value: []byte("x")}

	s.Begin()
	s.Process(t0, "a", in)
	s.Process(t0, "b", in)
	s.Commit()
	a1 := s.Get("a")

	s.Begin()
	s.Process(t0.Add(time.Second), "a", in)
	s.Process(t0.Add(time.Second), "a", in)
	s.Process(t0.Add(time.Second), "c", in)
	s.Process(t0.Add(time.Second), "b", keyed.Input{}) // delete
	fired, err := s.Fire(t0.Add(2*time.Minute), t0.Add(2*time.Minute), 10, func(string, []keyed.Output) {})
	if err != nil || fired != 2 { // a and c (b is gone)
		t.Fatalf("fired %d, %v", fired, err)
	}
	ch := s.Changes()
	if len(ch) != 3 || ch[0].Key != "a" || ch[0].State.Count != 3 || !ch[0].State.Idle || ch[1].Key != "c" || ch[2].Key != "b" || ch[2].State != nil {
		t.Fatalf("changes: %+v", ch)
	}
	s.Rollback()
	if s.Get("a") != a1 || s.Get("b") == nil || s.Get("c") != nil || s.Len() != 2 {
		t.Fatalf("rollback: a=%p (want %p) b=%v c=%v", s.Get("a"), a1, s.Get("b"), s.Get("c"))
	}
	if k, at, ok := s.Peek(); !ok || k != "a" || !at.Equal(t0.Add(time.Minute)) || s.Armed() != 2 {
		t.Fatalf("timers after rollback: %s %v %v armed=%d", k, at, ok, s.Armed())
	}
}

// stuck never moves its deadline: Fire must not loop on it.
type stuck struct{ counter.Handler }

func (stuck) Timer(_ time.Time, _ string, st *counter.State) (*counter.State, []keyed.Output, error) {
	return st, nil, nil
}

func TestStuckTimerIsDisarmed(t *testing.T) {
	s := store.New[counter.State, keyed.Input, keyed.Output](stuck{counter.Handler{IdleAfter: time.Second}})
	s.Process(t0, "a", keyed.Input{Value: []byte("x")})
	s.Commit()
	n, err := s.Fire(t0.Add(time.Hour), t0.Add(time.Hour), 100, func(string, []keyed.Output) {})
	if err != nil || n != 1 || s.Armed() != 0 {
		t.Fatalf("fired %d armed %d err %v", n, s.Armed(), err)
	}
	// A rollback re-arms it (the transaction is redone).
	s.Rollback()
	if s.Armed() != 1 {
		t.Fatalf("armed after rollback: %d", s.Armed())
	}
}

// TestFireUntil: only deadlines up to until fire (the runtime's hold while a
// partition's input is behind); Timer still gets now.
func TestFireUntil(t *testing.T) {
	s := store.New[counter.State, keyed.Input, keyed.Output](counter.Handler{Out: "out", IdleAfter: time.Minute})
	s.Process(t0, "a", keyed.Input{Value: []byte("x")})
	s.Process(t0.Add(time.Minute), "b", keyed.Input{Value: []byte("x")})
	s.Commit()
	now := t0.Add(time.Hour)
	var keys []string
	n, err := s.Fire(now, t0.Add(90*time.Second), 100, func(k string, _ []keyed.Output) { keys = append(keys, k) })
	if err != nil || n != 1 || len(keys) != 1 || keys[0] != "a" {
		t.Fatalf("fired %d %v, %v; want a only", n, keys, err)
	}
	if k, at, ok := s.Peek(); !ok || k != "b" || !at.Equal(t0.Add(2*time.Minute)) {
		t.Fatalf("held timer: %s %v %v", k, at, ok)
	}
	// until after now is capped at now.
	if n, err := s.Fire(t0.Add(time.Minute), now, 100, func(string, []keyed.Output) {}); err != nil || n != 0 {
		t.Fatalf("fired %d, %v; want none before now", n, err)
	}
}
