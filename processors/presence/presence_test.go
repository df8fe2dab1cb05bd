package presence

import (
	"testing"
	"time"

	"github.com/ivms/ams/schemas"
)

var t0 = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

func sec(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }

// ep is the epoch of a connection established n seconds after t0.
func ep(n int) int64 { return sec(n).UnixMilli() }

func seen(at, now int, epoch int64) Event {
	return Event{Kind: Seen, At: sec(at), Now: sec(now), Epoch: epoch}
}
func conn(at int, epoch int64) Event {
	return Event{Kind: Connected, At: sec(at), Now: sec(at), Epoch: epoch}
}
func disc(at int, epoch int64, reason string) Event {
	return Event{Kind: Disconnected, At: sec(at), Now: sec(at), Epoch: epoch, Detail: reason}
}
func tick(now int) Event { return Event{Kind: Tick, Now: sec(now)} }

// want is an expected transition: "" when none.
type want struct {
	reason   string
	online   bool
	at       int   // seconds after t0
	interval int   // seconds
	epoch    int64 // 0: not checked
	detail   string
}

func TestApply(t *testing.T) {
	none := want{}
	up := func(reason string, at, interval int) want {
		return want{reason: reason, online: true, at: at, interval: interval}
	}
	down := func(reason string, at, interval int) want {
		return want{reason: reason, online: false, at: at, interval: interval}
	}
	tests := []struct {
		name   string
		events []Event
		want   []want
		final  func(t *testing.T, s State)
	}{
		{
			name:   "first frame brings a new device online",
			events: []Event{seen(0, 0, 0), seen(30, 30, 0)},
			want:   []want{up(schemas.PresenceFirstFrame, 0, 0), none},
			final: func(t *testing.T, s State) {
				if !s.Deadline.Equal(sec(120)) {
					t.Errorf("deadline = %v, want last_seen + 90 s = %v", s.Deadline, sec(120))
				}
			},
		},
		{
			name:   "connect then frames: one transition",
			events: []Event{conn(0, ep(0)), seen(1, 1, ep(0)), seen(31, 31, 0)},
			want:   []want{{reason: schemas.PresenceConnected, online: true, at: 0, epoch: ep(0)}, none, none},
		},
		{
			name:   "duplicate connected is ignored",
			events: []Event{conn(0, ep(0)), conn(0, ep(0))},
			want:   []want{up(schemas.PresenceConnected, 0, 0), none},
		},
		{
			name:   "duplicate disconnected is ignored",
			events: []Event{conn(0, ep(0)), disc(10, ep(0), "keepalive_timeout"), disc(10, ep(0), "keepalive_timeout")},
			want: []want{up(schemas.PresenceConnected, 0, 0),
				{reason: schemas.PresenceDisconnected, at: 10, interval: 10, detail: "keepalive_timeout"}, none},
		},
		{
			name:   "redelivered connected after its disconnect does not revive",
			events: []Event{conn(0, ep(0)), disc(10, ep(0), "normal"), conn(0, ep(0))},
			want:   []want{up(schemas.PresenceConnected, 0, 0), down(schemas.PresenceDisconnected, 10, 10), none},
		},
		{
			name: "disconnect of an older epoch after a reconnect is ignored",
			events: []Event{conn(0, ep(0)), conn(20, ep(20)),
				disc(21, ep(0), "discarded"), seen(22, 22, ep(20))},
			want: []want{up(schemas.PresenceConnected, 0, 0), none, none, none},
			final: func(t *testing.T, s State) {
				if !s.Online || s.Epoch != ep(20) {
					t.Errorf("state = %+v, want online in epoch %d", s, ep(20))
				}
			},
		},
		{
			name: "disconnect without epoch not after the current connect is the old connection's (takeover)",
			events: []Event{conn(0, ep(0)), conn(20, ep(20)),
				disc(20, 0, "takeovered"), disc(25, 0, "keepalive_timeout")},
			want: []want{up(schemas.PresenceConnected, 0, 0), none, none,
				down(schemas.PresenceDisconnected, 25, 25)},
		},
		{
			name:   "connect of an older epoch than current is ignored",
			events: []Event{conn(20, ep(20)), disc(30, ep(20), "normal"), conn(10, ep(10))},
			want:   []want{up(schemas.PresenceConnected, 20, 0), down(schemas.PresenceDisconnected, 30, 10), none},
		},
		{
			name: "disconnect of a newer epoch whose connect is late; the late connect is ignored",
			events: []Event{conn(0, ep(0)), disc(50, ep(40), "keepalive_timeout"),
				conn(40, ep(40))},
			want: []want{up(schemas.PresenceConnected, 0, 0), down(schemas.PresenceDisconnected, 50, 50), none},
		},
		{
			name: "heartbeat timeout, then a late heartbeat brings it back",
			events: []Event{seen(0, 0, 0), seen(30, 30, 0), tick(119), tick(120), tick(121),
				seen(200, 200, 0)},
			want: []want{up(schemas.PresenceFirstFrame, 0, 0), none, none,
				down(schemas.PresenceHeartbeatTimeout, 120, 120), none,
				up(schemas.PresenceFirstFrame, 200, 80)},
		},
		{
			name: "a frame older than the disconnect does not revive",
			events: []Event{conn(0, ep(0)), disc(10, ep(0), "normal"),
				seen(9, 11, ep(0)), seen(8, 12, 0), seen(9, 13, ep(0)-1)},
			want: []want{up(schemas.PresenceConnected, 0, 0), down(schemas.PresenceDisconnected, 10, 10),
				none, none, none},
		},
		{
			name: "a frame of a newer epoch revives even if dated before the disconnect",
			events: []Event{conn(0, ep(0)), disc(10, ep(0), "normal"),
				seen(9, 11, ep(9))},
			want: []want{up(schemas.PresenceConnected, 0, 0), down(schemas.PresenceDisconnected, 10, 10),
				up(schemas.PresenceFirstFrame, 10, 0)},
		},
		{
			name:   "stale frame of an older epoch while online does not extend the deadline",
			events: []Event{conn(0, ep(0)), conn(5, ep(5)), seen(80, 80, ep(0)), tick(95)},
			want: []want{up(schemas.PresenceConnected, 0, 0), none, none,
				down(schemas.PresenceHeartbeatTimeout, 95, 95)},
		},
		{
			name:   "disconnect while offline is not a transition",
			events: []Event{disc(10, ep(0), "normal")},
			want:   []want{none},
		},
		{
			name:   "deadline follows the processor clock when catching up on old frames",
			events: []Event{seen(0, 1000, 0), tick(1000), tick(1089), tick(1090)},
			want: []want{up(schemas.PresenceFirstFrame, 0, 0), none, none,
				down(schemas.PresenceHeartbeatTimeout, 90, 90)},
		},
		{
			name:   "tick while offline or without a deadline does nothing",
			events: []Event{tick(0), conn(0, ep(0)), disc(1, ep(0), "normal"), tick(500)},
			want: []want{none, up(schemas.PresenceConnected, 0, 0),
				down(schemas.PresenceDisconnected, 1, 1), none},
		},
		{
			name:   "connect event extends the deadline while online",
			events: []Event{seen(0, 0, 0), conn(60, ep(60)), tick(91), tick(150)},
			want: []want{up(schemas.PresenceFirstFrame, 0, 0), none, none,
				down(schemas.PresenceHeartbeatTimeout, 150, 150)},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.events) != len(tc.want) {
				t.Fatalf("bad table: %d events, %d wants", len(tc.events), len(tc.want))
			}
			var m Machine
			var s State
			var seq int64
			for i, e := range tc.events {
				before := s
				next, tr, ok := m.Apply(s, e)
				if !s.Equal(before) {
					t.Fatalf("event %d: Apply modified its input", i)
				}
				s = next
				w := tc.want[i]
				if w.reason == "" {
					if ok {
						t.Fatalf("event %d (%v): unexpected transition %+v", i, e.Kind, tr)
					}
					continue
				}
				if !ok {
					t.Fatalf("event %d (%v): no transition, want %s", i, e.Kind, w.reason)
				}
				seq++
				if tr.Reason != w.reason || tr.Online != w.online || !tr.At.Equal(sec(w.at)) ||
					tr.Interval != time.Duration(w.interval)*time.Second || tr.Seq != seq || (w.detail != "" && tr.Detail != w.detail) {
					t.Fatalf("event %d (%v): transition %+v, want %+v (seq %d)", i, e.Kind, tr, w, seq)
				}
				if w.epoch != 0 && tr.Epoch != w.epoch {
					t.Fatalf("event %d: epoch %d, want %d", i, tr.Epoch, w.epoch)
				}
				if s.Online != tr.Online || !s.Since.Equal(tr.At) || s.Seq != tr.Seq {
					t.Fatalf("event %d: state %+v does not match transition %+v", i, s, tr)
				}
				if s.Online != !s.Deadline.IsZero() {
					t.Fatalf("event %d: online %v with deadline %v", i, s.Online, s.Deadline)
				}
			}
			if tc.final != nil {
				tc.final(t, s)
			}
		})
	}
}

// TestNoDuplicateTransitions feeds every permutation-ish interleaving of a
// small event set and checks the output alternates online / offline.
func TestNoDuplicateTransitions(t *testing.T) {
	events := []Event{conn(0, ep(0)), seen(1, 1, ep(0)), disc(5, ep(0), "normal"), conn(6, ep(6)),
		seen(7, 7, 0), disc(8, 0, "keepalive_timeout"), tick(200), seen(300, 300, ep(6)), conn(6, ep(6))}
	var m Machine
	// Every order obtained by rotating and reversing.
	for r := range len(events) {
		for _, rev := range []bool{false, true} {
			order := make([]Event, 0, len(events))
			for i := range events {
				j := (i + r) % len(events)
				if rev {
					j = len(events) - 1 - j
				}
				order = append(order, events[j])
			}
			var s State
			last := false
			first := true
			for _, e := range order {
				var tr Transition
				var ok bool
				s, tr, ok = m.Apply(s, e)
				if !ok {
					continue
				}
				if !first && tr.Online == last {
					t.Fatalf("rotation %d rev %v: repeated state %v", r, rev, tr.Online)
				}
				if tr.Interval < 0 {
					t.Fatalf("negative interval %v", tr.Interval)
				}
				first, last = false, tr.Online
			}
		}
	}
}

func TestMillis(t *testing.T) {
	in := time.Date(2024, 1, 1, 0, 0, 0, 1_234_567, time.FixedZone("x", 3600))
	got := Millis(in)
	if got.Nanosecond() != 1_000_000 || got.Location() != time.UTC {
		t.Fatalf("Millis = %v", got)
	}
	if !Millis(time.Time{}).IsZero() {
		t.Fatal("zero time must stay zero")
	}
}
