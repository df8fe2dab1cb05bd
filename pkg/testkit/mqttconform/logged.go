package mqttconform

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// StartLogged starts cmd with its stdout and stderr in a log file under
// t.TempDir(), for a role a test runs with an environment or flags of its
// own (StartProcess waits for an ops port; this does not wait at all). When
// the test ends the process is killed and reaped, and if the test failed the
// last tailBytes of its log are printed under name. The returned channel is
// closed once the process has exited (killed or not).
func StartLogged(t testing.TB, name string, cmd *exec.Cmd, tailBytes int) (exited <-chan struct{}) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	_ = logf.Close()
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > tailBytes {
				b = b[len(b)-tailBytes:]
			}
			t.Logf("%s log:\n%s", name, b)
		}
	})
	return done
}

// EnvWithout returns os.Environ() without the variables whose names start
// with prefix (e.g. "AMS_REDIS_", so a role takes a private server from its
// flags instead of the stack's settings).
func EnvWithout(prefix string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, prefix) {
			env = append(env, kv)
		}
	}
	return env
}

// RSSKB returns the resident memory of process pid (VmRSS, kB), 0 if unknown.
func RSSKB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}
