package devicesim

import (
	"testing"
	"time"
)

// TestFleetClosedLoop: in closed loop a device's next heartbeat follows the
// reply to the last one (many round trips in the time the open loop would
// send one), and a heartbeat that gets no reply is not followed by another
// until the reply timeout.
func TestFleetClosedLoop(t *testing.T) {
	url := startBroker(t)

	t.Run("answered", func(t *testing.T) {
		cloud := newTestCloud(t, "0505050505")
		cloud.start(url)
		const n = 5
		cfg := baseConfig(t, url, n)
		cfg.ClosedLoop = true
		cfg.Heartbeat = 100 * time.Millisecond // only the first one's delay
		cfg.ReplyTimeout = time.Minute
		f, stop := startFleet(t, cfg)
		waitFor(t, 20*time.Second, "50 closed-loop round trips per device", func(s Stats) bool {
			return s.ClosedLoop != nil && s.ClosedLoop.Replies >= 50*n
		}, f)
		s := stop().Stats
		t.Logf("summary:\n%s", Report(s))
		cl := s.ClosedLoop
		if cl.RepliesPerS <= 0 || cl.Latency.P50MS <= 0 || cl.Latency.P999MS < cl.Latency.P99MS || cl.Latency.MaxMS < cl.Latency.P999MS {
			t.Errorf("closed loop summary inconsistent: %+v", cl)
		}
		if s.FailuresTotal != 0 || s.Failures[FailUnsolicited] != 0 {
			t.Errorf("failures: %v", s.Failures)
		}
		// Never more than one heartbeat of a device outstanding.
		if d := s.Sent[SentHeartbeat] - s.Received[RecvHeartbeat]; d < 0 || d > n {
			t.Errorf("sent %d heartbeats, received %d replies: more than one outstanding per device", s.Sent[SentHeartbeat], s.Received[RecvHeartbeat])
		}
	})

	t.Run("unanswered", func(t *testing.T) {
		cloud := newTestCloud(t, "0505050506")
		cloud.silentHeartbeats = true
		cloud.start(url)
		const n = 4
		cfg := baseConfig(t, url, n)
		cfg.SNPrefix = "0505050506"
		cfg.ClosedLoop = true
		cfg.Heartbeat = 50 * time.Millisecond
		cfg.ReplyTimeout = time.Minute
		f, stop := startFleet(t, cfg)
		waitFor(t, 20*time.Second, "one heartbeat per device", func(s Stats) bool {
			return s.Sent[SentHeartbeat] >= n
		}, f)
		// The open loop would send one every 50ms; the closed loop waits
		// for the reply (or the minute's timeout).
		time.Sleep(500 * time.Millisecond)
		s := stop().Stats
		if got := s.Sent[SentHeartbeat]; got != n {
			t.Errorf("sent %d heartbeats without replies, want %d (one per device)", got, n)
		}
		if s.ClosedLoop == nil || s.ClosedLoop.Replies != 0 {
			t.Errorf("closed loop counted replies that never came: %+v", s.ClosedLoop)
		}
	})
}
