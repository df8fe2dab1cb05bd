// Package presence is the online / offline state machine of one device.
//
// It is pure: Apply takes a State and one Event and returns the next State
// and, when the device's presence changed, the Transition. It emits
// transitions only, never a repeated state, so feeding it duplicate or stale
// events is harmless. The device processor keeps the State in its
// per-device state and turns each Transition into a schemas.Presence record.
//
// # Ordering: connection epochs
//
// Broker connection events and frames reach the processor through different
// paths (MQTT subscriptions, ingest instances), so they can arrive out of
// order. Every connection has an epoch: the unix milliseconds of its
// connected_at as the broker reports it (EMQX 4 reports only a ts: the device
// processor then uses the broker time of the connect event as its epoch, and
// a disconnect carries no epoch). The machine keeps the newest epoch it has
// seen and applies these rules:
//
//   - Connected with an epoch not newer than the current one is a duplicate
//     or a stale event: ignored.
//   - Disconnected with an epoch older than the current one ends a
//     connection that has already been replaced: ignored. Without an epoch,
//     a disconnect whose time is not after the current epoch (the current
//     connection's start) is taken to belong to an older connection (the
//     EMQX takeover case, where the old connection's disconnect follows the
//     new connection's connect): ignored.
//   - A frame with an epoch older than the current one is stale and never
//     brings the device online. A frame of a newer epoch implies a new
//     connection. A frame of the current or an unknown epoch brings an
//     offline device online only if its time is after the start of the
//     offline interval, so that a frame the broker received before a
//     disconnect (but that reached the processor after it) does not revive
//     the device.
//
// # Clocks
//
// Event.At is the event's own time (the broker's receive or event time, or
// ingest time when the broker does not say): LastSeen, and the At and Since
// of transitions, use it. Event.Now is the processor's clock: the heartbeat
// deadline is max(At, Now) + timeout, so a processor catching up on a
// backlog does not declare devices offline because their frames' times are
// old. A heartbeat_timeout transition is dated LastSeen + timeout (when the
// device should have been heard from) and fires once Now reaches the
// deadline. Transition times never go backwards: At is clamped to at least
// the start of the interval it ends, so every interval length is >= 0.
//
// All times are kept with millisecond precision, in UTC, like the changelog
// that stores them, so a restored State equals the one that was saved.
package presence

import (
	"time"

	"github.com/ivms/ams/schemas"
)

// DefaultHeartbeatTimeout is how long an online device stays online without
// a frame or connection event: the seed's 90 s online mark.
const DefaultHeartbeatTimeout = 90 * time.Second

// Kind is what an Event reports.
type Kind uint8

// Event kinds.
const (
	// Seen: an accepted frame from the device.
	Seen Kind = iota + 1
	// Connected: the broker reported the device's client connected.
	Connected
	// Disconnected: the broker reported the device's client disconnected.
	Disconnected
	// Tick: the processor's clock reached Now; fires the heartbeat timeout.
	Tick
)

func (k Kind) String() string {
	switch k {
	case Seen:
		return "seen"
	case Connected:
		return "connected"
	case Disconnected:
		return "disconnected"
	case Tick:
		return "tick"
	}
	return "unknown"
}

// Event is one input of the machine.
type Event struct {
	Kind Kind
	// At is when the event happened (broker time, else ingest time). Unused
	// by Tick.
	At time.Time
	// Now is the processor's clock.
	Now time.Time
	// Epoch is the connection epoch (unix ms of connected_at); 0 if unknown.
	Epoch int64
	// Detail is the broker's disconnect reason (Disconnected only).
	Detail string
}

// State is a device's presence. The zero value is a device never seen:
// offline, with no interval started.
type State struct {
	Online   bool
	Since    time.Time // start of the current interval; zero before the first transition
	LastSeen time.Time // last frame or connection event; zero if never
	Epoch    int64     // newest connection epoch seen; 0 if unknown
	Seq      int64     // Seq of the last transition, 0 before the first
	Deadline time.Time // heartbeat deadline while online; zero when not armed
}

// Equal reports whether s and o are the same state.
func (s State) Equal(o State) bool {
	return s.Online == o.Online && s.Since.Equal(o.Since) && s.LastSeen.Equal(o.LastSeen) &&
		s.Epoch == o.Epoch && s.Seq == o.Seq && s.Deadline.Equal(o.Deadline)
}

// Transition is one change of presence.
type Transition struct {
	Online   bool
	Reason   string // schemas.PresenceConnected, PresenceFirstFrame, PresenceHeartbeatTimeout or PresenceDisconnected
	Detail   string // the broker's disconnect reason, for PresenceDisconnected
	At       time.Time
	Since    time.Time     // start of the interval that ended; zero for the first transition
	Interval time.Duration // length of the interval that ended; 0 for the first transition
	Epoch    int64         // connection epoch after the transition
	Seq      int64         // per-device transition number, from 1
}

// Machine applies events with a heartbeat timeout. The zero Machine uses
// DefaultHeartbeatTimeout.
type Machine struct {
	HeartbeatTimeout time.Duration
}

func (m Machine) timeout() time.Duration {
	if m.HeartbeatTimeout <= 0 {
		return DefaultHeartbeatTimeout
	}
	return m.HeartbeatTimeout
}

// Apply returns the state after e and, when the presence changed, the
// transition (ok true). It never modifies s.
func (m Machine) Apply(s State, e Event) (next State, t Transition, ok bool) {
	e.At, e.Now = Millis(e.At), Millis(e.Now)
	switch e.Kind {
	case Seen:
		return m.seen(s, e)
	case Connected:
		return m.connected(s, e)
	case Disconnected:
		return m.disconnected(s, e)
	case Tick:
		return m.tick(s, e.Now)
	}
	return s, Transition{}, false
}

// DeadlineOf returns the heartbeat deadline of s, if one is armed.
func DeadlineOf(s State) (time.Time, bool) {
	if !s.Online || s.Deadline.IsZero() {
		return time.Time{}, false
	}
	return s.Deadline, true
}

func (m Machine) seen(s State, e Event) (State, Transition, bool) {
	s.LastSeen = later(s.LastSeen, e.At)
	stale := e.Epoch != 0 && s.Epoch != 0 && e.Epoch < s.Epoch
	if stale {
		return s, Transition{}, false
	}
	newConn := e.Epoch != 0 && e.Epoch > s.Epoch
	if newConn {
		s.Epoch = e.Epoch
	}
	if s.Online {
		s.Deadline = m.deadline(e)
		return s, Transition{}, false
	}
	if !newConn && !s.Since.IsZero() && !e.At.After(s.Since) {
		return s, Transition{}, false // older than the offline interval
	}
	s.Deadline = m.deadline(e)
	return transition(s, true, schemas.PresenceFirstFrame, "", e.At)
}

func (m Machine) connected(s State, e Event) (State, Transition, bool) {
	if e.Epoch != 0 && e.Epoch <= s.Epoch {
		return s, Transition{}, false // duplicate or stale
	}
	if e.Epoch != 0 {
		s.Epoch = e.Epoch
	}
	s.LastSeen = later(s.LastSeen, e.At)
	s.Deadline = m.deadline(e)
	if s.Online {
		return s, Transition{}, false // a reconnect whose disconnect we have not seen (or will never apply)
	}
	return transition(s, true, schemas.PresenceConnected, "", e.At)
}

func (m Machine) disconnected(s State, e Event) (State, Transition, bool) {
	if s.Epoch != 0 {
		if e.Epoch != 0 && e.Epoch < s.Epoch {
			return s, Transition{}, false // ends a connection already replaced
		}
		if e.Epoch == 0 && e.At.UnixMilli() <= s.Epoch {
			return s, Transition{}, false // not after the current connection began
		}
	}
	if e.Epoch > s.Epoch {
		s.Epoch = e.Epoch
	}
	s.LastSeen = later(s.LastSeen, e.At)
	if !s.Online {
		return s, Transition{}, false
	}
	s.Deadline = time.Time{}
	return transition(s, false, schemas.PresenceDisconnected, e.Detail, e.At)
}

func (m Machine) tick(s State, now time.Time) (State, Transition, bool) {
	if !s.Online || s.Deadline.IsZero() || now.Before(s.Deadline) {
		return s, Transition{}, false
	}
	at := s.LastSeen.Add(m.timeout())
	if s.LastSeen.IsZero() || at.After(now) {
		at = now
	}
	s.Deadline = time.Time{}
	return transition(s, false, schemas.PresenceHeartbeatTimeout, "", at)
}

func (m Machine) deadline(e Event) time.Time {
	return later(e.At, e.Now).Add(m.timeout())
}

// transition moves s to online at at (never before s.Since) and returns the
// transition.
func transition(s State, online bool, reason, detail string, at time.Time) (State, Transition, bool) {
	if at.IsZero() || at.Before(s.Since) {
		at = s.Since
	}
	t := Transition{
		Online: online,
		Reason: reason,
		Detail: detail,
		At:     at,
		Since:  s.Since,
		Epoch:  s.Epoch,
		Seq:    s.Seq + 1,
	}
	if !s.Since.IsZero() {
		t.Interval = at.Sub(s.Since)
	}
	s.Online = online
	s.Since = at
	s.Seq = t.Seq
	return s, t, true
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Millis returns t truncated to whole milliseconds in UTC (the changelog's
// precision); the zero time stays zero.
func Millis(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return time.UnixMilli(t.UnixMilli()).UTC()
}
