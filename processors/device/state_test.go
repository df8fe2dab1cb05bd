package device

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/ivms/ams/schemas"
)

// fullState is a device with a session, a registration and presence.
func fullState(t *testing.T) (*Processor, *State) {
	p, f, s := withSession(t)
	s = register(t, p, f, s, true, "李小龙测试 front door", "rtmp://edge.example.test/live")
	hb, _ := vectorFrame(t, "heartbeat")
	s, _ = run(t, p, testT0.Add(time.Second), s, f.frame(vectors.SN, hb, testT0.Add(1234567*time.Microsecond)))
	return p, s
}

func TestStateRoundTrip(t *testing.T) {
	p, s := fullState(t)
	b, err := p.EncodeState(vectors.SN, s)
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.DecodeState(vectors.SN, b)
	if err != nil {
		t.Fatal(err)
	}
	if *got.session != *s.session || !bytes.Equal(got.sealedSession, s.sealedSession) ||
		!bytes.Equal(got.sealedReply, s.sealedReply) || got.handshake != s.handshake ||
		!got.presence.Equal(s.presence) || got.reg != s.reg || !got.sessionAt.Equal(s.sessionAt) ||
		!got.updatedAt.Equal(s.updatedAt) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, s)
	}
	b2, err := p.EncodeState(vectors.SN, got)
	if err != nil || !bytes.Equal(b, b2) {
		t.Fatal("re-encoding a restored state gives other bytes")
	}
	var ds schemas.DeviceState
	if err := testReg.Decode(b, &ds); err != nil {
		t.Fatal(err)
	}
	if ds.SN != vectors.SN || ds.HandshakeDigest == "" || ds.HeartbeatDeadline == nil || !ds.Presence.Online ||
		ds.SessionEstablishedAt == nil || ds.SealedSession == nil || ds.SealedHandshakeReply == nil {
		t.Errorf("changelog value %+v", ds)
	}

	// The changelog never holds the plain session key, iv, or the
	// handshake's key2 / iv2, in any common encoding.
	secrets := [][]byte{s.session.Key[:], s.session.IV[:], s.session.Key[:8], s.session.IV[:8],
		[]byte(hex.EncodeToString(s.session.Key[:8])),
		[]byte(vectors.Handshake.Key2), []byte(vectors.Handshake.IV2), []byte(vectors.Handshake.Key1),
		[]byte(vectors.Handshake.Reply.Data[:32])}
	for _, sec := range secrets {
		if bytes.Contains(b, sec) {
			t.Errorf("changelog value contains secret bytes %q", sec)
		}
	}
	// Nor does printing the state.
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%+v", *s), fmt.Sprintf("%#v", *s), s.String()} {
		for _, sec := range secrets {
			if strings.Contains(out, string(sec)) {
				t.Errorf("printed state contains a secret: %s", out)
			}
		}
	}

	// Nil state: no value; nil value: no state.
	if b, err := p.EncodeState(vectors.SN, nil); b != nil || err != nil {
		t.Error("nil state encodes to a value")
	}
	if s, err := p.DecodeState(vectors.SN, nil); s != nil || err != nil {
		t.Error("nil value decodes to a state")
	}
}

func TestStateSealing(t *testing.T) {
	p, s := fullState(t)
	b, err := p.EncodeState(vectors.SN, s)
	if err != nil {
		t.Fatal(err)
	}
	// Another device's key: the sealed values are bound to the sn.
	if _, err := p.DecodeState("0505050505050004", b); err == nil {
		t.Error("state opened under another device's key")
	}
	// Another KEK: refused.
	cfg := testConfig(t, nil)
	cfg.KEK = [32]byte{9}
	p2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p2.DecodeState(vectors.SN, b); err == nil {
		t.Error("state opened with the wrong KEK")
	}
	// Rotation: the old KEK as a previous one.
	cfg.PreviousKEKs = [][32]byte{testKEK}
	p3, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := p3.DecodeState(vectors.SN, b)
	if err != nil || *got.session != *s.session {
		t.Fatalf("rotation: %v", err)
	}
	// Tampering is detected.
	var ds schemas.DeviceState
	mustDecode(t, b, &ds)
	ds.SealedSession[len(ds.SealedSession)-1] ^= 1
	tampered, _ := testReg.Encode(&ds)
	if _, err := p.DecodeState(vectors.SN, tampered); err == nil {
		t.Error("tampered session opened")
	}
	// Zero KEK refused.
	cfg.KEK = [32]byte{}
	if _, err := New(cfg); err == nil {
		t.Error("zero KEK accepted")
	}
}

// TestStateSize reports a device's state size: in memory and in the
// changelog.
func TestStateSize(t *testing.T) {
	p, s := fullState(t)
	b, err := p.EncodeState(vectors.SN, s)
	if err != nil {
		t.Fatal(err)
	}
	mem := int(unsafe.Sizeof(*s)) + int(unsafe.Sizeof(*s.session)) + cap(s.sealedSession) + cap(s.sealedReply) +
		len(s.reg.Name) + len(s.reg.StreamURL) + len(s.reg.TokenSHA256)
	t.Logf("per-device state: %d bytes in memory (struct %d, sealed session %d, sealed handshake reply %d), %d bytes in the changelog",
		mem, unsafe.Sizeof(*s), len(s.sealedSession), len(s.sealedReply), len(b))
	if mem >= 1024 {
		t.Errorf("in-memory state is %d bytes, want < 1 KiB", mem)
	}
}
