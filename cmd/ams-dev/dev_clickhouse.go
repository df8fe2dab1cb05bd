package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ivms/ams/cmd/internal/roles"
	"github.com/ivms/ams/deploy/stack/chserver"
	"github.com/ivms/ams/sinks/chsink"
)

// devClickHouse is the private clickhouse-server of `ams-dev`: its config,
// data and logs live under one folder; it listens on loopback only.
type devClickHouse struct {
	cmd     *exec.Cmd
	addr    string // native protocol, host:port
	pidFile string
	exited  chan struct{}
}

// Preferred ports of the private server; when taken, free ones are picked.
const (
	devClickHousePort     = 19000
	devClickHouseHTTPPort = 18123
)

// startDevClickHouse starts clickhouse-server with its data in dir and
// waits until it answers. A server a previous run left behind (same
// folder, recorded pid) is stopped first.
func startDevClickHouse(ctx context.Context, program, dir, logDir string, log *slog.Logger) (*devClickHouse, error) {
	bin, err := exec.LookPath(program)
	if err != nil {
		for _, d := range []string{"/usr/sbin", "/usr/bin", "/usr/local/bin"} {
			if p := filepath.Join(d, program); !strings.Contains(program, "/") && isExecutable(p) {
				bin, err = p, nil
				break
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%s not found: install it (`bash deploy/stack/up.sh --install-only clickhouse`, as `make run` does) or give -clickhouse-addr", program)
	}
	for _, d := range []string{"data", "tmp", "user_files", "format_schemas"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	s := &devClickHouse{pidFile: filepath.Join(dir, "server.pid"), exited: make(chan struct{})}
	stopStale(s.pidFile, log)
	tcpPort, err := freePort(devClickHousePort)
	if err != nil {
		return nil, err
	}
	httpPort, err := freePort(devClickHouseHTTPPort, tcpPort)
	if err != nil {
		return nil, err
	}
	chLogs := filepath.Join(logDir, "clickhouse")
	if err := os.MkdirAll(chLogs, 0o755); err != nil {
		return nil, err
	}
	// The test stack's server configuration (deploy/stack/chserver), lighter.
	cfg, err := chserver.Write(chserver.Params{Dir: dir, Logs: chLogs, Host: "127.0.0.1", TCPPort: tcpPort, HTTPPort: httpPort,
		LogLevel: "warning", MaxMemoryUsage: 4_000_000_000, MaxConnections: 256, MaxConcurrentQueries: 50,
		UncompressedCacheSize: 256 << 20, MarkCacheSize: 256 << 20})
	if err != nil {
		return nil, err
	}
	out, err := os.Create(filepath.Join(chLogs, "stdout.log"))
	if err != nil {
		return nil, err
	}
	s.cmd = exec.Command(bin, "--config-file="+cfg)
	s.cmd.Dir = dir
	s.cmd.Stdout, s.cmd.Stderr = out, out
	s.cmd.SysProcAttr = devChildAttr()
	if err := s.cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	_ = os.WriteFile(s.pidFile, []byte(strconv.Itoa(s.cmd.Process.Pid)+"\n"), 0o644)
	go func() {
		_ = s.cmd.Wait()
		out.Close()
		close(s.exited)
	}()
	s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(tcpPort))
	log.Info("clickhouse starting", "pid", s.cmd.Process.Pid, "addr", s.addr, "http_port", httpPort, "dir", dir)

	deadline := time.Now().Add(90 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		conn, err := chsink.Open(pctx, chsink.Options{Addr: []string{s.addr}, Database: "default"})
		cancel()
		if err == nil {
			conn.Close()
			log.Info("clickhouse ready", "addr", s.addr)
			return s, nil
		}
		select {
		case <-s.exited:
			return nil, fmt.Errorf("clickhouse-server exited during start-up (logs: %s)\n%s", chLogs,
				tailFile(filepath.Join(chLogs, "clickhouse-server.err.log"), 10)+"\n"+tailFile(filepath.Join(chLogs, "stdout.log"), 10))
		case <-ctx.Done():
			s.stop(log)
			return nil, ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop(log)
			return nil, fmt.Errorf("clickhouse-server did not answer on %s within 90s (logs: %s): %v", s.addr, chLogs, err)
		}
	}
}

// stop ends the server: SIGTERM, then SIGKILL after 20 s.
func (s *devClickHouse) stop(log *slog.Logger) {
	if s == nil || s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		log.Warn("clickhouse did not stop within 20s: killing it")
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	_ = os.Remove(s.pidFile)
}

// stopStale stops the clickhouse-server recorded in pidFile, if it still
// runs (a previous `ams-dev` on this folder died without stopping it).
func stopStale(pidFile string, log *slog.Logger) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return
	}
	exe, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if !strings.HasPrefix(filepath.Base(strings.TrimSuffix(exe, " (deleted)")), "clickhouse") ||
		!strings.Contains(string(cmdline), filepath.Dir(pidFile)) {
		return // not ours (or gone): leave it alone
	}
	log.Info("stopping a clickhouse-server left by a previous run", "pid", pid)
	p, err := os.FindProcess(pid)
	if err != nil {
		return
	}
	_ = p.Signal(syscall.SIGTERM)
	for i := 0; i < 100; i++ {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err != nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	_ = p.Kill()
}

// freePort returns preferred when it is free on loopback, else a free port
// (never one of avoid).
func freePort(preferred int, avoid ...int) (int, error) {
	if ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(preferred))); err == nil {
		ln.Close()
		return preferred, nil
	}
	for i := 0; i < 10; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("finding a free port: %w", err)
		}
		p := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		taken := false
		for _, a := range avoid {
			taken = taken || a == p
		}
		if !taken {
			return p, nil
		}
	}
	return 0, errors.New("finding a free port: none")
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// resetDevClickHouse empties the dev database (the embedded Kafka starts
// empty every run, and the rows' ids come from its offsets) and applies the
// migrations.
func resetDevClickHouse(ctx context.Context, o chsink.Options, log *slog.Logger, out io.Writer) error {
	conn, err := chsink.Open(ctx, o)
	if err != nil {
		return err
	}
	err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+o.Database)
	conn.Close()
	if err != nil {
		return fmt.Errorf("clickhouse: emptying database %s: %w", o.Database, err)
	}
	return roles.MigrateClickHouse(ctx, o, false, log, out)
}
