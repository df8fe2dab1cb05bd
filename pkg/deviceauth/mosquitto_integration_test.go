//go:build integration

package deviceauth

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// TestMosquittoPolicy starts a private Mosquitto (its own port and files;
// the shared broker is untouched) with the generated password file and ACL,
// and checks the policy end to end: a wrong password is refused at CONNECT,
// a device's publish on another device's uplink never reaches a subscriber,
// and a device reads only its own downlink.
func TestMosquittoPolicy(t *testing.T) {
	bin := "/usr/sbin/mosquitto"
	if b := os.Getenv("AMS_MOSQUITTO_BIN"); b != "" {
		bin = b
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("mosquitto not installed at %s: %v", bin, err)
	}
	accounts, err := ParseAccounts("ingest:in-pw,egress:eg-pw")
	if err != nil {
		t.Fatal(err)
	}
	devices := []Credential{{"SN1", "tok-1"}, {"SN2", "tok-2"}}
	dir := t.TempDir()
	if err := WriteMosquittoConfig(filepath.Join(dir, "auth"), accounts, devices); err != nil {
		t.Fatal(err)
	}
	frag, err := os.ReadFile(filepath.Join(dir, "auth", "ams.conf"))
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	conf := fmt.Sprintf("user root\nper_listener_settings false\nlog_dest file %s/mosquitto.log\nlog_type all\nlistener %d 127.0.0.1\n%s", dir, port, frag)
	if err := os.WriteFile(filepath.Join(dir, "mosquitto.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", filepath.Join(dir, "mosquitto.conf"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "mosquitto.log"))
			t.Logf("mosquitto log:\n%s", b)
		}
	})
	url := fmt.Sprintf("tcp://127.0.0.1:%d", port)
	waitPort(t, port)

	// Refused at CONNECT.
	for _, c := range []struct{ id, user, pw string }{
		{"SN1", "SN1", "tok-2"},
		{"SN3", "SN3", "tok-3"},
		{"ingest", "ingest", "wrong"},
		{"anon", "", ""},
	} {
		if _, err := connect(url, c.id, c.user, c.pw); err == nil {
			t.Errorf("login %s/%s with a wrong password was accepted", c.id, c.user)
		}
	}

	ingest := mustConnect(t, url, "ingest-0", "ingest", "in-pw")
	up := make(chan string, 10)
	if tok := ingest.Subscribe("$share/ams-ingest//ivms/pub/+", 1, func(_ mqtt.Client, m mqtt.Message) {
		up <- m.Topic() + " " + string(m.Payload())
	}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("ingest subscribe: %v", tok.Error())
	}
	sn1 := mustConnect(t, url, "SN1", "SN1", "tok-1")
	down := make(chan string, 10)
	for _, f := range []string{"/ivms/sub/SN2", "/ivms/sub/SN1"} {
		if tok := sn1.Subscribe(f, 1, func(_ mqtt.Client, m mqtt.Message) {
			down <- m.Topic() + " " + string(m.Payload())
		}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("SN1 subscribe %s: %v", f, tok.Error())
		}
	}

	// Uplinks: the forged one first, so it would arrive before the own one.
	for _, p := range []struct{ topic, body string }{{"/ivms/pub/SN2", "forged"}, {"/ivms/pub/SN1", "own"}} {
		if tok := sn1.Publish(p.topic, 1, false, p.body); !tok.WaitTimeout(5 * time.Second) {
			t.Fatalf("publish %s timed out", p.topic)
		}
	}
	expectOnly(t, up, "/ivms/pub/SN1 own")

	// Downlinks: SN1 subscribed to SN2's downlink too, but reads only its own.
	for _, p := range []struct{ topic, body string }{{"/ivms/sub/SN2", "for-sn2"}, {"/ivms/sub/SN1", "for-sn1"}} {
		if tok := ingest.Publish(p.topic, 1, false, p.body); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", p.topic, tok.Error())
		}
	}
	expectOnly(t, down, "/ivms/sub/SN1 for-sn1")
}

func expectOnly(t *testing.T, ch chan string, want string) {
	t.Helper()
	select {
	case got := <-ch:
		if got != want {
			t.Fatalf("received %q, want only %q", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("did not receive %q", want)
	}
	select {
	case got := <-ch:
		t.Fatalf("received %q, want only %q", got, want)
	case <-time.After(300 * time.Millisecond):
	}
}

func connect(url, id, user, pw string) (mqtt.Client, error) {
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID(id).SetUsername(user).SetPassword(pw).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second)
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect timed out")
	}
	return c, tok.Error()
}

func mustConnect(t *testing.T, url, id, user, pw string) mqtt.Client {
	t.Helper()
	c, err := connect(url, id, user, pw)
	if err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitPort(t *testing.T, port int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("mosquitto did not listen on %d", port)
}
