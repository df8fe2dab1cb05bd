// Package mqttconform is the conformance suite that every bridge between
// MQTT and Kafka in ams passes, against the real Mosquitto and the real
// Kafka: ingest (MQTT to Kafka) and egress (Kafka to MQTT). It follows
// Watermill's TestPubSub: one suite, one small Harness per adapter.
//
// Each case gets a fresh harness: a private Mosquitto (its own port and
// persistence, so it can be restarted and no other test's devices share its
// /ivms topics), private Kafka topics, and the adapter run as an ams
// subprocess (so a crash is a real SIGKILL).
//
// The cases:
//   - Connect: frames of a few devices come through; after a graceful stop
//     and a start, more frames come through and nothing is duplicated (a
//     clean stop drains and acknowledges everything).
//   - PerDeviceOrder: many devices publish concurrently, pipelined; every
//     device's frames come out exactly once, in order.
//   - RedeliveryAfterCrash: the adapter is killed (SIGKILL) mid-stream and
//     started again; every frame the source acknowledged comes out, and for
//     every device the first occurrences of its frames are in order
//     (duplicates allowed, losses not).
//   - ReconnectAfterBrokerRestart: the broker restarts mid-stream; the same
//     guarantee holds.
//
// Payloads are "sn#seq" (Payload), so the suite can tell frames apart.
package mqttconform

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Frame is one frame as it came out of the adapter.
type Frame struct {
	SN      string
	Payload []byte
}

// Harness adapts one bridge to the suite. Its methods are called from the
// test goroutine, except Send, which is called concurrently for different
// devices (never for the same device).
type Harness interface {
	// Start starts the adapter (the first time, or again after Stop or
	// Crash) and returns once it is ready.
	Start(t testing.TB)
	// Stop stops the adapter gracefully (SIGTERM) and fails the test if it
	// does not exit cleanly.
	Stop(t testing.TB)
	// Crash kills the adapter (SIGKILL): no drain, no acknowledgement, no
	// commit.
	Crash(t testing.TB)
	// RestartBroker stops the MQTT broker gracefully and starts it again.
	RestartBroker(t testing.TB)
	// Send hands the frames of one device to the adapter's source, in
	// order and pipelined, and returns one error per frame: nil when the
	// source acknowledged it (the broker's PUBACK for ingest, Kafka's ack
	// for egress).
	Send(ctx context.Context, sn string, payloads [][]byte) []error
	// Received delivers the frames that came out of the adapter's sink, in
	// the order the sink saw them.
	Received() <-chan Frame
}

// Run runs every case; newHarness builds a fresh harness per case.
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	t.Run("Connect", func(t *testing.T) { testConnect(t, newHarness(t)) })
	t.Run("PerDeviceOrder", func(t *testing.T) { testOrder(t, newHarness(t)) })
	t.Run("RedeliveryAfterCrash", func(t *testing.T) { testRedelivery(t, newHarness(t)) })
	t.Run("ReconnectAfterBrokerRestart", func(t *testing.T) { testBrokerRestart(t, newHarness(t)) })
}

const waitTimeout = 60 * time.Second

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func devices(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%04d", prefix, i)
	}
	return out
}

func testConnect(t *testing.T, h Harness) {
	ctx := testCtx(t)
	rec := Record(t, h.Received())
	h.Start(t)
	devs := devices("CONN", 3)
	acked := NewAcks(devs, 4)
	for _, sn := range devs {
		acked.Set(sn, 0, h.Send(ctx, sn, [][]byte{Payload(sn, 0), Payload(sn, 1)}))
	}
	rec.WaitAll(t, acked, waitTimeout)
	h.Stop(t)
	h.Start(t)
	for _, sn := range devs {
		acked.Set(sn, 2, h.Send(ctx, sn, [][]byte{Payload(sn, 2), Payload(sn, 3)}))
	}
	rec.WaitAll(t, acked, waitTimeout)
	if dups := rec.Check(t, acked); dups != 0 {
		t.Errorf("%d duplicates after a graceful stop; a clean stop must acknowledge everything it wrote", dups)
	}
}

func testOrder(t *testing.T, h Harness) {
	ctx := testCtx(t)
	rec := Record(t, h.Received())
	h.Start(t)
	devs := devices("ORD", 50)
	const n = 40
	acked := Stream(ctx, h, devs, n, 10, 0, nil)
	if missing := acked.Missing(); missing > 0 {
		t.Fatalf("the source did not acknowledge %d frames with no failure injected", missing)
	}
	rec.WaitAll(t, acked, waitTimeout)
	if dups := rec.Check(t, acked); dups != 0 {
		t.Errorf("%d duplicates with no failure injected", dups)
	}
}

func testRedelivery(t *testing.T, h Harness) {
	ctx := testCtx(t)
	rec := Record(t, h.Received())
	h.Start(t)
	devs := devices("RED", 20)
	const n = 100
	var sent atomic.Int64
	done := make(chan *Acks, 1)
	go func() { done <- Stream(ctx, h, devs, n, 5, 100*time.Millisecond, &sent) }()
	total := len(devs) * n
	rec.WaitCount(t, total/5, waitTimeout)
	h.Crash(t)
	crashedAt, sentAtCrash := rec.Count(), sent.Load()
	waitUntil(t, "the stream goes on while the adapter is down", waitTimeout, func() bool {
		return sent.Load() >= int64(crashedAt+total/5) || sent.Load() == int64(total)
	})
	h.Start(t)
	acked := <-done
	rec.WaitAll(t, acked, waitTimeout)
	dups := rec.Check(t, acked)
	t.Logf("crash when %d frames were sent and %d of %d had come out; %d duplicates after the restart",
		sentAtCrash, crashedAt, total, dups)
}

func testBrokerRestart(t *testing.T, h Harness) {
	ctx := testCtx(t)
	rec := Record(t, h.Received())
	h.Start(t)
	devs := devices("BRK", 20)
	const n = 100
	done := make(chan *Acks, 1)
	go func() { done <- Stream(ctx, h, devs, n, 5, 100*time.Millisecond, nil) }()
	total := len(devs) * n
	rec.WaitCount(t, total/4, waitTimeout)
	h.RestartBroker(t)
	restartedAt := rec.Count()
	acked := <-done
	rec.WaitAll(t, acked, waitTimeout)
	dups := rec.Check(t, acked)
	t.Logf("broker restart after %d of %d frames came out; %d not acknowledged by the source; %d duplicates",
		restartedAt, total, acked.Missing(), dups)
}

// Acks records which frames the source acknowledged.
type Acks struct {
	mu sync.Mutex
	ok map[string][]bool
}

// NewAcks returns an empty record for n frames of each device.
func NewAcks(devs []string, n int) *Acks {
	a := &Acks{ok: map[string][]bool{}}
	for _, d := range devs {
		a.ok[d] = make([]bool, n)
	}
	return a
}

// Set records the results of frames from seq on.
func (a *Acks) Set(sn string, seq int, errs []error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, err := range errs {
		a.ok[sn][seq+i] = err == nil
	}
}

// Missing counts the frames not acknowledged.
func (a *Acks) Missing() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, oks := range a.ok {
		for _, ok := range oks {
			if !ok {
				n++
			}
		}
	}
	return n
}

// Stream sends n frames (seq 0..n-1) of every device, each device in its own
// goroutine, chunk frames at a time (pipelined within a chunk), pausing
// pace between chunks; sent counts the frames handed over so far.
func Stream(ctx context.Context, h Harness, devs []string, n, chunk int, pace time.Duration, sent *atomic.Int64) *Acks {
	acks := NewAcks(devs, n)
	var wg sync.WaitGroup
	for _, sn := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; seq < n; seq += chunk {
				var ps [][]byte
				for i := seq; i < min(seq+chunk, n); i++ {
					ps = append(ps, Payload(sn, i))
				}
				acks.Set(sn, seq, h.Send(ctx, sn, ps))
				if sent != nil {
					sent.Add(int64(len(ps)))
				}
				if pace > 0 {
					select {
					case <-time.After(pace):
					case <-ctx.Done():
					}
				}
			}
		}()
	}
	wg.Wait()
	return acks
}

// Recorder collects what came out, per device in arrival order.
type Recorder struct {
	mu     sync.Mutex
	seqs   map[string][]int
	bad    []string
	count  int
	notify chan struct{}
}

// Record starts recording ch until the test ends.
func Record(t testing.TB, ch <-chan Frame) *Recorder {
	r := &Recorder{seqs: map[string][]int{}, notify: make(chan struct{}, 1)}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	go func() {
		for {
			select {
			case f := <-ch:
				r.add(f)
			case <-stop:
				return
			}
		}
	}()
	return r
}

func (r *Recorder) add(f Frame) {
	sn, seqStr, ok := strings.Cut(string(f.Payload), "#")
	seq, err := strconv.Atoi(seqStr)
	r.mu.Lock()
	if !ok || err != nil || sn != f.SN {
		r.bad = append(r.bad, fmt.Sprintf("%s: %q", f.SN, f.Payload))
	} else {
		r.seqs[sn] = append(r.seqs[sn], seq)
	}
	r.count++
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// Count is how many frames came out (duplicates included).
func (r *Recorder) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count
}

func (r *Recorder) wait(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		ok := cond()
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.notify:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			r.mu.Lock()
			ok = cond()
			r.mu.Unlock()
			if !ok {
				t.Fatalf("timed out after %v waiting for %s (%d frames came out)", timeout, what, r.Count())
			}
			return
		}
	}
}

// WaitCount waits until n frames came out.
func (r *Recorder) WaitCount(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	r.wait(t, fmt.Sprintf("%d frames", n), timeout, func() bool { return r.count >= n })
}

// WaitAll waits until every acknowledged frame came out.
func (r *Recorder) WaitAll(t testing.TB, acks *Acks, timeout time.Duration) {
	t.Helper()
	acks.mu.Lock()
	want := map[string][]bool{}
	for sn, oks := range acks.ok {
		want[sn] = append([]bool(nil), oks...)
	}
	acks.mu.Unlock()
	missing := func() (int, string) {
		n, example := 0, ""
		for sn, oks := range want {
			have := map[int]bool{}
			for _, s := range r.seqs[sn] {
				have[s] = true
			}
			for seq, ok := range oks {
				if ok && !have[seq] {
					if n == 0 {
						example = fmt.Sprintf("%s#%d", sn, seq)
					}
					n++
				}
			}
		}
		return n, example
	}
	deadline := time.Now().Add(timeout)
	for {
		r.mu.Lock()
		n, example := missing()
		r.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d acknowledged frames never came out (e.g. %s) within %v", n, example, timeout)
		}
		select {
		case <-r.notify:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Check verifies that nothing unknown came out, that every acknowledged
// frame came out, and that for every device the first occurrences of its
// frames are in order. It returns the number of duplicates.
func (r *Recorder) Check(t testing.TB, acks *Acks) int {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	acks.mu.Lock()
	defer acks.mu.Unlock()
	for _, b := range r.bad {
		t.Errorf("unexpected frame %s", b)
	}
	dups := 0
	for sn, seqs := range r.seqs {
		oks, known := acks.ok[sn]
		if !known {
			t.Errorf("frames of unknown device %s", sn)
			continue
		}
		seen := map[int]bool{}
		last, reported := -1, false
		for _, s := range seqs {
			if seen[s] {
				dups++
				continue
			}
			seen[s] = true
			if s < last && !reported {
				t.Errorf("device %s: frame %d came out for the first time after frame %d (arrivals %v)", sn, s, last, seqs)
				reported = true
			}
			last = max(last, s)
			if s >= len(oks) {
				t.Errorf("device %s: unknown frame %d", sn, s)
			}
		}
		for seq, ok := range oks {
			if ok && !seen[seq] {
				t.Errorf("device %s: acknowledged frame %d never came out", sn, seq)
			}
		}
	}
	return dups
}

func waitUntil(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
