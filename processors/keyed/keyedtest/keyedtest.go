// Package keyedtest runs a keyed.Handler without a broker, the way the keyed
// runtime does: feed inputs, move a fake clock to fire timers, look at the
// state and the outputs, and move the "partition" (round-trip every state
// through its changelog encoding) to check that nothing is lost on a
// rebalance.
//
// Each Feed and each timer fired by Advance is one committed transaction: the
// tester applies state changes exactly like the runtime (same code), writes
// every changed key's EncodeState to its changelog, and re-arms the key's
// timer from Handler.Deadline.
//
// The tester also checks the Handler contract: a Process or Timer that
// mutates the state it was given (detected by encoding the old state before
// and after the call) is reported as an error, as is any Handler error (the
// runtime stops on one).
//
// A Tester is not safe for concurrent use.
package keyedtest

import (
	"bytes"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/ivms/ams/processors/keyed"
	"github.com/ivms/ams/processors/keyed/internal/store"
)

// Start is the fake clock's default starting time.
var Start = time.Date(2026, time.January, 1, 0, 0, 0, 0, time.UTC)

// Tester drives one Handler over one partition's worth of state.
type Tester[S any] struct {
	h         keyed.Handler[S]
	st        *store.Store[S, keyed.Input, keyed.Output]
	now       time.Time
	tb        testing.TB
	changelog map[string][]byte
	offsets   map[string]int64
}

// Option configures a Tester.
type Option func(*options)

type options struct {
	tb    testing.TB
	start time.Time
}

// WithTB reports errors (Handler errors, contract violations) with
// tb.Fatalf instead of panicking. Call the Tester from the test goroutine.
func WithTB(tb testing.TB) Option { return func(o *options) { o.tb = tb } }

// WithStart sets the fake clock's starting time (default Start).
func WithStart(t time.Time) Option { return func(o *options) { o.start = t } }

// New returns a Tester with no state and the clock at Start.
func New[S any](h keyed.Handler[S], opts ...Option) *Tester[S] {
	o := options{start: Start}
	for _, opt := range opts {
		opt(&o)
	}
	return &Tester[S]{
		h:         h,
		st:        store.New[S, keyed.Input, keyed.Output](h),
		now:       o.start,
		tb:        o.tb,
		changelog: map[string][]byte{},
		offsets:   map[string]int64{},
	}
}

// Now is the fake clock.
func (t *Tester[S]) Now() time.Time { return t.now }

// State returns key's state, nil when it has none. Do not modify it.
func (t *Tester[S]) State(key string) *S { return t.st.Get(key) }

// Keys lists every key with state, sorted.
func (t *Tester[S]) Keys() []string {
	var ks []string
	t.st.Keys(func(k string, _ *S) { ks = append(ks, k) })
	sort.Strings(ks)
	return ks
}

// Changelog returns the latest changelog value of key as the runtime would
// have written it (nil when the key has none or was deleted).
func (t *Tester[S]) Changelog(key string) []byte { return t.changelog[key] }

// Deadline returns key's armed timer, if any.
func (t *Tester[S]) Deadline(key string) (time.Time, bool) {
	s := t.st.Get(key)
	if s == nil {
		return time.Time{}, false
	}
	return t.h.Deadline(s)
}

// Feed hands one input to Handler.Process at Now and returns its outputs.
// A zero in.Timestamp is set to Now; a zero in.Offset is set to the next
// offset of in.Topic (so records fed in order get increasing offsets).
// Due timers are not fired: call Advance(0) for that.
func (t *Tester[S]) Feed(in keyed.Input) []keyed.Output {
	out, err := t.FeedErr(in)
	t.check(err)
	return out
}

// FeedErr is Feed returning the error instead of failing the test. On error
// the state is left as it was.
func (t *Tester[S]) FeedErr(in keyed.Input) ([]keyed.Output, error) {
	if in.Timestamp.IsZero() {
		in.Timestamp = t.now
	}
	if in.Offset == 0 {
		in.Offset = t.offsets[in.Topic]
	}
	if in.Offset >= t.offsets[in.Topic] {
		t.offsets[in.Topic] = in.Offset + 1
	}
	t.st.Begin()
	before, err := t.encode(in.Key)
	if err != nil {
		return nil, err
	}
	out, err := t.st.Process(t.now, in.Key, in)
	if err == nil {
		err = t.unmutated(in.Key, before)
	}
	if err == nil {
		err = t.commit()
	}
	if err != nil {
		t.st.Rollback()
		return nil, err
	}
	return out, nil
}

// Advance moves the clock forward by d, firing every timer that falls due on
// the way, each at its own deadline (so a timer that sets a later deadline
// within d fires again), and returns their outputs in firing order. Each
// fired timer is one transaction. Advance(0) fires timers already due.
func (t *Tester[S]) Advance(d time.Duration) []keyed.Output {
	out, err := t.AdvanceErr(d)
	t.check(err)
	return out
}

// AdvanceErr is Advance returning the error instead of failing the test. On
// error the clock stops at the failing timer's deadline, with the outputs
// of the timers fired before it.
func (t *Tester[S]) AdvanceErr(d time.Duration) ([]keyed.Output, error) {
	if d < 0 {
		return nil, fmt.Errorf("keyedtest: Advance(%v): the clock does not go back", d)
	}
	end := t.now.Add(d)
	var all []keyed.Output
	for {
		_, at, ok := t.st.Peek()
		if !ok || at.After(end) {
			break
		}
		if at.After(t.now) {
			t.now = at
		}
		out, err := t.fireOne()
		all = append(all, out...)
		if err != nil {
			return all, err
		}
	}
	t.now = end
	return all, nil
}

// fireOne fires the earliest due timer in a transaction of its own.
func (t *Tester[S]) fireOne() ([]keyed.Output, error) {
	t.st.Begin()
	key, _, _ := t.st.Peek()
	before, err := t.encode(key)
	if err != nil {
		return nil, err
	}
	var out []keyed.Output
	_, err = t.st.Fire(t.now, t.now, 1, func(_ string, o []keyed.Output) { out = append(out, o...) })
	if err == nil {
		err = t.unmutated(key, before)
	}
	if err == nil {
		err = t.commit()
	}
	if err != nil {
		t.st.Rollback()
		return nil, err
	}
	return out, nil
}

// Put sets key's state directly (nil deletes it), as if restored from the
// changelog, and arms its timer.
func (t *Tester[S]) Put(key string, state *S) {
	var v []byte
	if state != nil {
		var err error
		if v, err = t.h.EncodeState(key, state); err != nil {
			t.check(fmt.Errorf("keyedtest: encode state of key %q: %w", key, err))
			return
		}
	}
	t.check(t.load(key, v))
}

// Restore simulates a partition move: it drops every state and timer and
// rebuilds them from the changelog (EncodeState of every committed change,
// decoded again with DecodeState), the way the next owner of the partition
// would.
func (t *Tester[S]) Restore() {
	t.check(t.RestoreErr())
}

// RestoreErr is Restore returning the error instead of failing the test.
func (t *Tester[S]) RestoreErr() error {
	t.st = store.New[S, keyed.Input, keyed.Output](t.h)
	keys := make([]string, 0, len(t.changelog))
	for k := range t.changelog {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := t.st.Load(k, t.changelog[k]); err != nil {
			return fmt.Errorf("keyedtest: restore: %w", err)
		}
	}
	return nil
}

func (t *Tester[S]) load(key string, v []byte) error {
	if err := t.st.Load(key, v); err != nil {
		return fmt.Errorf("keyedtest: %w", err)
	}
	if v == nil {
		delete(t.changelog, key)
	} else {
		t.changelog[key] = v
	}
	return nil
}

// commit writes the transaction's changes to the changelog, as the runtime
// does, and ends the transaction.
func (t *Tester[S]) commit() error {
	changes := t.st.Changes()
	vals := make([][]byte, len(changes))
	for i, c := range changes {
		if c.State == nil {
			continue
		}
		v, err := t.h.EncodeState(c.Key, c.State)
		if err != nil {
			return fmt.Errorf("keyedtest: encode state of key %q: %w", c.Key, err)
		}
		vals[i] = v
	}
	for i, c := range changes {
		if vals[i] == nil {
			delete(t.changelog, c.Key)
		} else {
			t.changelog[c.Key] = vals[i]
		}
	}
	t.st.Commit()
	return nil
}

func (t *Tester[S]) encode(key string) ([]byte, error) {
	s := t.st.Get(key)
	if s == nil {
		return nil, nil
	}
	b, err := t.h.EncodeState(key, s)
	if err != nil {
		return nil, fmt.Errorf("keyedtest: encode state of key %q: %w", key, err)
	}
	return b, nil
}

// unmutated checks that the state key had before the call (encoded as before)
// still encodes the same: Handlers must return a new state, never modify the
// one they are given.
func (t *Tester[S]) unmutated(key string, before []byte) error {
	if before == nil {
		return nil
	}
	old, touched := t.st.Previous(key)
	if !touched {
		old = t.st.Get(key) // returned unchanged: it must still encode the same
	}
	if old == nil {
		return nil
	}
	after, err := t.h.EncodeState(key, old)
	if err != nil {
		return fmt.Errorf("keyedtest: encode state of key %q: %w", key, err)
	}
	if !bytes.Equal(before, after) {
		return fmt.Errorf("keyedtest: handler modified the state of key %q it was given (handlers must return a new state)", key)
	}
	return nil
}

func (t *Tester[S]) check(err error) {
	if err == nil {
		return
	}
	if t.tb != nil {
		t.tb.Helper()
		t.tb.Fatalf("%v", err)
		return
	}
	panic(err)
}
