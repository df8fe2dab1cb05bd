package devicesim

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/ivms/ams/pkg/protocol"
)

// startBroker runs an embedded MQTT broker on a free loopback port and
// returns its URL.
func startBroker(t *testing.T) string {
	t.Helper()
	srv := mochi.New(&mochi.Options{Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	if err := srv.AddListener(tcp); err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve() }()
	t.Cleanup(func() { _ = srv.Close() })
	return "tcp://" + tcp.Address()
}

// startFleet runs a fleet in the background; the returned function stops
// it and returns its summary.
func startFleet(t *testing.T, cfg Config) (*Fleet, func() Summary) {
	t.Helper()
	f, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var (
		sum  Summary
		rerr error
		wg   sync.WaitGroup
	)
	wg.Go(func() { sum, rerr = f.Run(ctx) })
	stopped := false
	stop := func() Summary {
		if !stopped {
			stopped = true
			cancel()
			wg.Wait()
			if rerr != nil {
				t.Fatal(rerr)
			}
		}
		return sum
	}
	t.Cleanup(func() { stop() })
	return f, stop
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func(Stats) bool, f *Fleet) Stats {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := f.Stats()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; stats:\n%s", what, Report(s))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func baseConfig(t *testing.T, url string, n int) Config {
	return Config{
		Devices:          n,
		SNPrefix:         "0505050505",
		FirstIndex:       1,
		BrokerURL:        url,
		PublicKey:        testPublicKey(t),
		Token:            func(string) string { return "secret" },
		Heartbeat:        100 * time.Millisecond,
		Ramp:             -1,
		HandshakeTimeout: 2 * time.Second,
		ReplyTimeout:     2 * time.Second,
		UplinkQoS:        1,
	}
}

func TestFleetSpeaksTheProtocol(t *testing.T) {
	url := startBroker(t)
	cloud := newTestCloud(t, "0505050505")
	cloud.start(url)

	const n = 20
	cfg := baseConfig(t, url, n)
	cfg.StreamEvery = 150 * time.Millisecond
	cfg.UploadEvery = 150 * time.Millisecond
	var mu sync.Mutex
	received := map[string]int{} // "sn/iCmdType" -> frames that passed the checks
	cfg.OnReceive = func(r Received) {
		if r.Failure == "" {
			mu.Lock()
			received[r.SN]++
			mu.Unlock()
		}
	}
	f, stop := startFleet(t, cfg)

	waitFor(t, 20*time.Second, "every device ready, configured and with 3 heartbeat replies", func(s Stats) bool {
		return s.Ready == n && s.Configured == n && s.Latency[ReqHeartbeat].Count >= 3*n &&
			s.Latency[ReqUploadParams].Count >= n && s.Latency[ReqStreamURL].Count >= n/2
	}, f)

	// Every device is known to the cloud with its configuration.
	cloud.mu.Lock()
	for i := range n {
		sn := f.Device(i).SN()
		if len(sn) != SNLength || !strings.HasPrefix(sn, "0505050505") {
			t.Errorf("sn %q", sn)
		}
		c, ok := cloud.configs[sn]
		if !ok || c.DeviceSn != sn || c.ModelName == "" {
			t.Errorf("cloud has configuration %+v for %s", c, sn)
		}
	}
	cloud.mu.Unlock()
	if got := f.Device(2).SN(); got != "0505050505000003" {
		t.Errorf("third device sn = %q, want 0505050505000003", got)
	}

	// Commands are answered with iCmdType 6 and the same sMsgId.
	sn := f.Device(3).SN()
	for _, tc := range []struct {
		cmd, sub int
		body     any
		want     string
	}{
		{protocol.CmdCommand, protocol.AppGetSDInfo, map[string]int{"iGetSDInfo": 1}, `"iTFCardState":6`},
		{protocol.CmdCommand, protocol.AppReboot, protocol.Reboot{Reboot: 1}, `"iResult":0`},
		{protocol.CmdAms, protocol.AmsStreamControl, protocol.AmsControl{CmdType: 1}, `"iResult":0`},
		{protocol.CmdAms, protocol.AmsUploadControl, protocol.AmsControl{CmdType: 0}, `"iResult":0`},
	} {
		id, ch := cloud.command(sn, tc.cmd, tc.sub, tc.body)
		select {
		case r := <-ch:
			wantCmd, gotSub := protocol.CmdReply, r.Frame.AppCmdType
			if tc.cmd == protocol.CmdAms {
				wantCmd, gotSub = protocol.CmdAms, r.Frame.AmsCmdType
			}
			if r.SN != sn || r.Frame.CmdType != wantCmd || r.Frame.MsgID != id || gotSub != tc.sub {
				t.Errorf("command %d/%d: reply %+v from %s, want iCmdType %d sMsgId %s", tc.cmd, tc.sub, r.Frame, r.SN, wantCmd, id)
			}
			if !strings.Contains(string(r.Body), tc.want) || !json.Valid(r.Body) {
				t.Errorf("command %d/%d: reply body %s, want %s", tc.cmd, tc.sub, r.Body, tc.want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("command %d/%d to %s: no reply", tc.cmd, tc.sub, sn)
		}
	}

	// A test can send its own frame through a device.
	if err := f.Device(0).SendFrame(protocol.Frame{CmdType: protocol.CmdReply, ProtocolVersion: "V1.0", MsgID: "custom"},
		[]byte(`{"iResult":7}`)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		cloud.mu.Lock()
		r, ok := cloud.replies["custom"]
		cloud.mu.Unlock()
		if ok {
			if r.SN != f.Device(0).SN() || string(r.Body) != `{"iResult":7}` {
				t.Errorf("custom frame arrived as %+v", r)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the custom frame did not reach the cloud")
		}
		time.Sleep(10 * time.Millisecond)
	}

	s := stop()
	t.Logf("summary:\n%s", Report(s.Stats))
	if s.FailuresTotal != 0 {
		t.Errorf("failures: %v", s.Failures)
	}
	if s.Handshakes != n || s.Latency[ReqHandshake].Count != n || s.Latency[ReqConfiguration].Count != n {
		t.Errorf("handshakes %d (timed %d), configurations timed %d, want %d",
			s.Handshakes, s.Latency[ReqHandshake].Count, s.Latency[ReqConfiguration].Count, n)
	}
	if s.Replies < 4+n || s.Sent[SentCommandReply] < int64(4+n) || s.Sent[SentControlReply] != 2 {
		t.Errorf("replies %d, sent %v", s.Replies, s.Sent)
	}
	if s.Sent[SentCustom] != 1 {
		t.Errorf("custom frames sent %d, want 1", s.Sent[SentCustom])
	}
	if s.Received[RecvStreamURL] == 0 || s.Received[RecvUploadParams] == 0 || s.Received[RecvHeartbeat] == 0 {
		t.Errorf("received %v", s.Received)
	}
	if s.Bound != n/2 {
		t.Errorf("bound %d, want %d (even sns)", s.Bound, n/2)
	}
	if s.Connected != 0 || s.Ready != 0 {
		t.Errorf("after Run: connected %d, ready %d", s.Connected, s.Ready)
	}
	if len(cloud.rejected()) != 0 {
		t.Errorf("the cloud rejected %v", cloud.rejected())
	}
	if s.MalformedTotal != 0 || s.PublishFailures != 0 {
		t.Errorf("malformed %d publish failures %d", s.MalformedTotal, s.PublishFailures)
	}
	mu.Lock()
	if len(received) != n {
		t.Errorf("OnReceive saw %d devices, want %d", len(received), n)
	}
	mu.Unlock()
}

func TestFleetCountsBadReplies(t *testing.T) {
	url := startBroker(t)
	cloud := newTestCloud(t, "0505050505")
	cloud.badFirstHandshake = true
	cloud.badHeartbeats = true
	cloud.start(url)

	const n = 10
	cfg := baseConfig(t, url, n)
	cfg.HandshakeTimeout = 200 * time.Millisecond
	f, stop := startFleet(t, cfg)
	waitFor(t, 20*time.Second, "every device ready and bad heartbeat replies counted", func(s Stats) bool {
		return s.Ready == n && s.Failures[string(protocol.ReasonBadPadding)] >= 2*n
	}, f)
	s := stop()
	t.Logf("summary:\n%s", Report(s.Stats))
	if got := s.Failures[string(protocol.ReasonBadMD5)]; got != n {
		t.Errorf("bad_md5 failures = %d, want %d (one per device)", got, n)
	}
	if s.HandshakeRetries < n || s.Unanswered[ReqHandshake] < n {
		t.Errorf("handshake retries %d, unanswered %d, want >= %d", s.HandshakeRetries, s.Unanswered[ReqHandshake], n)
	}
	if s.Latency[ReqHeartbeat].Count != 0 {
		t.Errorf("%d heartbeat replies timed, want none (all corrupt)", s.Latency[ReqHeartbeat].Count)
	}
	for r := range s.Failures {
		if r != string(protocol.ReasonBadMD5) && r != string(protocol.ReasonBadPadding) {
			t.Errorf("unexpected failure reason %q: %v", r, s.Failures)
		}
	}
}

func TestFleetSendsEveryMalformedKind(t *testing.T) {
	url := startBroker(t)
	cloud := newTestCloud(t, "0505050505")
	cloud.start(url)

	const n = 12
	cfg := baseConfig(t, url, n)
	cfg.Malformed = 1
	cfg.Heartbeat = 50 * time.Millisecond
	f, stop := startFleet(t, cfg)
	waitFor(t, 20*time.Second, "every malformed kind sent twice", func(s Stats) bool {
		for _, k := range MalformedKinds {
			if s.Malformed[string(k)] < 2 {
				return false
			}
		}
		return true
	}, f)
	s := stop()
	time.Sleep(200 * time.Millisecond) // let the cloud see the last frames
	t.Logf("summary:\n%s", Report(s.Stats))
	if s.Sent[SentHeartbeat] != 0 {
		t.Errorf("%d heartbeats sent with Malformed = 1", s.Sent[SentHeartbeat])
	}
	if s.Sent[SentMalformed] != s.MalformedTotal {
		t.Errorf("sent malformed %d, counted by kind %d", s.Sent[SentMalformed], s.MalformedTotal)
	}
	rej := cloud.rejected()
	total := 0
	for _, v := range rej {
		total += v
	}
	if int64(total) != s.MalformedTotal {
		t.Errorf("the cloud rejected %d frames %v, the fleet sent %d malformed %v", total, rej, s.MalformedTotal, s.Malformed)
	}
	for _, r := range []string{"bad_json", "bad_envelope", "bad_cmd_type", "bad_hex", "bad_block_size", "bad_padding", "wrong_sn"} {
		if rej[r] == 0 {
			t.Errorf("the cloud rejected no frame with %s: %v", r, rej)
		}
	}
	if want := s.Malformed[string(MalBadJSON)] + s.Malformed[string(MalBadBody)]; int64(rej["bad_json"]) != want {
		t.Errorf("cloud bad_json %d, want %d", rej["bad_json"], want)
	}
}

func TestFleetStormsAndVanishes(t *testing.T) {
	url := startBroker(t)
	cloud := newTestCloud(t, "0505050505")
	cloud.start(url)

	const n = 10
	cfg := baseConfig(t, url, n)
	cfg.StormEvery = 400 * time.Millisecond
	cfg.StormShare = 0.5
	cfg.Vanish = 1
	cfg.VanishEvery = 300 * time.Millisecond
	cfg.VanishFor = 200 * time.Millisecond
	cfg.KeepSession = 0.5
	cfg.KeepAlive = 2 * time.Second
	f, stop := startFleet(t, cfg)
	waitFor(t, 30*time.Second, "storms, vanishes and reconnects", func(s Stats) bool {
		return s.Storms >= 2 && s.StormReconnects >= n/2 && s.Vanished >= n && s.Connects >= 3*n &&
			s.Resumed > 0 && s.Handshakes > n
	}, f)
	s := stop()
	t.Logf("summary:\n%s", Report(s.Stats))
	if s.FailuresTotal != 0 {
		t.Errorf("failures %v", s.Failures)
	}
}

func TestFleetVanishReset(t *testing.T) {
	url := startBroker(t)
	const n = 4
	cfg := baseConfig(t, url, n)
	cfg.Vanish = 1
	cfg.VanishEvery = 100 * time.Millisecond
	cfg.VanishFor = 100 * time.Millisecond
	cfg.VanishMode = VanishReset
	f, stop := startFleet(t, cfg) // no cloud: handshakes go unanswered, vanishes still happen
	waitFor(t, 20*time.Second, "vanishes and reconnects", func(s Stats) bool {
		return s.Vanished >= 2*n && s.Connects >= 3*n
	}, f)
	s := stop()
	if s.ConnectFailures != 0 {
		t.Errorf("connect failures %d", s.ConnectFailures)
	}
}

func TestConfigValidation(t *testing.T) {
	pub := testPublicKey(t)
	ok := Config{Devices: 1, BrokerURL: "tcp://127.0.0.1:1", PublicKey: pub}
	for name, mod := range map[string]func(*Config){
		"no devices":   func(c *Config) { c.Devices = 0 },
		"no key":       func(c *Config) { c.PublicKey = nil },
		"bad url":      func(c *Config) { c.BrokerURL = "127.0.0.1:1883" },
		"ws url":       func(c *Config) { c.BrokerURL = "ws://127.0.0.1:1883" },
		"long prefix":  func(c *Config) { c.SNPrefix = "0123456789012345" },
		"too many":     func(c *Config) { c.SNPrefix = "01234567890123"; c.Devices = 101 },
		"malformed>1":  func(c *Config) { c.Malformed = 1.5 },
		"jitter 1":     func(c *Config) { c.Jitter = 1 },
		"qos 2":        func(c *Config) { c.UplinkQoS = 2 },
		"vanish mode":  func(c *Config) { c.VanishMode = "poof" },
		"negative idx": func(c *Config) { c.FirstIndex = -1 },
	} {
		c := ok
		mod(&c)
		if _, err := New(c); err == nil {
			t.Errorf("%s: New accepted %+v", name, c)
		}
	}
	c := ok
	c.SNPrefix = "01234567890123"
	c.Devices = 100 // numbers 0..99 fit two digits
	f, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Device(99).SN(); got != "0123456789012399" {
		t.Errorf("sn %q", got)
	}
	if f.DeviceBySN("0123456789012307") != f.Device(7) {
		t.Error("DeviceBySN")
	}
	if got := f.Config(); got.Heartbeat != 30*time.Second || got.Jitter != 0.1 || got.Ramp != 500 || got.ProtocolVersion != "V1.0" {
		t.Errorf("defaults: %+v", got)
	}
}

// TestMalformedFramesAreRejected checks each malformed kind against the
// protocol package's own checks, without a broker.
func TestMalformedFramesAreRejected(t *testing.T) {
	s := protocol.DeriveSession("8f14e45fceea167a5a36dedd4bea2543", "c9f0f895fb98ab91", "45c48cce2e2d7fbdea1afc51c7c6ad26", "d3d9446802a44259")
	sn := "0505050505050003"
	want := map[MalformedKind]protocol.Reason{
		MalBadJSON: protocol.ReasonBadJSON, MalBadEnvelope: protocol.ReasonBadEnvelope, MalBadCmdType: protocol.ReasonBadCmdType,
		MalBadHex: protocol.ReasonBadHex, MalBadBlockSize: protocol.ReasonBadBlockSize, MalBadPadding: protocol.ReasonBadPadding,
		MalBadBody: protocol.ReasonBadJSON,
	}
	for _, k := range MalformedKinds {
		b := malformedFrame(k, sn, "V1.0", s)
		fr, err := protocol.DecodeFrame(b)
		if err == nil {
			switch fr.CmdType {
			case protocol.CmdHeartbeat:
				var hb protocol.Heartbeat
				err = protocol.DecryptJSON(s, fr.Data, &hb)
			case protocol.CmdConfiguration:
				var c protocol.Configuration
				if err = protocol.DecryptJSON(s, fr.Data, &c); err == nil && c.DeviceSn == sn {
					t.Errorf("%s: configuration carries the device's own sn", k)
				}
				if k == MalWrongSN && err == nil {
					continue
				}
			}
		}
		if got := protocol.ReasonOf(err); got != want[k] {
			t.Errorf("%s: reason %q (%v), want %q; frame %s", k, got, err, want[k], b)
		}
	}
}
