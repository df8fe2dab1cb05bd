//go:build integration

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
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

	"github.com/ivms/ams/sinks/chsink"
)

// TestDevRunsEverything runs `ams-dev -devices 50` (the built binary, as
// `make run` does) for about 30 s: every simulated device comes online in
// the API, a command round-trips to a device and back, the history reaches
// ClickHouse, and Ctrl-C (SIGINT) stops everything, the private ClickHouse
// included. It needs clickhouse-server on the machine (`make up` installs
// it), nothing else.
func TestDevRunsEverything(t *testing.T) {
	const devices = 50
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 85*time.Second)
	defer cancel()

	bin := filepath.Join(t.TempDir(), "ams-dev")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/ivms/ams/cmd/ams-dev").CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/ams-dev: %v\n%s", err, out)
	}
	dir := t.TempDir()
	mqttAddr, httpAddr := devFreeAddr(t), devFreeAddr(t)
	cmd := exec.Command(bin, "-dir", dir, "-devices", fmt.Sprint(devices),
		"-mqtt-addr", mqttAddr, "-http-addr", httpAddr, "-view", "5s", "-duration", "80s")
	// The roles inside dev ignore AMS_* variables; keep dev's own flags
	// (AMS_CLICKHOUSE_ADDR, ...) from picking up the shared stack's too.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AMS_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr devSyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 100)
	var outMu sync.Mutex
	var out strings.Builder
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			outMu.Lock()
			out.WriteString(sc.Text() + "\n")
			outMu.Unlock()
			select {
			case lines <- sc.Text():
			default:
			}
		}
		exited <- cmd.Wait()
	}()
	stopped := false
	defer func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			outMu.Lock()
			t.Logf("ams-dev stdout:\n%s", out.String())
			outMu.Unlock()
			t.Logf("ams-dev stderr:\n%s", stderr.String())
			for _, f := range []string{"dev", "process", "ingest", "egress", "api", "sink-redis", "sink-clickhouse", "simulate"} {
				t.Logf("%s.log:\n%s", f, tailFile(filepath.Join(dir, "logs", f+".log"), 20))
			}
		}
	}()

	// Up: the hints name the ClickHouse address.
	chRE := regexp.MustCompile(`ClickHouse\s+(\S+), database (\w+)`)
	var chAddr, chDB string
	for chAddr == "" {
		select {
		case l := <-lines:
			if m := chRE.FindStringSubmatch(l); m != nil {
				chAddr, chDB = m[1], m[2]
			}
		case err := <-exited:
			stopped = true
			t.Fatalf("ams-dev exited before it was up: %v", err)
		case <-ctx.Done():
			t.Fatal("ams-dev was not up in time")
		}
	}
	t.Logf("up after %s; clickhouse %s database %s", time.Since(t0).Round(time.Millisecond), chAddr, chDB)
	tok, err := os.ReadFile(filepath.Join(dir, "api.token"))
	if err != nil {
		t.Fatal(err)
	}
	api := &devAPI{base: "http://" + httpAddr, token: strings.TrimSpace(string(tok))}

	// The console is the first thing printed, with its URL and sign-in token, and it answers.
	outMu.Lock()
	first, _, _ := strings.Cut(out.String(), "\n")
	outMu.Unlock()
	if want := "Console: " + api.base + "/ui/   sign in with token " + api.token; first != want {
		t.Errorf("first line of stdout %q, want %q", first, want)
	}
	if resp, err := http.Get(api.base + "/ui/signin"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("console sign-in page: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// The streams line: nginx-rtmp behind the media hook when installed (make test installs it).
	outMu.Lock()
	printed := out.String()
	outMu.Unlock()
	_, streams, _ := strings.Cut(printed, "\n  streams     ")
	streams, _, _ = strings.Cut(streams, "\n")
	_, nginxErr := exec.LookPath("nginx")
	_, modErr := os.Stat(devNginxModule)
	switch {
	case streams == "":
		t.Errorf("ams-dev printed no streams line:\n%s", printed)
	case nginxErr == nil && modErr == nil && !strings.HasPrefix(streams, "rtmp://"+devRTMPAddr+"/live") &&
		streams != "not started: "+devRTMPAddr+" is taken":
		t.Errorf("nginx-rtmp is installed but the dev stack says: %s", streams)
	}

	// Every device online.
	var online int
	for {
		var page struct {
			Devices []struct {
				SN     string `json:"sn"`
				Online bool   `json:"online"`
			} `json:"devices"`
		}
		if code, err := api.do(ctx, http.MethodGet, "/v1/devices?online=true&limit=1000", "", &page); err == nil && code == http.StatusOK {
			online = len(page.Devices)
		}
		if online == devices {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%d of %d devices online", online, devices)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("%d devices online after %s", online, time.Since(t0).Round(time.Millisecond))

	// A command round trip.
	const sn = devSNPrefix + "000007"
	var res struct {
		ID    string          `json:"id"`
		State string          `json:"state"`
		Reply json.RawMessage `json:"reply"`
	}
	code, err := api.do(ctx, http.MethodPost, "/v1/devices/"+sn+"/commands?wait=20s", `{"kind":"sd_info"}`, &res)
	if err != nil || code != http.StatusOK || res.State != "SUCCEEDED" || len(res.Reply) == 0 {
		t.Fatalf("command: HTTP %d, %+v, reply %s, err %v", code, res, res.Reply, err)
	}
	t.Logf("command %s %s, reply %s", res.ID, res.State, res.Reply)

	// The history in ClickHouse.
	conn, err := chsink.Open(ctx, chsink.Options{Addr: []string{chAddr}, Database: chDB})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var events, cmdEvents uint64
	for {
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+chDB+".device_events").Scan(&events); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+chDB+".commands WHERE command_id = ?", res.ID).Scan(&cmdEvents); err != nil {
			t.Fatal(err)
		}
		if events > 0 && cmdEvents > 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("clickhouse: %d device events, %d events of command %s", events, cmdEvents, res.ID)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("clickhouse: %d device events, %d events of the command", events, cmdEvents)

	// Keep it running for about 30 s in all: nothing may fall over.
	select {
	case err := <-exited:
		stopped = true
		t.Fatalf("ams-dev exited early: %v", err)
	case <-time.After(time.Until(t0.Add(30 * time.Second))):
	}
	if code, err := api.do(ctx, http.MethodGet, "/v1/devices/"+sn, "", nil); err != nil || code != http.StatusOK {
		t.Fatalf("GET device after 30 s: HTTP %d, %v", code, err)
	}

	// Ctrl-C stops everything, the private ClickHouse included.
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Fatalf("ams-dev exited with %v after SIGINT", err)
		}
	case <-time.After(45 * time.Second):
		t.Fatal("ams-dev did not stop within 45 s of SIGINT")
	}
	if _, err := os.Stat(filepath.Join(dir, "clickhouse", "server.pid")); err == nil {
		t.Error("the private clickhouse-server's pid file is still there after the stop")
	}
	if c, err := net.DialTimeout("tcp", chAddr, time.Second); err == nil {
		c.Close()
		t.Errorf("clickhouse still answers on %s after the stop", chAddr)
	}
	t.Logf("done in %s", time.Since(t0).Round(time.Millisecond))
}

// devAPI calls the dev API with its token.
type devAPI struct{ base, token string }

func (a *devAPI) do(ctx context.Context, method, path, body string, v any) (int, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil && len(b) > 0 {
		if err := json.Unmarshal(b, v); err != nil {
			return resp.StatusCode, fmt.Errorf("%s: %w", bytes.TrimSpace(b), err)
		}
	}
	return resp.StatusCode, nil
}

func devFreeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// devSyncBuffer is a bytes.Buffer safe for a writer and a reader.
type devSyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *devSyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *devSyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
