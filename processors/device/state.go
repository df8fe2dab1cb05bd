package device

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/processors/cmdlife"
	"github.com/ivms/ams/processors/presence"
	"github.com/ivms/ams/schemas"
)

// State is the processor's in-memory state of one device. It is immutable
// once handed to the runtime: Process and Timer return a new State instead of
// changing one. Its changelog form is schemas.DeviceState, with the session
// key and the handshake reply sealed (AES-256-GCM under the KEK).
//
// The plain session key is held behind a pointer of a redacting type, so
// printing a State with fmt shows an address, never the key.
type State struct {
	session       *protocol.SessionKey // plain key, memory only; nil when no session
	sealedSession []byte               // its changelog form
	sessionAt     time.Time
	handshake     [32]byte // sha256 of the sData of the last accepted handshake; zero when none
	sealedReply   []byte   // the reply frame sent for it, sealed; nil when none
	presence      presence.State
	reg           Registration
	// pending is the device's command list (processors/cmdlife): active
	// commands in acceptance order, then the recently finished ones.
	pending   []schemas.PendingCommand
	updatedAt time.Time
	// Rate limits (limits.go); nil: full.
	hsBucket, frameBucket *schemas.TokenBucket
	// staleSeal: a sealed field of the restored changelog value opened
	// only with a previous KEK. The state's timer is then due at once
	// (Deadline) and Timer re-seals it under the current KEK (rewrap.go).
	staleSeal bool
}

// Registration is what ams.registry says about a device.
type Registration struct {
	Registered  bool // ams.registry holds the device; the fields below are empty otherwise
	Bound       bool
	Name        string
	StreamURL   string
	TokenSHA256 string // credentialDigest of the registration: changes when the token does
}

// HasSession reports whether the device has a session key.
func (s *State) HasSession() bool { return s != nil && s.session != nil }

// SessionEstablishedAt is when the current session's handshake was accepted.
func (s *State) SessionEstablishedAt() time.Time {
	if s == nil {
		return time.Time{}
	}
	return s.sessionAt
}

// Presence returns the device's presence.
func (s *State) Presence() presence.State {
	if s == nil {
		return presence.State{}
	}
	return s.presence
}

// Registration returns the device's registration.
func (s *State) Registration() Registration {
	if s == nil {
		return Registration{}
	}
	return s.reg
}

// empty reports whether s holds nothing worth keeping (its changelog entry
// can be a tombstone).
func (s *State) empty() bool {
	return s.session == nil && s.sealedReply == nil && s.presence.Equal(presence.State{}) &&
		!s.reg.Registered && cmdlife.Active(s.pending) == 0
}

// String summarises s without secrets.
func (s *State) String() string {
	if s == nil {
		return "device.State(nil)"
	}
	return fmt.Sprintf("device.State{session:%v online:%v seq:%d registered:%v bound:%v pending:%d}",
		s.session != nil, s.presence.Online, s.presence.Seq, s.reg.Registered, s.reg.Bound, cmdlife.Active(s.pending))
}

// EncodeState implements keyed.Handler: the changelog value of state.
func (p *Processor) EncodeState(key string, s *State) ([]byte, error) {
	if s == nil {
		return nil, nil
	}
	ps := s.presence
	ds := schemas.DeviceState{
		SN:            key,
		SealedSession: s.sealedSession,
		Presence: schemas.PresenceState{
			Online:   ps.Online,
			Since:    timePtr(ps.Since),
			LastSeen: timePtr(ps.LastSeen),
			Epoch:    ps.Epoch,
			Seq:      ps.Seq,
		},
		HeartbeatDeadline:    timePtr(ps.Deadline),
		SealedHandshakeReply: s.sealedReply,
		Registered:           s.reg.Registered,
		Bound:                s.reg.Bound,
		Name:                 s.reg.Name,
		StreamURL:            s.reg.StreamURL,
		TokenSHA256:          s.reg.TokenSHA256,
		PendingCommands:      s.pending,
		UpdatedAt:            s.updatedAt,
		HandshakeBucket:      s.hsBucket,
		FrameBucket:          s.frameBucket,
	}
	if s.session != nil {
		ds.SessionEstablishedAt = timePtr(s.sessionAt)
	}
	if s.handshake != ([32]byte{}) {
		ds.HandshakeDigest = hex.EncodeToString(s.handshake[:])
	}
	if ds.PendingCommands == nil {
		ds.PendingCommands = []schemas.PendingCommand{}
	}
	b, err := p.reg.Encode(&ds)
	if err != nil {
		return nil, fmt.Errorf("device: encode state of %q: %w", key, err)
	}
	return b, nil
}

// DecodeState implements keyed.Handler. It fails (stopping the partition)
// when the value does not decode or its secrets do not open with any
// configured KEK: a changelog the processor cannot read is a configuration
// error, not something to skip.
func (p *Processor) DecodeState(key string, value []byte) (*State, error) {
	if value == nil {
		return nil, nil
	}
	var ds schemas.DeviceState
	if err := p.reg.Decode(value, &ds); err != nil {
		return nil, fmt.Errorf("device: decode state of %q: %w", key, err)
	}
	s := &State{
		sealedSession: ds.SealedSession,
		sealedReply:   ds.SealedHandshakeReply,
		presence: presence.State{
			Online:   ds.Presence.Online,
			Since:    timeVal(ds.Presence.Since),
			LastSeen: timeVal(ds.Presence.LastSeen),
			Epoch:    ds.Presence.Epoch,
			Seq:      ds.Presence.Seq,
			Deadline: timeVal(ds.HeartbeatDeadline),
		},
		reg: Registration{
			Registered:  ds.Registered,
			Bound:       ds.Bound,
			Name:        ds.Name,
			StreamURL:   ds.StreamURL,
			TokenSHA256: ds.TokenSHA256,
		},
		pending:     ds.PendingCommands,
		updatedAt:   presence.Millis(ds.UpdatedAt),
		hsBucket:    ds.HandshakeBucket,
		frameBucket: ds.FrameBucket,
	}
	if len(s.pending) == 0 {
		s.pending = nil
	}
	if ds.SealedSession != nil {
		pt, kek, err := p.openWith(key, purposeSession, ds.SealedSession)
		if err != nil {
			return nil, fmt.Errorf("device: state of %q: session: %w", key, err)
		}
		if len(pt) != sessionPlainLen {
			clear(pt)
			return nil, fmt.Errorf("device: state of %q: sealed session holds %d bytes, want %d", key, len(pt), sessionPlainLen)
		}
		var k protocol.SessionKey
		copy(k.Key[:], pt[:32])
		copy(k.IV[:], pt[32:])
		clear(pt)
		if k.IsZero() {
			return nil, fmt.Errorf("device: state of %q: session: all-zero key", key)
		}
		s.session = &k
		s.sessionAt = timeVal(ds.SessionEstablishedAt)
		s.staleSeal = kek > 0
	}
	if ds.HandshakeDigest != "" {
		d, err := hex.DecodeString(ds.HandshakeDigest)
		if err != nil || len(d) != len(s.handshake) {
			return nil, fmt.Errorf("device: state of %q: handshake digest is not 64 hex digits", key)
		}
		copy(s.handshake[:], d)
	}
	if ds.SealedHandshakeReply != nil {
		// Check it opens now rather than when a redelivered handshake needs it.
		_, kek, err := p.openWith(key, purposeReply, ds.SealedHandshakeReply)
		if err != nil {
			return nil, fmt.Errorf("device: state of %q: handshake reply: %w", key, err)
		}
		s.staleSeal = s.staleSeal || kek > 0
	}
	return s, nil
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = presence.Millis(t)
	return &t
}

func timeVal(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return presence.Millis(*t)
}

// Sealing. A sealed value is
//
//	0x01 | nonce (12 bytes) | AES-256-GCM(KEK, nonce, plaintext, aad)
//
// with aad = "ams.device-state.v1\x00" + purpose + "\x00" + sn, so a sealed
// value only opens for the device and the field it was sealed for (it cannot
// be copied to another device's state). The plaintext of a session is its
// 32-byte key then its 16-byte iv; of a handshake reply, the reply frame as
// sent.
const (
	sealVersion    = 1
	purposeSession = "session"
	purposeReply   = "handshake_reply"

	sessionPlainLen = 32 + 16
)

// errSeal is returned when a sealed value does not open with any KEK.
var errSeal = errors.New("sealed value does not open with any configured KEK (wrong key, or tampered)")

func sealAAD(sn, purpose string) []byte {
	aad := make([]byte, 0, 32+len(purpose)+len(sn))
	aad = append(aad, "ams.device-state.v1\x00"...)
	aad = append(aad, purpose...)
	aad = append(aad, 0)
	return append(aad, sn...)
}

func (p *Processor) seal(sn, purpose string, plaintext []byte) ([]byte, error) {
	nonceSize := p.aeads[0].NonceSize()
	out := make([]byte, 1+nonceSize, 1+nonceSize+len(plaintext)+p.aeads[0].Overhead())
	out[0] = sealVersion
	if _, err := io.ReadFull(p.rand, out[1:]); err != nil {
		return nil, fmt.Errorf("device: reading a nonce: %w", err)
	}
	return p.aeads[0].Seal(out, out[1:], plaintext, sealAAD(sn, purpose)), nil
}

func (p *Processor) open(sn, purpose string, sealed []byte) ([]byte, error) {
	pt, _, err := p.openWith(sn, purpose, sealed)
	return pt, err
}

// openWith opens sealed and says which KEK opened it: 0 the current one,
// i > 0 PreviousKEKs[i-1].
func (p *Processor) openWith(sn, purpose string, sealed []byte) ([]byte, int, error) {
	nonceSize := p.aeads[0].NonceSize()
	if len(sealed) < 1+nonceSize || sealed[0] != sealVersion {
		return nil, -1, errors.New("sealed value has an unknown format")
	}
	aad := sealAAD(sn, purpose)
	for i, a := range p.aeads {
		pt, err := a.Open(nil, sealed[1:1+nonceSize], sealed[1+nonceSize:], aad)
		if err == nil {
			return pt, i, nil
		}
	}
	return nil, -1, errSeal
}

func newAEADs(kek [32]byte, previous [][32]byte) ([]cipher.AEAD, error) {
	keys := append([][32]byte{kek}, previous...)
	out := make([]cipher.AEAD, 0, len(keys))
	for i, k := range keys {
		if k == ([32]byte{}) {
			return nil, fmt.Errorf("device: KEK %d is all zeros", i)
		}
		b, err := aes.NewCipher(k[:])
		if err != nil {
			return nil, fmt.Errorf("device: KEK %d: %w", i, err)
		}
		a, err := cipher.NewGCM(b)
		if err != nil {
			return nil, fmt.Errorf("device: KEK %d: %w", i, err)
		}
		out = append(out, a)
	}
	return out, nil
}
