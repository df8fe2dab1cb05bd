//go:build integration

package keyed_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/testkit/testenv"
	"github.com/ivms/ams/processors/keyed"
	"github.com/ivms/ams/processors/keyed/internal/counter"
)

// The integration tests run against the real Kafka of deploy/stack
// (AMS_KAFKA_BROKERS, default 127.0.0.1:9092), on topics and groups unique to
// the run, and fail when it is unreachable.

func TestMain(m *testing.M) {
	if os.Getenv("KEYED_IT_HELPER") != "" {
		os.Exit(helperMain())
	}
	os.Exit(m.Run())
}

func itBrokers() []string { return testenv.KafkaBrokers() }

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// itTopics is one run's private topic set.
type itTopics struct{ prefix, in, out, changelog, group string }

func newITTopics(t testing.TB, partitions int32) itTopics {
	t.Helper()
	p := "it-keyed-" + randHex(4) + "."
	tp := itTopics{prefix: p, in: p + "in", out: p + "out", changelog: p + "state", group: p + "group"}
	cl, err := testenv.NewKafkaClient()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.Ping(ctx); err != nil {
		t.Fatalf("kafka at %v unreachable: %v", itBrokers(), err)
	}
	adm := kadm.NewClient(cl)
	for _, c := range []struct {
		name string
		cfg  map[string]*string
	}{
		{tp.in, nil}, {tp.out, nil},
		{tp.changelog, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}},
	} {
		resp, err := adm.CreateTopic(ctx, partitions, 1, c.cfg, c.name)
		if err == nil {
			err = resp.Err
		}
		if err != nil {
			t.Fatalf("create %s: %v", c.name, err)
		}
	}
	// Wait until every partition has a leader in the broker's metadata.
	for {
		td, err := adm.ListTopics(ctx, tp.in, tp.out, tp.changelog)
		ok := err == nil && len(td) == 3
		for _, d := range td {
			if d.Err != nil || len(d.Partitions) != int(partitions) {
				ok = false
				continue
			}
			for _, p := range d.Partitions {
				if p.Leader < 0 || p.Err != nil {
					ok = false
				}
			}
		}
		if ok {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("topics not ready: %v %v", td, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Cleanup(func() {
		cl, err := testenv.NewKafkaClient()
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer cl.Close()
		adm := kadm.NewClient(cl)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = adm.DeleteGroup(ctx, tp.group)
		if _, err := adm.DeleteTopics(ctx, tp.in, tp.out, tp.changelog); err != nil {
			t.Errorf("cleanup: delete topics: %v", err)
		}
	})
	return tp
}

func (tp itTopics) config(instance string, log *slog.Logger) keyed.Config {
	return keyed.Config{
		Name:                  "counter",
		Brokers:               itBrokers(),
		Group:                 tp.group,
		Inputs:                []string{tp.in},
		Changelog:             tp.changelog,
		Outputs:               []string{tp.out},
		TransactionalIDPrefix: tp.prefix + "txn-",
		InstanceID:            instance,
		TransactionTimeout:    10 * time.Second,
		TimerTick:             50 * time.Millisecond,
		Logger:                log,
		KafkaOpts: append(testenv.KafkaOpts(),
			kgo.SessionTimeout(6*time.Second),
			kgo.HeartbeatInterval(500*time.Millisecond),
			kgo.FetchMaxWait(200*time.Millisecond),
		),
	}
}

// helperMain runs one runner in this process until SIGTERM, printing READY
// once it is ready. Configured by KEYED_IT_* variables.
func helperMain() int {
	tp := itTopics{}
	tp.prefix = os.Getenv("KEYED_IT_PREFIX")
	tp.in, tp.out, tp.changelog, tp.group = tp.prefix+"in", tp.prefix+"out", tp.prefix+"state", tp.prefix+"group"
	idle, _ := time.ParseDuration(os.Getenv("KEYED_IT_IDLE"))
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg := tp.config(os.Getenv("KEYED_IT_INSTANCE"), log.With("instance", os.Getenv("KEYED_IT_INSTANCE")))
	var h keyed.Handler[counter.State] = counter.Handler{Out: tp.out, IdleAfter: idle}
	if d, _ := time.ParseDuration(os.Getenv("KEYED_IT_DELAY")); d > 0 {
		h = slowHandler{h, d}
	}
	r, err := keyed.NewRunner[counter.State](cfg, h)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		for ctx.Err() == nil {
			if r.Ready(ctx) == nil {
				fmt.Println("READY")
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	if err := r.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "run:", err)
		return 1
	}
	return 0
}

// slowHandler spends d on every input, so that a runner under load is inside
// a transaction most of the time (and a kill lands in one).
type slowHandler struct {
	keyed.Handler[counter.State]
	d time.Duration
}

func (s slowHandler) Process(now time.Time, key string, st *counter.State, in keyed.Input) (*counter.State, []keyed.Output, error) {
	for t := time.Now(); time.Since(t) < s.d; {
	}
	return s.Handler.Process(now, key, st, in)
}

type helper struct {
	cmd   *exec.Cmd
	ready chan struct{}
	exit  chan error
}

func startHelper(t *testing.T, tp itTopics, instance string, idle time.Duration, logw io.Writer) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "KEYED_IT_HELPER=1", "KEYED_IT_PREFIX="+tp.prefix,
		"KEYED_IT_INSTANCE="+instance, "KEYED_IT_IDLE="+idle.String(), "KEYED_IT_DELAY=100us")
	cmd.Stderr = logw
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helper{cmd: cmd, ready: make(chan struct{}), exit: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "READY" {
				close(h.ready)
			}
		}
		h.exit <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
	})
	return h
}

func (h *helper) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-h.ready:
	case err := <-h.exit:
		t.Fatalf("helper exited: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("helper not ready")
	}
}

func (h *helper) term(t *testing.T) {
	t.Helper()
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-h.exit:
		if err != nil {
			t.Fatalf("helper: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("helper did not stop")
	}
}

// produceLoad writes rounds of one record per key, spread over d.
func produceLoad(t *testing.T, topic string, keys []string, rounds int, d time.Duration, after func(round int)) {
	t.Helper()
	cl, err := testenv.NewKafkaClient(kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	pace := d / time.Duration(rounds)
	for n := range rounds {
		startRound := time.Now()
		recs := make([]*kgo.Record, len(keys))
		for i, k := range keys {
			recs[i] = &kgo.Record{Key: []byte(k), Value: []byte(fmt.Sprint(n))}
		}
		if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if after != nil {
			after(n)
		}
		time.Sleep(pace - time.Since(startRound))
	}
}

func itReader(t *testing.T, topic string) *logReader {
	t.Helper()
	cl, err := testenv.NewKafkaClient(kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(200*time.Millisecond),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &logReader{cl: cl}
}

// itStates reads a changelog to its end and returns the latest state per key.
func itStates(t *testing.T, topic string) map[string]*counter.State {
	t.Helper()
	rd := itReader(t, topic)
	idle := 0
	for idle < 5 {
		before := len(rd.recs)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		fs := rd.cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) { rd.recs = append(rd.recs, r) })
		if len(rd.recs) == before {
			idle++
		}
	}
	states := map[string]*counter.State{}
	for _, r := range rd.recs {
		if r.Value == nil {
			delete(states, string(r.Key))
			continue
		}
		st, err := counter.Handler{}.DecodeState(string(r.Key), r.Value)
		if err != nil {
			t.Fatal(err)
		}
		states[string(r.Key)] = st
	}
	return states
}

// TestExactlyOnceUnderCrash runs three instances as processes, SIGKILLs
// one mid-load, and checks the committed output log and the changelog.
func TestExactlyOnceUnderCrash(t *testing.T) {
	tp := newITTopics(t, 12)
	const idle = 4 * time.Second
	logf, _ := os.CreateTemp("", "keyed-crash-*.log")
	defer logf.Close()
	t.Logf("helper logs: %s", logf.Name())

	var hs []*helper
	for i := range 3 {
		hs = append(hs, startHelper(t, tp, fmt.Sprintf("i%d", i), idle, logf))
	}
	for _, h := range hs {
		h.waitReady(t)
	}
	time.Sleep(2 * time.Second) // let the group settle on three members

	// A backlog (produced faster than three instances on a small machine
	// process it) so that the kill lands inside an open transaction.
	keys := keysN("dev-", 2000)
	const rounds = 50
	start := time.Now()
	produceLoad(t, tp.in, keys, rounds, 3*time.Second, func(n int) {
		if n == rounds/2 {
			t.Logf("%v: SIGKILL instance i1 after %d records", time.Since(start).Round(time.Millisecond), (n+1)*len(keys))
			_ = hs[1].cmd.Process.Signal(syscall.SIGKILL)
		}
	})
	t.Logf("%v: produced %d records", time.Since(start).Round(time.Millisecond), rounds*len(keys))

	out := itReader(t, tp.out)
	out.until(t, 90*time.Second, countsDone(keys, rounds))
	t.Logf("%v: all counts committed", time.Since(start).Round(time.Millisecond))
	// Every key's final idle timer.
	out.until(t, 60*time.Second, func(vals []string) bool {
		n := 0
		for _, v := range vals {
			if strings.HasSuffix(v, fmt.Sprintf(":idle:%d", rounds)) {
				n++
			}
		}
		return n == len(keys)
	})
	time.Sleep(time.Second)
	vals := out.until(t, time.Second, func([]string) bool { return true })
	t.Logf("%v: all idle timers committed; %d outputs", time.Since(start).Round(time.Millisecond), len(vals))

	checkCounts(t, vals, keys, rounds) // 1..rounds per key, in order, once each
	seen := map[string]bool{}
	for _, v := range vals {
		if seen[v] {
			t.Fatalf("duplicate committed output %q", v)
		}
		seen[v] = true
	}
	for _, h := range []*helper{hs[0], hs[2]} {
		h.term(t)
	}
	states := itStates(t, tp.changelog)
	for _, k := range keys {
		if s := states[k]; s == nil || s.Count != rounds || !s.Idle {
			t.Fatalf("changelog state of %s: %+v", k, s)
		}
	}
	// Show how the survivors took over: restores after the kill wait for
	// the killed instance's open transaction to time out.
	logs, _ := os.ReadFile(logf.Name())
	for _, l := range strings.Split(string(logs), "\n") {
		if strings.Contains(l, "partition restored") && !strings.Contains(l, "records=0 ") ||
			strings.Contains(l, "aborted") || strings.Contains(l, "partitions assigned") {
			t.Log(l)
		}
	}
}

// TestRebalanceMovesState adds an instance under load: partitions move, the
// new owner restores their state, and the counts continue.
func TestRebalanceMovesState(t *testing.T) {
	tp := newITTopics(t, 12)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("KEYED_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	type inst struct {
		r    *keyed.Runner[counter.State]
		reg  *prometheus.Registry
		stop context.CancelFunc
		done chan error
	}
	run := func(name string) *inst {
		cfg := tp.config(name, log.With("instance", name))
		i := &inst{reg: prometheus.NewRegistry(), done: make(chan error, 1)}
		cfg.Registerer = i.reg
		r, err := keyed.NewRunner[counter.State](cfg, counter.Handler{Out: tp.out})
		if err != nil {
			t.Fatal(err)
		}
		i.r = r
		ctx, cancel := context.WithCancel(context.Background())
		i.stop = cancel
		go func() { i.done <- r.Run(ctx) }()
		t.Cleanup(cancel)
		return i
	}
	wait := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	ready := func(i *inst) func() bool {
		return func() bool {
			select {
			case err := <-i.done:
				t.Fatalf("runner stopped: %v", err)
			default:
			}
			return i.r.Ready(context.Background()) == nil
		}
	}

	a := run("a")
	wait("a ready", ready(a))
	keys := keysN("dev-", 500)
	out := itReader(t, tp.out)
	produceLoad(t, tp.in, keys, 10, time.Second, nil)
	out.until(t, 60*time.Second, countsDone(keys, 10))

	start := time.Now()
	b := run("b")
	wait("b restored", func() bool { return metric(t, b.reg, "ams_keyed_restore_records_total") > 0 })
	wait("both ready", func() bool { return ready(a)() && ready(b)() })
	ka, kb := metric(t, a.reg, "ams_keyed_state_keys"), metric(t, b.reg, "ams_keyed_state_keys")
	t.Logf("rebalance took %v: A holds %v keys, B restored %v changelog records into %v keys; A re-read %v",
		time.Since(start).Round(time.Millisecond), ka, metric(t, b.reg, "ams_keyed_restore_records_total"), kb,
		metric(t, a.reg, "ams_keyed_restore_records_total"))
	if ka+kb != float64(len(keys)) || ka == 0 || kb == 0 {
		t.Fatalf("keys after the rebalance: A %v, B %v", ka, kb)
	}

	produceLoad(t, tp.in, keys, 10, time.Second, nil)
	vals := out.until(t, 60*time.Second, countsDone(keys, 20))
	checkCounts(t, vals, keys, 20)

	a.stop()
	if err := <-a.done; err != nil {
		t.Fatal(err)
	}
	wait("b owns everything", func() bool {
		return ready(b)() && metric(t, b.reg, "ams_keyed_state_keys") == float64(len(keys))
	})
	produceLoad(t, tp.in, keys, 5, time.Second, nil)
	vals = out.until(t, 60*time.Second, countsDone(keys, 25))
	checkCounts(t, vals, keys, 25)
	b.stop()
	if err := <-b.done; err != nil {
		t.Fatal(err)
	}
}
