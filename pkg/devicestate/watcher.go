package devicestate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	goredis "github.com/redis/go-redis/v9"

	"github.com/ivms/ams/processors/cmdlife"
)

// ErrWatcherClosed is returned by Watch after Close.
var ErrWatcherClosed = errors.New("devicestate: command watcher closed")

// CommandWatcher wakes the waiters of commands over ONE Redis pattern
// subscription for the whole process (PSUBSCRIBE of the pattern of every
// Keys.Events channel), instead of a subscription, hence a new connection
// with its TLS handshake and AUTH, per waiter.
//
// Guarantees:
//   - When NewCommandWatcher returns, Redis has confirmed the pattern
//     subscription; Watch only registers in a local map (no round trip). So
//     an event the Redis sink publishes after Watch returns wakes the waiter,
//     as long as the subscription's connection stays up.
//   - When the connection is lost, go-redis reconnects and subscribes again;
//     events published in the gap are lost, so on every confirmation after
//     the first the watcher wakes EVERY waiter. A waiter that reads the state
//     after Watch returns and again after every wake-up therefore never misses
//     a change.
//   - A wake is a hint, not a count: each wake channel has a buffer of one and
//     sends never block, so several events may coalesce into one wake-up.
//     Every waiter of a command (there may be several) is woken.
//   - A waiter registered with WatchFinal is woken only by an event whose
//     state is final (or whose payload cannot be read as an event, to be
//     safe) and at resubscriptions: a caller that only wants the outcome
//     (the API's ?wait=) does not read the command again at every interim
//     state. The Redis sink publishes an event after applying it, so the
//     state read after such a wake-up is final.
//
// Waiters are keyed by the exact channel name (Keys.Events), so a message is
// routed without unescaping the id, and a channel the pattern matches that is
// not an events channel of these keys wakes nobody.
type CommandWatcher struct {
	keys Keys
	ps   *goredis.PubSub
	done chan struct{} // closed when the dispatch loop has ended

	mu      sync.Mutex
	closed  bool
	waiters map[string]map[chan struct{}]bool // channel name -> wake channels -> final only
}

// EventsPattern returns the PSUBSCRIBE pattern matching every Keys.Events
// channel under keys.Prefix: the prefix with its glob characters escaped,
// then "cmd:*:events".
func EventsPattern(keys Keys) string {
	var b strings.Builder
	for _, r := range keys.Prefix {
		switch r {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteString("cmd:*:events")
	return b.String()
}

// watcherChannelSize buffers go-redis's message channel: the pattern carries
// every command event of the prefix, not only the awaited ones.
const watcherChannelSize = 4096

// NewCommandWatcher subscribes to EventsPattern(keys) and returns once Redis
// has confirmed the subscription (or ctx is done). Close it when done.
func NewCommandWatcher(ctx context.Context, rdb goredis.UniversalClient, keys Keys) (*CommandWatcher, error) {
	pattern := EventsPattern(keys)
	ps := rdb.PSubscribe(ctx, pattern)
	if err := confirm(ctx, ps); err != nil {
		ps.Close()
		return nil, fmt.Errorf("redis: psubscribe %s: %w", pattern, err)
	}
	w := newWatcher(keys)
	w.ps = ps
	go w.dispatch(ps.ChannelWithSubscriptions(goredis.WithChannelSize(watcherChannelSize)))
	return w, nil
}

// confirm reads the subscription confirmation.
func confirm(ctx context.Context, ps *goredis.PubSub) error {
	msg, err := ps.Receive(ctx)
	if err != nil {
		return err
	}
	if _, ok := msg.(*goredis.Subscription); !ok {
		return fmt.Errorf("unexpected reply %T before the subscription confirmation", msg)
	}
	return nil
}

func newWatcher(keys Keys) *CommandWatcher {
	return &CommandWatcher{keys: keys, done: make(chan struct{}), waiters: map[string]map[chan struct{}]bool{}}
}

// dispatch routes the subscription's messages until msgs is closed (by
// go-redis, after Close). The first confirmation was read before msgs was
// created, so every *goredis.Subscription here is a resubscription.
func (w *CommandWatcher) dispatch(msgs <-chan any) {
	defer close(w.done)
	for m := range msgs {
		switch m := m.(type) {
		case *goredis.Message:
			w.wake(m.Channel, m.Payload)
		case *goredis.Subscription:
			w.wakeAll()
		}
	}
}

// wake notifies the waiters of channel. The pattern carries every command
// event of the prefix, most of them awaited by nobody, so the payload is
// parsed only when a final-only waiter needs its state, once.
func (w *CommandWatcher) wake(channel, payload string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	final, parsed := false, false
	for c, finalOnly := range w.waiters[channel] {
		if finalOnly && !parsed {
			final, parsed = eventIsFinal(payload), true
		}
		if final || !finalOnly {
			notify(c)
		}
	}
}

// eventIsFinal reports whether a published command event (CommandEvent
// JSON) has a final state; a payload that is not such an event counts as
// final, so that no waiter can sleep through it.
func eventIsFinal(payload string) bool {
	var ev struct {
		State string `json:"state"`
	}
	if err := json.Unmarshal([]byte(payload), &ev); err != nil || ev.State == "" {
		return true
	}
	return cmdlife.Final(ev.State)
}

func (w *CommandWatcher) wakeAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, set := range w.waiters {
		for c := range set {
			notify(c)
		}
	}
}

func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Watch registers a waiter of command id: wake receives a value after each
// event of the command the Redis sink publishes from now on (coalesced) and
// after every resubscription. Read the command's state after Watch returns
// and after every wake-up. stop unregisters the waiter; it may be called more
// than once. Watch makes no Redis round trip.
func (w *CommandWatcher) Watch(id string) (wake <-chan struct{}, stop func(), err error) {
	return w.watch(id, false)
}

// WatchFinal is Watch for a waiter that only wants the command's outcome:
// wake receives a value after an event with a final state (and after every
// resubscription), not after interim ones. Read the state after WatchFinal
// returns and after every wake-up, as with Watch.
func (w *CommandWatcher) WatchFinal(id string) (wake <-chan struct{}, stop func(), err error) {
	return w.watch(id, true)
}

func (w *CommandWatcher) watch(id string, finalOnly bool) (wake <-chan struct{}, stop func(), err error) {
	ch := w.keys.Events(id)
	c := make(chan struct{}, 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, nil, ErrWatcherClosed
	}
	set := w.waiters[ch]
	if set == nil {
		set = map[chan struct{}]bool{}
		w.waiters[ch] = set
	}
	set[c] = finalOnly
	var once sync.Once
	return c, func() { once.Do(func() { w.unregister(ch, c) }) }, nil
}

func (w *CommandWatcher) unregister(ch string, c chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	set := w.waiters[ch]
	delete(set, c)
	if len(set) == 0 {
		delete(w.waiters, ch)
	}
}

// Waiters returns the number of registered waiters.
func (w *CommandWatcher) Waiters() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, set := range w.waiters {
		n += len(set)
	}
	return n
}

// Close ends the subscription and waits for the dispatch loop to end; Watch
// fails afterwards. Waiters still registered are not woken again.
func (w *CommandWatcher) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.mu.Unlock()
	var err error
	if w.ps != nil {
		if err = w.ps.Close(); err != nil {
			err = fmt.Errorf("redis: close command watcher: %w", err)
		}
	}
	<-w.done
	return err
}
