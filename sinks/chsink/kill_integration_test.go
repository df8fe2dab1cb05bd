//go:build integration

package chsink_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/ivms/ams/pkg/testkit/testenv"
	"github.com/ivms/ams/schemas"
)

// sinkProc is `ams sink clickhouse` run as a subprocess.
type sinkProc struct {
	t   testing.TB
	cmd *exec.Cmd
	log string
}

func (e *env) startSinkProc(group string, extra ...string) *sinkProc {
	e.t.Helper()
	logPath := filepath.Join(e.t.TempDir(), fmt.Sprintf("sink-%d.log", time.Now().UnixNano()))
	f, err := os.Create(logPath)
	if err != nil {
		e.t.Fatal(err)
	}
	args := append([]string{"sink", "clickhouse",
		"-kafka-brokers", testenv.KafkaBrokers()[0],
		"-topic-prefix", e.prefix,
		"-clickhouse-addr", e.chAddr,
		"-clickhouse-database", e.db,
		"-sink-group", group,
		"-ops-addr", "",
	}, extra...)
	cmd := exec.Command(amsBin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		e.t.Fatalf("start sink: %v", err)
	}
	_ = f.Close()
	p := &sinkProc{t: e.t, cmd: cmd, log: logPath}
	e.t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
		if e.t.Failed() {
			b, _ := os.ReadFile(logPath)
			e.t.Logf("sink log %s:\n%s", logPath, b)
		}
	})
	return p
}

func (p *sinkProc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
	_ = p.cmd.Wait()
}

// TestKill9MidStream kills the sink with SIGKILL twice while records are
// still being produced, restarts it each time, and checks that every event
// is counted exactly once in the tables and views.
func TestKill9MidStream(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testenv.ClickHouseAddr())
	run := testenv.Unique(t, "k")
	const nEv, nCmd, chunk = 120_000, 3_000, 10_000
	base := time.Now().UTC().Add(-time.Hour)
	events := deviceEvents(run, nEv, 500, base)
	var cmds []any
	for i := range nCmd {
		id := fmt.Sprintf("%s-cmd-%d", run, i)
		at := base.Add(time.Duration(i) * time.Millisecond)
		cmds = append(cmds,
			&schemas.CommandEvent{EventID: id + "-1", CommandID: id, SN: fmt.Sprintf("SN%05d", i%500), Kind: "reboot", State: schemas.CommandAccepted, At: at, Seq: 1},
			&schemas.CommandEvent{EventID: id + "-2", CommandID: id, SN: fmt.Sprintf("SN%05d", i%500), Kind: "reboot", State: schemas.CommandSucceeded, At: at.Add(40 * time.Millisecond), Seq: 2})
	}
	// The producer streams chunks while the sink runs and is killed.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		e.produce(e.names.CommandEvents, cmds...)
		for i := 0; i < nEv; i += chunk {
			e.produce(e.names.DeviceEvents, events[i:i+chunk]...)
			time.Sleep(150 * time.Millisecond)
		}
	}()

	group := testenv.Unique(t, "kill")
	// A short session timeout, so the group drops a killed member quickly.
	opts := []string{"-batch-rows", "5000", "-batch-interval", "300ms", "-kafka-session-timeout", "6s"}
	raw := "SELECT count() FROM {db}.device_events"
	var beforeReplay uint64
	for _, at := range []uint64{15_000, 50_000} {
		p := e.startSinkProc(group, opts...)
		e.waitCount(raw, at, 60*time.Second)
		p.signal(syscall.SIGKILL)
		beforeReplay = e.count(raw)
		t.Logf("killed the sink (-9) with %d device_events rows inserted", beforeReplay)
	}
	// A kill between an insert and its commit replays that batch. Make the
	// worst case of it certain: forget every committed offset, so the next
	// sink inserts everything produced so far a second time.
	forgetGroup(t, e, group)
	opsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := e.startSinkProc(group, append(opts, "-ops-addr", opsAddr)...)
	wg.Wait()
	e.waitCount("SELECT uniqExact(event_id) FROM {db}.device_events", nEv, 90*time.Second)
	e.waitCount("SELECT count() FROM {db}.command_summary", nCmd, 30*time.Second)
	time.Sleep(time.Second) // let a duplicate in flight land, if the sink were to make one now
	inserted := scrapeCounter(t, "http://"+opsAddr+"/metrics", `ams_sink_clickhouse_rows_inserted_total{table="device_events"}`)
	p.signal(syscall.SIGTERM)
	if st := p.cmd.ProcessState; st == nil || !st.Success() {
		t.Errorf("sink after SIGTERM: %v (want a clean exit)", st)
	}

	for q, want := range map[string]uint64{
		"SELECT count() FROM {db}.device_events FINAL":                              nEv,
		"SELECT uniqExact(event_id) FROM {db}.device_events":                        nEv,
		"SELECT count() FROM {db}.commands FINAL":                                   2 * nCmd,
		"SELECT count() FROM {db}.command_summary":                                  nCmd,
		"SELECT countIf(result = 'SUCCEEDED') FROM {db}.command_summary":            nCmd,
		"SELECT countIf(latency_ms = 40) FROM {db}.command_summary":                 nCmd,
		"SELECT count() FROM {db}.device_events FINAL WHERE kind = 'CONFIGURATION'": nEv / 10,
	} {
		if n := e.count(q); n != want {
			t.Errorf("%s = %d, want %d", q, n, want)
		}
	}
	// The last sink read everything from the start: every event it inserted
	// that an earlier one had inserted too is a duplicate row, read once.
	// (Background merges of the ReplacingMergeTree may already have removed
	// some, so the raw count is only logged.)
	t.Logf("device_events: %d events; the last sink inserted %.0f rows, %d of them inserted before the kill too; raw rows now %d",
		nEv, inserted, beforeReplay, e.count(raw))
	if inserted < nEv {
		t.Errorf("the last sink inserted %.0f device_events rows, want all %d again (a replay from the start)", inserted, nEv)
	}
}

// forgetGroup deletes the consumer group (retrying while the killed member
// has not yet timed out), so its committed offsets are gone.
func forgetGroup(t *testing.T, e *env, group string) {
	t.Helper()
	adm := kadm.NewClient(e.prod)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := adm.DeleteGroup(ctx, group)
		cancel()
		if err == nil && resp.Err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("delete group %s: %v %v", group, err, resp.Err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// scrapeCounter reads one sample of a Prometheus text exposition.
func scrapeCounter(t *testing.T, url, series string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("scrape %s: %q: %v", url, line, err)
			}
			return f
		}
	}
	t.Fatalf("scrape %s: no %s", url, series)
	return 0
}
