//go:build integration

package redissink

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/testkit/mqttconform"
	"github.com/ivms/ams/pkg/testkit/testenv"
	"github.com/ivms/ams/schemas"
)

// privateRedis is a redis-server of the test's own (plaintext, loopback, a
// free port, append-only file in a temp dir, so a restart keeps the data as
// a production Redis with persistence does).
type privateRedis struct {
	t    *testing.T
	addr string
	args []string
	cmd  *exec.Cmd
}

func startPrivateRedis(t *testing.T) *privateRedis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not installed (deploy/stack/up.sh redis installs it): %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	dir := t.TempDir()
	r := &privateRedis{t: t, addr: fmt.Sprintf("127.0.0.1:%d", port), args: []string{bin,
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir, "--appendonly", "yes",
		"--appendfsync", "always", "--save", "", "--daemonize", "no", "--logfile", filepath.Join(dir, "redis.log")}}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *privateRedis) start() {
	r.t.Helper()
	r.cmd = exec.Command(r.args[0], r.args[1:]...)
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := r.cmd.Start(); err != nil {
		r.t.Fatalf("start redis: %v", err)
	}
	rdb := goredis.NewClient(&goredis.Options{Addr: r.addr})
	defer rdb.Close()
	deadline := time.Now().Add(20 * time.Second)
	for rdb.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			r.t.Fatalf("private redis on %s did not answer", r.addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop terminates the server (SIGTERM: it flushes its append-only file).
func (r *privateRedis) stop() {
	if r.cmd == nil || r.cmd.Process == nil || r.cmd.ProcessState != nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	_ = r.cmd.Wait()
}

// TestBackPressureRedisDown measures what the Redis sink (the ams binary)
// does while Redis is down and events keep coming at a steady rate: it
// retries its batch and stops fetching, so its memory stays flat and the
// backlog waits in Kafka; after Redis returns it catches up, and the
// projection equals a projection of the same log made without an outage.
// Figures are logged for docs/OPERATIONS.md; only behaviour is asserted.
func TestBackPressureRedisDown(t *testing.T) {
	t.Parallel()
	const (
		rate    = 500 // events per second
		tick    = 100 * time.Millisecond
		upFirst = 3 * time.Second
		outage  = 15 * time.Second
		after   = 3 * time.Second
		devices = 200
	)
	red := startPrivateRedis(t)
	f := newFixture(t)
	total := int(rate * (upFirst + outage + after) / time.Second)
	at := time.Now().UTC().Add(-time.Hour).Truncate(time.Millisecond)
	events := make([]*kgo.Record, total)
	for i := range total {
		sn := fmt.Sprintf("SN%04d", i%devices)
		ev := &schemas.DeviceEvent{EventID: fmt.Sprintf("bp-%d", i), SN: sn, Kind: schemas.EventHeartbeat, CmdType: 2,
			Body: `{"iHeartBeat":1}`, IngestTime: at.Add(time.Duration(i) * time.Millisecond), ProcessedAt: at.Add(time.Duration(i) * time.Millisecond)}
		if i%5 == 0 {
			ev.Kind, ev.CmdType, ev.Body = schemas.EventConfiguration, 1, fmt.Sprintf(`{"iVer":%d}`, i)
		}
		b, err := f.reg.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		events[i] = &kgo.Record{Topic: f.names.DeviceEvents, Key: []byte(sn), Value: b}
	}

	bin := filepath.Join(t.TempDir(), "ams")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/ivms/ams/cmd/ams").CombinedOutput(); err != nil {
		t.Fatalf("build ams: %v\n%s", err, out)
	}
	group := testenv.Unique(t, "bp-redis")
	prefix := f.prefix()
	cmd := exec.Command(bin, "sink", "redis", "-kafka-brokers", testenv.KafkaBrokers()[0],
		"-topic-prefix", strings.TrimSuffix(f.names.DeviceEvents, "ams.device.events"),
		"-redis-addr", red.addr, "-redis-prefix", prefix, "-sink-group", group, "-ops-addr", "")
	cmd.Env = mqttconform.EnvWithout("AMS_REDIS_")
	mqttconform.StartLogged(t, "sink", cmd, 4000)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var produced atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		per := int(rate * tick / time.Second)
		next := time.Now()
		for i := 0; i < total; i += per {
			if err := f.cl.ProduceSync(ctx, events[i:min(i+per, total)]...).FirstErr(); err != nil {
				t.Errorf("produce: %v", err)
				return
			}
			produced.Add(int64(min(per, total-i)))
			next = next.Add(tick)
			time.Sleep(time.Until(next))
		}
	}()

	adm := kadm.NewClient(testenv.KafkaClient(t))
	position := func() (committed, end int64) {
		ends, err := adm.ListEndOffsets(ctx, f.names.DeviceEvents)
		if err != nil {
			t.Logf("end offsets: %v", err)
			return 0, 0
		}
		ends.Each(func(o kadm.ListedOffset) { end += o.Offset })
		offs, err := adm.FetchOffsets(ctx, group)
		if err != nil {
			t.Logf("committed offsets: %v", err)
			return 0, end
		}
		offs.Each(func(o kadm.OffsetResponse) {
			if o.Topic == f.names.DeviceEvents && o.Err == nil && o.At > 0 {
				committed += o.At
			}
		})
		return committed, end
	}
	time.Sleep(upFirst)
	rssBefore := mqttconform.RSSKB(cmd.Process.Pid)
	red.stop()
	down := time.Now()
	var outageRSS int64
	var committed, end int64
	for time.Since(down) < outage {
		time.Sleep(time.Second)
		outageRSS = max(outageRSS, mqttconform.RSSKB(cmd.Process.Pid))
		committed, end = position()
	}
	backlog := end - committed
	red.start()
	up := time.Now()
	atUp := committed
	maxRSS := outageRSS
	for {
		committed, end = position()
		maxRSS = max(maxRSS, mqttconform.RSSKB(cmd.Process.Pid))
		if produced.Load() == int64(total) && committed == end {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("not caught up: committed %d of %d", committed, end)
		}
		time.Sleep(100 * time.Millisecond)
	}
	catchUp := time.Since(up)
	wg.Wait()
	if cmd.Process.Signal(syscall.Signal(0)) != nil {
		t.Fatal("the sink exited during the outage")
	}
	if backlog < int64(rate*outage/time.Second/2) {
		t.Errorf("backlog at the end of the outage %d, want about %d: did the sink keep applying?", backlog, rate*outage/time.Second)
	}

	// The projection equals one made of the same log without an outage.
	priv := &fixture{t: t, rdb: goredis.NewClient(&goredis.Options{Addr: red.addr})}
	t.Cleanup(func() { _ = priv.rdb.Close() })
	got := priv.snapshot(prefix)
	f.n = total
	ref := f.prefix()
	f.run(ref)
	want := f.snapshot(ref)
	if len(want) < devices || !maps.Equal(got, want) {
		var diff []string
		for k, w := range want {
			if g, ok := got[k]; !ok || g != w {
				diff = append(diff, fmt.Sprintf("%s: after the outage %q, without %q", k, g, w))
			}
		}
		for k := range got {
			if _, ok := want[k]; !ok {
				diff = append(diff, k+": only after the outage")
			}
		}
		t.Fatalf("projection after the outage (%d keys) differs from one without (%d keys); first differences:\n%s",
			len(got), len(want), strings.Join(diff[:min(len(diff), 10)], "\n"))
	}
	t.Logf("FIGURES Redis down %v at %d events/s: sink RSS %d kB before, max %d kB during the outage, max %d kB including the catch-up; "+
		"lag at the end of the outage %d records (%.0f s of production); caught up %v after Redis returned: %d records, %.0f records/s",
		outage, rate, rssBefore, outageRSS, maxRSS, backlog, float64(backlog)/rate, catchUp.Round(100*time.Millisecond),
		committed-atUp, float64(committed-atUp)/catchUp.Seconds())
}
