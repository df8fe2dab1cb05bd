//go:build integration

package main

// End-to-end tests: the whole pipeline with real services. Every role
// (ingest, process, egress, sink redis, api) runs as a subprocess of the
// built ams binary, against the shared Kafka and Redis and a private
// Mosquitto; the devices are a pkg/devkit/devicesim fleet in the test process
// (each device checks every frame it receives). Helpers are in
// e2e_helpers_integration_test.go.
//
//	go test -tags integration -count=1 -run 'TestDeviceLife|TestCommandsRoundTrip|TestProcessorCrash' ./cmd/ams/

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ivms/ams/pkg/commandkinds"
	"github.com/ivms/ams/pkg/devicestate"
	"github.com/ivms/ams/pkg/devkit/devicesim"
	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/processors/cmdlife"
	"github.com/ivms/ams/processors/device"
	"github.com/ivms/ams/schemas"
)

// simSN is the sn devicesim gives device number i of a fleet with prefix.
func simSN(prefix string, i int) string {
	return fmt.Sprintf("%s%0*d", prefix, devicesim.SNLength-len(prefix), i)
}

// lifeRecorder keeps, per device, what the devices received and verified
// (devicesim's OnReceive hook).
type lifeRecorder struct {
	s *e2eStack

	mu         sync.Mutex
	bindStatus map[string][]int    // iBindStatus of every 301
	osdNames   map[string][]string // strText of every 333
	streamOK   map[string]int      // 702 replies whose push URL verifies
	streamBad  []string            // 702 replies that do not
	uploads    map[string]int      // 703 replies whose credentials verify
	uploadBad  []string            // 703 replies that do not
	heartbeats map[string]int      // heartbeat replies
	lastHB     map[string]time.Time
	commands   map[string]int // "sn/sMsgId" of every command received (iCmdType 3 except 301 and the automatic 333; 704, 705)
}

func newLifeRecorder(s *e2eStack) *lifeRecorder {
	return &lifeRecorder{s: s,
		bindStatus: map[string][]int{}, osdNames: map[string][]string{}, streamOK: map[string]int{},
		uploads: map[string]int{}, heartbeats: map[string]int{}, lastHB: map[string]time.Time{},
		commands: map[string]int{}}
}

// onReceive runs for every frame a device received, after the device's own
// checks; frames that failed them are counted in the fleet's Failures.
func (r *lifeRecorder) onReceive(rc devicesim.Received) {
	if rc.Failure != "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	fr := rc.Frame
	switch {
	case fr.CmdType == protocol.CmdHeartbeat:
		r.heartbeats[rc.SN]++
		r.lastHB[rc.SN] = rc.At
	case fr.CmdType == protocol.CmdCommand && fr.AppCmdType == protocol.AppGetConfig:
		var v protocol.BindStatus
		_ = json.Unmarshal(rc.Body, &v)
		r.bindStatus[rc.SN] = append(r.bindStatus[rc.SN], v.BindStatus)
	case fr.CmdType == protocol.CmdCommand && fr.AppCmdType == protocol.AppOSD && !strings.Contains(string(rc.Body), "e2e-osd"):
		var v struct {
			OSD struct {
				Enable int    `json:"iEnable"`
				Text   string `json:"strText"`
			} `json:"sOsdName"`
		}
		_ = json.Unmarshal(rc.Body, &v)
		r.osdNames[rc.SN] = append(r.osdNames[rc.SN], fmt.Sprintf("%d:%s", v.OSD.Enable, v.OSD.Text))
	case fr.CmdType == protocol.CmdAms && fr.AmsCmdType == protocol.AmsStreamURL:
		var v protocol.StreamURLReply
		err := json.Unmarshal(rc.Body, &v)
		if err == nil {
			err = device.VerifyStreamURL(r.s.secret, v.PushURL, time.Now())
		}
		if err == nil && !strings.HasPrefix(v.PushURL, r.s.streamBase+"/"+rc.SN+"?") {
			err = fmt.Errorf("push URL is not %s/%s?...", r.s.streamBase, rc.SN)
		}
		if err != nil {
			r.streamBad = append(r.streamBad, fmt.Sprintf("%s: %s: %v", rc.SN, rc.Body, err))
		} else {
			r.streamOK[rc.SN]++
		}
	case fr.CmdType == protocol.CmdAms && fr.AmsCmdType == protocol.AmsUploadParams:
		if err := r.s.verifyUpload(rc.SN, rc.Body); err != nil {
			r.uploadBad = append(r.uploadBad, fmt.Sprintf("%s: %v", rc.SN, err))
		} else {
			r.uploads[rc.SN]++
		}
	case fr.CmdType == protocol.CmdCommand || fr.CmdType == protocol.CmdAms:
		r.commands[rc.SN+"/"+fr.MsgID]++
	}
}

func (r *lifeRecorder) snapshot(f func(r *lifeRecorder)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(r)
}

// TestDeviceLife: a device's whole life through the real pipeline
// (simulator, ingest, processors, egress, simulator): handshake,
// configuration, heartbeats, replies, stream URL, upload parameters; every
// reply is verified by the simulated device; malformed frames end in
// ams.rejects with their reasons while the pipeline keeps answering.
func TestDeviceLife(t *testing.T) {
	// The open (dev) mode: a third of the fleet is unregistered and still
	// handshakes, and unbound devices get 703 credentials. The production
	// rules (no session for unregistered devices, 703 only when bound) are
	// TestRegistrationEnforced's.
	s := startStack(t, stackOptions{clickhouse: true, allowUnregistered: true})
	const n = 20
	prefix := e2eSNPrefix(t)
	bound := func(i int) bool { return i%3 == 0 }
	registered := func(i int) bool { return i%3 != 2 }
	name := func(i int) string { return fmt.Sprintf("cam-%02d", i) }
	var regs []string
	for i := range n {
		if registered(i) {
			sn := simSN(prefix, i)
			r := e2eRegistration{Bound: bound(i)}
			if bound(i) {
				r.Name = name(i)
			}
			s.register(sn, r)
			regs = append(regs, sn)
		}
	}
	s.waitRegistered(regs...)

	rec := newLifeRecorder(s)
	start := time.Now()
	f := s.startFleet(devicesim.Config{
		Devices:     n,
		SNPrefix:    prefix,
		Heartbeat:   time.Second,
		StreamEvery: 2 * time.Second,
		UploadEvery: 2 * time.Second,
		Malformed:   0.15,
		UplinkQoS:   1,
		OnReceive:   rec.onReceive,
	})
	sns := f.sns()
	waitFleet(t, f, 60*time.Second, "every device handshaked, configured, heartbeating, with 702 (bound) and 703 replies and every malformed kind sent",
		func(st devicesim.Stats) (bool, string) {
			if st.FailuresTotal > 0 {
				t.Fatalf("devices failed checks: %v\n%s", st.Failures, devicesim.Report(st))
			}
			if st.Ready != n || st.Configured < n {
				return false, fmt.Sprintf("ready %d configured %d of %d", st.Ready, st.Configured, n)
			}
			for _, k := range devicesim.MalformedKinds {
				if st.Malformed[string(k)] == 0 {
					return false, "malformed kind " + string(k) + " not sent yet"
				}
			}
			why := ""
			rec.snapshot(func(r *lifeRecorder) {
				for i, sn := range sns {
					switch {
					case r.heartbeats[sn] < 5:
						why = sn + ": fewer than 5 heartbeat replies"
					case r.uploads[sn] == 0:
						why = sn + ": no 703 reply yet"
					case bound(i) && r.streamOK[sn] == 0:
						why = sn + ": no verified 702 reply yet"
					}
					if why != "" {
						return
					}
				}
			})
			if why != "" {
				return false, why
			}
			return time.Since(start) >= 10*time.Second, "running for at least 10s"
		})

	// The API (Redis projection) shows every device online with a session.
	e2eWaitFor(t, 30*time.Second, "every device online with a session in the API", func() (bool, string) {
		for i, sn := range sns {
			d, ok := s.device(sn)
			if !ok {
				return false, sn + ": 404"
			}
			if !d.Online || !d.Session || d.Config == nil {
				return false, fmt.Sprintf("%s: online %v session %v config %s", sn, d.Online, d.Session, d.Config)
			}
			if d.Registered != registered(i) {
				return false, fmt.Sprintf("%s: registered %v", sn, d.Registered)
			}
			if bound(i) && (d.Registration == nil || !d.Registration.Bound || d.Registration.Name != name(i)) {
				return false, fmt.Sprintf("%s: registration %+v", sn, d.Registration)
			}
		}
		return true, ""
	})

	sum := f.stop()
	t.Logf("fleet after %s:\n%s", time.Since(start).Round(time.Millisecond), devicesim.Report(sum.Stats))
	if sum.FailuresTotal != 0 {
		t.Errorf("devices failed checks of received frames: %v", sum.Failures)
	}
	if sum.Handshakes != n || sum.Connects != n || sum.ConnectFailures != 0 || sum.PublishFailures != 0 {
		t.Errorf("handshakes %d connects %d (want %d each), connect failures %d, publish failures %d",
			sum.Handshakes, sum.Connects, n, sum.ConnectFailures, sum.PublishFailures)
	}
	if sum.Configured != n {
		t.Errorf("configured %d, want %d (one 301 per configuration upload)", sum.Configured, n)
	}
	for _, q := range []string{devicesim.ReqHandshake, devicesim.ReqConfiguration, devicesim.ReqHeartbeat, devicesim.ReqUploadParams} {
		if sum.Unanswered[q] != 0 {
			t.Errorf("%d %s requests unanswered", sum.Unanswered[q], q)
		}
	}
	if sum.UnansweredBoundStreamURL != 0 {
		t.Errorf("%d 702 requests of bound devices unanswered", sum.UnansweredBoundStreamURL)
	}
	if want := int64((n + 2) / 3); sum.Bound != want {
		t.Errorf("%d devices told bound by their 301, want %d", sum.Bound, want)
	}
	rec.snapshot(func(r *lifeRecorder) {
		for _, b := range r.streamBad {
			t.Errorf("702 reply whose push URL does not verify: %s", b)
		}
		for _, b := range r.uploadBad {
			t.Errorf("703 reply whose credentials do not verify: %s", b)
		}
		for i, sn := range sns {
			wantBind := 0
			var wantOSD []string
			if bound(i) {
				wantBind = 1
				wantOSD = []string{"1:" + name(i)}
			}
			if got := r.bindStatus[sn]; len(got) != 1 || got[0] != wantBind {
				t.Errorf("%s: 301 iBindStatus %v, want [%d]", sn, got, wantBind)
			}
			if got := r.osdNames[sn]; !slices.Equal(got, wantOSD) {
				t.Errorf("%s: 333 names %q, want %q", sn, got, wantOSD)
			}
			if !bound(i) && r.streamOK[sn] != 0 {
				t.Errorf("%s: unbound device got %d 702 replies", sn, r.streamOK[sn])
			}
		}
	})

	// Every malformed frame is in ams.rejects with its reason; every
	// accepted frame is exactly one device event.
	reasonOf := map[devicesim.MalformedKind]string{
		devicesim.MalBadJSON: "bad_json", devicesim.MalBadEnvelope: "bad_envelope", devicesim.MalBadCmdType: "bad_cmd_type",
		devicesim.MalBadHex: "bad_hex", devicesim.MalBadBlockSize: "bad_block_size", devicesim.MalBadPadding: "bad_padding",
		devicesim.MalBadBody: "bad_json", devicesim.MalWrongSN: "sn_mismatch",
	}
	wantRejects := map[string]int64{}
	for k, r := range reasonOf {
		wantRejects[r] += sum.Malformed[string(k)]
	}
	wantEvents := map[string]int64{
		schemas.EventHandshake:     sum.Sent[devicesim.SentHandshake],
		schemas.EventConfiguration: sum.Sent[devicesim.SentConfiguration],
		schemas.EventHeartbeat:     sum.Sent[devicesim.SentHeartbeat],
		schemas.EventStreamRequest: sum.Sent[devicesim.SentStreamURL],
		schemas.EventUploadRequest: sum.Sent[devicesim.SentUploadParams],
		schemas.EventReply:         sum.Sent[devicesim.SentCommandReply] + sum.Sent[devicesim.SentControlReply],
	}
	inFleet := map[string]bool{}
	for _, sn := range sns {
		inFleet[sn] = true
	}
	var rejects []schemas.Reject
	e2eWaitFor(t, 30*time.Second, "every malformed frame rejected and every other frame an event", func() (bool, string) {
		rejects = decodeAll[schemas.Reject](s, s.names.Rejects)
		got := map[string]int64{}
		for _, r := range rejects {
			got[r.Reason]++
		}
		events := decodeAll[schemas.DeviceEvent](s, s.names.DeviceEvents)
		gotEvents := map[string]int64{}
		for _, e := range events {
			gotEvents[e.Kind]++
		}
		for r, c := range got {
			if c > wantRejects[r] {
				t.Fatalf("ams.rejects holds %d %q rejects, more than the %d malformed frames of that reason (all: %v, want %v)", c, r, wantRejects[r], got, wantRejects)
			}
		}
		for k, c := range gotEvents {
			if c > wantEvents[k] {
				t.Fatalf("ams.device.events holds %d %s events, more than the %d frames sent (all: %v, want %v)", c, k, wantEvents[k], gotEvents, wantEvents)
			}
		}
		for r, c := range wantRejects {
			if got[r] != c {
				return false, fmt.Sprintf("rejects %v, want %v", got, wantRejects)
			}
		}
		for k, c := range wantEvents {
			if gotEvents[k] != c {
				return false, fmt.Sprintf("events %v, want %v", gotEvents, wantEvents)
			}
		}
		return true, ""
	})
	for _, r := range rejects {
		if r.Stage != schemas.StageProcessor || !inFleet[r.SN] || r.Topic != protocol.UplinkTopic(r.SN) ||
			r.SourceTopic != s.names.UplinkRaw || len(r.Payload) == 0 {
			t.Errorf("reject %s: stage %s sn %s topic %s source %s, payload %d bytes", r.RejectID, r.Stage, r.SN, r.Topic, r.SourceTopic, len(r.Payload))
		}
	}
	t.Logf("%d malformed frames sent, %d rejects: %v", sum.MalformedTotal, len(rejects), wantRejects)

	// The history in ClickHouse says what the fleet did: the data team's
	// example queries (sinks/chsink/README.md) against what the
	// simulator counted.
	conn, err := s.clickhouse()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()
	e2eWaitFor(t, 30*time.Second, "ClickHouse holds every event and reject the fleet caused", func() (bool, string) {
		rows, err := conn.Query(ctx, "SELECT kind, uniqExact(event_id) FROM "+s.chDatabase+".device_events GROUP BY kind")
		if err != nil {
			return false, err.Error()
		}
		got := map[string]int64{}
		for rows.Next() {
			var k string
			var n uint64
			if err := rows.Scan(&k, &n); err != nil {
				t.Fatal(err)
			}
			got[k] = int64(n)
		}
		rows.Close()
		for k, c := range wantEvents {
			if got[k] != c {
				return false, fmt.Sprintf("device_events by kind %v, want %v", got, wantEvents)
			}
		}
		rows, err = conn.Query(ctx, s.exampleQuery("reject reasons in the last hour"))
		if err != nil {
			t.Fatalf("example query: %v", err)
		}
		gotRejects := map[string]int64{}
		for rows.Next() {
			var stage, reason string
			var n uint64
			if err := rows.Scan(&stage, &reason, &n); err != nil {
				t.Fatal(err)
			}
			if stage != schemas.StageProcessor {
				t.Fatalf("reject of stage %s reason %s in ClickHouse", stage, reason)
			}
			gotRejects[reason] = int64(n)
		}
		rows.Close()
		for r, c := range wantRejects {
			if gotRejects[r] != c {
				return false, fmt.Sprintf("reject reasons in the last hour %v, want %v", gotRejects, wantRejects)
			}
		}
		return len(gotRejects) == len(wantRejects), fmt.Sprintf("reject reasons %v, want %v", gotRejects, wantRejects)
	})
	// Every device was online when the fleet stopped; nothing says otherwise
	// (the presence history holds only online transitions of these devices).
	rows, err := conn.Query(ctx, s.exampleQuery("devices offline now"))
	if err != nil {
		t.Fatalf("example query: %v", err)
	}
	for rows.Next() {
		var sn, reason string
		var since time.Time
		if err := rows.Scan(&sn, &since, &reason); err != nil {
			t.Fatal(err)
		}
		t.Errorf("devices offline now lists %s (since %s, %s), but every device was online", sn, since, reason)
	}
	rows.Close()
}

// verifyUpload checks a 703 reply body as the upload gateway would
// (processors/device/UPLOAD_CREDENTIALS.md): signed credentials scoped to
// the device's own path, not expired.
func (s *e2eStack) verifyUpload(sn string, body []byte) error {
	var v struct {
		Forbidden int    `json:"isForBidden"`
		Method    string `json:"uploadmethod"`
		HTTP      struct {
			Host       string `json:"hosturl"`
			AccessKey  string `json:"access_key"`
			SecretKey  string `json:"secret_key"`
			Bucket     string `json:"bucket_name"`
			ObjectPath string `json:"object_path"`
		} `json:"http"`
		Index int64 `json:"index"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return err
	}
	h := v.HTTP
	akSN, exp, err := device.ParseUploadAccessKey(h.AccessKey)
	switch {
	case err != nil:
		return err
	case v.Forbidden != 0 || v.Method != "http" || v.Index <= 0:
		return fmt.Errorf("isForBidden %d uploadmethod %q index %d", v.Forbidden, v.Method, v.Index)
	case h.Host != s.uploadHost || h.Bucket != s.uploadBucket || h.ObjectPath != s.uploadPath+"/"+sn:
		return fmt.Errorf("host %q bucket %q object path %q", h.Host, h.Bucket, h.ObjectPath)
	case akSN != sn || !exp.After(time.Now()):
		return fmt.Errorf("access key for %s expiring %v", akSN, exp)
	case h.SecretKey != device.DeriveUploadSecret(s.uploadSecret, h.AccessKey, h.Bucket, h.ObjectPath):
		return fmt.Errorf("secret key does not derive from the access key")
	}
	return nil
}

// validBody builds a body that kind accepts (nil: the kind's default).
func e2eValidBody(t *testing.T, k commandkinds.Kind) json.RawMessage {
	t.Helper()
	if k.Default != "" {
		return nil
	}
	b, err := json.Marshal(e2eSpecValue(k.Body))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Normalize(b); err != nil {
		t.Fatalf("test body %s of kind %s: %v", b, k.Name, err)
	}
	return b
}

func e2eSpecValue(s commandkinds.Spec) map[string]any {
	m := map[string]any{}
	for _, f := range s.Fields {
		if f.Required {
			m[f.Name] = e2eFieldValue(f)
		}
	}
	if len(m) == 0 && s.NonEmpty {
		if len(s.Fields) > 0 {
			m[s.Fields[0].Name] = e2eFieldValue(s.Fields[0])
		} else {
			m["iEnable"] = 1
		}
	}
	return m
}

func e2eFieldValue(f commandkinds.Field) any {
	switch f.Type {
	case commandkinds.Int:
		switch {
		case len(f.OneOf) > 0:
			return f.OneOf[len(f.OneOf)-1]
		case f.HasMin:
			return f.Min + 1
		}
		return 1
	case commandkinds.String:
		return "e2e-osd"
	case commandkinds.Object:
		if f.Spec == nil {
			return map[string]any{}
		}
		m := e2eSpecValue(*f.Spec)
		for _, sf := range f.Spec.Fields {
			if _, ok := m[sf.Name]; !ok {
				m[sf.Name] = e2eFieldValue(sf)
			}
		}
		return m
	}
	return nil
}

// checkCommandLog checks ams.command.events: every (command_id, seq) once,
// each command's seqs 1..n in log order, ending in a final state. It returns
// each command's states in order.
func checkCommandLog(t *testing.T, s *e2eStack) map[string][]string {
	t.Helper()
	events := decodeAll[schemas.CommandEvent](s, s.names.CommandEvents)
	states := map[string][]string{}
	seen := map[string]bool{}
	for _, e := range events {
		key := fmt.Sprintf("%s/%d", e.CommandID, e.Seq)
		if seen[key] {
			t.Errorf("command event %s (%s) appears twice in the committed log", key, e.State)
			continue
		}
		seen[key] = true
		if want := int32(len(states[e.CommandID]) + 1); e.Seq != want {
			t.Errorf("command %s: event seq %d (%s) after %v, want seq %d", e.CommandID, e.Seq, e.State, states[e.CommandID], want)
		}
		states[e.CommandID] = append(states[e.CommandID], e.State)
	}
	for id, st := range states {
		if !cmdlife.Final(st[len(st)-1]) {
			t.Errorf("command %s never reached a final state: %v", id, st)
		}
	}
	return states
}

// TestCommandsRoundTrip: every command kind round-trips through the real
// stack with simulated devices answering; reply timeout, queue expiry,
// offline queueing and offline rejection.
func TestCommandsRoundTrip(t *testing.T) {
	s := startStack(t, stackOptions{})
	prefix := e2eSNPrefix(t)
	const n = 3
	silentSN, offlineSN, lateSN := simSN(prefix, 900), simSN(prefix, 901), simSN(prefix, 902)
	all := []string{silentSN, offlineSN, lateSN}
	for i := range n {
		all = append(all, simSN(prefix, i))
	}
	for _, sn := range all {
		s.register(sn, e2eRegistration{})
	}
	s.waitRegistered(all...)

	rec := newLifeRecorder(s)
	f := s.startFleet(devicesim.Config{Devices: n, SNPrefix: prefix, Heartbeat: 2 * time.Second, UplinkQoS: 1, OnReceive: rec.onReceive})
	sns := f.sns()
	waitFleet(t, f, 30*time.Second, "devices ready and configured", func(st devicesim.Stats) (bool, string) {
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

	// Every kind, waiting for its result.
	ids := map[string]string{}
	for i, k := range commandkinds.All() {
		sn := sns[i%n]
		code, a := s.postCommand(sn, commandRequest{Kind: k.Name, Body: e2eValidBody(t, k), Timeout: "15s"}, 20*time.Second)
		ids[a.ID] = k.Name
		if code != http.StatusOK || a.State != schemas.CommandSucceeded || !a.Final {
			t.Errorf("%s to %s: %d state %s (%s), history %v; want 200 SUCCEEDED", k.Name, sn, code, a.State, a.Reason, historyStates(a.Command))
			continue
		}
		if a.Kind != k.Name || a.SN != sn {
			t.Errorf("%s: answer names kind %s sn %s", k.Name, a.Kind, a.SN)
		}
		// DELIVERED always precedes SUCCEEDED, also when the reply overtakes
		// the broker receipt (issue 13: reset and stream_control lacked it).
		if h := historyStates(a.Command); !slices.Equal(h, []string{schemas.CommandAccepted, schemas.CommandSent, schemas.CommandDelivered, schemas.CommandSucceeded}) {
			t.Errorf("%s: history %v, want ACCEPTED, SENT, DELIVERED, SUCCEEDED", k.Name, h)
		}
		if k.Name == "sd_info" {
			var v protocol.SDCardInfo
			if err := json.Unmarshal(a.Reply, &v); err != nil || v.TFCardState != 6 || v.TFCardCapacitySize != 30436 {
				t.Errorf("sd_info reply %s: want the simulated SD card state (%v)", a.Reply, err)
			}
		} else {
			var v map[string]any
			if err := json.Unmarshal(a.Reply, &v); err != nil || v["iResult"] != float64(0) {
				t.Errorf("%s reply %s: want {\"iResult\":0} (%v)", k.Name, a.Reply, err)
			}
		}
	}
	if st := f.Stats(); st.Replies < int64(len(commandkinds.All())) {
		t.Errorf("the devices answered %d commands, want at least %d", st.Replies, len(commandkinds.All()))
	}

	// A device that handshakes and then never answers: TIMED_OUT.
	silent := s.startSilentDevice(silentSN)
	e2eWaitFor(t, 30*time.Second, "the silent device online with a session", func() (bool, string) {
		d, ok := s.device(silentSN)
		return ok && d.Online && d.Session, "not yet"
	})
	code, a := s.postCommand(silentSN, commandRequest{Kind: "reboot", Timeout: "2s"}, 20*time.Second)
	ids[a.ID] = "reboot"
	if code != http.StatusOK || a.State != schemas.CommandTimedOut || a.Reason != "reply_timeout" {
		t.Errorf("reboot to a silent device: %d %s (%s), history %v; want TIMED_OUT reply_timeout", code, a.State, a.Reason, historyStates(a.Command))
	}
	if h := historyStates(a.Command); !slices.Contains(h, schemas.CommandSent) {
		t.Errorf("silent device: history %v has no SENT", h)
	}
	fr := silent.next(t, 10*time.Second)
	if fr.CmdType != protocol.CmdCommand || fr.AppCmdType != protocol.AppReboot || fr.MsgID == "" {
		t.Errorf("silent device received %+v, want the reboot command (iCmdType 3 / 313 with sMsgId)", fr)
	} else if body, err := protocol.DecryptBody(silent.session, fr.Data); err != nil || string(body) != `{"iReboot":1}` {
		t.Errorf("silent device: command body %q (%v), want {\"iReboot\":1}", body, err)
	}

	// A registered device that is offline: queue with a short expiry
	// EXPIRED, reject REJECTED.
	code, a = s.postCommand(offlineSN, commandRequest{Kind: "reboot", Offline: "queue", Expires: "2s"}, 20*time.Second)
	ids[a.ID] = "reboot"
	if code != http.StatusOK || a.State != schemas.CommandExpired || a.Reason != "queue_expired" {
		t.Errorf("queued reboot to an offline device: %d %s (%s), history %v; want EXPIRED queue_expired", code, a.State, a.Reason, historyStates(a.Command))
	} else if h := historyStates(a.Command); !slices.Equal(h, []string{schemas.CommandAccepted, schemas.CommandQueued, schemas.CommandExpired}) {
		t.Errorf("expired command: history %v, want ACCEPTED QUEUED EXPIRED", h)
	}
	code, a = s.postCommand(offlineSN, commandRequest{Kind: "reboot", Offline: "reject"}, 20*time.Second)
	ids[a.ID] = "reboot"
	if code != http.StatusOK || a.State != schemas.CommandRejected || a.Reason != "offline" {
		t.Errorf("offline=reject reboot to an offline device: %d %s (%s), history %v; want REJECTED offline", code, a.State, a.Reason, historyStates(a.Command))
	}

	// Queued for an offline device, sent and answered once it comes online.
	code, a = s.postCommand(lateSN, commandRequest{Kind: "sd_info", Offline: "queue", Expires: "5m", Timeout: "20s"}, 0)
	if code != http.StatusAccepted || a.ID == "" {
		t.Fatalf("queued sd_info: %d %+v, want 202 with an id", code, a)
	}
	ids[a.ID] = "sd_info"
	s.waitCommand(a.ID, "QUEUED", 30*time.Second, func(c devicestate.Command) bool { return c.State == schemas.CommandQueued })
	late := s.startFleet(devicesim.Config{Devices: 1, SNPrefix: prefix, FirstIndex: 902, Heartbeat: 2 * time.Second, UplinkQoS: 1})
	c := s.waitCommand(a.ID, "final", 40*time.Second, func(c devicestate.Command) bool { return c.Final })
	if c.State != schemas.CommandSucceeded {
		t.Errorf("queued sd_info after the device came online: %s (%s), history %v; want SUCCEEDED", c.State, c.Reason, historyStates(c))
	} else {
		var v protocol.SDCardInfo
		if err := json.Unmarshal(c.Reply, &v); err != nil || v.TFCardState != 6 {
			t.Errorf("queued sd_info reply %s (%v)", c.Reply, err)
		}
	}
	lsum := late.stop()
	// Replies: the 301 of its configuration upload, and the queued sd_info.
	if lsum.Replies != 2 || lsum.FailuresTotal != 0 || lsum.Handshakes != 1 {
		t.Errorf("late device: %d replies (want 2: 301 and sd_info), failures %v, handshakes %d", lsum.Replies, lsum.Failures, lsum.Handshakes)
	}

	sum := f.stop()
	if sum.FailuresTotal != 0 || sum.Handshakes != n {
		t.Errorf("fleet: failures %v, handshakes %d (want %d)", sum.Failures, sum.Handshakes, n)
	}
	rec.snapshot(func(r *lifeRecorder) {
		for k, c := range r.commands {
			if c != 1 {
				t.Errorf("device received command %s %d times", k, c)
			}
		}
	})
	states := checkCommandLog(t, s)
	for id, kind := range ids {
		if _, ok := states[id]; !ok {
			t.Errorf("command %s (%s) has no event in the committed log", id, kind)
		}
	}
}

// TestProcessorCrash: three processor instances in one group under load,
// one killed with SIGKILL while commands are pending: no presence transition
// lost or doubled, no session lost, no downlink doubled in the committed
// log, no command lost or sent twice.
func TestProcessorCrash(t *testing.T) {
	s := startStack(t, stackOptions{processors: 3, heartbeatTimeout: 5 * time.Second})
	const n = 100
	prefix := e2eSNPrefix(t)
	sns := make([]string, n)
	for i := range sns {
		sns[i] = simSN(prefix, i)
		s.register(sns[i], e2eRegistration{})
	}
	s.waitRegistered(sns...)

	rec := newLifeRecorder(s)
	f := s.startFleet(devicesim.Config{Devices: n, SNPrefix: prefix, Heartbeat: time.Second, Ramp: 200, UplinkQoS: 1,
		HandshakeTimeout: 20 * time.Second, OnReceive: rec.onReceive})
	waitFleet(t, f, 60*time.Second, "every device ready and configured", func(st devicesim.Stats) (bool, string) {
		return st.Ready == n && st.Configured == n, "not yet"
	})
	e2eWaitFor(t, 30*time.Second, "every device online with a session in the API", func() (bool, string) {
		for _, sn := range sns {
			if d, ok := s.device(sn); !ok || !d.Online || !d.Session {
				return false, sn + " not yet"
			}
		}
		return true, ""
	})

	// Commands in flight, then the kill, then more commands while the
	// killed instance's partitions have no owner. The reply timeout
	// outlasts the recovery (session timeout + transaction timeout).
	var ids []string
	post := func(i int) {
		kind := []string{"reboot", "sd_info", "stream_control"}[i%3]
		var body json.RawMessage
		if kind == "stream_control" {
			body = json.RawMessage(`{"icmdtype":1}`)
		}
		_, a := s.postCommand(sns[(i*7)%n], commandRequest{Kind: kind, Body: body, Timeout: "150s"}, 0)
		ids = append(ids, a.ID)
	}
	for i := range 30 {
		post(i)
	}
	victim := s.procs["p1"]
	victim.Kill()
	killedAt := time.Now()
	t.Logf("killed process p1 (pid %d) with SIGKILL", victim.Pid())
	for i := 30; i < 60; i++ {
		post(i)
	}
	pending := 0
	for _, id := range ids {
		if c, ok := s.command(id); !ok || !c.Final {
			pending++
		}
	}
	t.Logf("%d of %d commands not final %s after the kill", pending, len(ids), time.Since(killedAt).Round(time.Millisecond))

	// Recovery: every device gets a verified heartbeat reply sent after the
	// kill, and every command ends.
	e2eWaitFor(t, 120*time.Second, "every device answered after the kill (recovery takes session timeout + transaction timeout)", func() (bool, string) {
		missing := 0
		rec.snapshot(func(r *lifeRecorder) {
			for _, sn := range sns {
				if !r.lastHB[sn].After(killedAt.Add(time.Second)) {
					missing++
				}
			}
		})
		if st := f.Stats(); st.FailuresTotal > 0 {
			t.Fatalf("devices failed checks: %v", st.Failures)
		}
		return missing == 0, fmt.Sprintf("%d devices without a heartbeat reply since the kill", missing)
	})
	t.Logf("every device answered again %s after the kill", time.Since(killedAt).Round(time.Millisecond))
	for _, id := range ids {
		c := s.waitCommand(id, "final", 60*time.Second, func(c devicestate.Command) bool { return c.Final })
		if c.State != schemas.CommandSucceeded {
			t.Errorf("command %s (%s to %s): %s (%s), history %v; want SUCCEEDED", id, c.Kind, c.SN, c.State, c.Reason, historyStates(c))
		}
	}
	// Sessions survived: a few more heartbeats verify on every device.
	after := time.Now()
	e2eWaitFor(t, 30*time.Second, "every device's heartbeats verify after the recovery", func() (bool, string) {
		missing := 0
		rec.snapshot(func(r *lifeRecorder) {
			for _, sn := range sns {
				if !r.lastHB[sn].After(after) {
					missing++
				}
			}
		})
		return missing == 0, fmt.Sprintf("%d devices without a heartbeat reply", missing)
	})
	sum := f.stop()
	t.Logf("fleet:\n%s", devicesim.Report(sum.Stats))
	if sum.Handshakes != n || sum.Connects != n || sum.HandshakeDups != 0 || sum.FailuresTotal != 0 {
		t.Errorf("handshakes %d connects %d (want %d each: no session lost), duplicate handshake replies %d, failures %v",
			sum.Handshakes, sum.Connects, n, sum.HandshakeDups, sum.Failures)
	}
	rec.snapshot(func(r *lifeRecorder) {
		got := 0
		for k, c := range r.commands {
			got++
			if c != 1 {
				t.Errorf("device received command %s %d times", k, c)
			}
		}
		if got != len(ids) {
			t.Errorf("devices received %d distinct commands, want %d", got, len(ids))
		}
	})

	// The committed logs. Every frame the devices sent is exactly one
	// device event (event ids are the source offsets: none twice).
	wantEvents := map[string]int64{
		schemas.EventHandshake:     sum.Sent[devicesim.SentHandshake],
		schemas.EventConfiguration: sum.Sent[devicesim.SentConfiguration],
		schemas.EventHeartbeat:     sum.Sent[devicesim.SentHeartbeat],
		schemas.EventReply:         sum.Sent[devicesim.SentCommandReply] + sum.Sent[devicesim.SentControlReply],
	}
	// A handshake that reaches a processor before the device's registration
	// does is refused `unregistered` (processors/device README); the device
	// retries and its retry is answered. Such a frame is a reject, not an
	// event, and the only reject allowed here.
	unregistered := func() (n int64) {
		for _, rj := range decodeAll[schemas.Reject](s, s.names.Rejects) {
			if rj.Reason == device.ReasonUnregistered {
				n++
			}
		}
		return n
	}
	e2eWaitFor(t, 30*time.Second, "every frame sent is one device event (or an unregistered reject)", func() (bool, string) {
		wantEvents[schemas.EventHandshake] = sum.Sent[devicesim.SentHandshake] - unregistered()
		events := decodeAll[schemas.DeviceEvent](s, s.names.DeviceEvents)
		got := map[string]int64{}
		ids := map[string]bool{}
		for _, e := range events {
			if ids[e.EventID] {
				t.Fatalf("device event %s (%s of %s) appears twice in the committed log", e.EventID, e.Kind, e.SN)
			}
			ids[e.EventID] = true
			got[e.Kind]++
		}
		for k, c := range got {
			if c > wantEvents[k] {
				t.Fatalf("%d %s events, more than the %d frames sent (all: %v, want %v)", c, k, wantEvents[k], got, wantEvents)
			}
		}
		for k, c := range wantEvents {
			if got[k] != c {
				return false, fmt.Sprintf("events %v, want %v", got, wantEvents)
			}
		}
		return true, ""
	})
	for _, rj := range decodeAll[schemas.Reject](s, s.names.Rejects) {
		if rj.Reason != device.ReasonUnregistered {
			t.Errorf("reject %s %s, want none but unregistered handshakes", rj.Reason, rj.Detail)
		}
	}
	presence := decodeAll[schemas.Presence](s, s.names.Presence)
	bySN := map[string][]schemas.Presence{}
	for _, p := range presence {
		bySN[p.SN] = append(bySN[p.SN], p)
	}
	transitions := 0
	for _, sn := range sns {
		ps := bySN[sn]
		if len(ps) == 0 {
			t.Errorf("%s: no presence transition", sn)
		}
		for i, p := range ps {
			transitions++
			if p.Seq != int64(i+1) {
				t.Errorf("%s: presence transition %d has seq %d (%s %v): lost or doubled; all: %v", sn, i+1, p.Seq, p.Reason, p.Online, presenceSeqs(ps))
				break
			}
			if p.Online != (i%2 == 0) {
				t.Errorf("%s: presence transition seq %d online=%v does not alternate (first is online)", sn, p.Seq, p.Online)
				break
			}
		}
	}
	t.Logf("%d presence transitions of %d devices", transitions, n)

	downlinks := decodeAll[schemas.Downlink](s, s.names.Downlink)
	frames := map[string]int{}
	perCommand := map[string]int{}
	for _, d := range downlinks {
		frames[d.FrameID]++
		if d.CommandID != nil {
			perCommand[*d.CommandID]++
		}
	}
	for id, c := range frames {
		if c != 1 {
			t.Errorf("downlink frame %s appears %d times in the committed log", id, c)
		}
	}
	for _, id := range ids {
		if perCommand[id] != 1 {
			t.Errorf("command %s was sent %d times in the committed log, want once", id, perCommand[id])
		}
	}
	states := checkCommandLog(t, s)
	for _, id := range ids {
		if st := states[id]; len(st) == 0 || st[len(st)-1] != schemas.CommandSucceeded {
			t.Errorf("command %s: committed states %v, want ending SUCCEEDED", id, st)
		}
	}
	t.Logf("%d downlinks, %d commands in the committed log", len(downlinks), len(states))
}

func presenceSeqs(ps []schemas.Presence) []string {
	var out []string
	for _, p := range ps {
		out = append(out, fmt.Sprintf("%d:%v:%s", p.Seq, p.Online, p.Reason))
	}
	return out
}
