package device

import (
	"crypto/rand"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/schemas"
)

// strictProcessor is a processor with the production trust rules:
// unregistered devices refused, and the given limits.
func strictProcessor(t *testing.T, l Limits) (*Processor, *feeder, *prometheus.Registry) {
	t.Helper()
	cfg := testConfig(t, nil)
	cfg.AllowUnregistered = false
	cfg.Limits = l
	reg := prometheus.NewRegistry()
	cfg.Metrics = reg
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p, &feeder{tb: t, p: p}, reg
}

// newHandshake is a fresh handshake request frame (a new RSA ciphertext).
func newHandshake(t *testing.T) []byte {
	t.Helper()
	_, sData, err := protocol.NewHandshake(&testKeys[0].PublicKey, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return protocol.Frame{CmdType: protocol.CmdHandshake, ProtocolVersion: "V1.0", Data: sData}.Encode()
}

func wantReject(t *testing.T, what string, o outputs, reason string) {
	t.Helper()
	if len(o.rejects) != 1 || o.rejects[0].Reason != reason || len(o.events) != 0 || len(o.downlinks) != 0 {
		t.Fatalf("%s: outputs %+v, want one reject %s", what, o, reason)
	}
}

// TestUnregisteredHandshake: no session for an sn ams.registry does not
// hold (never registered, or deleted); a registered one handshakes.
func TestUnregisteredHandshake(t *testing.T) {
	p, f, reg := strictProcessor(t, Limits{})
	s, o := run(t, p, testT0, nil, f.frame(vectors.SN, vectors.Handshake.Request, testT0))
	wantReject(t, "never registered", o, ReasonUnregistered)
	if s != nil {
		t.Fatalf("state %v for an unregistered device", s)
	}
	s = register(t, p, f, nil, true, "cam", "")
	s, o = run(t, p, testT0, s, f.frame(vectors.SN, vectors.Handshake.Request, testT0))
	if !s.HasSession() || len(o.downlinks) != 1 {
		t.Fatalf("registered device: %v %+v", s, o)
	}
	// Deleted: the session ends, a new handshake is refused.
	s, _, err := p.Process(testT0, vectors.SN, s, f.input(testTopics.Registry, vectors.SN, nil))
	if err != nil || s.HasSession() {
		t.Fatalf("deleted: %v %v", s, err)
	}
	_, o = run(t, p, testT0, s, f.frame(vectors.SN, newHandshake(t), testT0))
	wantReject(t, "deleted", o, ReasonUnregistered)
	if got := counterValue(t, reg, "ams_device_rejects_total", map[string]string{"reason": "unregistered"}); got != 2 {
		t.Fatalf("unregistered rejects counted %v", got)
	}
}

// TestTokenChangeEndsSession: a new device token ends the session; the
// device's frames then need a new handshake.
func TestTokenChangeEndsSession(t *testing.T) {
	p, f, _ := strictProcessor(t, Limits{})
	regWith := func(s *State, token string) *State {
		next, _ := run(t, p, testT0, s, f.input(testTopics.Registry, vectors.SN, &schemas.Registration{
			SN: vectors.SN, Bound: true, TokenSHA256: token, UpdatedAt: testT0, UpdatedBy: "test"}))
		return next
	}
	s := regWith(nil, "aa")
	s, _ = run(t, p, testT0, s, f.frame(vectors.SN, vectors.Handshake.Request, testT0))
	if !s.HasSession() {
		t.Fatal("no session")
	}
	if s2 := regWith(s, "aa"); !s2.HasSession() {
		t.Fatal("the same token ended the session")
	}
	s = regWith(s, "bb")
	if s.HasSession() {
		t.Fatal("a new token kept the session")
	}
	hb, _ := vectorFrame(t, "heartbeat")
	_, o := run(t, p, testT0, s, f.frame(vectors.SN, hb, testT0))
	wantReject(t, "heartbeat after the token change", o, ReasonNoSession)
}

// TestTokenHashChangeEndsSession: the same with registrations that carry the
// salted slow hash (token_hash) the API writes: a rename keeps the hash and
// the session, a new token's hash ends it.
func TestTokenHashChangeEndsSession(t *testing.T) {
	p, f, _ := strictProcessor(t, Limits{})
	regWith := func(s *State, name, hash string) *State {
		next, _ := run(t, p, testT0, s, f.input(testTopics.Registry, vectors.SN, &schemas.Registration{
			SN: vectors.SN, Bound: true, Name: name, TokenHash: hash, UpdatedAt: testT0, UpdatedBy: "test"}))
		return next
	}
	const h1, h2 = "$pbkdf2-sha256$i=10000$c2FsdDE$a2V5MQ", "$pbkdf2-sha256$i=10000$c2FsdDI$a2V5Mg"
	s := regWith(nil, "cam", h1)
	s, _ = run(t, p, testT0, s, f.frame(vectors.SN, vectors.Handshake.Request, testT0))
	if !s.HasSession() {
		t.Fatal("no session")
	}
	if s = regWith(s, "renamed", h1); !s.HasSession() {
		t.Fatal("a rename with the same token hash ended the session")
	}
	if s = regWith(s, "renamed", h2); s.HasSession() {
		t.Fatal("a new token hash kept the session")
	}
}

// TestHandshakeRateLimit: over the handshake limit a request is refused
// rate_limited before any RSA work (an undecryptable one says rate_limited,
// not bad_rsa), nothing is written, and the bucket survives a partition
// move (the changelog).
func TestHandshakeRateLimit(t *testing.T) {
	p, f, reg := strictProcessor(t, Limits{HandshakeBurst: 2, HandshakeEvery: time.Minute, FrameBurst: -1})
	s := register(t, p, f, nil, true, "cam", "")
	for i := range 2 {
		var o outputs
		s, o = run(t, p, testT0, s, f.frame(vectors.SN, newHandshake(t), testT0))
		if len(o.downlinks) != 1 {
			t.Fatalf("handshake %d: %+v", i, o)
		}
	}
	garbage := protocol.Frame{CmdType: protocol.CmdHandshake, ProtocolVersion: "V1.0", Data: "00ff"}.Encode()
	next, o := run(t, p, testT0.Add(time.Second), s, f.frame(vectors.SN, garbage, testT0))
	wantReject(t, "third handshake", o, ReasonRateLimited)
	if next != s {
		t.Fatal("a refused handshake changed the state")
	}
	// A partition move: the next owner restores the bucket.
	b, err := p.EncodeState(vectors.SN, s)
	if err != nil {
		t.Fatal(err)
	}
	if s, err = p.DecodeState(vectors.SN, b); err != nil {
		t.Fatal(err)
	}
	_, o = run(t, p, testT0.Add(30*time.Second), s, f.frame(vectors.SN, newHandshake(t), testT0))
	wantReject(t, "after the move", o, ReasonRateLimited)
	// A minute later one token is back.
	s, o = run(t, p, testT0.Add(time.Minute), s, f.frame(vectors.SN, newHandshake(t), testT0))
	if len(o.downlinks) != 1 || !s.HasSession() {
		t.Fatalf("after a minute: %+v", o)
	}
	if got := counterValue(t, reg, "ams_device_rejects_total", map[string]string{"reason": "rate_limited"}); got != 2 {
		t.Fatalf("rate_limited counted %v", got)
	}
}

// TestFrameRateLimit: the frame bucket refuses frames over the limit
// without touching the state, and refills.
func TestFrameRateLimit(t *testing.T) {
	p, f, _ := strictProcessor(t, Limits{HandshakeBurst: -1, FrameBurst: 3, FrameEvery: time.Second})
	s := register(t, p, f, nil, true, "cam", "")
	s, _ = run(t, p, testT0, s, f.frame(vectors.SN, vectors.Handshake.Request, testT0)) // token 1
	hb, _ := vectorFrame(t, "heartbeat")
	for i := range 2 { // tokens 2, 3
		var o outputs
		s, o = run(t, p, testT0, s, f.frame(vectors.SN, hb, testT0))
		if len(o.events) != 1 {
			t.Fatalf("heartbeat %d: %+v", i, o)
		}
	}
	next, o := run(t, p, testT0.Add(500*time.Millisecond), s, f.frame(vectors.SN, hb, testT0))
	wantReject(t, "fourth frame", o, ReasonRateLimited)
	if next != s {
		t.Fatal("a refused frame changed the state")
	}
	_, o = run(t, p, testT0.Add(time.Second), s, f.frame(vectors.SN, hb, testT0))
	if len(o.events) != 1 {
		t.Fatalf("after a second: %+v", o)
	}
}

// TestUploadNeedsBinding: upload credentials (703) only for a registered,
// bound device; others get a reject unbound and no credentials.
func TestUploadNeedsBinding(t *testing.T) {
	p, f, _ := strictProcessor(t, Limits{})
	s := register(t, p, f, nil, false, "cam", "")
	s, _ = run(t, p, testT0, s, f.frame(vectors.SN, vectors.Handshake.Request, testT0))
	req, _ := vectorFrame(t, "picture upload parameters request")
	_, o := run(t, p, testT0, s, f.frame(vectors.SN, req, testT0))
	wantReject(t, "unbound", o, ReasonUnbound)
	s = register(t, p, f, s, true, "cam", "")
	_, o = run(t, p, testT0, s, f.frame(vectors.SN, req, testT0))
	if len(o.downlinks) != 1 {
		t.Fatalf("bound: %+v", o)
	}
	// The open (dev) mode answers any device with a session.
	open := newTestProcessor(t, nil)
	fo := &feeder{tb: t, p: open}
	so, _ := run(t, open, testT0, nil, fo.frame(vectors.SN, vectors.Handshake.Request, testT0))
	if _, o = run(t, open, testT0, so, fo.frame(vectors.SN, req, testT0)); len(o.downlinks) != 1 {
		t.Fatalf("open mode, unregistered: %+v", o)
	}
}
