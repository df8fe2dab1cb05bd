package device

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/processors/cmdlife"
	"github.com/ivms/ams/processors/keyed"
	"github.com/ivms/ams/processors/keyed/keyedtest"
	"github.com/ivms/ams/schemas"
)

// cmdHarness drives the device processor through the keyed runtime's tester
// for command lifecycle tests.
type cmdHarness struct {
	t   *testing.T
	p   *Processor
	kt  *keyedtest.Tester[State]
	reg *prometheus.Registry
	sn  string
}

func newCmdHarness(t *testing.T, mod func(*Config)) *cmdHarness {
	t.Helper()
	setup(t)
	cfg := testConfig(t, nil)
	reg := prometheus.NewRegistry()
	cfg.Metrics = reg
	if mod != nil {
		mod(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &cmdHarness{t: t, p: p, kt: keyedtest.New[State](p, keyedtest.WithTB(t), keyedtest.WithStart(testT0)),
		reg: reg, sn: vectors.SN}
}

func (h *cmdHarness) feed(topic string, v any) outputs {
	h.t.Helper()
	in := keyed.Input{Topic: topic, Key: h.sn}
	if v != nil {
		b, err := testReg.Encode(v)
		if err != nil {
			h.t.Fatal(err)
		}
		in.Value = b
	}
	return decodeOutputs(h.t, h.kt.Feed(in))
}

func (h *cmdHarness) frame(payload []byte) outputs {
	h.t.Helper()
	return h.feed(testTopics.UplinkRaw, rawFrame(h.sn, payload, h.kt.Now()))
}

// handshake brings the device online with the vector session.
func (h *cmdHarness) handshake() outputs {
	h.t.Helper()
	o := h.frame(vectors.Handshake.Request)
	if !h.kt.State(h.sn).HasSession() || !h.kt.State(h.sn).Presence().Online {
		h.t.Fatalf("handshake: no session or not online: %+v", o)
	}
	return o
}

func (h *cmdHarness) heartbeat() outputs {
	h.t.Helper()
	b, _ := vectorFrame(h.t, "heartbeat")
	return h.frame(b)
}

func (h *cmdHarness) register() {
	h.t.Helper()
	h.feed(testTopics.Registry, &schemas.Registration{SN: h.sn, Bound: true, UpdatedAt: testT0})
}

func (h *cmdHarness) disconnect() outputs {
	h.t.Helper()
	bt := h.kt.Now()
	return h.feed(testTopics.UplinkRaw, &schemas.UplinkRaw{Kind: schemas.UplinkDisconnected, SN: h.sn, ClientID: h.sn,
		Reason: "keepalive_timeout", BrokerTime: &bt, IngestTime: bt, Payload: []byte(`{}`)})
}

func (h *cmdHarness) submit(c schemas.Command) outputs {
	h.t.Helper()
	if c.SN == "" {
		c.SN = h.sn
	}
	if c.Offline == "" {
		c.Offline = schemas.OfflineQueue
	}
	c.RequestedBy, c.RequestedAt = "test", h.kt.Now()
	return h.feed(testTopics.Commands, &c)
}

func (h *cmdHarness) receipt(commandID, msgID string) outputs {
	h.t.Helper()
	return h.feed(testTopics.DownlinkReceipts, &schemas.DownlinkReceipt{FrameID: "command/" + commandID, SN: h.sn,
		CommandID: &commandID, MsgID: msgID, PublishedAt: h.kt.Now(), Egress: "test"})
}

// reply sends the device's reply frame: iCmdType 6, or 7 with code.
func (h *cmdHarness) reply(cmdType, code int, msgID, body string) outputs {
	h.t.Helper()
	f := protocol.Frame{CmdType: cmdType, ProtocolVersion: "V1.0", MsgID: msgID, AmsCmdType: code,
		Data: protocol.EncryptBody(vectorSession(h.t), []byte(body))}
	return h.frame(f.Encode())
}

func (h *cmdHarness) pending() []schemas.PendingCommand {
	s := h.kt.State(h.sn)
	if s == nil {
		return nil
	}
	return s.pending
}

// pendingState returns the state of command id in the device's list, "" if absent.
func (h *cmdHarness) pendingState(id string) string {
	for _, p := range h.pending() {
		if p.CommandID == id {
			return p.State
		}
	}
	return ""
}

// counter is the counter's value, 0 when absent.
func (h *cmdHarness) counter(name string, labels map[string]string) float64 {
	h.t.Helper()
	return max(counterValue(h.t, h.reg, name, labels), 0)
}

// states lists "id:STATE/seq" of events.
func states(evs []schemas.CommandEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = fmt.Sprintf("%s:%s/%d", e.CommandID, e.State, e.Seq)
	}
	return out
}

func wantStates(t *testing.T, what string, o outputs, want ...string) {
	t.Helper()
	if got := states(o.commands); !slices.Equal(got, want) {
		t.Fatalf("%s: command events %v, want %v (outputs %+v)", what, got, want, o)
	}
	for _, e := range o.commands {
		if e.EventID != fmt.Sprintf("%s/%d", e.CommandID, e.Seq) || e.SN != vectors.SN {
			t.Fatalf("%s: event id %q / sn %q", what, e.EventID, e.SN)
		}
	}
}

// sentIDs lists the command ids of the command downlinks in o.
func sentIDs(t *testing.T, o outputs) []string {
	t.Helper()
	var ids []string
	for _, d := range o.downlinks {
		if d.Purpose != PurposeCommand {
			continue
		}
		if d.CommandID == nil {
			t.Fatalf("command downlink without command id: %+v", d)
		}
		ids = append(ids, *d.CommandID)
	}
	return ids
}

var hex32 = regexp.MustCompile(`^[0-9a-f]{32}$`)

// TestCommandSucceeded: online with a session, a reboot goes ACCEPTED, SENT
// (the downlink in the same transaction, byte-identical to the seed's frame
// but for sMsgId), DELIVERED on the broker's receipt and SUCCEEDED on the
// device's reply; a redelivered request is ignored.
func TestCommandSucceeded(t *testing.T) {
	h := newCmdHarness(t, nil)
	h.handshake()
	sent := h.kt.Now()
	o := h.submit(schemas.Command{ID: "c1", Kind: "reboot"})
	wantStates(t, "submit", o, "c1:ACCEPTED/1", "c1:SENT/2")
	if len(o.downlinks) != 1 {
		t.Fatalf("downlinks %+v", o.downlinks)
	}
	d := o.downlinks[0]
	if d.Purpose != PurposeCommand || *d.CommandID != "c1" || d.CmdType != 3 || d.SubType != 313 ||
		!hex32.MatchString(d.MsgID) || d.FrameID != "command/c1" || d.Topic != "/ivms/sub/"+vectors.SN {
		t.Fatalf("downlink %+v", d)
	}
	if o.commands[1].MsgID != d.MsgID || o.commands[0].Code != 313 || o.commands[0].Kind != "reboot" {
		t.Fatalf("events %+v", o.commands)
	}
	fr, body := decryptDownlink(t, d)
	want, plain := vectorFrame(t, "reboot")
	vf, _ := protocol.DecodeFrame(want)
	fr.MsgID = vf.MsgID
	if body != plain || !bytes.Equal(fr.Encode(), want) || fr.MsgID == d.MsgID {
		t.Fatalf("frame %s body %s, want the seed's %s", fr.Encode(), body, want)
	}
	if at, ok := h.kt.Deadline(h.sn); !ok || !at.Equal(sent.Add(30*time.Second)) {
		t.Fatalf("deadline %v %v, want the reply deadline", at, ok)
	}

	wantStates(t, "receipt", h.receipt("c1", d.MsgID), "c1:DELIVERED/3")
	wantStates(t, "receipt again", h.receipt("c1", d.MsgID))

	h.kt.Advance(5 * time.Second)
	o = h.reply(6, 0, d.MsgID, `{"iResult":0}`)
	wantStates(t, "reply", o, "c1:SUCCEEDED/4")
	if len(o.events) != 1 || o.events[0].Kind != schemas.EventReply || o.commands[0].Reply == nil ||
		*o.commands[0].Reply != `{"iResult":0}` || !o.commands[0].At.Equal(h.kt.Now()) || o.commands[0].MsgID != d.MsgID {
		t.Fatalf("reply outputs %+v", o)
	}
	if at, _ := h.kt.Deadline(h.sn); !at.Equal(h.kt.Now().Add(90 * time.Second)) {
		t.Fatalf("deadline %v: want only the heartbeat's", at)
	}
	if h.pendingState("c1") != schemas.CommandSucceeded || cmdlife.Active(h.pending()) != 0 {
		t.Fatalf("pending %+v", h.pending())
	}

	// Redelivered request (finished) and a second reply: ignored.
	wantStates(t, "duplicate", h.submit(schemas.Command{ID: "c1", Kind: "reboot"}))
	o = h.reply(6, 0, d.MsgID, `{"iResult":0}`)
	wantStates(t, "late reply", o)
	if len(o.events) != 1 {
		t.Fatalf("late reply has no device event: %+v", o)
	}
	for _, c := range []struct {
		in, outcome string
		want        float64
	}{{"request", "accepted", 1}, {"request", "duplicate", 1}, {"receipt", "applied", 1}, {"receipt", "stale", 1},
		{"reply", "applied", 1}, {"reply", "late_reply", 1}} {
		if got := h.counter("ams_device_command_inputs_total", map[string]string{"input": c.in, "outcome": c.outcome}); got != c.want {
			t.Errorf("command_inputs_total{%s,%s} = %v, want %v", c.in, c.outcome, got, c.want)
		}
	}
	if got := h.counter("ams_device_command_events_total", map[string]string{"state": "SUCCEEDED"}); got != 1 {
		t.Errorf("command_events_total{SUCCEEDED} = %v", got)
	}
}

// TestCommandRejected: every way a request is refused.
func TestCommandRejected(t *testing.T) {
	past := testT0.Add(-time.Minute)
	tests := []struct {
		name   string
		device string // "none", "registered" (offline, no session), "online"
		cmd    schemas.Command
		want   []string
		reason string
	}{
		{"invalid body", "online", schemas.Command{ID: "x", Kind: "reset", Body: `{"iReset":2}`},
			[]string{"x:REJECTED/1"}, "invalid_body: command reset: body field iReset: must be one of 0, 1, 328, 329, 330, 331, 333, not 2"},
		{"missing body", "online", schemas.Command{ID: "x", Kind: "osd"}, []string{"x:REJECTED/1"}, "invalid_body: command osd: body: a body is required"},
		{"unknown kind", "online", schemas.Command{ID: "x", Kind: "selfdestruct", Body: `{}`}, []string{"x:REJECTED/1"}, cmdlife.ReasonUnknownKind},
		{"unknown device", "none", schemas.Command{ID: "x", Kind: "reboot"}, []string{"x:REJECTED/1"}, cmdlife.ReasonUnknownDevice},
		{"sn mismatch", "online", schemas.Command{ID: "x", SN: "OTHER", Kind: "reboot"}, []string{"x:REJECTED/1"}, cmdlife.ReasonSNMismatch},
		{"negative timeout", "online", schemas.Command{ID: "x", Kind: "reboot", TimeoutMs: -1}, []string{"x:REJECTED/1"}, cmdlife.ReasonInvalidTimeout},
		{"bad policy", "online", schemas.Command{ID: "x", Kind: "reboot", Offline: "MAYBE"}, []string{"x:REJECTED/1"}, cmdlife.ReasonInvalidPolicy},
		{"offline, policy reject", "registered", schemas.Command{ID: "x", Kind: "reboot", Offline: schemas.OfflineReject},
			[]string{"x:ACCEPTED/1", "x:REJECTED/2"}, cmdlife.ReasonOffline},
		{"queued past its expiry", "registered", schemas.Command{ID: "x", Kind: "reboot", ExpiresAt: &past},
			[]string{"x:ACCEPTED/1", "x:EXPIRED/2"}, cmdlife.ReasonQueueExpired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newCmdHarness(t, nil)
			switch tc.device {
			case "registered":
				h.register()
			case "online":
				h.handshake()
			}
			o := h.submit(tc.cmd)
			wantStates(t, tc.name, o, tc.want...)
			last := o.commands[len(o.commands)-1]
			if last.Reason != tc.reason || len(o.downlinks) != 0 || len(o.rejects) != 0 {
				t.Fatalf("reason %q, want %q; outputs %+v", last.Reason, tc.reason, o)
			}
			if n := cmdlife.Active(h.pending()); n != 0 {
				t.Fatalf("%d active commands left", n)
			}
			if tc.device == "none" && len(h.kt.Keys()) != 0 {
				t.Fatalf("state created for an unknown device: %v", h.kt.Keys())
			}
			if got := h.counter("ams_device_command_events_total", map[string]string{"state": "REJECTED"}) +
				h.counter("ams_device_command_events_total", map[string]string{"state": "EXPIRED"}); got != 1 {
				t.Fatalf("final events counted %v", got)
			}
		})
	}
}

// TestCommandQueueOrderAndLimit: commands queued while the device is offline
// go out in order when it comes back with a session, at most MaxInFlight at a
// time; each finished command (reply or timeout) frees a slot for the next.
func TestCommandQueueOrderAndLimit(t *testing.T) {
	h := newCmdHarness(t, func(c *Config) { c.Commands.MaxInFlight = 3 })
	h.register()
	var ids []string
	for i := range 6 {
		id := fmt.Sprintf("q%d", i)
		ids = append(ids, id)
		wantStates(t, id, h.submit(schemas.Command{ID: id, Kind: "sd_info"}), id+":ACCEPTED/1", id+":QUEUED/2")
		h.kt.Advance(time.Second)
	}
	if at, ok := h.kt.Deadline(h.sn); !ok || !at.Equal(testT0.Add(10*time.Minute)) {
		t.Fatalf("deadline %v %v, want the first expiry", at, ok)
	}

	// Back with a session: the first three go out, in order.
	o := h.handshake()
	if got := sentIDs(t, o); !slices.Equal(got, ids[:3]) {
		t.Fatalf("sent %v, want %v", got, ids[:3])
	}
	if o.downlinks[0].Purpose != PurposeHandshakeReply {
		t.Fatalf("handshake reply not first: %+v", o.downlinks)
	}
	wantStates(t, "drain", o, "q0:SENT/3", "q1:SENT/3", "q2:SENT/3")
	msg := map[string]string{}
	for _, d := range o.downlinks[1:] {
		msg[*d.CommandID] = d.MsgID
	}

	// A new command while the limit is reached waits, even with policy REJECT.
	wantStates(t, "over limit", h.submit(schemas.Command{ID: "q6", Kind: "sd_info", Offline: schemas.OfflineReject}),
		"q6:ACCEPTED/1", "q6:QUEUED/2")

	// A reply frees a slot: q3 goes out in the same transaction.
	h.kt.Advance(time.Second)
	o = h.reply(6, 0, msg["q1"], `{"iTFCardState":6}`)
	wantStates(t, "reply", o, "q1:DELIVERED/4", "q1:SUCCEEDED/5", "q3:SENT/3")
	if got := sentIDs(t, o); !slices.Equal(got, []string{"q3"}) {
		t.Fatalf("sent %v", got)
	}

	// q0 and q2 time out (30 s after they were sent); q4 and q5 take their slots.
	out := decodeOutputs(t, h.kt.Advance(29*time.Second))
	wantStates(t, "timeout", out, "q0:TIMED_OUT/4", "q2:TIMED_OUT/4", "q4:SENT/3", "q5:SENT/3")
	if out.commands[0].Reason != cmdlife.ReasonReplyTimeout {
		t.Fatalf("reason %q", out.commands[0].Reason)
	}
	if got := sentIDs(t, out); !slices.Equal(got, []string{"q4", "q5"}) {
		t.Fatalf("sent %v", got)
	}
	// q3 times out 30 s after its send; q6 goes.
	out = decodeOutputs(t, h.kt.Advance(2*time.Second))
	wantStates(t, "timeout q3", out, "q3:TIMED_OUT/4", "q6:SENT/3")
	if n := cmdlife.Active(h.pending()); n != 3 {
		t.Fatalf("active %d, want 3 (q4, q5, q6)", n)
	}
}

// TestCommandQueuedWhileConnectedWithoutSession: a device online (broker
// connect) but without a session cannot be sent a command.
func TestCommandQueuedWhileConnectedWithoutSession(t *testing.T) {
	h := newCmdHarness(t, nil)
	bt := h.kt.Now()
	h.feed(testTopics.UplinkRaw, &schemas.UplinkRaw{Kind: schemas.UplinkConnected, SN: h.sn, ClientID: h.sn,
		BrokerTime: &bt, ConnectedAt: &bt, IngestTime: bt, Payload: []byte(`{}`)})
	wantStates(t, "submit", h.submit(schemas.Command{ID: "a", Kind: "reboot"}), "a:ACCEPTED/1", "a:QUEUED/2")
	o := h.handshake()
	wantStates(t, "handshake", o, "a:SENT/3")
}

// TestCommandExpiry: a queued command expires at its expires_at (default
// now + 10 min); a device that comes back later is not sent it.
func TestCommandExpiry(t *testing.T) {
	h := newCmdHarness(t, nil)
	h.handshake()
	h.disconnect()
	exp := h.kt.Now().Add(time.Minute)
	h.submit(schemas.Command{ID: "e1", Kind: "reboot", ExpiresAt: &exp})
	h.submit(schemas.Command{ID: "e2", Kind: "sd_info"})
	if at, _ := h.kt.Deadline(h.sn); !at.Equal(exp) {
		t.Fatalf("deadline %v, want %v", at, exp)
	}
	out := decodeOutputs(t, h.kt.Advance(2*time.Minute))
	wantStates(t, "expiry", out, "e1:EXPIRED/3")
	if !out.commands[0].At.Equal(exp) || out.commands[0].Reason != cmdlife.ReasonQueueExpired {
		t.Fatalf("expired %+v", out.commands[0])
	}
	out = decodeOutputs(t, h.kt.Advance(10*time.Minute))
	wantStates(t, "default expiry", out, "e2:EXPIRED/3")
	if !out.commands[0].At.Equal(testT0.Add(10 * time.Minute)) {
		t.Fatalf("expired at %v", out.commands[0].At)
	}
	if _, ok := h.kt.Deadline(h.sn); ok {
		t.Fatal("a timer is left")
	}
	o := h.heartbeat()
	if len(sentIDs(t, o)) != 0 || len(o.commands) != 0 {
		t.Fatalf("expired command sent: %+v", o)
	}
}

// TestCommandAmsControl: 704 / 705 go out as iCmdType 7 and complete on the
// device's iCmdType 7 answer with the same code and sMsgId.
func TestCommandAmsControl(t *testing.T) {
	h := newCmdHarness(t, nil)
	h.handshake()
	o := h.submit(schemas.Command{ID: "s", Kind: "stream_control", Body: `{"icmdtype":1}`})
	o2 := h.submit(schemas.Command{ID: "u", Kind: "upload_control", Body: `{"icmdtype":0}`})
	if len(o.downlinks) != 1 || len(o2.downlinks) != 1 {
		t.Fatalf("downlinks %+v %+v", o.downlinks, o2.downlinks)
	}
	for _, c := range []struct {
		d    schemas.Downlink
		code int
		body string
	}{{o.downlinks[0], 704, `{"icmdtype":1}`}, {o2.downlinks[0], 705, `{"icmdtype":0}`}} {
		fr, body := decryptDownlink(t, c.d)
		if fr.CmdType != 7 || fr.AmsCmdType != c.code || fr.AppCmdType != 0 || body != c.body || c.d.SubType != int32(c.code) {
			t.Fatalf("frame %+v body %s", fr, body)
		}
	}
	sMsg, uMsg := o.downlinks[0].MsgID, o2.downlinks[0].MsgID

	// An answer of the other code with u's msg id matches nothing.
	o = h.reply(7, 704, uMsg, `{"iResult":0}`)
	wantStates(t, "wrong code", o)
	if len(o.events) != 1 || o.events[0].Kind != schemas.EventReply {
		t.Fatalf("device event %+v", o.events)
	}
	// The reply overtakes the broker receipt: DELIVERED is recorded before
	// SUCCEEDED (issue 13: stream_control histories lacked DELIVERED).
	wantStates(t, "704 answer", h.reply(7, 704, sMsg, `{"iResult":0}`), "s:DELIVERED/3", "s:SUCCEEDED/4")
	o = h.reply(7, 705, uMsg, `{"iResult":1}`)
	wantStates(t, "705 answer", o, "u:DELIVERED/3", "u:SUCCEEDED/4")
	if *o.commands[1].Reply != `{"iResult":1}` || o.commands[1].Code != 705 {
		t.Fatalf("event %+v", o.commands[1])
	}
}

// TestCommandUnknownReply: a reply with an unknown sMsgId is recorded as a
// device event, counted, and changes no command.
func TestCommandUnknownReply(t *testing.T) {
	h := newCmdHarness(t, nil)
	h.handshake()
	h.submit(schemas.Command{ID: "k", Kind: "reboot"})
	h.kt.Advance(time.Second)
	before := h.kt.Changelog(h.sn)
	b, plain := vectorFrame(t, "reply to get-sd-info")
	o := h.frame(b)
	wantStates(t, "unknown reply", o)
	if len(o.events) != 1 || o.events[0].Body != plain || o.events[0].MsgID == "" {
		t.Fatalf("device event %+v", o.events)
	}
	if h.pendingState("k") != schemas.CommandSent {
		t.Fatalf("pending %+v", h.pending())
	}
	if bytes.Equal(before, h.kt.Changelog(h.sn)) {
		t.Fatal("presence (last seen) not updated")
	}
	if got := h.counter("ams_device_command_inputs_total", map[string]string{"input": "reply", "outcome": "unknown"}); got != 1 {
		t.Fatalf("unknown replies counted %v", got)
	}
	// A receipt of an unknown command, or of another msg id, changes nothing.
	wantStates(t, "unknown receipt", h.receipt("nope", "00"))
	wantStates(t, "stale receipt", h.receipt("k", "00"))
	// A receipt of a downlink that is no command is ignored without a count.
	o = h.feed(testTopics.DownlinkReceipts, &schemas.DownlinkReceipt{FrameID: "f", SN: h.sn, MsgID: "m", PublishedAt: h.kt.Now()})
	if len(o.commands)+len(o.rejects) != 0 {
		t.Fatalf("receipt outputs %+v", o)
	}
}

// TestCommandDuplicateID: a request whose id is pending (queued or sent) is
// ignored: no event, no second downlink.
func TestCommandDuplicateID(t *testing.T) {
	h := newCmdHarness(t, nil)
	h.register()
	h.submit(schemas.Command{ID: "d", Kind: "reboot"})
	wantStates(t, "queued dup", h.submit(schemas.Command{ID: "d", Kind: "reboot"}))
	o := h.handshake()
	wantStates(t, "sent", o, "d:SENT/3")
	o = h.submit(schemas.Command{ID: "d", Kind: "sd_info"})
	wantStates(t, "sent dup", o)
	if len(o.downlinks) != 0 {
		t.Fatalf("resent: %+v", o.downlinks)
	}
	if got := h.counter("ams_device_command_inputs_total", map[string]string{"input": "request", "outcome": "duplicate"}); got != 2 {
		t.Fatalf("duplicates counted %v", got)
	}
}

// TestCommandRecentFinishedBounded: the memory of finished ids is bounded.
func TestCommandRecentFinishedBounded(t *testing.T) {
	h := newCmdHarness(t, func(c *Config) { c.Commands.RecentFinished = 2 })
	h.register()
	for i := range 4 {
		h.submit(schemas.Command{ID: fmt.Sprint("r", i), Kind: "reboot", Offline: schemas.OfflineReject})
	}
	if got := len(h.pending()); got != 2 || h.pending()[0].CommandID != "r2" {
		t.Fatalf("pending %+v", h.pending())
	}
	wantStates(t, "remembered", h.submit(schemas.Command{ID: "r3", Kind: "reboot", Offline: schemas.OfflineReject}))
	wantStates(t, "forgotten", h.submit(schemas.Command{ID: "r0", Kind: "reboot", Offline: schemas.OfflineReject}),
		"r0:ACCEPTED/1", "r0:REJECTED/2")
}

// TestCommandRestoreWhilePending: a partition move at every step loses no
// command, re-arms every timer and sends nothing twice.
func TestCommandRestoreWhilePending(t *testing.T) {
	h := newCmdHarness(t, func(c *Config) { c.Commands.MaxInFlight = 1 })
	h.register()
	h.kt.Restore()
	h.submit(schemas.Command{ID: "p1", Kind: "reboot"})
	h.submit(schemas.Command{ID: "p2", Kind: "sd_info", TimeoutMs: 5000})
	h.kt.Restore()
	if got := h.pending(); len(got) != 2 || got[0].State != schemas.CommandQueued || got[1].Body != `{"iGetSDInfo":1}` {
		t.Fatalf("restored pending %+v", got)
	}
	o := h.handshake()
	wantStates(t, "handshake", o, "p1:SENT/3")
	p1 := o.downlinks[1].MsgID
	h.kt.Restore()
	// Frames after the move: nothing is sent again, p2 still waits for the slot.
	o = h.heartbeat()
	wantStates(t, "heartbeat after restore", o)
	if len(sentIDs(t, o)) != 0 {
		t.Fatalf("resent %+v", o.downlinks)
	}
	// The restored reply deadline fires; p2 takes the slot.
	h.kt.Restore()
	sentAt := h.kt.Now()
	out := decodeOutputs(t, h.kt.Advance(40*time.Second))
	wantStates(t, "timeout after restore", out, "p1:TIMED_OUT/4", "p2:SENT/3", "p2:TIMED_OUT/4")
	if !out.commands[0].At.Equal(sentAt.Add(30*time.Second)) || !out.commands[2].At.Equal(sentAt.Add(35*time.Second)) {
		t.Fatalf("timeouts at %v / %v", out.commands[0].At, out.commands[2].At)
	}
	// A late reply to p1 after another move matches a finished command.
	h.kt.Restore()
	wantStates(t, "late reply", h.reply(6, 0, p1, `{}`))
	if got := h.counter("ams_device_command_inputs_total", map[string]string{"input": "reply", "outcome": "late_reply"}); got != 1 {
		t.Fatalf("late replies counted %v", got)
	}
}

// TestCommandFailed: a pending command whose kind the table no longer has
// fails when it is due to be sent.
func TestCommandFailed(t *testing.T) {
	h := newCmdHarness(t, nil)
	h.handshake()
	h.disconnect()
	s := h.kt.State(h.sn)
	exp := h.kt.Now().Add(time.Hour)
	n := *s
	n.pending = []schemas.PendingCommand{
		{CommandID: "old", Kind: "retired_kind", Code: 399, Body: `{}`, State: schemas.CommandQueued, TimeoutMs: 1000, ExpiresAt: &exp, Seq: 2},
		{CommandID: "ok", Kind: "reboot", Code: 313, Body: `{"iReboot":1}`, State: schemas.CommandQueued, TimeoutMs: 1000, ExpiresAt: &exp, Seq: 2},
	}
	h.kt.Put(h.sn, &n)
	h.kt.Advance(time.Second)
	o := h.heartbeat()
	wantStates(t, "failed", o, "old:FAILED/3", "ok:SENT/3")
	if o.commands[0].Reason != cmdlife.ReasonUnknownKind {
		t.Fatalf("reason %q", o.commands[0].Reason)
	}
}

// TestCommandDeadlineIsEarliest: Deadline is the earliest of the heartbeat
// deadline, reply deadlines and queued expiries.
func TestCommandDeadlineIsEarliest(t *testing.T) {
	h := newCmdHarness(t, func(c *Config) { c.Commands.MaxInFlight = 1 })
	h.handshake()
	t0 := h.kt.Now()
	at, _ := h.kt.Deadline(h.sn)
	if !at.Equal(t0.Add(90 * time.Second)) {
		t.Fatalf("heartbeat deadline %v", at)
	}
	h.submit(schemas.Command{ID: "a", Kind: "reboot", TimeoutMs: 120_000})
	if at, _ = h.kt.Deadline(h.sn); !at.Equal(t0.Add(90 * time.Second)) {
		t.Fatalf("deadline %v, want the heartbeat's", at)
	}
	exp := t0.Add(time.Minute)
	h.submit(schemas.Command{ID: "b", Kind: "reboot", ExpiresAt: &exp})
	if at, _ = h.kt.Deadline(h.sn); !at.Equal(exp) {
		t.Fatalf("deadline %v, want the expiry", at)
	}
	wantStates(t, "expiry", decodeOutputs(t, h.kt.Advance(time.Minute)), "b:EXPIRED/3")
	out := decodeOutputs(t, h.kt.Advance(30*time.Second))
	if len(out.presence) != 1 || out.presence[0].Online {
		t.Fatalf("heartbeat timeout %+v", out)
	}
	wantStates(t, "reply timeout", decodeOutputs(t, h.kt.Advance(30*time.Second)), "a:TIMED_OUT/3")
}

// TestCommandEveryState checks that the tests above reach every state.
func TestCommandEveryState(t *testing.T) {
	// Run a compact scenario through all states, counted by the metric.
	h := newCmdHarness(t, func(c *Config) { c.Commands.MaxInFlight = 1 })
	h.handshake()
	o := h.submit(schemas.Command{ID: "1", Kind: "reboot"})
	h.receipt("1", o.downlinks[0].MsgID)
	h.reply(6, 0, o.downlinks[0].MsgID, `{}`)
	h.submit(schemas.Command{ID: "2", Kind: "reboot"})
	h.submit(schemas.Command{ID: "3", Kind: "reboot", TimeoutMs: 1})
	h.kt.Advance(time.Minute)
	h.submit(schemas.Command{ID: "4", Kind: "nope"})
	h.disconnect()
	h.submit(schemas.Command{ID: "5", Kind: "reboot"})
	h.kt.Advance(time.Hour)
	s := h.kt.State(h.sn)
	n := *s
	exp := h.kt.Now().Add(time.Hour)
	n.pending = append(slices.Clone(n.pending), schemas.PendingCommand{CommandID: "6", Kind: "gone", State: schemas.CommandQueued, ExpiresAt: &exp})
	h.kt.Put(h.sn, &n)
	h.heartbeat()
	for _, st := range []string{schemas.CommandAccepted, schemas.CommandQueued, schemas.CommandSent, schemas.CommandDelivered,
		schemas.CommandSucceeded, schemas.CommandTimedOut, schemas.CommandExpired, schemas.CommandRejected, schemas.CommandFailed} {
		if got := h.counter("ams_device_command_events_total", map[string]string{"state": st}); got < 1 {
			t.Errorf("state %s never reached", st)
		}
	}
}

// TestCommandStateSurvivesRegistryTombstone: removing the registration
// keeps a device with active commands.
func TestCommandStateSurvivesRegistryTombstone(t *testing.T) {
	h := newCmdHarness(t, nil)
	h.register()
	h.submit(schemas.Command{ID: "t", Kind: "reboot"})
	h.feed(testTopics.Registry, nil)
	if h.pendingState("t") != schemas.CommandQueued {
		t.Fatalf("pending lost: %+v", h.pending())
	}
}

// TestCommandOSDBodyEscaped: a non-ASCII OSD name goes out escaped as the
// seed's ujson does (the vector's plaintext).
func TestCommandOSDBodyEscaped(t *testing.T) {
	h := newCmdHarness(t, nil)
	h.handshake()
	o := h.submit(schemas.Command{ID: "n", Kind: "osd", Body: `{"sOsdName": {"iEnable": 1, "strText": "李小龙测试"}}`})
	_, plain := vectorFrame(t, "osd name (non-ASCII, escaped as the seed's ujson does)")
	if _, body := decryptDownlink(t, o.downlinks[0]); body != plain {
		t.Fatalf("body %s, want %s", body, plain)
	}
}

// TestCommandMsgIDsUnique: every send gets a fresh 32-hex message id, and
// the list keeps acceptance order.
func TestCommandMsgIDsUnique(t *testing.T) {
	h := newCmdHarness(t, func(c *Config) { c.Commands.MaxInFlight = 50; c.Rand = rand.Reader })
	h.handshake()
	seen := map[string]bool{}
	for i := range 40 {
		o := h.submit(schemas.Command{ID: fmt.Sprint("m", i), Kind: "reboot"})
		id := o.downlinks[0].MsgID
		if seen[id] || !hex32.MatchString(id) {
			t.Fatalf("msg id %q repeated or malformed", id)
		}
		seen[id] = true
	}
	for i, p := range h.pending() {
		if p.CommandID != fmt.Sprint("m", i) {
			t.Fatalf("pending[%d] = %s", i, p.CommandID)
		}
	}
}

// FuzzCommand: any request, to a device online or offline, yields command
// events (or one reject) and never an error; a SENT event comes with its
// downlink, whose body decrypts to the normalized body.
func FuzzCommand(f *testing.F) {
	f.Add("reboot", "", int64(0), "QUEUE", true)
	f.Add("osd", `{"sOsdName":{"iEnable":1,"strText":"x"}}`, int64(5), "REJECT", false)
	f.Add("stream_control", `{"icmdtype":2}`, int64(-1), "QUEUE", true)
	f.Add("face_snapshot", `{"a":[1,2,{"b":"\u00e9"}]}`, int64(1), "X", true)
	f.Fuzz(func(t *testing.T, kind, body string, timeout int64, policy string, online bool) {
		p, fd, s := withSession(t)
		if !online {
			n := *s
			n.presence.Online = false
			s = &n
		}
		in := fd.input(testTopics.Commands, vectors.SN, &schemas.Command{ID: "f", SN: vectors.SN, Kind: kind, Body: body,
			TimeoutMs: timeout, Offline: policy, RequestedAt: testT0})
		next, o := run(t, p, testT0, s, in)
		if len(o.rejects) != 0 || len(o.commands) == 0 {
			t.Fatalf("outputs %+v", o)
		}
		sentEvents := 0
		for _, e := range o.commands {
			if e.State == schemas.CommandSent {
				sentEvents++
			}
		}
		if sentEvents != len(o.downlinks) {
			t.Fatalf("%d SENT events, %d downlinks", sentEvents, len(o.downlinks))
		}
		if len(o.downlinks) == 1 {
			_, pt := decryptDownlink(t, o.downlinks[0])
			if pt != next.pending[0].Body {
				t.Fatalf("body %q, stored %q", pt, next.pending[0].Body)
			}
		}
	})
}

// TestTopicsDeclared: every output of the command tests goes to a declared topic.
func TestTopicsDeclared(t *testing.T) {
	p := newTestProcessor(t, nil)
	for _, want := range []string{testTopics.CommandEvents, testTopics.Downlink, testTopics.Rejects} {
		if !slices.Contains(p.Outputs(), want) {
			t.Errorf("Outputs() lacks %s", want)
		}
	}
	for _, want := range []string{testTopics.Commands, testTopics.DownlinkReceipts, testTopics.UplinkRaw, testTopics.Registry} {
		if !slices.Contains(p.Inputs(), want) {
			t.Errorf("Inputs() lacks %s", want)
		}
	}
}

// TestCommandFrameTrust: a command frame carries its publish deadline (the
// reply deadline less the guard) and says whether it may be published twice;
// egress's receipts that it did not publish end the command where the
// caller sees it.
func TestCommandFrameTrust(t *testing.T) {
	h := newCmdHarness(t, nil)
	h.handshake()
	sent := h.kt.Now()
	o := h.submit(schemas.Command{ID: "r", Kind: "reboot"})
	d := o.downlinks[0]
	if d.Deadline == nil || !d.Deadline.Equal(sent.Add(29*time.Second)) || !d.AtMostOnce {
		t.Fatalf("reboot downlink deadline %v at_most_once %v, want %v true", d.Deadline, d.AtMostOnce, sent.Add(29*time.Second))
	}
	o = h.submit(schemas.Command{ID: "q", Kind: "sd_info"})
	if q := o.downlinks[0]; q.AtMostOnce || q.Deadline == nil {
		t.Fatalf("sd_info downlink %+v: idempotent, with a deadline", q)
	}
	intent := func(id, msg, status string) outputs {
		return h.feed(testTopics.DownlinkReceipts, &schemas.DownlinkReceipt{FrameID: "command/" + id, SN: h.sn,
			CommandID: &id, MsgID: msg, PublishedAt: h.kt.Now(), Egress: "test", Status: status})
	}
	wantStates(t, "intent", intent("r", d.MsgID, schemas.ReceiptPublishing))
	o = intent("r", d.MsgID, schemas.ReceiptDeliveryUnknown)
	wantStates(t, "delivery unknown", o, "r:FAILED/3")
	if o.commands[0].Reason != "delivery_unknown" {
		t.Fatalf("reason %q", o.commands[0].Reason)
	}
	wantStates(t, "published after final", intent("r", d.MsgID, schemas.ReceiptPublished))

	o = h.submit(schemas.Command{ID: "x", Kind: "sd_format", Body: `{"iFormat":1}`})
	o = intent("x", o.downlinks[0].MsgID, schemas.ReceiptExpiredBeforePublish)
	wantStates(t, "expired before publish", o, "x:EXPIRED/3")
	if o.commands[0].Reason != "expired_before_publish" {
		t.Fatalf("reason %q", o.commands[0].Reason)
	}
}
