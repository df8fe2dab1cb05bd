//go:build integration

package deviceauth_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ivms/ams/pkg/deviceauth"
	"github.com/ivms/ams/pkg/mqttdynsec"
)

const dynsecPlugin = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"

// TestMosquittoDynsec starts a private Mosquitto with the dynamic-security
// plugin and the configuration MosquittoDynsec writes (an administrator and
// a service account; no device), registers a device at run time as the
// test helpers do, and checks the policy end to end: anonymous and wrong
// logins are refused, a device's credentials work only with client id = sn,
// its publish on another device's uplink never arrives, its subscription to
// another device's downlink is refused, and a removed device cannot log in.
func TestMosquittoDynsec(t *testing.T) {
	if _, err := os.Stat(dynsecPlugin); err != nil {
		t.Fatalf("mosquitto's dynamic-security plugin not installed at %s (apt-get install mosquitto): %v", dynsecPlugin, err)
	}
	accounts, err := deviceauth.ParseAccounts("ingest:in-pw-0123456789")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// The same files `ams api -write-mosquitto-config -mosquitto-dynsec-admin` writes for the stack.
	if err := deviceauth.WriteMosquittoDynsec(filepath.Join(dir, "auth"), dynsecPlugin,
		deviceauth.Credential{Username: "dynsec-admin", Password: "admin-pw-0123456789"}, accounts, nil, nil); err != nil {
		t.Fatal(err)
	}
	frag, err := os.ReadFile(filepath.Join(dir, "auth", "dynsec.conf"))
	if err != nil {
		t.Fatal(err)
	}
	port := freePortExt(t)
	conf := fmt.Sprintf("user root\nper_listener_settings false\nlog_dest file %s/mosquitto.log\nlog_type all\nlistener %d 127.0.0.1\n%s",
		dir, port, frag)
	if err := os.WriteFile(filepath.Join(dir, "mosquitto.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/usr/sbin/mosquitto", "-c", filepath.Join(dir, "mosquitto.conf"))
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
	waitPortExt(t, port)

	admin, err := mqttdynsec.Dial(url, "dynsec-admin", "admin-pw-0123456789")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	sn1, sn2 := "DYN"+fmt.Sprint(time.Now().UnixNano()%1e9), "DYN2"
	tok1, tok2 := "device-token-one-0123", "device-token-two-0123"
	if err := admin.AddDevices(deviceauth.Credential{Username: sn1, Password: tok1}, deviceauth.Credential{Username: sn2, Password: tok2}); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct{ id, user, pw string }{
		{"anon", "", ""},
		{sn1, sn1, tok2},
		{"other-id", sn1, tok1}, // right credentials, another client id
		{"ingest", "ingest", "wrong"},
		{"SN9", "SN9", tok1},
	} {
		if cl, err := dial(url, c.id, c.user, c.pw); err == nil {
			cl.Disconnect(0)
			t.Errorf("login id %q user %q was accepted", c.id, c.user)
		}
	}

	ingest := mustDial(t, url, "ingest-0", "ingest", "in-pw-0123456789")
	up := make(chan string, 10)
	if tok := ingest.Subscribe("$share/ams-ingest//ivms/pub/+", 1, func(_ mqtt.Client, m mqtt.Message) {
		up <- m.Topic() + " " + string(m.Payload())
	}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil || tok.(*mqtt.SubscribeToken).Result()["$share/ams-ingest//ivms/pub/+"] > 2 {
		t.Fatalf("ingest subscribe: %v %v", tok.Error(), tok.(*mqtt.SubscribeToken).Result())
	}
	dev := mustDial(t, url, sn1, sn1, tok1)
	// Another device's downlink: refused (SUBACK 0x80); its own: granted.
	for f, refused := range map[string]bool{"/ivms/sub/" + sn2: true, "/ivms/sub/" + sn1: false} {
		tok := dev.Subscribe(f, 1, nil)
		if !tok.WaitTimeout(5 * time.Second) {
			t.Fatalf("subscribe %s timed out", f)
		}
		if got := tok.(*mqtt.SubscribeToken).Result()[f] == 0x80; got != refused {
			t.Errorf("subscribe %s: refused %v, want %v", f, got, refused)
		}
	}
	// Uplinks: the forged one first, so it would arrive before the own one.
	for _, p := range []struct{ topic, body string }{{"/ivms/pub/" + sn2, "forged"}, {"/ivms/pub/" + sn1, "own"}} {
		if tok := dev.Publish(p.topic, 1, false, p.body); !tok.WaitTimeout(5 * time.Second) {
			t.Fatalf("publish %s timed out", p.topic)
		}
	}
	select {
	case got := <-up:
		if got != "/ivms/pub/"+sn1+" own" {
			t.Fatalf("service received %q first", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("own uplink not received")
	}
	select {
	case got := <-up:
		t.Fatalf("service received %q too", got)
	case <-time.After(300 * time.Millisecond):
	}

	// Removed: its session ends and it cannot log in again.
	if err := admin.RemoveDevices(deviceauth.Credential{Username: sn1}); err != nil {
		t.Fatal(err)
	}
	if cl, err := dial(url, sn1, sn1, tok1); err == nil {
		cl.Disconnect(0)
		t.Fatal("a removed device logged in")
	}
}

func dial(url, id, user, pw string) (mqtt.Client, error) {
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID(id).SetUsername(user).SetPassword(pw).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second)
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect timed out")
	}
	return c, tok.Error()
}

func mustDial(t *testing.T, url, id, user, pw string) mqtt.Client {
	t.Helper()
	c, err := dial(url, id, user, pw)
	if err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

func freePortExt(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitPortExt(t *testing.T, port int) {
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
