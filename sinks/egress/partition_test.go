package egress

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/schemas"
)

type pubCall struct {
	sn, topic string
	payload   string
	done      func(error)
}

type fakePub struct {
	mu    sync.Mutex
	calls []*pubCall
	ch    chan *pubCall
}

func newFakePub() *fakePub { return &fakePub{ch: make(chan *pubCall, 10000)} }

func (f *fakePub) Gen(string) uint64 { return 0 }

func (f *fakePub) Publish(sn, topic string, payload []byte, _ uint64, done func(error)) {
	c := &pubCall{sn: sn, topic: topic, payload: string(payload), done: done}
	f.mu.Lock()
	f.calls = append(f.calls, c)
	f.mu.Unlock()
	f.ch <- c
}
func (f *fakePub) WaitUp(context.Context, string) error { return nil }

type fakeProd struct {
	mu   sync.Mutex
	recs []*kgo.Record
	fail error
}

func (p *fakeProd) Produce(rec *kgo.Record, done func(error)) {
	p.mu.Lock()
	p.recs = append(p.recs, rec)
	err := p.fail
	p.mu.Unlock()
	go done(err)
}

func (p *fakeProd) topics() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := map[string]int{}
	for _, r := range p.recs {
		n[r.Topic]++
	}
	return n
}

type harness struct {
	t      *testing.T
	reg    *schemas.Registry
	pub    *fakePub
	prod   *fakeProd
	w      *partWorker
	mu     sync.Mutex
	marked int64 // next offset
	failed error
	cancel context.CancelFunc
}

func newHarness(t *testing.T, window int, opts ...func(*workerDeps)) *harness {
	t.Helper()
	reg, err := schemas.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, reg: reg, pub: newFakePub(), prod: &fakeProd{}, marked: -1}
	d := workerDeps{
		pub: h.pub, prod: h.prod, codec: reg, receipts: "receipts", rejects: "rejects", egressID: "eg", window: window,
		mark: func(rec *kgo.Record) {
			h.mu.Lock()
			defer h.mu.Unlock()
			if rec.Offset+1 <= h.marked {
				t.Errorf("mark went backwards: %d after %d", rec.Offset+1, h.marked)
			}
			h.marked = rec.Offset + 1
		},
		retired: func(int) {},
		fail: func(err error) {
			h.mu.Lock()
			h.failed = err
			h.mu.Unlock()
		},
		m: NewMetrics(nil),
	}
	for _, o := range opts {
		o(&d)
	}
	h.w = newPartWorker("downlink", 0, d)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go h.w.run(ctx)
	t.Cleanup(func() { cancel(); <-h.w.done })
	return h
}

func (h *harness) record(off int64, dl schemas.Downlink) *kgo.Record {
	b, err := h.reg.Encode(&dl)
	if err != nil {
		h.t.Fatal(err)
	}
	return &kgo.Record{Topic: "downlink", Partition: 0, Offset: off, Key: []byte(dl.SN), Value: b}
}

func (h *harness) downlink(off int64, sn string) *kgo.Record {
	return h.record(off, schemas.Downlink{FrameID: fmt.Sprintf("f%d", off), SN: sn, Topic: protocol.DownlinkTopic(sn),
		Payload: []byte(fmt.Sprintf("p%d", off)), CreatedAt: time.Now().UTC()})
}

func (h *harness) nextPub() *pubCall {
	h.t.Helper()
	select {
	case c := <-h.pub.ch:
		return c
	case <-time.After(5 * time.Second):
		h.t.Fatal("no publish")
		return nil
	}
}

func (h *harness) noPub(d time.Duration) {
	h.t.Helper()
	select {
	case c := <-h.pub.ch:
		h.t.Fatalf("unexpected publish %s", c.payload)
	case <-time.After(d):
	}
}

func (h *harness) waitMarked(next int64) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.mu.Lock()
		m := h.marked
		h.mu.Unlock()
		if m == next {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("marked %d, want %d", m, next)
		}
		time.Sleep(time.Millisecond)
	}
}

func (h *harness) markedNow() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.marked
}

func TestWorkerCommitsOnlyTheAcknowledgedPrefix(t *testing.T) {
	h := newHarness(t, 10)
	h.w.enqueue([]*kgo.Record{h.downlink(0, "A"), h.downlink(1, "B"), h.downlink(2, "A")})
	c0, c1, c2 := h.nextPub(), h.nextPub(), h.nextPub()
	if c0.payload != "p0" || c1.payload != "p1" || c2.payload != "p2" || c0.topic != "/ivms/sub/A" {
		t.Fatalf("publish order %s %s %s", c0.payload, c1.payload, c2.payload)
	}
	c1.done(nil)
	c2.done(nil)
	time.Sleep(30 * time.Millisecond)
	if m := h.markedNow(); m != -1 {
		t.Fatalf("marked %d before offset 0 was acknowledged", m)
	}
	c0.done(nil)
	h.waitMarked(3)
	if n := h.prod.topics()["receipts"]; n != 3 {
		t.Fatalf("%d receipts, want 3", n)
	}
	// Receipts in offset order.
	h.prod.mu.Lock()
	for i, r := range h.prod.recs {
		var rc schemas.DownlinkReceipt
		if err := h.reg.Decode(r.Value, &rc); err != nil {
			t.Fatal(err)
		}
		if rc.FrameID != fmt.Sprintf("f%d", i) || rc.Egress != "eg" || string(r.Key) != rc.SN {
			t.Errorf("receipt %d: %+v key %s", i, rc, r.Key)
		}
	}
	h.prod.mu.Unlock()
}

func TestWorkerWindow(t *testing.T) {
	h := newHarness(t, 2)
	h.w.enqueue([]*kgo.Record{h.downlink(0, "A"), h.downlink(1, "A"), h.downlink(2, "A")})
	c0 := h.nextPub()
	h.nextPub()
	h.noPub(30 * time.Millisecond)
	c0.done(nil)
	if c := h.nextPub(); c.payload != "p2" {
		t.Fatalf("got %s", c.payload)
	}
}

// TestWorkerRepublishesInOrderAfterFailure: after a failure nothing new is
// published until every publish in flight resolved; then the failed frames
// go again in offset order, before any new frame.
func TestWorkerRepublishesInOrderAfterFailure(t *testing.T) {
	h := newHarness(t, 10)
	h.w.enqueue([]*kgo.Record{h.downlink(0, "A"), h.downlink(1, "B"), h.downlink(2, "A"), h.downlink(3, "B")})
	cs := []*pubCall{h.nextPub(), h.nextPub(), h.nextPub(), h.nextPub()}
	lost := errors.New("connection lost")
	cs[0].done(lost)
	h.w.enqueue([]*kgo.Record{h.downlink(4, "A")})
	cs[2].done(lost)
	cs[1].done(nil)
	h.noPub(300 * time.Millisecond) // offset 3 still in flight
	cs[3].done(nil)
	r0, r2 := h.nextPub(), h.nextPub()
	if r0.payload != "p0" || r2.payload != "p2" {
		t.Fatalf("republished %s %s, want p0 p2", r0.payload, r2.payload)
	}
	h.noPub(30 * time.Millisecond)
	if m := h.markedNow(); m != -1 {
		t.Fatalf("marked %d with offset 0 unacknowledged", m)
	}
	r0.done(nil)
	r2.done(nil)
	if c := h.nextPub(); c.payload != "p4" {
		t.Fatalf("then %s, want p4", c.payload)
	} else {
		c.done(nil)
	}
	h.waitMarked(5)
}

func TestWorkerRejects(t *testing.T) {
	h := newHarness(t, 10)
	bad := h.downlink(1, "A")
	bad.Key = []byte("B")
	h.w.enqueue([]*kgo.Record{
		h.record(0, schemas.Downlink{FrameID: "x", SN: "A", Topic: "/ivms/sub/B", Payload: []byte("x")}),
		bad,
		{Topic: "downlink", Offset: 2, Key: []byte("A"), Value: []byte("not avro")},
		h.record(3, schemas.Downlink{FrameID: "y", SN: "a/b", Topic: "/ivms/sub/a/b", Payload: []byte("x")}),
		h.record(4, schemas.Downlink{FrameID: "z", SN: "A", Topic: "/ivms/sub/A"}),
	})
	h.waitMarked(5)
	h.noPub(20 * time.Millisecond)
	want := []string{ReasonTopicMismatch, ReasonKeyMismatch, ReasonBadRecord, ReasonBadSN, ReasonEmptyPayload}
	h.prod.mu.Lock()
	defer h.prod.mu.Unlock()
	if len(h.prod.recs) != len(want) {
		t.Fatalf("%d rejects, want %d", len(h.prod.recs), len(want))
	}
	for i, r := range h.prod.recs {
		var rj schemas.Reject
		if err := h.reg.Decode(r.Value, &rj); err != nil {
			t.Fatal(err)
		}
		if r.Topic != "rejects" || rj.Reason != want[i] || rj.Stage != schemas.StageSink || rj.SourceOffset != int64(i) {
			t.Errorf("reject %d: topic %s %+v", i, r.Topic, rj)
		}
	}
}

// TestWorkerStop: a stopped worker publishes nothing new, waits for the
// frames in flight, marks what is done and returns.
func TestWorkerStop(t *testing.T) {
	h := newHarness(t, 2)
	h.w.enqueue([]*kgo.Record{h.downlink(0, "A"), h.downlink(1, "A"), h.downlink(2, "A")})
	c0, c1 := h.nextPub(), h.nextPub()
	h.w.stop()
	select {
	case <-h.w.done:
		t.Fatal("returned with frames in flight")
	case <-time.After(30 * time.Millisecond):
	}
	c0.done(nil)
	c1.done(errors.New("lost"))
	select {
	case <-h.w.done:
	case <-time.After(5 * time.Second):
		t.Fatal("did not return")
	}
	h.noPub(30 * time.Millisecond)
	if m := h.markedNow(); m != 1 {
		t.Fatalf("marked %d, want 1", m)
	}
}

func TestWorkerFatalOnReceiptFailure(t *testing.T) {
	h := newHarness(t, 2)
	h.prod.fail = errors.New("kafka says no")
	h.w.enqueue([]*kgo.Record{h.downlink(0, "A")})
	h.nextPub().done(nil)
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.mu.Lock()
		f := h.failed
		h.mu.Unlock()
		if f != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no fatal error")
		}
		time.Sleep(time.Millisecond)
	}
	if m := h.markedNow(); m != -1 {
		t.Fatalf("marked %d without a receipt", m)
	}
}
