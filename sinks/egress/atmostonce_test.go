package egress

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/schemas"
)

// command is an at_most_once command frame at off with a deadline.
func (h *harness) command(off int64, sn, id string, deadline time.Time, atMostOnce bool) *kgo.Record {
	return h.record(off, schemas.Downlink{FrameID: "command/" + id, SN: sn, Topic: protocol.DownlinkTopic(sn),
		Payload: []byte("cmd-" + id), CommandID: &id, MsgID: "m-" + id, Purpose: "command",
		CreatedAt: time.Now().UTC(), Deadline: &deadline, AtMostOnce: atMostOnce})
}

// receipts returns "frame_id:status" of every receipt written, in order.
func (h *harness) receipts() []string {
	h.t.Helper()
	h.prod.mu.Lock()
	defer h.prod.mu.Unlock()
	var out []string
	for _, r := range h.prod.recs {
		if r.Topic != "receipts" {
			continue
		}
		var rc schemas.DownlinkReceipt
		if err := h.reg.Decode(r.Value, &rc); err != nil {
			h.t.Fatal(err)
		}
		out = append(out, rc.FrameID+":"+rc.Status)
	}
	return out
}

func (h *harness) wantReceipts(want ...string) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := h.receipts()
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("receipts %v, want %v", got, want)
		}
		time.Sleep(time.Millisecond)
	}
}

func (h *harness) wantReceiptsAnyOrder(want ...string) {
	h.t.Helper()
	want = slices.Sorted(slices.Values(want))
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := slices.Sorted(slices.Values(h.receipts()))
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("receipts %v, want %v", got, want)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestWorkerExpiredBeforePublish: a frame past its deadline is never
// published (a replay by an egress that was down, or a new group): its
// receipt says expired_before_publish, and the frames after it go on.
func TestWorkerExpiredBeforePublish(t *testing.T) {
	h := newHarness(t, 10)
	past := time.Now().Add(-time.Second)
	h.w.enqueue([]*kgo.Record{h.command(0, "A", "old", past, true), h.command(1, "A", "stale", past, false), h.downlink(2, "A")})
	c := h.nextPub()
	if c.payload != "p2" {
		t.Fatalf("published %s", c.payload)
	}
	c.done(nil)
	h.waitMarked(3)
	h.wantReceipts("command/old:expired_before_publish", "command/stale:expired_before_publish", "f2:published")
	h.noPub(20 * time.Millisecond)
}

// TestWorkerIntentBeforePublish: an at_most_once frame is published only
// after its intent is written, and nothing after it goes first.
func TestWorkerIntentBeforePublish(t *testing.T) {
	h := newHarness(t, 10)
	future := time.Now().Add(time.Hour)
	h.w.enqueue([]*kgo.Record{h.command(0, "A", "r", future, true), h.downlink(1, "A")})
	c := h.nextPub()
	if c.payload != "cmd-r" {
		t.Fatalf("first publish %s", c.payload)
	}
	if got := h.receipts(); !slices.Equal(got, []string{"command/r:publishing"}) {
		t.Fatalf("receipts at the first publish %v, want the intent", got)
	}
	c.done(nil)
	h.nextPub().done(nil)
	h.waitMarked(2)
	h.wantReceipts("command/r:publishing", "command/r:published", "f1:published")
}

// TestWorkerEarlierOwners: what the partition's earlier owners recorded
// decides: an intent without outcome becomes delivery_unknown (never
// published again), an outcome means done; an idempotent command is
// published again as before.
func TestWorkerEarlierOwners(t *testing.T) {
	var mu sync.Mutex
	var since []time.Time
	scan := func(_ context.Context, p int32, s time.Time) (map[string]string, error) {
		mu.Lock()
		since = append(since, s)
		mu.Unlock()
		return map[string]string{
			"command/half": schemas.ReceiptPublishing,
			"command/done": schemas.ReceiptPublishing, // the outcome wins (scanReceipts)
			"command/idem": schemas.ReceiptPublishing,
		}, nil
	}
	h := newHarness(t, 10, func(d *workerDeps) {
		d.scan = func(ctx context.Context, p int32, s time.Time) (map[string]string, error) {
			m, err := scan(ctx, p, s)
			m["command/done"] = schemas.ReceiptPublished
			return m, err
		}
	})
	future := time.Now().Add(time.Hour)
	first := h.command(0, "A", "half", future, true)
	first.Timestamp = time.Now().Add(-time.Minute)
	h.w.enqueue([]*kgo.Record{first, h.command(1, "A", "done", future, true), h.command(2, "A", "idem", future, false),
		h.command(3, "A", "new", future, true)})
	c := h.nextPub()
	if c.payload != "cmd-idem" {
		t.Fatalf("published %s first, want cmd-idem", c.payload)
	}
	c.done(nil)
	c = h.nextPub()
	if c.payload != "cmd-new" {
		t.Fatalf("published %s, want cmd-new", c.payload)
	}
	c.done(nil)
	h.waitMarked(4)
	h.noPub(20 * time.Millisecond)
	// Receipts of different frames may interleave; per frame, intent first.
	h.wantReceiptsAnyOrder("command/half:delivery_unknown", "command/idem:published", "command/new:publishing", "command/new:published")
	if got := h.receipts(); slices.Index(got, "command/new:publishing") > slices.Index(got, "command/new:published") {
		t.Fatalf("receipts %v: outcome before intent", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(since) != 1 || !since[0].Equal(first.Timestamp.Add(-scanSkew)) {
		t.Fatalf("scans since %v, want one since the first record's time less %v", since, scanSkew)
	}
}

// TestWorkerUncertainFailure: an at_most_once frame whose publish failed
// after it may have left (connection lost) is not published again: its
// receipt says delivery_unknown. One refused before it left is retried.
func TestWorkerUncertainFailure(t *testing.T) {
	h := newHarness(t, 10)
	future := time.Now().Add(time.Hour)
	h.w.enqueue([]*kgo.Record{h.command(0, "A", "lost", future, true)})
	h.nextPub().done(errors.New("connection lost"))
	h.waitMarked(1)
	h.wantReceipts("command/lost:publishing", "command/lost:delivery_unknown")
	h.noPub(200 * time.Millisecond)

	h.w.enqueue([]*kgo.Record{h.command(1, "A", "down", future, true)})
	h.nextPub().done(ErrNotConnected)
	c := h.nextPub() // retried: it never left
	if c.payload != "cmd-down" {
		t.Fatalf("republished %s", c.payload)
	}
	c.done(nil)
	h.waitMarked(2)
	h.wantReceipts("command/lost:publishing", "command/lost:delivery_unknown", "command/down:publishing", "command/down:published")
}
