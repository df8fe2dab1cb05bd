//go:build integration

package chsink_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/ivms/ams/pkg/testkit/testenv"
)

// privateClickHouse is a clickhouse-server of the test's own, on free
// loopback ports with a data folder in a temp dir, so the test can stop it
// without disturbing the shared stack.
type privateClickHouse struct {
	t      *testing.T
	dir    string
	addr   string
	cmd    *exec.Cmd
	logOut string
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func startPrivateClickHouse(t *testing.T) *privateClickHouse {
	t.Helper()
	return startPrivateClickHouseWith(t, freePort(t), "")
}

// startPrivateClickHouseWith starts a private server on native port tcp with
// extra inside its config's <yandex> element (a cluster node's settings).
func startPrivateClickHouseWith(t *testing.T, tcp int, extra string) *privateClickHouse {
	t.Helper()
	bin, err := exec.LookPath("clickhouse-server")
	if err != nil {
		t.Fatalf("clickhouse-server not installed (deploy/stack/up.sh clickhouse installs it): %v", err)
	}
	dir := t.TempDir()
	for _, d := range []string{"data", "tmp", "user_files", "format_schemas", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	http := freePort(t)
	users := `<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks replace="replace"><ip>127.0.0.1</ip><ip>::1</ip></networks>
    <profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
`
	config := fmt.Sprintf(`<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>%[1]s/log/server.log</log><errorlog>%[1]s/log/server.err.log</errorlog><size>10M</size><count>1</count></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>%[2]d</http_port>
  <tcp_port>%[3]d</tcp_port>
  <max_connections>256</max_connections>
  <max_concurrent_queries>50</max_concurrent_queries>
  <uncompressed_cache_size>104857600</uncompressed_cache_size>
  <mark_cache_size>104857600</mark_cache_size>
  <path>%[1]s/data/</path>
  <tmp_path>%[1]s/tmp/</tmp_path>
  <user_files_path>%[1]s/user_files/</user_files_path>
  <format_schema_path>%[1]s/format_schemas/</format_schema_path>
  <users_config>%[1]s/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mlock_executable>false</mlock_executable>
%[4]s
</yandex>
`, dir, http, tcp, extra)
	if err := os.WriteFile(filepath.Join(dir, "users.xml"), []byte(users), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.xml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &privateClickHouse{t: t, dir: dir, addr: fmt.Sprintf("127.0.0.1:%d", tcp), logOut: filepath.Join(dir, "log", "stdout.log")}
	c.cmd = exec.Command(bin, "--config-file="+filepath.Join(dir, "config.xml"))
	c.start()
	t.Cleanup(func() {
		c.stop()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "log", "server.err.log"))
			t.Logf("private clickhouse errors:\n%s", tail(string(b), 3000))
		}
	})
	return c
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// start runs the server (again) and waits until it answers a ping.
func (c *privateClickHouse) start() {
	c.t.Helper()
	if c.cmd.Process != nil { // a restart needs a fresh Cmd
		c.cmd = exec.Command(c.cmd.Path, c.cmd.Args[1:]...)
	}
	f, err := os.OpenFile(c.logOut, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	c.cmd.Dir = c.dir
	c.cmd.Stdout, c.cmd.Stderr = f, f
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		c.t.Fatalf("start private clickhouse: %v", err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{c.addr}, DialTimeout: time.Second})
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			err = conn.Ping(ctx)
			cancel()
			_ = conn.Close()
			if err == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(c.logOut)
			c.t.Fatalf("private clickhouse on %s did not answer in 60s: %v\n%s", c.addr, err, tail(string(b), 2000))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// stop terminates the server (SIGTERM, then SIGKILL after 20 s) and waits.
func (c *privateClickHouse) stop() {
	if c.cmd.Process == nil || c.cmd.ProcessState != nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
}

// TestClickHouseOutage stops ClickHouse for 30 s while records keep coming:
// the sink pauses, retries, and afterwards catches up with nothing lost.
func TestClickHouseOutage(t *testing.T) {
	t.Parallel()
	const outage = 30 * time.Second
	ch := startPrivateClickHouse(t)
	e := newEnv(t, ch.addr)
	run := testenv.Unique(t, "o")
	const before, during = 20_000, 30_000
	events := deviceEvents(run, before+during, 300, time.Now().UTC().Add(-time.Hour))
	s := e.runSink(testenv.Unique(t, "outage"))

	e.produce(e.names.DeviceEvents, events[:before]...)
	e.waitCount("SELECT count() FROM {db}.device_events", before, 60*time.Second)

	ch.stop()
	down := time.Now()
	t.Logf("private clickhouse stopped; producing %d events during a %v outage", during, outage)
	for i := before; i < before+during; i += 5000 {
		e.produce(e.names.DeviceEvents, events[i:i+5000]...)
		time.Sleep(time.Second)
	}
	time.Sleep(time.Until(down.Add(outage)))
	ch.start()
	t.Logf("private clickhouse back after %v", time.Since(down).Round(time.Second))
	e.waitCount("SELECT uniqExact(event_id) FROM {db}.device_events", before+during, 60*time.Second)
	caughtUp := time.Since(down) - outage
	s.stop()
	if n := e.count("SELECT count() FROM {db}.device_events FINAL"); n != before+during {
		t.Errorf("device_events FINAL = %d, want %d", n, before+during)
	}
	t.Logf("caught up %v after ClickHouse came back; raw rows %d", caughtUp.Round(100*time.Millisecond),
		e.count("SELECT count() FROM {db}.device_events"))
	if !strings.HasPrefix(ch.addr, "127.0.0.1:") {
		t.Fatal("unexpected address")
	}
}
