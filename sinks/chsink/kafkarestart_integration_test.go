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
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/testkit/testenv"
)

// privateKafka is a single-node KRaft broker of the test's own (plaintext,
// loopback, free ports, data in a temp dir), run from the jars the stack
// gathered ($AMS_STACK_DIR/kafka/libs), so the test can restart it without
// touching the shared broker.
type privateKafka struct {
	t      *testing.T
	addr   string
	dir    string
	args   []string
	cmd    *exec.Cmd
	logOut string
}

func startPrivateKafka(t *testing.T) *privateKafka {
	t.Helper()
	stack := os.Getenv("AMS_STACK_DIR") // the Makefile exports it
	if stack == "" {
		stack = filepath.Join("..", "..", ".stack") // up.sh's default, from this package's folder
	}
	libs := filepath.Join(stack, "kafka", "libs")
	if _, err := os.Stat(filepath.Join(libs, ".pom.sha256")); err != nil {
		t.Fatalf("no Kafka jars in %s (AMS_STACK_DIR of a stack started by deploy/stack/up.sh): %v", libs, err)
	}
	java, err := exec.LookPath("java")
	if err != nil {
		t.Fatalf("java: %v", err)
	}
	dir := t.TempDir()
	port, ctrl := freePort(t), freePort(t)
	props := fmt.Sprintf(`process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:%[2]d
listeners=PLAINTEXT://127.0.0.1:%[1]d,CONTROLLER://127.0.0.1:%[2]d
advertised.listeners=PLAINTEXT://127.0.0.1:%[1]d
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=%[3]s/data
num.partitions=4
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
`, port, ctrl, dir)
	if err := os.WriteFile(filepath.Join(dir, "server.properties"), []byte(props), 0o644); err != nil {
		t.Fatal(err)
	}
	cp := filepath.Join(libs, "*")
	jopts := []string{"-Xms128m", "-Xmx512m", "-XX:+UseG1GC", "-Djava.awt.headless=true", "-Dkafka.logs.dir=" + dir}
	format := exec.Command(java, append(jopts, "-cp", cp, "kafka.tools.StorageTool", "format", "-t", "dataopsPrivateKafka01", "-c",
		filepath.Join(dir, "server.properties"), "--ignore-formatted")...)
	if out, err := format.CombinedOutput(); err != nil {
		t.Fatalf("format private kafka: %v\n%s", err, out)
	}
	k := &privateKafka{t: t, addr: fmt.Sprintf("127.0.0.1:%d", port), dir: dir, logOut: filepath.Join(dir, "stdout.log"),
		args: append([]string{java}, append(jopts, "-cp", cp, "kafka.Kafka", filepath.Join(dir, "server.properties"))...)}
	k.start()
	t.Cleanup(func() {
		k.stop()
		if t.Failed() {
			b, _ := os.ReadFile(k.logOut)
			t.Logf("private kafka log:\n%s", tail(string(b), 3000))
		}
	})
	return k
}

// start runs the broker and waits until it answers metadata requests.
func (k *privateKafka) start() {
	k.t.Helper()
	f, err := os.OpenFile(k.logOut, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		k.t.Fatal(err)
	}
	defer f.Close()
	k.cmd = exec.Command(k.args[0], k.args[1:]...)
	k.cmd.Dir, k.cmd.Stdout, k.cmd.Stderr = k.dir, f, f
	k.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := k.cmd.Start(); err != nil {
		k.t.Fatalf("start private kafka: %v", err)
	}
	deadline := time.Now().Add(180 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", k.addr, time.Second); err == nil {
			_ = c.Close()
			cl, err := kgo.NewClient(kgo.SeedBrokers(k.addr))
			if err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				_, err = kadm.NewClient(cl).BrokerMetadata(ctx)
				cancel()
				cl.Close()
				if err == nil {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(k.logOut)
			k.t.Fatalf("private kafka on %s did not answer in 180s\n%s", k.addr, tail(string(b), 2000))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// stop terminates the broker (SIGTERM: a controlled shutdown) and waits.
func (k *privateKafka) stop() {
	if k.cmd == nil || k.cmd.Process == nil || k.cmd.ProcessState != nil {
		return
	}
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = k.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-k.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// TestBackPressureKafkaRestart restarts the broker under the ClickHouse
// sink (the ams binary) while a transactional writer (as the processors
// write) keeps producing: the writer retries its transaction, the sink
// reconnects and resumes from its committed offsets, and ClickHouse ends
// with every event exactly once (FINAL and distinct ids). Figures (broker
// down time, time to catch up) are logged for docs/OPERATIONS.md.
func TestBackPressureKafkaRestart(t *testing.T) {
	t.Parallel()
	const (
		rate  = 500
		tick  = 100 * time.Millisecond
		total = 5000
	)
	k := startPrivateKafka(t)
	e := newEnv(t, testenv.ClickHouseAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	admCl, err := kgo.NewClient(kgo.SeedBrokers(k.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	if _, err := adm.CreateTopics(ctx, 4, 1, nil, e.names.DeviceEvents, e.names.Presence, e.names.CommandEvents, e.names.Rejects, e.names.UplinkRaw); err != nil {
		t.Fatal(err)
	}
	events := deviceEvents(testenv.Unique(t, "kr"), total, 300, time.Now().UTC().Add(-time.Hour))
	group := testenv.Unique(t, "kr-sink")

	logPath := filepath.Join(t.TempDir(), "sink.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(amsBin, "sink", "clickhouse", "-kafka-brokers", k.addr, "-topic-prefix", e.prefix,
		"-clickhouse-addr", e.chAddr, "-clickhouse-database", e.db, "-sink-group", group, "-ops-addr", "",
		"-batch-interval", "200ms", "-retry-max", "1s")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AMS_KAFKA_") { // the private broker is plaintext
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_ = logf.Close()
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("sink log:\n%s", tail(string(b), 4000))
		}
	})

	// The writer: one transaction per tick, retried (abort, same records)
	// until it commits, as a processor redoes its batch.
	var produced atomic.Int64
	var retries atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		cl, err := kgo.NewClient(kgo.SeedBrokers(k.addr), kgo.TransactionalID(testenv.Unique(t, "kr-txn")),
			kgo.RecordRetries(3), kgo.RequestTimeoutOverhead(2*time.Second))
		if err != nil {
			t.Errorf("writer: %v", err)
			return
		}
		defer cl.Close()
		per := int(rate * tick / time.Second)
		for i := 0; i < total && ctx.Err() == nil; {
			recs := make([]*kgo.Record, 0, per)
			for _, v := range events[i:min(i+per, total)] {
				b, err := e.reg.Encode(v)
				if err != nil {
					t.Errorf("encode: %v", err)
					return
				}
				recs = append(recs, &kgo.Record{Topic: e.names.DeviceEvents, Key: []byte(snOf(v)), Value: b})
			}
			err := cl.BeginTransaction()
			if err == nil {
				err = cl.ProduceSync(ctx, recs...).FirstErr()
			}
			commit := err == nil
			if eerr := cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)); eerr != nil && err == nil {
				err = eerr
			}
			if err != nil {
				retries.Add(1)
				time.Sleep(200 * time.Millisecond)
				continue
			}
			i += len(recs)
			produced.Store(int64(i))
			time.Sleep(tick)
		}
	}()

	for produced.Load() < total/3 && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
	}
	stopped := time.Now()
	k.stop()
	time.Sleep(2 * time.Second)
	k.start()
	back := time.Now()
	t.Logf("broker down %v (from the start of its controlled shutdown to answering again, 2 s stopped)", back.Sub(stopped).Round(100*time.Millisecond))

	wg.Wait()
	if produced.Load() != total {
		t.Fatalf("the writer produced %d of %d", produced.Load(), total)
	}
	writerDone := time.Since(back)
	var caughtUp time.Duration
	for {
		select {
		case <-exited:
			t.Fatal("the sink exited")
		default:
		}
		if e.count("SELECT uniqExact(event_id) FROM {db}.device_events") >= total {
			caughtUp = time.Since(back)
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("ClickHouse holds %d of %d events", e.count("SELECT uniqExact(event_id) FROM {db}.device_events"), total)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := e.count("SELECT count() FROM {db}.device_events FINAL"); n != total {
		t.Errorf("device_events FINAL = %d, want %d", n, total)
	}
	raw := e.count("SELECT count() FROM {db}.device_events")
	t.Logf("FIGURES broker restart under %d events/s: writer retried %d transactions, finished %v after the broker was back; "+
		"ClickHouse held every event %v after the broker was back; raw rows %d for %d events",
		rate, retries.Load(), writerDone.Round(100*time.Millisecond), caughtUp.Round(100*time.Millisecond), raw, total)
}
