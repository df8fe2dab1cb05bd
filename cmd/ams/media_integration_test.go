//go:build integration

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ivms/ams/pkg/devkit/devicesim"
	"github.com/ivms/ams/pkg/mediahook"
	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/pkg/testkit/mqttconform"
	"github.com/ivms/ams/pkg/testkit/testenv"
	"github.com/ivms/ams/processors/device"
)

// nginxRTMPModule is where Debian's libnginx-mod-rtmp installs the module.
const nginxRTMPModule = "/usr/lib/nginx/modules/ngx_rtmp_module.so"

// TestStreamPublishHook: a real media server (Debian's nginx with the RTMP
// module) asks `ams media-hook` before it accepts a publish, and a real
// publisher (ffmpeg pushing a short test pattern) uses the push URL a
// simulated camera got in its 702 reply from the real pipeline. The publish
// is accepted; a tampered signature, an expired URL, another camera's path
// and an unbound camera are refused, each with its reason in the hook's
// metrics.
func TestStreamPublishHook(t *testing.T) {
	for _, bin := range []string{"nginx", "ffmpeg"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not installed (deploy/stack/tools.sh installs it): %v", bin, err)
		}
	}
	if _, err := os.Stat(nginxRTMPModule); err != nil {
		t.Fatalf("nginx RTMP module missing (deploy/stack/tools.sh installs libnginx-mod-rtmp): %v", err)
	}
	rtmpPort := testPort(t)
	s := startStack(t, stackOptions{streamBase: fmt.Sprintf("rtmp://127.0.0.1:%d/live", rtmpPort)})

	prefix := e2eSNPrefix(t)
	boundSN, unboundSN := simSN(prefix, 0), simSN(prefix, 1)
	s.register(boundSN, e2eRegistration{Bound: true, Name: "front door"})
	s.register(unboundSN, e2eRegistration{Bound: false})
	s.waitRegistered(boundSN, unboundSN)

	// The hook, reading the stack's Redis projection.
	dir := t.TempDir()
	secretFile, keyFile := filepath.Join(dir, "stream.secret"), filepath.Join(dir, "hook.key")
	e2eWriteFile(t, secretFile, string(s.secret)+"\n")
	hookKey := fmt.Sprintf("%x", e2eRandomBytes(t, 16))
	e2eWriteFile(t, keyFile, hookKey+"\n")
	hookAddr := fmt.Sprintf("127.0.0.1:%d", testPort(t))
	hook := mqttconform.StartProcess(t, "media-hook", amsBinary, "media-hook",
		"-ops-addr", "127.0.0.1:0",
		"-media-hook-addr", hookAddr,
		"-redis-addr", testenv.RedisAddr(),
		"-redis-prefix", s.redisPrefix,
		"-stream-secret-files", secretFile,
		"-media-hook-key-file", keyFile,
	)
	waitPort(t, hookAddr)
	startNginxRTMP(t, dir, rtmpPort, "http://"+hookAddr+mediahook.PathNginxRTMP+"?key="+hookKey)

	// The bound camera asks for its push URL through the real pipeline.
	var mu sync.Mutex
	pushURLs := map[string]string{}
	f := s.startFleet(devicesim.Config{
		Devices:     1,
		SNPrefix:    prefix,
		Heartbeat:   time.Second,
		StreamEvery: 500 * time.Millisecond,
		UplinkQoS:   1,
		OnReceive: func(rc devicesim.Received) {
			if rc.Failure != "" || rc.Frame.CmdType != protocol.CmdAms || rc.Frame.AmsCmdType != protocol.AmsStreamURL {
				return
			}
			var v protocol.StreamURLReply
			if err := json.Unmarshal(rc.Body, &v); err == nil {
				mu.Lock()
				pushURLs[rc.SN] = v.PushURL
				mu.Unlock()
			}
		},
	})
	var pushURL string
	e2eWaitFor(t, 60*time.Second, "a 702 reply with a push URL for the bound camera", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		pushURL = pushURLs[boundSN]
		return pushURL != "", fmt.Sprintf("push URLs so far: %v", pushURLs)
	})
	f.stop()
	if !strings.HasPrefix(pushURL, s.streamBase+"/"+boundSN+"?") {
		t.Fatalf("push URL %q is not under %s/%s", pushURL, s.streamBase, boundSN)
	}

	// Refused URLs, made the way an attacker or a stale camera would have them.
	u, err := url.Parse(pushURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	tampered := *u
	tq := url.Values{"exp": {q.Get("exp")}, "sig": {strings.Repeat("0", 64)}}
	tampered.RawQuery = tq.Encode()
	otherPath := *u
	otherPath.Path = "/live/" + unboundSN // the bound camera's signature on another camera's path
	expired, err := device.SignStreamURL(s.secret, s.streamBase, boundSN, time.Now().Add(-time.Minute).Unix())
	if err != nil {
		t.Fatal(err)
	}
	unbound, err := device.SignStreamURL(s.secret, s.streamBase, unboundSN, time.Now().Add(time.Minute).Unix())
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name, url, reason string
		accept            bool
	}{
		{"the camera's own URL", pushURL, mediahook.ReasonOK, true},
		{"tampered signature", tampered.String(), mediahook.ReasonBadSignature, false},
		{"expired URL", expired, mediahook.ReasonExpired, false},
		{"another camera's path", otherPath.String(), mediahook.ReasonBadSignature, false},
		{"unbound camera", unbound, mediahook.ReasonUnbound, false},
	}
	for _, c := range cases {
		out, err := ffmpegPublish(c.url)
		switch {
		case c.accept && err != nil:
			t.Errorf("%s: publish refused: %v\n%s", c.name, err, tail(out, 15))
		case !c.accept && err == nil:
			t.Errorf("%s: publish accepted, want refused (%s)", c.name, c.reason)
		}
	}
	metrics, err := hook.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{mediahook.ReasonOK: 1, mediahook.ReasonBadSignature: 2, mediahook.ReasonExpired: 1, mediahook.ReasonUnbound: 1}
	for reason, n := range want {
		result := "deny"
		if reason == mediahook.ReasonOK {
			result = "allow"
		}
		line := fmt.Sprintf(`ams_mediahook_decisions_total{format="nginx-rtmp",reason="%s",result="%s"} %d`, reason, result, n)
		if !strings.Contains(metrics, line) {
			t.Errorf("hook metrics lack %s:\n%s", line, grepLines(metrics, "ams_mediahook_decisions_total"))
		}
	}
}

// startNginxRTMP runs nginx in the foreground with one RTMP application
// "live" on 127.0.0.1:port whose publishes are checked by hookURL.
func startNginxRTMP(t *testing.T, dir string, port int, hookURL string) {
	t.Helper()
	conf := fmt.Sprintf(`load_module %s;
daemon off;
master_process off;
worker_processes 1;
pid %s/nginx.pid;
error_log %s/nginx-error.log info;
events { worker_connections 64; }
rtmp {
    server {
        listen 127.0.0.1:%d;
        application live {
            live on;
            record off;
            on_publish %s;
        }
    }
}
`, nginxRTMPModule, dir, dir, port, hookURL)
	e2eWriteFile(t, filepath.Join(dir, "nginx.conf"), conf)
	cmd := exec.Command("nginx", "-p", dir, "-e", filepath.Join(dir, "nginx-error.log"), "-c", filepath.Join(dir, "nginx.conf"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "nginx-error.log"))
			t.Logf("nginx output:\n%s\nnginx error log:\n%s", out.String(), tail(string(b), 40))
		}
	})
	waitPort(t, fmt.Sprintf("127.0.0.1:%d", port))
}

// ffmpegPublish pushes two seconds of a generated test pattern to url over
// RTMP; an error means the server refused (or dropped) the publish.
func ffmpegPublish(url string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error",
		"-re", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10", "-t", "2",
		"-c:v", "flv1", "-f", "flv", url)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func testPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitPort(t *testing.T, addr string) {
	t.Helper()
	e2eWaitFor(t, 30*time.Second, addr+" accepting connections", func() (bool, string) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false, err.Error()
		}
		c.Close()
		return true, ""
	})
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
