package device

import (
	"bytes"
	"testing"
	"time"

	"github.com/ivms/ams/processors/keyed"
	"github.com/ivms/ams/processors/keyed/keyedtest"
	"github.com/ivms/ams/schemas"
)

// TestLifecycle drives a device through the keyed runtime's tester: connect,
// handshake, registration, configuration, heartbeats, a partition move, a
// heartbeat timeout, a late heartbeat and a disconnect.
func TestLifecycle(t *testing.T) {
	setup(t)
	p := newTestProcessor(t, nil)
	kt := keyedtest.New[State](p, keyedtest.WithTB(t), keyedtest.WithStart(testT0))
	sn := vectors.SN
	enc := func(v any) []byte {
		b, err := testReg.Encode(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	feed := func(topic string, v any) outputs {
		t.Helper()
		in := keyed.Input{Topic: topic, Key: sn}
		if v != nil {
			in.Value = enc(v)
		}
		return decodeOutputs(t, kt.Feed(in))
	}
	frame := func(name string) outputs {
		t.Helper()
		b := []byte(vectors.Handshake.Request)
		if name != "" {
			b, _ = vectorFrame(t, name)
		}
		return feed(testTopics.UplinkRaw, rawFrame(sn, b, kt.Now()))
	}
	epoch := kt.Now()
	connected := func(kind, reason string) *schemas.UplinkRaw {
		bt := kt.Now()
		ca := epoch
		return &schemas.UplinkRaw{Kind: kind, SN: sn, ClientID: sn, Reason: reason, BrokerTime: &bt,
			ConnectedAt: &ca, IngestTime: bt, Payload: []byte(`{}`)}
	}

	o := feed(testTopics.UplinkRaw, connected(schemas.UplinkConnected, ""))
	if len(o.presence) != 1 || o.presence[0].Reason != schemas.PresenceConnected {
		t.Fatalf("connect: %+v", o)
	}
	o = frame("")
	if len(o.downlinks) != 1 || o.downlinks[0].Purpose != PurposeHandshakeReply || len(o.presence) != 0 {
		t.Fatalf("handshake: %+v", o)
	}
	o = feed(testTopics.Registry, &schemas.Registration{SN: sn, Bound: true, Name: "李小龙测试", UpdatedAt: testT0})
	if len(o.events)+len(o.downlinks) != 0 {
		t.Fatalf("registration: %+v", o)
	}
	o = frame("config upload")
	if len(o.events) != 1 || len(o.downlinks) != 2 {
		t.Fatalf("configuration: %+v", o)
	}
	hbReply, _ := vectorFrame(t, "heartbeat reply")
	for range 3 {
		if out := kt.Advance(30 * time.Second); len(out) != 0 {
			t.Fatalf("timer fired while heartbeats arrive: %+v", decodeOutputs(t, out))
		}
		o = frame("heartbeat")
		if len(o.downlinks) != 1 || !bytes.Equal(o.downlinks[0].Payload, hbReply) || len(o.presence) != 0 {
			t.Fatalf("heartbeat: %+v", o)
		}
	}

	// The partition moves: the next owner answers with the same session.
	kt.Restore()
	if s := kt.State(sn); !s.HasSession() || !s.Presence().Online || !s.Registration().Bound {
		t.Fatalf("restored state %v", s)
	}
	o = frame("heartbeat")
	if len(o.downlinks) != 1 || !bytes.Equal(o.downlinks[0].Payload, hbReply) {
		t.Fatalf("heartbeat after restore: %+v", o)
	}
	lastHB := kt.Now()

	// Silence: the restored timer fires once, 90 s after the last heartbeat.
	kt.Restore()
	out := decodeOutputs(t, kt.Advance(10*time.Minute))
	if len(out.presence) != 1 || out.presence[0].Reason != schemas.PresenceHeartbeatTimeout ||
		!out.presence[0].At.Equal(lastHB.Add(90*time.Second)) || out.presence[0].Online {
		t.Fatalf("timeout: %+v", out)
	}
	kt.Restore()
	if out := kt.Advance(time.Hour); len(out) != 0 {
		t.Fatalf("timer fired again: %+v", decodeOutputs(t, out))
	}

	// A late heartbeat, then the connection's disconnect.
	o = frame("heartbeat")
	if len(o.presence) != 1 || !o.presence[0].Online || o.presence[0].Reason != schemas.PresenceFirstFrame {
		t.Fatalf("late heartbeat: %+v", o)
	}
	kt.Advance(time.Second)
	o = feed(testTopics.UplinkRaw, connected(schemas.UplinkDisconnected, "keepalive_timeout"))
	if len(o.presence) != 1 || o.presence[0].Online || o.presence[0].Detail != "keepalive_timeout" || o.presence[0].Seq != 4 {
		t.Fatalf("disconnect: %+v", o)
	}
	if _, ok := kt.Deadline(sn); ok {
		t.Error("offline device keeps a timer")
	}
	// A redelivered connect of the same connection does not revive it.
	o = feed(testTopics.UplinkRaw, connected(schemas.UplinkConnected, ""))
	if len(o.events) != 1 || len(o.presence) != 0 {
		t.Fatalf("redelivered connect: %+v", o)
	}
}
