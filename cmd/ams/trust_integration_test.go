//go:build integration

package main

// Issue 11 section 1 against the real stack: a command runs at most once,
// and only while its caller can still learn the result.
//
//	go test -tags integration -count=1 -run 'TestStaleCommandNeverRuns|TestEgressKillNoDoubleExecution' ./cmd/ams/

import (
	crand "crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/devicestate"
	"github.com/ivms/ams/pkg/devkit/devicesim"
	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/schemas"
)

// frameLog collects what a silent device received.
type frameLog struct {
	d      *silentDevice
	frames []protocol.Frame
}

// until reads frames until one satisfies ok (failing after timeout).
func (l *frameLog) until(t *testing.T, timeout time.Duration, what string, ok func(protocol.Frame) bool) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case fr := <-l.d.received:
			l.frames = append(l.frames, fr)
			if ok(fr) {
				return
			}
		case <-deadline:
			t.Fatalf("silent device %s: no %s within %v (received %d frames)", l.d.sn, what, timeout, len(l.frames))
		}
	}
}

// count returns how many received frames carry msgID.
func (l *frameLog) count(msgID string) int {
	n := 0
	for _, fr := range l.frames {
		if fr.MsgID == msgID {
			n++
		}
	}
	return n
}

// receiptStatuses returns the statuses of the receipts of frame frameID, in
// log order.
func (s *e2eStack) receiptStatuses(frameID string) []string {
	var out []string
	for _, r := range decodeAll[schemas.DownlinkReceipt](s, s.names.DownlinkReceipts) {
		if r.FrameID == frameID {
			out = append(out, r.Status)
		}
	}
	return out
}

// TestStaleCommandNeverRuns is the stale command: egress is down, a
// reboot times out, egress comes back, and the camera must not receive the
// reboot; the same with a new egress group reading ams.downlink from the
// start, which must not publish a non-idempotent command that was published
// already either.
func TestStaleCommandNeverRuns(t *testing.T) {
	s := startStack(t, stackOptions{})
	sn := simSN(e2eSNPrefix(t), 1)
	s.register(sn, e2eRegistration{})
	s.waitRegistered(sn)
	dev := &frameLog{d: s.startSilentDevice(sn)}
	e2eWaitFor(t, 30*time.Second, "the silent device online with a session", func() (bool, string) {
		d, ok := s.device(sn)
		return ok && d.Online && d.Session, "not yet"
	})

	// A reset the device receives (and never answers): published once.
	_, reset := s.postCommand(sn, commandRequest{Kind: "reset", Body: json.RawMessage(`{"iReset":0}`), Timeout: "2m"}, 0)
	rc := s.waitCommand(reset.ID, "DELIVERED", 30*time.Second, func(c devicestate.Command) bool { return c.State == schemas.CommandDelivered })
	resetMsg := rc.History[len(rc.History)-1].MsgID
	dev.until(t, 10*time.Second, "reset frame", func(fr protocol.Frame) bool { return fr.MsgID == resetMsg })

	// Egress down; a reboot times out.
	if err := s.egress.Term(30 * time.Second); err != nil {
		t.Fatalf("stop egress: %v", err)
	}
	code, reboot := s.postCommand(sn, commandRequest{Kind: "reboot", Timeout: "2s"}, 30*time.Second)
	if code != http.StatusOK || reboot.State != schemas.CommandTimedOut || reboot.Reason != "reply_timeout" {
		t.Fatalf("reboot with egress down: %d %s (%s), want TIMED_OUT reply_timeout", code, reboot.State, reboot.Reason)
	}
	rebootMsg := ""
	for _, h := range reboot.History {
		if h.State == schemas.CommandSent {
			rebootMsg = h.MsgID
		}
	}
	if rebootMsg == "" {
		t.Fatalf("reboot history %v has no SENT", historyStates(reboot.Command))
	}

	// (a) Egress back in its group: the reboot's frame is past its deadline.
	s.startEgress(s.id + "-egress")
	e2eWaitFor(t, 30*time.Second, "the reboot's expired_before_publish receipt", func() (bool, string) {
		st := s.receiptStatuses("command/" + reboot.ID)
		return slices.Contains(st, schemas.ReceiptExpiredBeforePublish), fmt.Sprint(st)
	})
	// A later frame of the device: had the reboot been published, it would
	// have arrived before this one (egress keeps a device's order).
	_, q1 := s.postCommand(sn, commandRequest{Kind: "sd_info", Timeout: "2m"}, 0)
	q1c := s.waitCommand(q1.ID, "SENT", 30*time.Second, func(c devicestate.Command) bool {
		return c.State != schemas.CommandAccepted && c.State != schemas.CommandQueued
	})
	q1Msg := q1c.History[len(q1c.History)-1].MsgID
	dev.until(t, 30*time.Second, "sd_info frame after egress restart", func(fr protocol.Frame) bool { return fr.MsgID == q1Msg })
	if n := dev.count(rebootMsg); n != 0 {
		t.Fatalf("(a) the device received the timed-out reboot %d times", n)
	}

	// (b) A new egress group reading ams.downlink from the start.
	if err := s.egress.Term(30 * time.Second); err != nil {
		t.Fatalf("stop egress: %v", err)
	}
	s.startEgress(s.id + "-egress-fresh")
	_, q2 := s.postCommand(sn, commandRequest{Kind: "sd_info", Timeout: "2m"}, 0)
	q2c := s.waitCommand(q2.ID, "SENT", 30*time.Second, func(c devicestate.Command) bool {
		return c.State != schemas.CommandAccepted && c.State != schemas.CommandQueued
	})
	q2Msg := q2c.History[len(q2c.History)-1].MsgID
	dev.until(t, 60*time.Second, "sd_info frame from the fresh group", func(fr protocol.Frame) bool { return fr.MsgID == q2Msg })
	if n := dev.count(rebootMsg); n != 0 {
		t.Fatalf("(b) the device received the timed-out reboot %d times", n)
	}
	if n := dev.count(resetMsg); n != 1 {
		t.Fatalf("(b) the device received the reset %d times, want once", n)
	}
	if n := dev.count(q1Msg); n < 1 {
		t.Fatalf("(b) the device received sd_info %d times", n)
	}
	if st := s.receiptStatuses("command/" + reboot.ID); slices.Contains(st, schemas.ReceiptPublished) || slices.Contains(st, schemas.ReceiptPublishing) {
		t.Fatalf("reboot receipts %v: published or attempted", st)
	}
	// The reboot is still TIMED_OUT: a final state is final.
	if c, _ := s.command(reboot.ID); c.State != schemas.CommandTimedOut || slices.Contains(historyStates(c), schemas.CommandDelivered) {
		t.Fatalf("reboot now %s, history %v", c.State, historyStates(c))
	}
	t.Logf("reset receipts %v; reboot receipts %v", s.receiptStatuses("command/"+reset.ID), s.receiptStatuses("command/"+reboot.ID))
}

// TestEgressKillNoDoubleExecution kills egress with SIGKILL under command
// load (non-idempotent sd_format) and counts, at the simulated cameras,
// how often each command frame arrived: never twice; and every command ends
// in a final state the caller can read.
func TestEgressKillNoDoubleExecution(t *testing.T) {
	s := startStack(t, stackOptions{})
	prefix := e2eSNPrefix(t)
	const n = 6
	sns := make([]string, n)
	for i := range n {
		sns[i] = simSN(prefix, i)
		s.register(sns[i], e2eRegistration{})
	}
	s.waitRegistered(sns...)

	var mu sync.Mutex
	got := map[string]int{} // command frame sMsgId -> receptions
	f := s.startFleet(devicesim.Config{Devices: n, SNPrefix: prefix, Heartbeat: 2 * time.Second, UplinkQoS: 1,
		OnReceive: func(r devicesim.Received) {
			if r.Frame.CmdType == protocol.CmdCommand && r.Frame.AppCmdType == protocol.AppFormatSD {
				mu.Lock()
				got[r.Frame.MsgID]++
				mu.Unlock()
			}
		}})
	waitFleet(t, f, 30*time.Second, "devices ready", func(st devicesim.Stats) (bool, string) {
		return st.Ready == n && st.Configured == n, "not yet"
	})
	e2eWaitFor(t, 30*time.Second, "devices online with a session in the API", func() (bool, string) {
		for _, sn := range sns {
			if d, ok := s.device(sn); !ok || !d.Online || !d.Session {
				return false, sn + " not yet"
			}
		}
		return true, ""
	})

	// Egress commits every 3 s: at the kill, up to 3 s of published command
	// frames are past their PUBACK and receipt but not committed, and the
	// next egress reads them again (before the fix it published them again).
	if err := s.egress.Term(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	s.egressArgs = append(s.egressArgs, "-commit-interval", "3s")
	s.startEgress(s.id + "-egress")

	var ids []string
	post := func(k int) {
		for i := range k {
			_, a := s.postCommand(sns[i%n], commandRequest{Kind: "sd_format", Body: json.RawMessage(`{"iFormat":1}`), Timeout: "30s"}, 0)
			ids = append(ids, a.ID)
			time.Sleep(10 * time.Millisecond)
		}
	}
	post(100)
	s.egress.Kill() // SIGKILL under load: frames in flight, intents without outcome
	post(30)
	s.startEgress(s.id + "-egress")
	post(60)

	finals := map[string]int{}
	for _, id := range ids {
		c := s.waitCommand(id, "final", 90*time.Second, func(c devicestate.Command) bool { return c.Final })
		key := c.State
		if c.Reason != "" {
			key += " " + c.Reason
		}
		finals[key]++
	}
	mu.Lock()
	defer mu.Unlock()
	twice := 0
	for msg, k := range got {
		if k > 1 {
			twice++
			t.Errorf("command frame %s executed %d times", msg, k)
		}
	}
	metrics, _ := s.egress.Metrics()
	settled := ""
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, "ams_egress_frames_total") {
			settled += line + "; "
		}
	}
	t.Logf("%d commands, final states %v; %d frames executed, %d twice; restarted egress: %s", len(ids), finals, len(got), twice, settled)
	if finals[schemas.CommandSucceeded] == 0 {
		t.Fatalf("no command succeeded: %v", finals)
	}
}

// samePartition returns an sn of the form prefix+"B"+n whose partition of
// ams.* (murmur2, as every producer of the pipeline) is the partition of sn.
func samePartition(t *testing.T, sn, prefix string) string {
	t.Helper()
	p := kgo.StickyKeyPartitioner(nil).ForTopic("x")
	want := p.Partition(&kgo.Record{Key: []byte(sn)}, e2ePartitions)
	for i := range 10000 {
		c := fmt.Sprintf("%sB%09d", prefix, i)
		if p.Partition(&kgo.Record{Key: []byte(c)}, e2ePartitions) == want {
			return c
		}
	}
	t.Fatal("no sn found in the same partition")
	return ""
}

// TestQueueBytesBound is the stall: 62 queued commands of 16 KiB for
// one offline device used to make its state record larger than the
// producer's record limit, and the partition's transaction failed forever.
// Now the commands beyond the byte bound are REJECTED queue_full, and
// another device of the same partition still gets its commands.
func TestQueueBytesBound(t *testing.T) {
	s := startStack(t, stackOptions{})
	prefix := e2eSNPrefix(t)
	full := simSN(prefix, 1)
	other := samePartition(t, full, prefix)
	s.register(full, e2eRegistration{})
	s.register(other, e2eRegistration{})
	s.waitRegistered(full, other)
	dev := &frameLog{d: s.startSilentDevice(other)}

	big := json.RawMessage(`{"x":"` + strings.Repeat("a", 16<<10-8) + `"}`)
	var ids []string
	for range 62 {
		_, a := s.postCommand(full, commandRequest{Kind: "face_snapshot", Body: big, Timeout: "10s", Expires: "10m"}, 0)
		ids = append(ids, a.ID)
	}
	states := map[string]int{}
	for _, id := range ids {
		c := s.waitCommand(id, "QUEUED or REJECTED", 60*time.Second, func(c devicestate.Command) bool {
			return c.State == schemas.CommandQueued || c.State == schemas.CommandRejected
		})
		if c.State == schemas.CommandRejected && c.Reason != "queue_full" {
			t.Fatalf("command %s rejected with %q, want queue_full", id, c.Reason)
		}
		states[c.State+" "+c.Reason]++
	}
	if states[schemas.CommandRejected+" queue_full"] == 0 {
		t.Fatalf("62 commands of 16 KiB: %v, want some REJECTED queue_full", states)
	}
	// The answer a caller waiting for the result gets.
	code, a := s.postCommand(full, commandRequest{Kind: "face_snapshot", Body: big, Timeout: "10s"}, 30*time.Second)
	if code != http.StatusOK || a.State != schemas.CommandRejected || a.Reason != "queue_full" || !a.Final {
		t.Fatalf("one more: %d %s (%s), want 200 REJECTED queue_full", code, a.State, a.Reason)
	}

	// The partition carries on: the other device gets a command.
	_, q := s.postCommand(other, commandRequest{Kind: "sd_info", Timeout: "1m"}, 0)
	qc := s.waitCommand(q.ID, "SENT", 60*time.Second, func(c devicestate.Command) bool {
		return c.State == schemas.CommandSent || c.State == schemas.CommandDelivered
	})
	msg := qc.History[len(qc.History)-1].MsgID
	dev.until(t, 30*time.Second, "the other device's command", func(fr protocol.Frame) bool { return fr.MsgID == msg })
	t.Logf("62 commands of 16 KiB to %s: %v; %s (same partition) carried on", full, states, other)
}

// waitReject waits for a reject of sn with reason in ams.rejects.
func (s *e2eStack) waitReject(sn, reason string) schemas.Reject {
	s.t.Helper()
	var found schemas.Reject
	e2eWaitFor(s.t, 30*time.Second, "a reject "+reason+" of "+sn, func() (bool, string) {
		for _, r := range decodeAll[schemas.Reject](s, s.names.Rejects) {
			if r.SN == sn && r.Reason == reason {
				found = r
				return true, ""
			}
		}
		return false, "not yet"
	})
	return found
}

// TestRegistrationEnforced (issue 11 section 5, production mode): a device
// ams.registry does not hold gets no session (reject unregistered, no
// downlink); deleting a registered device ends its session (its next
// heartbeat is refused no_session).
func TestRegistrationEnforced(t *testing.T) {
	s := startStack(t, stackOptions{})
	prefix := e2eSNPrefix(t)
	stranger, known := simSN(prefix, 1), simSN(prefix, 2)

	cl := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(s.broker.URL).SetClientID(stranger).
		SetCleanSession(true).SetAutoReconnect(false))
	if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer cl.Disconnect(100)
	_, sData, err := protocol.NewHandshake(s.pub, crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hs := protocol.Frame{CmdType: protocol.CmdHandshake, ProtocolVersion: "V1.0", Data: sData}
	if tok := cl.Publish(protocol.UplinkTopic(stranger), 1, false, hs.Encode()); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	s.waitReject(stranger, "unregistered")
	// The reject is committed in the transaction that would have carried
	// the handshake reply: there is none.
	for _, d := range decodeAll[schemas.Downlink](s, s.names.Downlink) {
		if d.SN == stranger {
			t.Fatalf("downlink %s for the unregistered device", d.Purpose)
		}
	}

	s.register(known, e2eRegistration{})
	s.waitRegistered(known)
	dev := s.startSilentDevice(known)
	if code, b := s.apiDo(http.MethodDelete, "/v1/devices/"+known, nil); code != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", code, b)
	}
	// Once the deletion is processed the session is gone: a heartbeat
	// (encrypted with the old session) is refused. Heartbeats before that
	// are answered; send until one is refused.
	hb := protocol.Frame{CmdType: protocol.CmdHeartbeat, ProtocolVersion: "V1.0",
		Data: protocol.EncryptBody(dev.session, []byte(`{"iOnline":1}`))}
	e2eWaitFor(t, 30*time.Second, "a heartbeat refused no_session after the deletion", func() (bool, string) {
		if tok := dev.cl.Publish(protocol.UplinkTopic(known), 1, false, hb.Encode()); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			return false, fmt.Sprint(tok.Error())
		}
		time.Sleep(300 * time.Millisecond)
		for _, r := range decodeAll[schemas.Reject](s, s.names.Rejects) {
			if r.SN == known && r.Reason == "no_session" {
				return true, ""
			}
		}
		return false, "heartbeats still accepted"
	})
}
