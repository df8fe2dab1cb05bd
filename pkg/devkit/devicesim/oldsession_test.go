package devicesim

import (
	"testing"
	"time"

	"github.com/ivms/ams/pkg/protocol"
)

// TestOldSessionFrames: after a connection ends, frames the cloud sent under
// its session are late (heartbeat replies, up to the heartbeats it left
// unanswered) or stale (anything else) within the reply timeout, and
// failures after it or under a session the device never had.
func TestOldSessionFrames(t *testing.T) {
	f, err := New(baseConfig(t, "tcp://127.0.0.1:1", 1))
	if err != nil {
		t.Fatal(err)
	}
	d := f.devices[0]
	old := protocol.DeriveSession("a", "b", "c", "d")
	cur := protocol.DeriveSession("e", "f", "g", "h")
	other := protocol.DeriveSession("i", "j", "k", "l")
	hbReply := func(s protocol.SessionKey) inFrame {
		fr := d.frame(protocol.CmdHeartbeat, protocol.EncryptBody(s, []byte(`{"iOnline":1}`)))
		return inFrame{payload: fr.Encode(), at: time.Now()}
	}
	command := func(s protocol.SessionKey) inFrame {
		fr := d.frame(protocol.CmdCommand, protocol.EncryptBody(s, []byte(`{"iCmdType":1}`)))
		return inFrame{payload: fr.Encode(), at: time.Now()}
	}
	// The state serve leaves when a connection with one heartbeat in
	// flight ends; a new handshake is under way.
	d.hbCarry, d.prevSession, d.prevUntil = 1, &old, time.Now().Add(time.Minute)
	steps := []struct {
		name    string
		session *protocol.SessionKey
		in      inFrame
		want    string
	}{
		{"heartbeat reply under the old session, no session yet", nil, hbReply(old), ""},
		{"a second one: nothing left in flight", nil, hbReply(old), FailNoSession},
		{"command under the old session, no session yet", nil, command(old), ""},
		{"command under the old session, new session", &cur, command(old), ""},
		{"heartbeat reply under a session the device never had", &cur, hbReply(other), string(protocol.ReasonBadPadding)},
		{"command under a session the device never had", nil, command(other), FailNoSession},
	}
	for _, st := range steps {
		d.session.Store(st.session)
		_, _, got := d.check(nil, st.in)
		if got != st.want && !(st.want == string(protocol.ReasonBadPadding) && got == string(protocol.ReasonBadMD5)) {
			t.Errorf("%s: failure %q, want %q", st.name, got, st.want)
		}
	}
	if s := f.Stats(); s.LateReplies != 1 || s.StaleFrames != 2 {
		t.Errorf("late replies %d, stale frames %d; want 1 and 2", s.LateReplies, s.StaleFrames)
	}
	// Past the reply timeout of the change, the old session's frames are
	// failures again.
	d.prevUntil = time.Now().Add(-time.Millisecond)
	d.session.Store(&cur)
	if _, _, got := d.check(nil, command(old)); got == "" {
		t.Errorf("a command under the old session after the window was accepted")
	}
}
