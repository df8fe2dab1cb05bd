package mqttconform

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BuildAMS builds the ams binary into dir and returns its path.
func BuildAMS(dir string) (string, error) {
	bin := filepath.Join(dir, "ams")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/ivms/ams/cmd/ams")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build ./cmd/ams: %v\n%s", err, out)
	}
	return bin, nil
}

// MainWithAMS is a TestMain body for packages whose tests run ams roles as
// subprocesses: it builds the ams binary once into a temporary directory,
// stores its path in *bin, runs the tests and removes the directory. It
// returns the exit code for os.Exit.
func MainWithAMS(m *testing.M, bin *string) int {
	dir, err := os.MkdirTemp("", "ams-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if *bin, err = BuildAMS(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// Process is one ams role run as a subprocess, so a test can kill it with
// SIGKILL (a real crash: no drain, no acknowledgement, no commit).
type Process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error

	mu      sync.Mutex
	opsAddr string
	addrC   chan struct{}
	apiAddr string
	apiC    chan struct{}
}

var (
	opsLine = regexp.MustCompile(`msg="ops http listening" addr=(\S+)`)
	apiLine = regexp.MustCompile(`msg="api listening" addr=(\S+)`)
)

// StartProcess runs bin with args (add "-ops-addr 127.0.0.1:0" so readiness
// can be polled), and waits until its /readyz answers 200. Its stderr goes
// to a log file, whose tail is printed if the test fails. The process is
// killed when the test ends.
func StartProcess(t testing.TB, name, bin string, args ...string) *Process {
	t.Helper()
	p := &Process{name: name, done: make(chan struct{}), addrC: make(chan struct{}), apiC: make(chan struct{})}
	f, err := os.CreateTemp(t.TempDir(), name+"-*.log")
	if err != nil {
		t.Fatal(err)
	}
	p.logPath = f.Name()
	pr, pw := io.Pipe()
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout = f
	p.cmd.Stderr = io.MultiWriter(f, pw)
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		pw.Close()
		f.Close()
		close(p.done)
	}()
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if m := apiLine.FindStringSubmatch(sc.Text()); m != nil {
				p.mu.Lock()
				if p.apiAddr == "" {
					p.apiAddr = m[1]
					close(p.apiC)
				}
				p.mu.Unlock()
			}
			if m := opsLine.FindStringSubmatch(sc.Text()); m != nil {
				p.mu.Lock()
				if p.opsAddr == "" {
					p.opsAddr = m[1]
					close(p.addrC)
				}
				p.mu.Unlock()
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			b, _ := os.ReadFile(p.logPath)
			t.Logf("%s log (%s):\n%s", name, p.logPath, tail(string(b), 60))
		}
	})
	p.WaitReady(t, 60*time.Second)
	return p
}

// WaitReady waits until /readyz answers 200.
func (p *Process) WaitReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	select {
	case <-p.addrC:
	case <-p.done:
		t.Fatalf("%s exited before serving: %v", p.name, p.err)
	case <-deadline:
		t.Fatalf("%s: no ops address logged within %v", p.name, timeout)
	}
	p.mu.Lock()
	url := "http://" + p.opsAddr + "/readyz"
	p.mu.Unlock()
	var last string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				cancel()
				return
			}
			last = strings.TrimSpace(string(b))
		} else {
			last = err.Error()
		}
		cancel()
		select {
		case <-p.done:
			t.Fatalf("%s exited before ready: %v", p.name, p.err)
		case <-deadline:
			p.dumpGoroutines()
			t.Fatalf("%s not ready within %v: %s", p.name, timeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// dumpGoroutines makes a Go process print its goroutines to its log
// (SIGQUIT) and waits briefly for it to exit.
func (p *Process) dumpGoroutines() {
	_ = p.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// OpsAddr is the address of the process's ops server.
func (p *Process) OpsAddr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.opsAddr
}

// APIAddr is the address of an `ams api` process's public API (its
// "api listening" log line), waiting up to 30 s for it.
func (p *Process) APIAddr(t testing.TB) string {
	t.Helper()
	select {
	case <-p.apiC:
	case <-p.done:
		t.Fatalf("%s exited before serving its API: %v", p.name, p.err)
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no api address logged within 30s", p.name)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.apiAddr
}

// Kill sends SIGKILL and waits for the process to exit.
func (p *Process) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Term sends SIGTERM and waits up to timeout for a clean exit; it returns
// the exit error (nil for exit status 0).
func (p *Process) Term(timeout time.Duration) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("%s did not exit within %v of SIGTERM", p.name, timeout)
	}
}

// Metrics returns the process's /metrics text.
func (p *Process) Metrics() (string, error) {
	resp, err := http.Get("http://" + p.OpsAddr() + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}
