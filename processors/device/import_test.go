package device

import (
	"testing"
	"time"

	"github.com/ivms/ams/pkg/protocol"
)

// TestImportedSessionState: the state a session import writes restores in a
// processor with the same KEK as a device with that session (and not with
// another KEK), and refuses an all-zero key.
func TestImportedSessionState(t *testing.T) {
	setup(t)
	k, err := protocol.SessionFromStrings("0123456789abcdef0123456789abcdef", "fedcba9876543210")
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	b, err := ImportedSessionState(testReg, testKEK, "0505050505000001", k, at)
	if err != nil {
		t.Fatal(err)
	}
	s, err := newTestProcessor(t, nil).DecodeState("0505050505000001", b)
	if err != nil {
		t.Fatal(err)
	}
	if !s.HasSession() || *s.session != k || !s.SessionEstablishedAt().Equal(at) {
		t.Errorf("restored state: session %v at %v, want the imported one at %v", s.HasSession(), s.SessionEstablishedAt(), at)
	}
	if _, err := newTestProcessor(t, nil).DecodeState("0505050505000002", b); err == nil {
		t.Error("the sealed session opened as another device's")
	}
	cfg := testConfig(t, nil)
	cfg.KEK = [32]byte{9}
	other, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.DecodeState("0505050505000001", b); err == nil {
		t.Error("the imported session opened with another KEK")
	}
	if _, err := ImportedSessionState(testReg, testKEK, "0505050505000001", protocol.SessionKey{}, at); err == nil {
		t.Error("an all-zero session was imported")
	}
}
