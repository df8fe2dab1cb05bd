//go:build integration

package device

// Benchmarks of the device processor on the real Kafka (issue 4). Each runs
// one fixed workload and reports custom metrics:
//
//	go test -tags integration -run '^$' -bench 'KafkaHeartbeat|StateMemory|PartitionMove' -benchtime 1x ./processors/device/
//
// Sizes can be changed with DEVICE_BENCH_DEVICES, DEVICE_BENCH_HEARTBEATS,
// DEVICE_BENCH_MOVE_DEVICES and DEVICE_BENCH_MEM_DEVICES.

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/pkg/testkit/testenv"
	"github.com/ivms/ams/processors/keyed"
	"github.com/ivms/ams/processors/keyed/keyedtest"
	"github.com/ivms/ams/schemas"
)

const benchPartitions = 12

func benchEnvInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// benchKafka is one benchmark's private topic set on the real Kafka.
type benchKafka struct {
	id    string
	names kafkatopics.Names
	cl    *kgo.Client
}

func newBenchKafka(b *testing.B) *benchKafka {
	b.Helper()
	id := testenv.Unique(b, "bench")
	k := &benchKafka{id: id, names: kafkatopics.WithPrefix(id + ".")}
	k.cl = testenv.KafkaClient(b, kgo.ProducerLinger(5*time.Millisecond), kgo.ProducerBatchMaxBytes(1<<20))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b.Cleanup(func() {
		cl, err := testenv.NewKafkaClient()
		if err != nil {
			return
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		adm := kadm.NewClient(cl)
		_, _ = adm.DeleteGroup(ctx, id+"-group")
		if _, err := adm.DeleteTopics(ctx, k.names.All()...); err != nil {
			b.Logf("delete topics: %v", err)
		}
	})
	if err := kafkatopics.Ensure(ctx, kadm.NewClient(k.cl), k.names,
		kafkatopics.Layout{Partitions: benchPartitions, Replication: 1}); err != nil {
		b.Fatalf("create topics: %v", err)
	}
	return k
}

func benchProcessor(b *testing.B, names kafkatopics.Names, kek [32]byte) *Processor {
	b.Helper()
	setup(b)
	// The benchmarks measure processing, with unregistered devices sending
	// as fast as they can: the open mode, no rate limits.
	p, err := New(Config{Topics: names, Registry: testReg, PrivateKeys: testKeys, KEK: kek,
		AllowUnregistered: true, Limits: Limits{HandshakeBurst: -1, FrameBurst: -1}})
	if err != nil {
		b.Fatal(err)
	}
	return p
}

func benchKEK(b *testing.B) [32]byte {
	var kek [32]byte
	if _, err := rand.Read(kek[:]); err != nil {
		b.Fatal(err)
	}
	return kek
}

func (k *benchKafka) runner(b *testing.B, p *Processor, instance string, maxRecords int, reg prometheus.Registerer) *keyed.Runner[State] {
	b.Helper()
	r, err := keyed.NewRunner[State](keyed.Config{
		Name:                  "device",
		Brokers:               testenv.KafkaBrokers(),
		Group:                 k.id + "-group",
		Inputs:                p.Inputs(),
		Changelog:             k.names.StateDevices,
		Outputs:               p.Outputs(),
		TransactionalIDPrefix: k.id + "-",
		InstanceID:            instance,
		TransactionTimeout:    10 * time.Second,
		MaxRecords:            maxRecords,
		Logger:                slog.New(slog.NewTextHandler(io.Discard, nil)),
		Registerer:            reg,
		KafkaOpts:             append(testenv.KafkaOpts(), kgo.SessionTimeout(10*time.Second)),
	}, p)
	if err != nil {
		b.Fatal(err)
	}
	return r
}

// running is a runner running in the background.
type running struct {
	r      *keyed.Runner[State]
	cancel context.CancelFunc
	done   chan error
}

func start(r *keyed.Runner[State]) *running {
	ctx, cancel := context.WithCancel(context.Background())
	rr := &running{r: r, cancel: cancel, done: make(chan error, 1)}
	go func() { rr.done <- r.Run(ctx) }()
	return rr
}

func (rr *running) stop(b *testing.B) {
	rr.cancel()
	if err := <-rr.done; err != nil && err != context.Canceled {
		b.Logf("runner: %v", err)
	}
}

// waitReady waits until the runner has joined and restored its partitions.
func (rr *running) waitReady(b *testing.B, timeout time.Duration) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for rr.r.Ready(context.Background()) != nil {
		select {
		case err := <-rr.done:
			b.Fatalf("runner stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("runner not ready after %v", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func benchSN(i int) string { return fmt.Sprintf("BENCH%011d", i) }

func benchUplink(b *testing.B, sn string, cmd int, data string) []byte {
	now := time.Now()
	v, err := testReg.Encode(&schemas.UplinkRaw{
		Kind:       schemas.UplinkFrame,
		SN:         sn,
		Topic:      protocol.UplinkTopic(sn),
		Payload:    protocol.Frame{CmdType: cmd, ProtocolVersion: "V1.0", Data: data}.Encode(),
		BrokerTime: &now,
		IngestTime: now,
		Ingest:     "bench",
	})
	if err != nil {
		b.Fatal(err)
	}
	return v
}

func benchHeartbeatRecord(b *testing.B, sn string, s protocol.SessionKey) *kgo.Record {
	body, err := json.Marshal(protocol.Heartbeat{DeviceSn: sn, HeartBeat: 1})
	if err != nil {
		b.Fatal(err)
	}
	return &kgo.Record{Key: []byte(sn), Value: benchUplink(b, sn, protocol.CmdHeartbeat, protocol.EncryptBody(s, body))}
}

// produceAll produces recs to topic and waits for every ack.
func (k *benchKafka) produceAll(b *testing.B, topic string, recs []*kgo.Record) {
	b.Helper()
	var failed atomic.Value
	for _, r := range recs {
		r.Topic = topic
		k.cl.Produce(context.Background(), r, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Store(err)
			}
		})
	}
	if err := k.cl.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
}

// downlinkReader reads the downlink topic read-committed from its current end.
type downlinkReader struct {
	cl *kgo.Client
}

func (k *benchKafka) downlinks(b *testing.B) *downlinkReader {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(k.cl).ListEndOffsets(ctx, k.names.Downlink)
	if err != nil {
		b.Fatal(err)
	}
	offs := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) { offs[o.Partition] = kgo.NewOffset().At(o.Offset) })
	cl, err := testenv.NewKafkaClient(
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{k.names.Downlink: offs}),
		kgo.FetchMaxWait(50*time.Millisecond))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cl.Close)
	return &downlinkReader{cl: cl}
}

// poll returns the next fetched records (waiting at most d).
func (d *downlinkReader) poll(dur time.Duration) []*kgo.Record {
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	fs := d.cl.PollFetches(ctx)
	return fs.Records()
}

// establish hands n handshakes to the running processor and returns every
// device's session, derived from the processor's handshake reply.
func (k *benchKafka) establish(b *testing.B, n int, first int) map[string]protocol.SessionKey {
	b.Helper()
	dl := k.downlinks(b)
	reqs := make(map[string]protocol.HandshakeRequest, n)
	recs := make([]*kgo.Record, 0, n)
	for i := range n {
		sn := benchSN(first + i)
		req, sData, err := protocol.NewHandshake(testPub, rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		reqs[sn] = req
		recs = append(recs, &kgo.Record{Key: []byte(sn), Value: benchUplink(b, sn, protocol.CmdHandshake, sData)})
	}
	t0 := time.Now()
	k.produceAll(b, k.names.UplinkRaw, recs)
	sessions := make(map[string]protocol.SessionKey, n)
	deadline := time.Now().Add(10 * time.Minute)
	for len(sessions) < n {
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d handshake replies", len(sessions), n)
		}
		for _, r := range dl.poll(time.Second) {
			var d schemas.Downlink
			if err := testReg.Decode(r.Value, &d); err != nil {
				b.Fatal(err)
			}
			if d.Purpose != PurposeHandshakeReply {
				continue
			}
			req, ok := reqs[d.SN]
			if !ok {
				continue
			}
			f, err := protocol.DecodeFrame(d.Payload)
			if err != nil {
				b.Fatal(err)
			}
			_, _, s, err := req.VerifyReply(f.Data)
			if err != nil {
				b.Fatalf("%s: handshake reply: %v", d.SN, err)
			}
			sessions[d.SN] = s
		}
	}
	el := time.Since(t0)
	b.Logf("%d handshakes answered in %v (%.0f/s)", n, el.Round(time.Millisecond), float64(n)/el.Seconds())
	return sessions
}

// BenchmarkKafkaHeartbeatThroughput: heartbeat frames/s through one
// in-process runner of the device processor on the real Kafka, 12
// partitions. Sessions are established first by real handshakes; the
// heartbeats are then preloaded into ams.uplink.raw while the runner is
// stopped, and the clock runs from the runner's readiness (state restored)
// until the read-committed heartbeat replies on ams.downlink count M.
func BenchmarkKafkaHeartbeatThroughput(b *testing.B) {
	n := benchEnvInt("DEVICE_BENCH_DEVICES", 10_000)
	m := benchEnvInt("DEVICE_BENCH_HEARTBEATS", 300_000)
	k := newBenchKafka(b)
	p := benchProcessor(b, k.names, benchKEK(b))
	rr := start(k.runner(b, p, "setup", 1000, nil))
	rr.waitReady(b, 60*time.Second)
	sessions := k.establish(b, n, 0)
	rr.stop(b)
	sns := make([]string, 0, n)
	for sn := range sessions {
		sns = append(sns, sn)
	}
	for _, maxRecords := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("max-records=%d", maxRecords), func(b *testing.B) {
			t0 := time.Now()
			recs := make([]*kgo.Record, m)
			var wg sync.WaitGroup
			for w := range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; i < m; i += 2 {
						sn := sns[i%len(sns)]
						recs[i] = benchHeartbeatRecord(b, sn, sessions[sn])
					}
				}()
			}
			wg.Wait()
			b.Logf("built %d heartbeat records in %v", m, time.Since(t0).Round(time.Millisecond))
			dl := k.downlinks(b)
			t0 = time.Now()
			k.produceAll(b, k.names.UplinkRaw, recs)
			b.Logf("preloaded %d heartbeats in %v", m, time.Since(t0).Round(time.Millisecond))
			recs = nil
			reg := prometheus.NewRegistry()
			b.ResetTimer()
			rr := start(k.runner(b, p, fmt.Sprintf("hb%d", maxRecords), maxRecords, reg))
			rr.waitReady(b, 120*time.Second)
			start := time.Now()
			got := 0
			var first time.Time
			deadline := time.Now().Add(10 * time.Minute)
			for got < m {
				if time.Now().After(deadline) {
					b.Fatalf("only %d of %d heartbeat replies", got, m)
				}
				rs := dl.poll(time.Second)
				if len(rs) > 0 && first.IsZero() {
					first = time.Now()
				}
				got += len(rs)
			}
			el := time.Since(start)
			b.StopTimer()
			rr.stop(b)
			txns := benchMetric(b, reg, "ams_keyed_transactions_total")
			b.ReportMetric(float64(m)/el.Seconds(), "frames/s")
			b.ReportMetric(float64(m)/txns, "records/txn")
			b.Logf("max-records %d: %d heartbeats of %d devices in %v: %.0f frames/s (first reply after %v, %.0f transactions); load %s",
				maxRecords, m, n, el.Round(time.Millisecond), float64(m)/el.Seconds(),
				first.Sub(start).Round(time.Millisecond), txns, loadavg())
		})
	}
}

func benchMetric(b *testing.B, reg *prometheus.Registry, name string) float64 {
	b.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return string(b[:len(b)-1])
}

func heapAfterGC() uint64 {
	var ms runtime.MemStats
	for range 3 {
		runtime.GC()
	}
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// benchStates builds n devices' states the way the processor does: a real
// handshake (RSA) then a heartbeat, through keyedtest, on two goroutines.
// It returns every state with its changelog value and the session.
type benchDevice struct {
	sn        string
	state     *State
	changelog []byte
	session   protocol.SessionKey
}

func benchStates(b *testing.B, p *Processor, names kafkatopics.Names, n, first int) []benchDevice {
	b.Helper()
	out := make([]benchDevice, n)
	workers := max(runtime.GOMAXPROCS(0), 1)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				tr := keyedtest.New[State](p, keyedtest.WithStart(time.Now()))
				sn := benchSN(first + i)
				req, sData, err := protocol.NewHandshake(testPub, rand.Reader)
				if err != nil {
					errs <- err
					return
				}
				outs, err := tr.FeedErr(keyed.Input{Topic: names.UplinkRaw, Key: sn, Value: benchUplink(b, sn, protocol.CmdHandshake, sData)})
				if err != nil {
					errs <- err
					return
				}
				var s protocol.SessionKey
				for _, o := range outs {
					if o.Topic != names.Downlink {
						continue
					}
					var d schemas.Downlink
					if err := testReg.Decode(o.Value, &d); err != nil {
						errs <- err
						return
					}
					f, _ := protocol.DecodeFrame(d.Payload)
					if _, _, s, err = req.VerifyReply(f.Data); err != nil {
						errs <- err
						return
					}
				}
				body, _ := json.Marshal(protocol.Heartbeat{DeviceSn: sn, HeartBeat: 1})
				if _, err := tr.FeedErr(keyed.Input{Topic: names.UplinkRaw, Key: sn, Value: benchUplink(b, sn, protocol.CmdHeartbeat, protocol.EncryptBody(s, body))}); err != nil {
					errs <- err
					return
				}
				out[i] = benchDevice{sn: sn, state: tr.State(sn), changelog: tr.Changelog(sn), session: s}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	return out
}

// BenchmarkStateMemory: heap bytes per device of state with a session (a
// handshake and a heartbeat, through the processor itself), without Kafka.
// bytes/device counts the *State values and the map that holds them (as
// the runtime's store does); changelog-bytes/device is the size of the
// encoded changelog value.
func BenchmarkStateMemory(b *testing.B) {
	n := benchEnvInt("DEVICE_BENCH_MEM_DEVICES", 100_000)
	setup(b)
	names := kafkatopics.WithPrefix("bench.")
	p := benchProcessor(b, names, benchKEK(b))
	t0 := time.Now()
	devs := benchStates(b, p, names, n, 0)
	b.Logf("built %d states in %v", n, time.Since(t0).Round(time.Millisecond))
	var clBytes int
	for _, d := range devs {
		clBytes += len(d.changelog)
	}
	// Measure the states alone: keep pointers in a map keyed by sn, drop
	// everything else (changelog values, sessions).
	keys := make([]string, n)
	states := make([]*State, n)
	for i, d := range devs {
		keys[i], states[i] = d.sn, d.state
	}
	devs = nil
	before := heapAfterGC()
	m := make(map[string]*State, n)
	for i := range keys {
		m[keys[i]] = states[i]
	}
	states = nil
	withMap := heapAfterGC()
	// Now drop the states and see what is freed.
	for k := range m {
		m[k] = nil
	}
	withoutStates := heapAfterGC()
	stateBytes := float64(withMap) - float64(withoutStates)
	// The map was built while the states slice (8 B/device, freed before
	// withMap) still held the states.
	mapBytes := float64(withMap) - float64(before) + 8*float64(n)
	runtime.KeepAlive(m)
	runtime.KeepAlive(keys)
	b.ReportMetric(stateBytes/float64(n), "bytes/device")
	b.ReportMetric((stateBytes+mapBytes)/float64(n), "bytes/device+map")
	b.ReportMetric(float64(clBytes)/float64(n), "changelog-bytes/device")
	b.Logf("%d devices: states %.0f B/device, with a map entry (16-byte sn key, pointer) %.0f B/device, changelog value %.0f B/device",
		n, stateBytes/float64(n), (stateBytes+mapBytes)/float64(n), float64(clBytes)/float64(n))
}

// BenchmarkPartitionMove: 100k devices with sessions in the changelog
// (written directly, from states built by the processor itself), one runner
// owning all 12 partitions; then (a) a second instance joins the group
// (eager range rebalance: half the partitions move) and (b) the first
// instance stops and the second takes all. The time is from the rebalance's
// start (the join / the stop) until a fresh heartbeat of a device in every
// moved partition has its reply committed. Probes are produced every 20 ms.
// Heap growth of the restore (HeapAlloc after GC) is reported too.
func BenchmarkPartitionMove(b *testing.B) {
	n := benchEnvInt("DEVICE_BENCH_MOVE_DEVICES", 100_000)
	k := newBenchKafka(b)
	p := benchProcessor(b, k.names, benchKEK(b))
	t0 := time.Now()
	devs := benchStates(b, p, k.names, n, 0)
	b.Logf("built %d states in %v", n, time.Since(t0).Round(time.Millisecond))
	// The changelog partition of a key is the partition of its inputs: Kafka's
	// default partitioner, which the producer (kgo's default, murmur2) uses.
	recs := make([]*kgo.Record, n)
	for i, d := range devs {
		recs[i] = &kgo.Record{Key: []byte(d.sn), Value: d.changelog}
	}
	k.produceAll(b, k.names.StateDevices, recs)
	// Find each device's partition from the produce result.
	part := map[string]int32{}
	for _, r := range recs {
		part[string(r.Key)] = r.Partition
	}
	recs = nil
	probe := map[int32]benchDevice{} // one device per partition
	for _, d := range devs {
		if _, ok := probe[part[d.sn]]; !ok {
			probe[part[d.sn]] = d
		}
	}
	sessions := map[string]protocol.SessionKey{}
	for _, d := range devs {
		sessions[d.sn] = d.session
	}
	devs = nil
	b.Logf("changelog written: %d devices; load %s", n, loadavg())

	heap0 := heapAfterGC()
	regA := prometheus.NewRegistry()
	t0 = time.Now()
	a := start(k.runner(b, p, "a", 1000, regA))
	a.waitReady(b, 5*time.Minute)
	restoreA := time.Since(t0)
	heapA := heapAfterGC()
	b.Logf("instance a restored %.0f keys in %v; heap +%.1f MiB (%.0f B/device incl. the runner's clients)",
		benchMetric(b, regA, "ams_keyed_state_keys"), restoreA.Round(time.Millisecond),
		float64(heapA-heap0)/(1<<20), float64(heapA-heap0)/float64(n))
	b.ReportMetric(float64(heapA-heap0)/float64(n), "runner-heap-bytes/device")
	b.ReportMetric(restoreA.Seconds()*1000, "cold-start-restore-all_ms")

	// Probes: a fresh heartbeat of each partition's probe device every 20
	// ms; a probe's latency is from its produce to its committed reply. A
	// rebalance stalls the probes of the partitions it touches: the worst
	// latency of the probes produced after the trigger is the resume time.
	measure := func(what string, trigger func(), settled func() bool) time.Duration {
		dl := k.downlinks(b)
		var mu sync.Mutex
		sentAt := map[string]time.Time{} // uplink "partition/offset" -> produce time
		var stop atomic.Bool
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				var rs []*kgo.Record
				for _, d := range probe {
					rs = append(rs, benchHeartbeatRecord(b, d.sn, sessions[d.sn]))
				}
				at := time.Now()
				k.produceAll(b, k.names.UplinkRaw, rs)
				mu.Lock()
				for _, r := range rs {
					sentAt[fmt.Sprintf("%d/%d", r.Partition, r.Offset)] = at
				}
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		}()
		defer func() { stop.Store(true); wg.Wait() }()
		time.Sleep(time.Second)
		t := time.Now()
		trigger()
		var settledAt time.Time
		worst := map[int32]time.Duration{}
		lastAfterSettle := map[int32]bool{}
		deadline := time.Now().Add(5 * time.Minute)
		for {
			if time.Now().After(deadline) {
				b.Fatalf("%s: not settled after 5 minutes (%d partitions answered after settling)", what, len(lastAfterSettle))
			}
			if settledAt.IsZero() && settled() {
				settledAt = time.Now()
			}
			if !settledAt.IsZero() && len(lastAfterSettle) == len(probe) {
				break
			}
			for _, r := range dl.poll(200 * time.Millisecond) {
				now := time.Now()
				var d schemas.Downlink
				if err := testReg.Decode(r.Value, &d); err != nil {
					b.Fatal(err)
				}
				// frame_id = {topic}/{partition}/{offset}/{n}
				var id string
				if n := len(k.names.UplinkRaw) + 1; len(d.FrameID) > n {
					id = d.FrameID[n:]
					if j := lastSlash(id); j >= 0 {
						id = id[:j]
					}
				}
				mu.Lock()
				at, ok := sentAt[id]
				mu.Unlock()
				if !ok || at.Before(t) {
					continue
				}
				worst[r.Partition] = max(worst[r.Partition], now.Sub(at))
				if !settledAt.IsZero() && at.After(settledAt.Add(time.Second)) {
					lastAfterSettle[r.Partition] = true
				}
			}
		}
		var w time.Duration
		for _, d := range worst {
			w = max(w, d)
		}
		b.Logf("%s: settled (runners ready) %v after the trigger; worst probe latency %v; per partition %v; load %s",
			what, settledAt.Sub(t).Round(time.Millisecond), w.Round(time.Millisecond), worst, loadavg())
		return w
	}

	// (a) Scale out: b joins while a runs (eager range rebalance: every
	// partition is revoked; those that stay with a keep their parked state,
	// those that move to b are restored from the changelog by b).
	regB := prometheus.NewRegistry()
	var bRun *running
	joinTime := measure("scale-out (b joins)", func() {
		bRun = start(k.runner(b, p, "b", 1000, regB))
	}, func() bool {
		return bRun.r.Ready(context.Background()) == nil && a.r.Ready(context.Background()) == nil &&
			benchMetric(b, regB, "ams_keyed_state_keys") > 0
	})
	b.Logf("after scale-out: a holds %.0f keys, b %.0f keys", benchMetric(b, regA, "ams_keyed_state_keys"), benchMetric(b, regB, "ams_keyed_state_keys"))
	b.ReportMetric(joinTime.Seconds()*1000, "scale-out-resume_ms")

	// (b) Fail-over: a stops (leaves the group); b restores a's partitions.
	stopTime := measure("fail-over (a stops)", func() {
		go a.stop(b)
	}, func() bool {
		return bRun.r.Ready(context.Background()) == nil && benchMetric(b, regB, "ams_keyed_state_keys") >= float64(n)
	})
	b.Logf("after fail-over: b holds %.0f keys", benchMetric(b, regB, "ams_keyed_state_keys"))
	b.ReportMetric(stopTime.Seconds()*1000, "fail-over-resume_ms")
	bRun.stop(b)
}

func lastSlash(s string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '/' {
			return i
		}
	}
	return -1
}
