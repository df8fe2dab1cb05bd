package devicestate

import (
	"errors"
	"testing"

	goredis "github.com/redis/go-redis/v9"
)

func woken(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// syncDispatch sends a message to a sentinel waiter and waits for its wake-up: the
// dispatch loop handles messages in order, so every message sent before has
// been dispatched when it returns.
func syncDispatch(t *testing.T, w *CommandWatcher, msgs chan<- any) {
	t.Helper()
	wake, stop, err := w.Watch("sentinel")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	msgs <- &goredis.Message{Channel: w.keys.Events("sentinel")}
	<-wake
}

// TestWatcherDispatch: the dispatch loop on a fake message stream wakes the
// waiters of the message's exact channel (all of them, not others), wakes
// every waiter at a resubscription, coalesces wake-ups, and forgets stopped
// waiters; Watch fails after Close.
func TestWatcherDispatch(t *testing.T) {
	w := newWatcher(Keys{Prefix: "p:"})
	msgs := make(chan any)
	go w.dispatch(msgs)

	a1, stopA1, _ := w.Watch("a:b")
	a2, stopA2, _ := w.Watch("a:b")
	b, stopB, _ := w.Watch("a%3Ab") // what "a:b" would be without escaping
	if n := w.Waiters(); n != 3 {
		t.Fatalf("waiters %d, want 3", n)
	}

	msgs <- &goredis.Message{Channel: "p:cmd:a%3Ab:events"} // Events("a:b")
	msgs <- &goredis.Message{Channel: "p:cmd:a%3Ab:events"} // coalesces
	msgs <- &goredis.Message{Channel: "p:cmd:a:events"}     // nobody's
	syncDispatch(t, w, msgs)
	if !woken(a1) || !woken(a2) {
		t.Fatal("a waiter of a:b was not woken")
	}
	if woken(a1) || woken(a2) {
		t.Fatal("two events gave two wake-ups (want one, coalesced)")
	}
	if woken(b) {
		t.Fatal("the waiter of a%3Ab was woken by an event of a:b")
	}

	msgs <- &goredis.Subscription{Kind: "psubscribe", Channel: "p:cmd:*:events", Count: 1}
	syncDispatch(t, w, msgs)
	if !woken(a1) || !woken(a2) || !woken(b) {
		t.Fatal("a resubscription did not wake every waiter")
	}

	stopA1()
	stopA1() // twice is fine
	msgs <- &goredis.Message{Channel: "p:cmd:a%3Ab:events"}
	syncDispatch(t, w, msgs)
	if woken(a1) {
		t.Fatal("a stopped waiter was woken")
	}
	if !woken(a2) {
		t.Fatal("the other waiter of a:b was not woken")
	}
	stopA2()
	stopB()
	if n := w.Waiters(); n != 0 {
		t.Fatalf("waiters %d after stop, want 0", n)
	}

	close(msgs)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.Watch("x"); !errors.Is(err, ErrWatcherClosed) {
		t.Fatalf("Watch after Close: %v", err)
	}
}

func TestEventsPattern(t *testing.T) {
	for prefix, want := range map[string]string{
		"ams:":       "ams:cmd:*:events",
		"":           "cmd:*:events",
		`a*b?[c]\d:`: `a\*b\?\[c\]\\d:cmd:*:events`,
	} {
		if got := EventsPattern(Keys{Prefix: prefix}); got != want {
			t.Errorf("EventsPattern(%q) = %q, want %q", prefix, got, want)
		}
	}
}

// TestWatcherFinalOnly: a WatchFinal waiter sleeps through interim states
// and is woken by a final one, by a payload that is not a command event,
// and by a resubscription; a Watch waiter of the same command is woken by
// every event.
func TestWatcherFinalOnly(t *testing.T) {
	w := newWatcher(Keys{Prefix: "p:"})
	msgs := make(chan any)
	go w.dispatch(msgs)
	final, stopFinal, _ := w.WatchFinal("c1")
	defer stopFinal()
	every, stopEvery, _ := w.Watch("c1")
	defer stopEvery()
	ch := w.keys.Events("c1")

	for _, st := range []string{"ACCEPTED", "QUEUED", "SENT", "DELIVERED"} {
		msgs <- &goredis.Message{Channel: ch, Payload: `{"command_id":"c1","state":"` + st + `","seq":2}`}
		syncDispatch(t, w, msgs)
		if woken(final) {
			t.Fatalf("the final-only waiter was woken by %s", st)
		}
		if !woken(every) {
			t.Fatalf("the every-event waiter was not woken by %s", st)
		}
	}
	for _, payload := range []string{
		`{"command_id":"c1","state":"SUCCEEDED"}`, `{"state":"TIMED_OUT"}`, `{"state":"EXPIRED"}`,
		`{"state":"REJECTED"}`, `{"state":"FAILED"}`, `not json`, `{"no":"state"}`,
	} {
		msgs <- &goredis.Message{Channel: ch, Payload: payload}
		syncDispatch(t, w, msgs)
		if !woken(final) || !woken(every) {
			t.Fatalf("payload %s did not wake both waiters", payload)
		}
	}
	msgs <- &goredis.Subscription{Kind: "psubscribe", Channel: "p:cmd:*:events", Count: 1}
	syncDispatch(t, w, msgs)
	if !woken(final) || !woken(every) {
		t.Fatal("a resubscription did not wake both waiters")
	}
	close(msgs)
}
