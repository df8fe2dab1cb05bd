package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// fakeInput serves queued messages and records acks.
type fakeInput struct {
	ch     chan *Message
	mu     sync.Mutex
	acked  []string
	reads  int
	closed chan struct{}
}

func newFakeInput() *fakeInput {
	return &fakeInput{ch: make(chan *Message, 1000), closed: make(chan struct{})}
}

func (f *fakeInput) add(topic, payload string) {
	var m *Message
	m = NewMessage(topic, []byte(payload), time.Now().UTC(), func() {
		f.mu.Lock()
		f.acked = append(f.acked, string(m.Payload))
		f.mu.Unlock()
	})
	f.ch <- m
}

func (f *fakeInput) Connect(context.Context) error { return nil }
func (f *fakeInput) Read(ctx context.Context) (*Message, error) {
	select {
	case m := <-f.ch:
		f.mu.Lock()
		f.reads++
		f.mu.Unlock()
		return m, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
func (f *fakeInput) Close(context.Context) error { close(f.closed); return nil }
func (f *fakeInput) snapshot() (acked []string, reads int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.acked...), f.reads
}

// fakeOutput holds writes until the test completes them.
type fakeOutput struct {
	mu      sync.Mutex
	pending []func(error)
	written chan struct{}
}

func newFakeOutput() *fakeOutput { return &fakeOutput{written: make(chan struct{}, 1000)} }

func (o *fakeOutput) Connect(context.Context) error { return nil }
func (o *fakeOutput) Write(_ *kgo.Record, done func(error)) {
	o.mu.Lock()
	o.pending = append(o.pending, done)
	o.mu.Unlock()
	o.written <- struct{}{}
}
func (o *fakeOutput) Flush(ctx context.Context) error { return nil }
func (o *fakeOutput) Close(context.Context) error     { return nil }
func (o *fakeOutput) complete(i int, err error) {
	o.mu.Lock()
	d := o.pending[i]
	o.mu.Unlock()
	d(err)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestPipelineAcksInOrderAfterWrite: a message is acked only after its
// record and every earlier one completed, and in read order.
func TestPipelineAcksInOrderAfterWrite(t *testing.T) {
	conv, _ := newTestConverter(t)
	in, out := newFakeInput(), newFakeOutput()
	p := NewPipeline(in, out, conv, Config{MaxInflight: 100}, discard(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()

	for i := range 5 {
		in.add("/ivms/pub/SN1", fmt.Sprint(i))
	}
	for range 5 {
		<-out.written
	}
	out.complete(2, nil)
	out.complete(1, nil)
	time.Sleep(20 * time.Millisecond)
	if acked, _ := in.snapshot(); len(acked) != 0 {
		t.Fatalf("acked %v before the first record completed", acked)
	}
	out.complete(0, nil)
	waitFor(t, "3 acks", func() bool { a, _ := in.snapshot(); return len(a) == 3 })
	out.complete(4, nil)
	out.complete(3, nil)
	waitFor(t, "5 acks", func() bool { a, _ := in.snapshot(); return len(a) == 5 })
	acked, _ := in.snapshot()
	for i, a := range acked {
		if a != fmt.Sprint(i) {
			t.Fatalf("acks out of order: %v", acked)
		}
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// TestPipelineBackPressure: at MaxInflight unacked messages the pipeline
// stops reading.
func TestPipelineBackPressure(t *testing.T) {
	conv, _ := newTestConverter(t)
	in, out := newFakeInput(), newFakeOutput()
	p := NewPipeline(in, out, conv, Config{MaxInflight: 3, DrainTimeout: 100 * time.Millisecond}, discard(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	for i := range 10 {
		in.add("/ivms/pub/SN1", fmt.Sprint(i))
	}
	for range 3 {
		<-out.written
	}
	time.Sleep(50 * time.Millisecond)
	if _, reads := in.snapshot(); reads != 3 {
		t.Fatalf("read %d messages with 3 slots", reads)
	}
	out.complete(0, nil)
	<-out.written
	time.Sleep(20 * time.Millisecond)
	if _, reads := in.snapshot(); reads != 4 {
		t.Fatalf("read %d messages after one ack, want 4", reads)
	}
	cancel()
	<-errc
}

// TestPipelineFailureStopsAcks: a failed record stops the pipeline with its
// error, and neither it nor any later message is acked.
func TestPipelineFailureStopsAcks(t *testing.T) {
	conv, _ := newTestConverter(t)
	in, out := newFakeInput(), newFakeOutput()
	p := NewPipeline(in, out, conv, Config{MaxInflight: 100, DrainTimeout: 200 * time.Millisecond}, discard(), nil)
	errc := make(chan error, 1)
	go func() { errc <- p.Run(context.Background()) }()
	for i := range 4 {
		in.add("/ivms/pub/SN1", fmt.Sprint(i))
	}
	for range 4 {
		<-out.written
	}
	boom := errors.New("boom")
	out.complete(0, nil)
	out.complete(2, nil)
	out.complete(3, nil)
	out.complete(1, boom)
	select {
	case err := <-errc:
		if !errors.Is(err, boom) {
			t.Fatalf("Run = %v, want boom", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop")
	}
	if acked, _ := in.snapshot(); len(acked) != 1 || acked[0] != "0" {
		t.Fatalf("acked %v, want [0]", acked)
	}
}

// TestPipelineRejectsAndSkipsAreAckedInOrder: rejects are written (and
// acked after), skipped events are acked in their place.
func TestPipelineRejectsAndSkipsAreAckedInOrder(t *testing.T) {
	conv, _ := newTestConverter(t)
	in, out := newFakeInput(), newFakeOutput()
	p := NewPipeline(in, out, conv, Config{MaxInflight: 100}, discard(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	in.add("/bad", "a")                                             // reject: written
	in.add("test/sys/n1/c/ams-x/connected", `{"clientid":"ams-x"}`) // skipped
	in.add("/ivms/pub/SN1", "c")                                    // frame
	<-out.written
	<-out.written
	time.Sleep(20 * time.Millisecond)
	if a, _ := in.snapshot(); len(a) != 0 {
		t.Fatalf("acked %v before any write completed", a)
	}
	out.complete(0, nil)
	waitFor(t, "reject and skip acked", func() bool { a, _ := in.snapshot(); return len(a) == 2 })
	out.complete(1, nil)
	waitFor(t, "all acked", func() bool { a, _ := in.snapshot(); return len(a) == 3 })
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
