// Package kafkabroker runs a private single-node Kafka broker (KRaft,
// plaintext, loopback) for integration tests that must stop and restart
// the broker without touching the shared one. It runs the jars that
// deploy/stack/up.sh gathered ($AMS_STACK_DIR/kafka/libs) with the system's
// java.
package kafkabroker

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Broker is a single-node KRaft broker of the test's own (plaintext,
// loopback, free ports, data in a temp dir), run from the jars the stack
// gathered ($AMS_STACK_DIR/kafka/libs), so the test can restart it without
// touching the shared broker.
type Broker struct {
	t testing.TB
	// Addr is the broker's host:port (plaintext).
	Addr   string
	dir    string
	args   []string
	cmd    *exec.Cmd
	logOut string
}

// Start formats and starts a broker (stopped when the test ends; its log
// is printed if the test failed).
func Start(t testing.TB) *Broker {
	t.Helper()
	stack := os.Getenv("AMS_STACK_DIR") // the Makefile exports it
	if stack == "" {
		stack = filepath.Join("..", "..", ".stack") // up.sh's default, from a package two folders down
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
	k := &Broker{t: t, Addr: fmt.Sprintf("127.0.0.1:%d", port), dir: dir, logOut: filepath.Join(dir, "stdout.log"),
		args: append([]string{java}, append(jopts, "-cp", cp, "kafka.Kafka", filepath.Join(dir, "server.properties"))...)}
	k.Start()
	t.Cleanup(func() {
		k.Stop()
		if t.Failed() {
			b, _ := os.ReadFile(k.logOut)
			t.Logf("private kafka log:\n%s", tail(string(b), 3000))
		}
	})
	return k
}

// Start runs the broker (again) and waits until it answers metadata requests.
func (k *Broker) Start() {
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
		if c, err := net.DialTimeout("tcp", k.Addr, time.Second); err == nil {
			_ = c.Close()
			cl, err := kgo.NewClient(kgo.SeedBrokers(k.Addr))
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
			k.t.Fatalf("private kafka on %s did not answer in 180s\n%s", k.Addr, tail(string(b), 2000))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// Stop terminates the broker (SIGTERM: a controlled shutdown) and waits.
func (k *Broker) Stop() {
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

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// Resumed watches the committed offsets of group on topic from now on (call
// it when the broker is back) and sends the time they first move past the
// first ones it reads: when the group's consumer committed again after the
// restart (late by at most one commit of the group, and the 100 ms it polls
// at). It sends the zero time if ctx ends first.
func Resumed(ctx context.Context, adm *kadm.Client, group, topic string) <-chan time.Time {
	ch := make(chan time.Time, 1)
	go func() {
		start := int64(-1)
		for ctx.Err() == nil {
			if offs, err := adm.FetchOffsets(ctx, group); err == nil {
				var n int64
				offs.Each(func(o kadm.OffsetResponse) {
					if o.Topic == topic && o.Err == nil && o.At > 0 {
						n += o.At
					}
				})
				if start < 0 {
					start = n
				} else if n > start {
					ch <- time.Now()
					return
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		ch <- time.Time{}
	}()
	return ch
}
