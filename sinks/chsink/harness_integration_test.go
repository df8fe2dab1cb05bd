//go:build integration

package chsink_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/testkit/testenv"
	"github.com/ivms/ams/schemas"
	"github.com/ivms/ams/sinks/chsink"
)

// amsBin is the ams binary, built once by TestMain for the subprocess tests.
var amsBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ams-chsink-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	amsBin = filepath.Join(dir, "ams")
	out, err := exec.Command("go", "build", "-o", amsBin, "github.com/ivms/ams/cmd/ams").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build ams: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is one test's private world: a migrated ClickHouse database, private
// topics, a producer.
type env struct {
	t      testing.TB
	chAddr string
	db     string
	conn   driver.Conn
	prefix string // topic prefix
	names  kafkatopics.Names
	reg    *schemas.Registry
	prod   *kgo.Client
}

const testPartitions = 4

// chOptions returns the options of ClickHouse at addr: the stack's user, password and TLS
// (testenv) for the stack's address, none for a private server (the outage tests' own).
func chOptions(addr, db string) chsink.Options {
	o := chsink.Options{Addr: []string{addr}, Database: db}
	if addr == testenv.ClickHouseAddr() {
		s := testenv.ClickHouseSettings()
		o.Username, o.Password, o.TLS = s.Username, s.Password, s.TLS
	}
	return o
}

func newEnv(t testing.TB, chAddr string) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := &env{t: t, chAddr: chAddr, db: testenv.Unique(t, "chsink")}
	conn, err := chsink.Open(ctx, chOptions(chAddr, e.db))
	if err != nil {
		t.Fatalf("clickhouse %s unreachable: %v", chAddr, err)
	}
	e.conn = conn
	t.Cleanup(func() {
		if err := conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+e.db); err != nil {
			t.Logf("drop database %s: %v", e.db, err)
		}
		_ = conn.Close()
	})
	if _, err := chsink.Migrate(ctx, conn, e.db, quietLog()); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	e.prefix = testenv.Unique(t, "chsink") + "."
	e.names = kafkatopics.WithPrefix(e.prefix)
	admin := testenv.KafkaClient(t)
	testenv.CreateTopics(t, admin, testPartitions, e.names.DeviceEvents, e.names.Presence, e.names.CommandEvents, e.names.Rejects, e.names.UplinkRaw)
	e.reg, err = schemas.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	e.prod = testenv.KafkaClient(t, kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(200_000))
	return e
}

func quietLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// produce encodes and produces every value to topic, keyed by sn, and waits
// for all acknowledgements.
func (e *env) produce(topic string, values ...any) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	recs := make([]*kgo.Record, 0, len(values))
	for _, v := range values {
		b, err := e.reg.Encode(v)
		if err != nil {
			e.t.Fatalf("encode %T: %v", v, err)
		}
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(snOf(v)), Value: b})
	}
	e.produceRaw(ctx, recs...)
}

func (e *env) produceRaw(ctx context.Context, recs ...*kgo.Record) {
	e.t.Helper()
	if err := e.prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		e.t.Fatalf("produce: %v", err)
	}
}

func snOf(v any) string {
	switch x := v.(type) {
	case *schemas.DeviceEvent:
		return x.SN
	case *schemas.Presence:
		return x.SN
	case *schemas.CommandEvent:
		return x.SN
	case *schemas.Reject:
		return x.SN
	case *schemas.UplinkRaw:
		return x.SN
	}
	return ""
}

// inProcSink is a sink run in the test process.
type inProcSink struct {
	stop func()
	reg  *prometheus.Registry
}

// inserted is the sink's ams_sink_clickhouse_rows_inserted_total, summed
// over the tables.
func (s inProcSink) inserted() float64 {
	mfs, err := s.reg.Gather()
	if err != nil {
		return 0
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() == "ams_sink_clickhouse_rows_inserted_total" {
			for _, m := range mf.GetMetric() {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}

// waitInserted waits until the sink inserted at least n rows.
func (s inProcSink) waitInserted(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for s.inserted() < float64(n) {
		if time.Now().After(deadline) {
			t.Fatalf("sink inserted %.0f rows after %v, want %d", s.inserted(), timeout, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runSink runs an in-process sink until its stop is called.
func (e *env) runSink(group string, mutate ...func(*chsink.Config)) inProcSink {
	e.t.Helper()
	cfg := chsink.Config{
		Seeds:          testenv.KafkaBrokers(),
		Names:          e.names,
		Group:          group,
		ClickHouse:     chOptions(e.chAddr, e.db),
		BatchInterval:  200 * time.Millisecond,
		RetryMax:       time.Second,
		ExtraKafkaOpts: testenv.KafkaOpts(),
	}
	for _, f := range mutate {
		f(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	preg := prometheus.NewRegistry()
	cfg.Schemas, cfg.Log, cfg.Metrics = e.reg, testLog(e.t), preg
	s, err := chsink.New(cfg)
	if err != nil {
		cancel()
		e.t.Fatalf("new sink: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("sink run: %v", err)
		}
	}
	e.t.Cleanup(stop)
	return inProcSink{stop: stop, reg: preg}
}

// count runs a query returning one UInt64.
func (e *env) count(q string) uint64 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var n uint64
	if err := e.conn.QueryRow(ctx, strings.ReplaceAll(q, "{db}", e.db)).Scan(&n); err != nil {
		e.t.Fatalf("query %q: %v", q, err)
	}
	return n
}

// waitCount polls q until it returns want (or more), failing after timeout.
func (e *env) waitCount(q string, want uint64, timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	var n uint64
	for time.Now().Before(deadline) {
		if n = e.count(q); n >= want {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	e.t.Fatalf("%s = %d after %v, want %d", q, n, timeout, want)
}

// deviceEvents returns n synthetic device events over devices, every tenth a
// CONFIGURATION, with ids unique to run.
func deviceEvents(run string, n, devices int, at time.Time) []any {
	out := make([]any, n)
	for i := range n {
		sn := fmt.Sprintf("SN%05d", i%devices)
		ev := &schemas.DeviceEvent{
			EventID:         fmt.Sprintf("%s-ev-%d", run, i),
			SN:              sn,
			Kind:            schemas.EventHeartbeat,
			CmdType:         2,
			MsgID:           fmt.Sprint(i),
			ProtocolVersion: "1.0",
			Body:            `{"sDeviceSn":"` + sn + `","iHeartBeat":1}`,
			IngestTime:      at.Add(time.Duration(i) * time.Millisecond),
			ProcessedAt:     at.Add(time.Duration(i)*time.Millisecond + 3*time.Millisecond),
		}
		if i%10 == 0 {
			ev.Kind = schemas.EventConfiguration
			ev.CmdType = 1
			ev.Body = configBody(sn, fmt.Sprintf("V1.%d", i%3), i%20 == 0)
		}
		out[i] = ev
	}
	return out
}

func configBody(sn, fw string, wifi bool) string {
	b := fmt.Sprintf(`{"sDeviceSn":"%s","sHwVersion":"HW2","sModelName":"IPC-X","sIpAddr":"10.0.0.7","sMacAddr":"aa:bb:cc:dd:ee:ff","sVPNIpAddr":"","sFwVersion":"%s","sAlphaVer":"a1","sAiModelVer":"m3","sIEVer":"ie9","iChnCnt":1,"iAlarmIn":2,"iAlarmOut":1,"iNetMethod":%d,"iTFCardState":1,"iTFCardCapacitySize":30000,"iTFCardUseSize":1200`, sn, fw, map[bool]int{true: 2, false: 1}[wifi])
	if wifi {
		b += `,"sSSID":"home","iWifiStrength":-61`
	}
	return b + "}"
}
