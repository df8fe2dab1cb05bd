//go:build integration

package devicestate_test

import (
	"bufio"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/ivms/ams/pkg/devicestate"
	"github.com/ivms/ams/pkg/testkit/testenv"
)

// patience bounds every wait for a wake-up (a failure bound, not a timing
// assertion).
const patience = 20 * time.Second

func redisClient(t *testing.T, name string) *goredis.Client {
	t.Helper()
	opts := testenv.RedisOptions()
	opts.ClientName = name
	rdb := goredis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

func newWatcher(t *testing.T, rdb goredis.UniversalClient, keys devicestate.Keys) *devicestate.CommandWatcher {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	w, err := devicestate.NewCommandWatcher(ctx, rdb, keys)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Error(err)
		}
	})
	return w
}

func watch(t *testing.T, w *devicestate.CommandWatcher, id string) <-chan struct{} {
	t.Helper()
	wake, stop, err := w.Watch(id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return wake
}

func waitWoken(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(patience):
		t.Fatalf("%s: not woken", what)
	}
}

func publish(t *testing.T, rdb goredis.UniversalClient, channel string) {
	t.Helper()
	if err := rdb.Publish(context.Background(), channel, "{}").Err(); err != nil {
		t.Fatal(err)
	}
}

// flush publishes on a sentinel waiter's channel and waits for it: messages
// of one subscription arrive and are dispatched in order, so every publish
// before it has been dispatched when it returns.
func flush(t *testing.T, rdb goredis.UniversalClient, w *devicestate.CommandWatcher, keys devicestate.Keys) {
	t.Helper()
	wake, stop, err := w.Watch("sentinel")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	publish(t, rdb, keys.Events("sentinel"))
	waitWoken(t, wake, "sentinel")
}

func notWoken(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
		t.Fatalf("%s: woken", what)
	default:
	}
}

// TestCommandWatcherWakes: on the stack's Redis, a waiter is woken by a
// publish on its command's events channel and not by another command's;
// both waiters of one command are woken; ids that Escape rewrites (':' and
// '%') are routed to exactly their waiters; a prefix holding glob
// characters still matches (the pattern escapes it).
func TestCommandWatcherWakes(t *testing.T) {
	rdb := redisClient(t, testenv.Unique(t, "watch"))
	for _, prefix := range []string{testenv.Unique(t, "watch") + ":", testenv.Unique(t, "watch") + `[x]*?\:`} {
		keys := devicestate.Keys{Prefix: prefix}
		w := newWatcher(t, rdb, keys)
		a1, a2 := watch(t, w, "A"), watch(t, w, "A")
		b := watch(t, w, "B")
		colon, escaped, pct := watch(t, w, "x:y"), watch(t, w, "x%3Ay"), watch(t, w, "100%")

		publish(t, rdb, keys.Events("A"))
		waitWoken(t, a1, prefix+" A, first waiter")
		waitWoken(t, a2, prefix+" A, second waiter")
		publish(t, rdb, keys.Events("x:y"))
		waitWoken(t, colon, prefix+" x:y")
		publish(t, rdb, keys.Events("100%"))
		waitWoken(t, pct, prefix+" 100%")
		flush(t, rdb, w, keys)
		notWoken(t, b, prefix+" B (only A, x:y and 100% were published)")
		notWoken(t, escaped, prefix+" x%3Ay (an event of x:y)")

		publish(t, rdb, keys.Events("x%3Ay"))
		waitWoken(t, escaped, prefix+" x%3Ay")
		flush(t, rdb, w, keys)
		notWoken(t, colon, prefix+" x:y (an event of x%3Ay)")
	}
}

// pubsubClientID returns the id of the pubsub connection named name.
func pubsubClientID(t *testing.T, admin goredis.UniversalClient, name string) string {
	t.Helper()
	list, err := admin.ClientList(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	sc := bufio.NewScanner(strings.NewReader(list))
	for sc.Scan() {
		f := map[string]string{}
		for _, kv := range strings.Fields(sc.Text()) {
			k, v, _ := strings.Cut(kv, "=")
			f[k] = v
		}
		if f["name"] == name && f["psub"] == "1" {
			ids = append(ids, f["id"])
		}
	}
	if len(ids) != 1 {
		t.Fatalf("pubsub connections named %s: %v, want one", name, ids)
	}
	return ids[0]
}

// TestCommandWatcherResubscribes: after the watcher's connection is killed
// (CLIENT KILL ID of that one connection), go-redis subscribes again; every
// waiter is woken at the new confirmation (events of the gap are lost), and
// later publishes arrive.
func TestCommandWatcherResubscribes(t *testing.T) {
	name := testenv.Unique(t, "watch")
	rdb := redisClient(t, name)
	admin := redisClient(t, testenv.Unique(t, "admin"))
	keys := devicestate.Keys{Prefix: testenv.Unique(t, "watch") + ":"}
	w := newWatcher(t, rdb, keys)
	a, b := watch(t, w, "A"), watch(t, w, "B")

	id := pubsubClientID(t, admin, name)
	if err := admin.Do(context.Background(), "CLIENT", "KILL", "ID", id).Err(); err != nil {
		t.Fatalf("CLIENT KILL ID %s: %v", id, err)
	}
	// Nothing was published: only the resubscription wakes them.
	waitWoken(t, a, "A after the resubscription")
	waitWoken(t, b, "B after the resubscription")
	if again := pubsubClientID(t, admin, name); again == id {
		t.Fatalf("the pubsub connection %s is still the killed one", id)
	}
	publish(t, rdb, keys.Events("A"))
	waitWoken(t, a, "A after a publish past the reconnect")
	flush(t, rdb, w, keys)
	notWoken(t, b, "B (only A was published)")
}

// TestStoreWatchCommand: Store.WatchCommand starts the store's watcher on
// first use and wakes on a publish; after Store.Close it fails.
func TestStoreWatchCommand(t *testing.T) {
	rdb := redisClient(t, testenv.Unique(t, "watch"))
	keys := devicestate.Keys{Prefix: testenv.Unique(t, "watch") + ":"}
	st := devicestate.NewStore(rdb, keys)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	wake, stop, err := st.WatchCommand(ctx, "C1")
	if err != nil {
		t.Fatal(err)
	}
	wake2, stop2, err := st.WatchCommand(ctx, "C1")
	if err != nil {
		t.Fatal(err)
	}
	publish(t, rdb, keys.Events("C1"))
	waitWoken(t, wake, "first waiter of C1")
	waitWoken(t, wake2, "second waiter of C1")
	stop()
	stop2()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.WatchCommand(ctx, "C2"); !errors.Is(err, devicestate.ErrWatcherClosed) {
		t.Fatalf("WatchCommand after Close: %v", err)
	}
}
