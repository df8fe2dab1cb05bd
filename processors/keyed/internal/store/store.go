// Package store is one partition's keyed state and timers, shared by the
// keyed runtime and its broker-less tester so both apply a Handler the same
// way.
//
// A Store is not safe for concurrent use: the runtime gives each partition's
// Store to exactly one goroutine.
//
// Changes are journaled per transaction: Begin starts a journal, Process and
// Fire record each touched key's previous state, Changes lists the keys whose
// state differs from the start of the transaction, and Commit or Rollback
// ends it. Rollback puts every touched key back as it was, timers included.
package store

import (
	"container/heap"
	"fmt"
	"time"
)

// Handler is keyed.Handler with the input and output types as parameters, so
// that this package need not import keyed (keyed.Handler[S] satisfies
// Handler[S, keyed.Input, keyed.Output]).
type Handler[S, In, Out any] interface {
	Process(now time.Time, key string, state *S, in In) (*S, []Out, error)
	Timer(now time.Time, key string, state *S) (*S, []Out, error)
	Deadline(state *S) (time.Time, bool)
	EncodeState(key string, state *S) ([]byte, error)
	DecodeState(key string, value []byte) (*S, error)
}

// Change is a key's state at the end of a transaction; State is nil when the
// key was deleted.
type Change[S any] struct {
	Key   string
	State *S
}

// Store holds the states of one partition and a min-heap of their deadlines.
type Store[S, In, Out any] struct {
	h      Handler[S, In, Out]
	states map[string]*S
	timers timerHeap
	// armed indexes timers by key; a key has at most one timer.
	armed map[string]*timer

	// Journal of the open transaction: the state each touched key had when
	// the transaction began (nil: absent), and the order of first touch.
	prev    map[string]*S
	touched []string
}

// New returns an empty store.
func New[S, In, Out any](h Handler[S, In, Out]) *Store[S, In, Out] {
	return &Store[S, In, Out]{
		h:      h,
		states: map[string]*S{},
		armed:  map[string]*timer{},
		prev:   map[string]*S{},
	}
}

// Len is the number of keys with state.
func (s *Store[S, In, Out]) Len() int { return len(s.states) }

// Get returns key's state, nil when it has none.
func (s *Store[S, In, Out]) Get(key string) *S { return s.states[key] }

// Keys calls fn for every key with state, in no particular order.
func (s *Store[S, In, Out]) Keys(fn func(key string, state *S)) {
	for k, v := range s.states {
		fn(k, v)
	}
}

// Load applies one changelog record outside any transaction: value nil is a
// tombstone. The key's timer is re-armed from the decoded state.
func (s *Store[S, In, Out]) Load(key string, value []byte) error {
	if value == nil {
		s.set(key, nil)
		s.disarm(key)
		return nil
	}
	st, err := s.h.DecodeState(key, value)
	if err != nil {
		return fmt.Errorf("decode state of key %q: %w", key, err)
	}
	s.set(key, st)
	s.arm(key, st, time.Time{}, false)
	return nil
}

// Process hands one input to the Handler and applies the state it returns.
// On error nothing is applied.
func (s *Store[S, In, Out]) Process(now time.Time, key string, in In) ([]Out, error) {
	cur := s.states[key]
	next, out, err := s.h.Process(now, key, cur, in)
	if err != nil {
		return nil, fmt.Errorf("process key %q: %w", key, err)
	}
	if next != cur {
		s.touch(key, cur)
		s.set(key, next)
		s.arm(key, next, now, false)
	}
	return out, nil
}

// Peek returns the earliest armed timer: the next one Fire would fire.
func (s *Store[S, In, Out]) Peek() (key string, at time.Time, ok bool) {
	if len(s.timers) == 0 {
		return "", time.Time{}, false
	}
	return s.timers[0].key, s.timers[0].at, true
}

// Previous returns the state key had when the open transaction began, if
// the transaction touched it.
func (s *Store[S, In, Out]) Previous(key string) (state *S, touched bool) {
	state, touched = s.prev[key]
	return state, touched
}

// Fire calls Handler.Timer (with now) for up to max keys whose deadline is
// not after until (at most now), earliest first, passing each one's outputs
// to emit. A fired timer is
// re-armed from the key's new state only if its new deadline is after now:
// a Timer that leaves the deadline where it was (or earlier) disarms the
// key until its state next changes, instead of firing in a loop.
func (s *Store[S, In, Out]) Fire(now, until time.Time, max int, emit func(key string, out []Out)) (fired int, err error) {
	if until.After(now) {
		until = now
	}
	for fired < max && len(s.timers) > 0 && !s.timers[0].at.After(until) {
		t := heap.Pop(&s.timers).(*timer)
		delete(s.armed, t.key)
		cur := s.states[t.key]
		s.touch(t.key, cur)
		// The touch above records that the timer was armed: a rollback
		// re-arms it from the restored state.
		next, out, err := s.h.Timer(now, t.key, cur)
		if err != nil {
			return fired, fmt.Errorf("timer of key %q: %w", t.key, err)
		}
		fired++
		if next != cur {
			s.set(t.key, next)
		}
		s.arm(t.key, next, now, true)
		if len(out) > 0 {
			emit(t.key, out)
		}
	}
	return fired, nil
}

// Begin starts a transaction journal, discarding any previous one.
func (s *Store[S, In, Out]) Begin() {
	clear(s.prev)
	s.touched = s.touched[:0]
}

// Changes lists, in order of first touch, every key whose state differs from
// the one it had at Begin: its latest state, nil when deleted.
func (s *Store[S, In, Out]) Changes() []Change[S] {
	var out []Change[S]
	for _, k := range s.touched {
		if cur := s.states[k]; cur != s.prev[k] {
			out = append(out, Change[S]{Key: k, State: cur})
		}
	}
	return out
}

// Commit ends the transaction, keeping every change.
func (s *Store[S, In, Out]) Commit() { s.Begin() }

// Rollback ends the transaction, restoring every touched key's state and
// timer as they were at Begin.
func (s *Store[S, In, Out]) Rollback() {
	for _, k := range s.touched {
		p := s.prev[k]
		s.set(k, p)
		s.arm(k, p, time.Time{}, false)
	}
	s.Begin()
}

func (s *Store[S, In, Out]) touch(key string, cur *S) {
	if _, ok := s.prev[key]; ok {
		return
	}
	s.prev[key] = cur
	s.touched = append(s.touched, key)
}

func (s *Store[S, In, Out]) set(key string, st *S) {
	if st == nil {
		delete(s.states, key)
	} else {
		s.states[key] = st
	}
}

// arm sets key's timer from st's deadline. afterTimer applies the rule of
// Fire: a deadline not after now is not re-armed.
func (s *Store[S, In, Out]) arm(key string, st *S, now time.Time, afterTimer bool) {
	if st == nil {
		s.disarm(key)
		return
	}
	at, ok := s.h.Deadline(st)
	if !ok || (afterTimer && !at.After(now)) {
		s.disarm(key)
		return
	}
	if t, ok := s.armed[key]; ok {
		t.at = at
		heap.Fix(&s.timers, t.index)
		return
	}
	t := &timer{at: at, key: key}
	heap.Push(&s.timers, t)
	s.armed[key] = t
}

func (s *Store[S, In, Out]) disarm(key string) {
	if t, ok := s.armed[key]; ok {
		heap.Remove(&s.timers, t.index)
		delete(s.armed, key)
	}
}

// Armed is the number of keys with a timer.
func (s *Store[S, In, Out]) Armed() int { return len(s.timers) }

type timer struct {
	at    time.Time
	key   string
	index int
}

// timerHeap is a min-heap of timers by deadline, then key (so that timers
// due at the same instant fire in a deterministic order).
type timerHeap []*timer

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].key < h[j].key
}
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *timerHeap) Push(x any) {
	t := x.(*timer)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.index = -1
	return t
}
