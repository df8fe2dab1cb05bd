package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/ivms/ams/schemas"
)

// Default connection-event filters: EMQX publishes
// $SYS/brokers/{node}/clients/{clientid}/connected and .../disconnected.
const (
	DefaultConnectedFilter    = "$SYS/brokers/+/clients/+/connected"
	DefaultDisconnectedFilter = "$SYS/brokers/+/clients/+/disconnected"
)

// EventFilter is an MQTT topic filter of broker connection events. It has
// exactly two '+' levels: the first is the broker node, the second the client
// id (EMQX: $SYS/brokers/+/clients/+/connected).
type EventFilter struct {
	Filter string
	Kind   string // schemas.UplinkConnected or schemas.UplinkDisconnected
	levels []string
}

// NewEventFilter checks filter and returns it as an EventFilter of kind.
func NewEventFilter(filter, kind string) (EventFilter, error) {
	if kind != schemas.UplinkConnected && kind != schemas.UplinkDisconnected {
		return EventFilter{}, fmt.Errorf("event filter %q: kind %q is not %s or %s", filter, kind, schemas.UplinkConnected, schemas.UplinkDisconnected)
	}
	levels := strings.Split(filter, "/")
	plus := 0
	for _, l := range levels {
		switch {
		case l == "+":
			plus++
		case strings.ContainsAny(l, "+#"):
			return EventFilter{}, fmt.Errorf("event filter %q: only whole '+' levels are allowed (no '#')", filter)
		}
	}
	if plus != 2 {
		return EventFilter{}, fmt.Errorf("event filter %q: want exactly two '+' levels (node, client id), have %d", filter, plus)
	}
	return EventFilter{Filter: filter, Kind: kind, levels: levels}, nil
}

// match returns the node and client id levels of topic when it matches f.
func (f EventFilter) match(topic string) (node, clientID string, ok bool) {
	levels := strings.Split(topic, "/")
	if len(levels) != len(f.levels) {
		return "", "", false
	}
	var caps []string
	for i, l := range f.levels {
		if l == "+" {
			caps = append(caps, levels[i])
			continue
		}
		if l != levels[i] {
			return "", "", false
		}
	}
	return caps[0], caps[1], true
}

// ConnEvent is a broker connection event, parsed.
type ConnEvent struct {
	Kind     string // schemas.UplinkConnected or schemas.UplinkDisconnected
	Node     string // broker node, from the topic
	ClientID string // from the payload
	Username string
	Reason   string // disconnect reason (EMQX: normal, keepalive_timeout, tcp_closed, ...)
	// BrokerTime is when the broker produced the event: connected_at /
	// disconnected_at (EMQX 5), else ts.
	BrokerTime *time.Time
	// ConnectedAt identifies the connection (its epoch): connected_at when
	// the payload has it (EMQX 5 connected, and disconnected where present),
	// else ts of a connected event (EMQX 4); nil for an EMQX 4 disconnect.
	ConnectedAt *time.Time
}

// errBadEvent is wrapped by ParseEvent for a payload that is not an event.
var errBadEvent = errors.New("bad connection event")

// errClientIDMismatch is wrapped by ParseEvent when the payload's client id
// is not the topic's.
var errClientIDMismatch = errors.New("client id of the event payload differs from the topic's")

// emqxEvent is the union of the EMQX 4.x and 5.x connected / disconnected
// payloads; the fields ams does not use are left out.
type emqxEvent struct {
	ClientID       *string  `json:"clientid"`
	Username       *string  `json:"username"`
	Reason         any      `json:"reason"` // a string; EMQX 5 may send a structured reason
	TS             *float64 `json:"ts"`
	ConnectedAt    *float64 `json:"connected_at"`
	DisconnectedAt *float64 `json:"disconnected_at"`
}

// ParseEvent parses the payload of a connection event that arrived on topic,
// which matched f. It accepts the EMQX 4.x payload
// ({"clientid","username","reason","ts"}, ts in seconds or milliseconds) and
// the EMQX 5.x payload (adds connected_at / disconnected_at, milliseconds).
// A number below 1e11 is taken as seconds, above as milliseconds (1e11 s is
// the year 5138, 1e11 ms is 1973).
func ParseEvent(f EventFilter, topic string, payload []byte) (ConnEvent, error) {
	node, topicClient, ok := f.match(topic)
	if !ok {
		return ConnEvent{}, fmt.Errorf("%w: topic %q does not match %q", errBadEvent, topic, f.Filter)
	}
	var e emqxEvent
	dec := json.NewDecoder(bytes.NewReader(payload))
	if err := dec.Decode(&e); err != nil {
		return ConnEvent{}, fmt.Errorf("%w: %v", errBadEvent, err)
	}
	if dec.More() {
		return ConnEvent{}, fmt.Errorf("%w: trailing data after the JSON object", errBadEvent)
	}
	if e.ClientID == nil {
		return ConnEvent{}, fmt.Errorf("%w: no clientid", errBadEvent)
	}
	if *e.ClientID != topicClient {
		return ConnEvent{}, fmt.Errorf("%w: payload %q, topic %q", errClientIDMismatch, *e.ClientID, topicClient)
	}
	ev := ConnEvent{Kind: f.Kind, Node: node, ClientID: *e.ClientID}
	if e.Username != nil {
		ev.Username = *e.Username
	}
	switch r := e.Reason.(type) {
	case nil:
	case string:
		ev.Reason = r
	default:
		b, _ := json.Marshal(r)
		ev.Reason = string(b)
	}
	var err error
	var ts, connAt, discAt *time.Time
	if ts, err = epochTime("ts", e.TS); err != nil {
		return ConnEvent{}, err
	}
	if connAt, err = epochTime("connected_at", e.ConnectedAt); err != nil {
		return ConnEvent{}, err
	}
	if discAt, err = epochTime("disconnected_at", e.DisconnectedAt); err != nil {
		return ConnEvent{}, err
	}
	ev.ConnectedAt = connAt
	switch f.Kind {
	case schemas.UplinkConnected:
		ev.BrokerTime = firstTime(connAt, ts)
		if ev.ConnectedAt == nil {
			ev.ConnectedAt = ts
		}
	default:
		ev.BrokerTime = firstTime(discAt, ts)
	}
	return ev, nil
}

func firstTime(ts ...*time.Time) *time.Time {
	for _, t := range ts {
		if t != nil {
			return t
		}
	}
	return nil
}

// epochTime converts a Unix time in seconds or milliseconds (see ParseEvent).
func epochTime(field string, v *float64) (*time.Time, error) {
	if v == nil {
		return nil, nil
	}
	x := *v
	if math.IsNaN(x) || x <= 0 || x > 1e15 {
		return nil, fmt.Errorf("%w: %s %v is not a Unix time", errBadEvent, field, x)
	}
	var t time.Time
	if x < 1e11 {
		t = time.UnixMilli(int64(math.Round(x * 1000)))
	} else {
		t = time.UnixMilli(int64(math.Round(x)))
	}
	t = t.UTC()
	return &t, nil
}
