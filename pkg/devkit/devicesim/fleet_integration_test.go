//go:build integration

package devicesim

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ivms/ams/pkg/deviceauth"
	"github.com/ivms/ams/pkg/testkit/testenv"
)

// TestFleetAgainstMosquitto runs 200 devices and the test cloud against the
// real broker (AMS_MQTT_URL, default tcp://127.0.0.1:1883), each device
// with its own credentials and the cloud with the tests' role account when
// the broker requires them. The sn prefix is
// random, so concurrent runs do not serve each other's devices; but any
// other cloud on the broker (an ams pipeline reading /ivms/pub/+) would
// answer them too, which the test reports as such.
func TestFleetAgainstMosquitto(t *testing.T) {
	url := testenv.MQTTURL()
	prefix := fmt.Sprintf("%06X", rand.N(1<<24))
	cloud := newTestCloud(t, prefix) // fails the test when the broker is unreachable
	cloud.start(url)

	const n = 200
	cfg := baseConfig(t, url, n)
	cfg.SNPrefix = prefix
	cfg.Heartbeat = time.Second
	cfg.Ramp = 1000
	cfg.UploadEvery = 2 * time.Second
	cfg.ReplyTimeout = 10 * time.Second
	cfg.HandshakeTimeout = 10 * time.Second
	// Each device logs in with its own credentials, registered on the
	// broker for this test (testenv.MQTTDevices; nothing on an open broker).
	cfg.Token = func(sn string) string { return "token-" + sn }
	var creds []deviceauth.Credential
	for _, sn := range SNs(cfg) {
		creds = append(creds, deviceauth.Credential{Username: sn, Password: cfg.Token(sn)})
	}
	testenv.MQTTDevices(t, creds...)
	f, stop := startFleet(t, cfg)
	waitFor(t, 60*time.Second, "every device ready, configured, with 2 heartbeat replies each", func(s Stats) bool {
		if s.HandshakeDups > 0 {
			// Two handshake replies per device: something else answers
			// /ivms/pub/+ on this broker too (an ams pipeline, another
			// simulator's cloud), and every device now fails on one of them.
			t.Fatalf("another cloud answers devices on %s; this test needs a broker where only its own cloud does:\n%s", url, Report(s))
		}
		return s.Ready == n && s.Configured == n && s.Latency[ReqHeartbeat].Count >= 2*n
	}, f)
	sn := f.Device(n - 1).SN()
	id, ch := cloud.command(sn, 3, 332, map[string]int{"iGetSDInfo": 1})
	select {
	case r := <-ch:
		if r.Frame.CmdType != 6 || r.Frame.MsgID != id {
			t.Errorf("reply %+v, want iCmdType 6 with sMsgId %s", r.Frame, id)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no reply from %s", sn)
	}
	s := stop()
	t.Logf("summary:\n%s", Report(s.Stats))
	if s.Handshakes != n || s.FailuresTotal != 0 || s.ConnectFailures != 0 {
		t.Errorf("handshakes %d (want %d), failures %v, connect failures %d", s.Handshakes, n, s.Failures, s.ConnectFailures)
	}
	if len(cloud.rejected()) != 0 {
		t.Errorf("the cloud rejected %v", cloud.rejected())
	}
}
