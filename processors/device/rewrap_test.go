package device

import (
	"testing"
	"time"
)

// TestRewrap: a state restored under a previous KEK is stale, due at once,
// and its Timer re-seals it under the current KEK without changing the
// session or presence; the re-sealed value opens with the new KEK alone.
func TestRewrap(t *testing.T) {
	p1, s := fullState(t)
	old, err := p1.EncodeState(vectors.SN, s)
	if err != nil {
		t.Fatal(err)
	}
	if p1.Stale(s) {
		t.Fatal("a state sealed under the current KEK is stale")
	}
	newKEK := [32]byte{'n', 'e', 'w'}
	cfg := testConfig(t, nil)
	cfg.KEK, cfg.PreviousKEKs = newKEK, [][32]byte{testKEK}
	p2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	restored, err := p2.DecodeState(vectors.SN, old)
	if err != nil {
		t.Fatal(err)
	}
	if !p2.Stale(restored) {
		t.Fatal("a state opened with a previous KEK is not stale")
	}
	if at, ok := p2.Deadline(restored); !ok || !at.Equal(resealDue) {
		t.Fatalf("deadline of a stale state %v %v, want %v", at, ok, resealDue)
	}
	now := testT0.Add(2 * time.Second) // before the heartbeat deadline
	next, out, err := p2.Timer(now, vectors.SN, restored)
	if err != nil {
		t.Fatal(err)
	}
	if next == restored || p2.Stale(next) {
		t.Fatal("Timer did not re-seal the stale state")
	}
	if len(out) != 0 {
		t.Errorf("re-sealing emitted %d outputs", len(out))
	}
	if *next.session != *s.session || !next.presence.Equal(s.presence) || next.reg != s.reg {
		t.Fatalf("re-sealing changed the state: %v vs %v", next, s)
	}
	if at, ok := p2.Deadline(next); !ok || !at.Equal(s.presence.Deadline) {
		t.Errorf("deadline after re-sealing %v %v, want the heartbeat deadline %v", at, ok, s.presence.Deadline)
	}
	b, err := p2.EncodeState(vectors.SN, next)
	if err != nil {
		t.Fatal(err)
	}
	// Only the new KEK now.
	cfg.PreviousKEKs = nil
	p3, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p3.DecodeState(vectors.SN, old); err == nil {
		t.Fatal("the old value opened without the old KEK")
	}
	got, err := p3.DecodeState(vectors.SN, b)
	if err != nil {
		t.Fatalf("the re-sealed value does not open with the new KEK alone: %v", err)
	}
	if p3.Stale(got) || *got.session != *s.session {
		t.Fatal("the re-sealed value is stale or holds another session")
	}
	pt, err := p3.open(vectors.SN, purposeReply, got.sealedReply)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := p1.open(vectors.SN, purposeReply, s.sealedReply)
	if string(pt) != string(want) {
		t.Error("the re-sealed handshake reply differs")
	}
}

// BenchmarkReseal is the CPU cost of the re-wrap pass per device: decoding a
// state sealed under the previous KEK, re-sealing it in Timer and encoding
// the new changelog value (what a restore plus the re-wrap timer do).
func BenchmarkReseal(b *testing.B) {
	p1, _, s := withSession(b)
	old, err := p1.EncodeState(vectors.SN, s)
	if err != nil {
		b.Fatal(err)
	}
	cfg := testConfig(b, nil)
	cfg.KEK, cfg.PreviousKEKs = [32]byte{'n', 'e', 'w'}, [][32]byte{testKEK}
	cfg.Rand = nil
	p2, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	now := testT0.Add(2 * time.Second)
	b.ReportAllocs()
	for b.Loop() {
		st, err := p2.DecodeState(vectors.SN, old)
		if err != nil {
			b.Fatal(err)
		}
		next, _, err := p2.Timer(now, vectors.SN, st)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := p2.EncodeState(vectors.SN, next); err != nil {
			b.Fatal(err)
		}
	}
}
