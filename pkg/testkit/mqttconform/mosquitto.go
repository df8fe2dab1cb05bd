package mqttconform

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// MosquittoBinary is where deploy/stack/up.sh installs Mosquitto; the
// environment variable AMS_MOSQUITTO_BIN overrides it.
const MosquittoBinary = "/usr/sbin/mosquitto"

func mosquittoBinary() string {
	if b := os.Getenv("AMS_MOSQUITTO_BIN"); b != "" {
		return b
	}
	return MosquittoBinary
}

// Mosquitto is a private Mosquitto broker of one test, on its own loopback
// port with persistence in the test's temporary directory, so a test can
// restart it without disturbing anyone, and sessions and queued messages
// survive the restart. Its device topics are the real ones (/ivms/pub/+),
// isolated from other tests' devices by being a broker of its own.
type Mosquitto struct {
	Port int
	URL  string // tcp://127.0.0.1:port
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

// StartMosquitto starts a broker and waits until it accepts connections.
// It is stopped when the test ends. maxInflight is the broker's in-flight
// window per client (max_inflight_messages).
func StartMosquitto(t testing.TB, maxInflight int) *Mosquitto {
	t.Helper()
	if _, err := os.Stat(mosquittoBinary()); err != nil {
		t.Fatalf("mosquitto is not installed at %s (deploy/stack/up.sh installs it, or apt-get install -y mosquitto; AMS_MOSQUITTO_BIN overrides the path): %v", mosquittoBinary(), err)
	}
	dir := t.TempDir()
	port := freePort(t)
	conf := fmt.Sprintf(`# private broker of test %s
user root
per_listener_settings false
allow_anonymous true
persistence true
persistence_location %s/
autosave_interval 1
log_dest file %s/mosquitto.log
log_type error
log_type warning
log_type notice
max_inflight_messages %d
max_queued_messages 0
max_queued_bytes 0
set_tcp_nodelay true
listener %d 127.0.0.1
`, t.Name(), dir, dir, maxInflight, port)
	if err := os.WriteFile(filepath.Join(dir, "mosquitto.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	m := &Mosquitto{Port: port, URL: fmt.Sprintf("tcp://127.0.0.1:%d", port), dir: dir}
	m.start(t)
	t.Cleanup(func() {
		m.stop(syscall.SIGKILL)
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "mosquitto.log")); err == nil {
				t.Logf("mosquitto log:\n%s", tail(string(b), 40))
			}
		}
	})
	return m
}

func (m *Mosquitto) start(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		cmd := exec.Command(mosquittoBinary(), "-c", filepath.Join(m.dir, "mosquitto.conf"))
		out, err := os.OpenFile(filepath.Join(m.dir, "stdout.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatalf("start mosquitto: %v", err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); out.Close(); close(done) }()
		// Ready when the port accepts. If the process exits first (the old
		// listener's port not free yet), start it again.
		for exited := false; !exited; {
			if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", m.Port), 200*time.Millisecond); err == nil {
				c.Close()
				m.cmd, m.done = cmd, done
				return
			}
			select {
			case <-done:
				exited = true
			case <-time.After(20 * time.Millisecond):
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(m.dir, "stdout.log"))
			t.Fatalf("mosquitto on port %d did not start: %s", m.Port, tail(string(b), 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (m *Mosquitto) stop(sig syscall.Signal) {
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Signal(sig)
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
	m.cmd = nil
}

// Restart stops the broker gracefully (SIGTERM: it saves its sessions and
// queued messages) and starts it again on the same port.
func (m *Mosquitto) Restart(t testing.TB) {
	t.Helper()
	m.stop(syscall.SIGTERM)
	m.start(t)
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func tail(s string, lines int) string {
	n := 0
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			n++
			if n > lines {
				return s[i+1:]
			}
		}
	}
	return s
}
