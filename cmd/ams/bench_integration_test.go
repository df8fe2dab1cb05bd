//go:build integration

package main

// End-to-end benchmarks of the whole pipeline, every role a subprocess of
// the built binary (TestMain builds it), against the shared Kafka, Redis and
// ClickHouse and a private Mosquitto:
//
//	go test -tags integration -run '^$' -bench 'CommandRoundTrip|ClickHouseLag' -benchtime 1x -timeout 30m ./cmd/ams/
//
// BenchmarkCommandRoundTrip (issue 5): POST .../commands?wait=15s at a paced
// rate to a simulated fleet; latency from sending the POST to its final answer.
// BenchmarkClickHouseLag (issue 6): heartbeats published at ~10k/s; lag from
// the MQTT publish to the row being visible in ClickHouse.
//
// Sizes: AMS_BENCH_CMD_RATE (500), AMS_BENCH_CMD_SECONDS (20),
// AMS_BENCH_CMD_DEVICES (200), AMS_BENCH_CH_DEVICES (2000),
// AMS_BENCH_CH_INTERVAL (200ms), AMS_BENCH_CH_SECONDS (20),
// AMS_BENCH_CH_BATCH_INTERVAL (the sink's -batch-interval, 1s),
// AMS_BENCH_PROCESS_MAX_RECORDS (ams process -max-records, 1000),
// AMS_BENCH_WATCH_PIDS (name:pid,... of other processes whose CPU to report).

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/ivms/ams/pkg/devkit/devicesim"
	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/pkg/testkit/mqttconform"
	"github.com/ivms/ams/pkg/testkit/testenv"
	"github.com/ivms/ams/sinks/chsink"
)

func benchEnv(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func benchEnvDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func benchLoad() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// benchStack is one benchmark's pipeline.
type benchStack struct {
	b      *testing.B
	id     string
	prefix string
	names  kafkatopics.Names
	chDB   string // "" without ClickHouse
	broker *mqttconform.Mosquitto
	token  string
	apiURL string
	client *http.Client
	procs  map[string]*mqttconform.Process
}

// cpu returns each role's CPU time so far (user + system, /proc/pid/stat).
func (s *benchStack) cpu() map[string]time.Duration {
	out := map[string]time.Duration{}
	pids := map[string]int{"bench (fleet, clients)": os.Getpid()}
	// AMS_BENCH_WATCH_PIDS=name:pid,... adds other processes (say the shared
	// Kafka and ClickHouse) to the CPU report; they are only read.
	for _, kv := range strings.Split(os.Getenv("AMS_BENCH_WATCH_PIDS"), ",") {
		if name, pid, ok := strings.Cut(kv, ":"); ok {
			if n, err := strconv.Atoi(pid); err == nil {
				pids[name] = n
			}
		}
	}
	for name, p := range s.procs {
		pids[name] = p.Pid()
	}
	for name, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		st := string(b)
		if i := strings.LastIndexByte(st, ')'); i >= 0 {
			st = st[i+2:]
		}
		f := strings.Fields(st)
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		k, _ := strconv.ParseInt(f[12], 10, 64)
		out[name] = time.Duration(u+k) * 10 * time.Millisecond // USER_HZ = 100
	}
	return out
}

// cpuShare formats each role's CPU use between two cpu() readings as a
// share of one core.
func cpuShare(before, after map[string]time.Duration, el time.Duration) string {
	var parts []string
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range after {
			if !yield(n) {
				return
			}
		}
	}) {
		parts = append(parts, fmt.Sprintf("%s %.0f%%", name, 100*(after[name]-before[name]).Seconds()/el.Seconds()))
	}
	return strings.Join(parts, ", ")
}

func startBenchStack(b *testing.B, withClickHouse bool) *benchStack {
	b.Helper()
	s := &benchStack{b: b, procs: map[string]*mqttconform.Process{}}
	s.id = testenv.Unique(b, "bench")
	s.prefix = s.id + "."
	s.names = kafkatopics.WithPrefix(s.prefix)
	s.token = hex.EncodeToString(e2eRandomBytes(b, 16))
	s.client = &http.Client{Transport: &http.Transport{MaxIdleConns: 2000, MaxIdleConnsPerHost: 2000, MaxConnsPerHost: 0}}
	privFile, err := filepath.Abs("testdata/cloud_rsa_private.pem")
	if err != nil {
		b.Fatal(err)
	}
	kafkaArgs := []string{
		"-kafka-brokers", strings.Join(testenv.KafkaBrokers(), ","),
		"-topic-prefix", s.prefix,
		"-partitions", "12",
		"-log-level", "info", // StartProcess reads the ops address from an info line
	}
	b.Cleanup(s.cleanup)
	// One broker on the test stack: replication factor 1, allowed explicitly.
	migrate := append([]string{"migrate", "-replication", "1", "-allow-unsafe-replication"}, kafkaArgs...)
	if withClickHouse {
		s.chDB = s.id
		migrate = append(migrate, "-clickhouse-addr", testenv.ClickHouseAddr(), "-clickhouse-database", s.chDB)
	} else {
		migrate = append(migrate, "-skip-clickhouse")
	}
	if out, err := exec.Command(amsBinary, migrate...).CombinedOutput(); err != nil {
		b.Fatalf("ams migrate: %v\n%s", err, out)
	}

	dir := b.TempDir()
	kekFile := filepath.Join(dir, "kek.hex")
	e2eWriteFile(b, kekFile, hex.EncodeToString(e2eRandomBytes(b, 32))+"\n")
	s.broker = mqttconform.StartMosquitto(b, 1000)

	s.procs["process"] = mqttconform.StartProcess(b, "process", amsBinary, append(append([]string{"process"}, kafkaArgs...),
		"-ops-addr", "127.0.0.1:0",
		"-process-group", s.id+"-process",
		"-transactional-id-prefix", s.id+"-process-",
		"-instance-id", "p0",
		"-max-records", strconv.Itoa(benchEnv("AMS_BENCH_PROCESS_MAX_RECORDS", 1000)),
		"-rsa-private-key-file", privFile,
		"-kek-file", kekFile,
	)...)
	s.procs["ingest"] = mqttconform.StartProcess(b, "ingest", amsBinary, append(append([]string{"ingest"}, kafkaArgs...),
		"-ops-addr", "127.0.0.1:0",
		"-mqtt-url", s.broker.URL,
		"-mqtt-client-id", "ams-ingest-"+s.id,
		"-mqtt-share-group", "", // Mosquitto: one ingest, plain subscription
		"-event-connected-filter", "", // Mosquitto publishes no client events
		"-event-disconnected-filter", "",
		"-instance", "ingest-"+s.id,
	)...)
	s.procs["egress"] = mqttconform.StartProcess(b, "egress", amsBinary, append(append([]string{"egress"}, kafkaArgs...),
		"-ops-addr", "127.0.0.1:0",
		"-mqtt-url", s.broker.URL,
		"-egress-id", "ams-egress-"+s.id,
		"-egress-group", s.id+"-egress",
	)...)
	s.procs["sink-redis"] = mqttconform.StartProcess(b, "sink-redis", amsBinary, append(append([]string{"sink", "redis"}, kafkaArgs...),
		"-ops-addr", "127.0.0.1:0",
		"-redis-addr", testenv.RedisAddr(),
		"-redis-prefix", s.id+":",
		"-sink-group", s.id+"-sink-redis",
	)...)
	if withClickHouse {
		s.procs["sink-clickhouse"] = mqttconform.StartProcess(b, "sink-clickhouse", amsBinary, append(append([]string{"sink", "clickhouse"}, kafkaArgs...),
			"-ops-addr", "127.0.0.1:0",
			"-clickhouse-addr", testenv.ClickHouseAddr(),
			"-clickhouse-database", s.chDB,
			"-sink-group", s.id+"-sink-clickhouse",
			"-batch-interval", benchEnvDuration("AMS_BENCH_CH_BATCH_INTERVAL", time.Second).String(),
		)...)
	}
	api := mqttconform.StartProcess(b, "api", amsBinary, append(append([]string{"api"}, kafkaArgs...),
		"-http-addr", "127.0.0.1:0",
		"-ops-addr", "127.0.0.1:0",
		"-redis-addr", testenv.RedisAddr(),
		"-redis-prefix", s.id+":",
		"-api-token", s.token,
	)...)
	s.procs["api"] = api
	s.apiURL = "http://" + api.APIAddr(b)
	return s
}

func (s *benchStack) cleanup() {
	cl, err := testenv.NewKafkaClient()
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		adm := kadm.NewClient(cl)
		_, _ = adm.DeleteGroup(ctx, s.id+"-process")
		_, _ = adm.DeleteGroup(ctx, s.id+"-egress")
		_, _ = adm.DeleteGroup(ctx, s.id+"-sink-redis")
		_, _ = adm.DeleteGroup(ctx, s.id+"-sink-clickhouse")
		if _, err := adm.DeleteTopics(ctx, s.names.All()...); err != nil {
			s.b.Logf("delete topics: %v", err)
		}
		cancel()
		cl.Close()
	}
	rdb := goredis.NewClient(testenv.RedisOptions())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	iter := rdb.Scan(ctx, 0, s.id+":*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
		if len(keys) == 500 {
			rdb.Del(ctx, keys...)
			keys = keys[:0]
		}
	}
	if len(keys) > 0 {
		rdb.Del(ctx, keys...)
	}
	cancel()
	rdb.Close()
	if s.chDB != "" {
		if out, err := s.clickhouse("DROP DATABASE IF EXISTS " + s.chDB); err != nil {
			s.b.Logf("drop database %s: %v %s", s.chDB, err, out)
		}
	}
}

// clickhouse runs one statement (no result) on ClickHouse.
func (s *benchStack) clickhouse(query string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := chsink.Open(ctx, stackCH(s.chDB))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return "", conn.Exec(ctx, query)
}

func (s *benchStack) api(method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.apiURL+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// fleet starts a devicesim fleet against the stack's broker and waits until
// every device has a session. Every device is registered first (bound).
func (s *benchStack) fleet(cfg devicesim.Config) (*devicesim.Fleet, func() devicesim.Summary) {
	b := s.b
	b.Helper()
	pubPEM, err := os.ReadFile("testdata/cloud_rsa_public.pem")
	if err != nil {
		b.Fatal(err)
	}
	if cfg.PublicKey, err = protocol.ParsePublicKey(pubPEM); err != nil {
		b.Fatal(err)
	}
	cfg.BrokerURL = s.broker.URL
	f, err := devicesim.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	// Register every device through the API, 16 at a time.
	t0 := time.Now()
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range f.Len() {
		sn := f.Device(i).SN()
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			code, body, err := s.api(http.MethodPut, "/v1/devices/"+sn,
				map[string]any{"token": "token-" + sn, "bound": true, "name": "bench " + sn})
			if err != nil || (code != http.StatusOK && code != http.StatusCreated) {
				failed.Add(1)
				b.Logf("PUT %s: %d %s %v", sn, code, body, err)
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		b.Fatalf("%d registrations failed", failed.Load())
	}
	b.Logf("registered %d devices in %v", f.Len(), time.Since(t0).Round(time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan devicesim.Summary, 1)
	go func() {
		sum, _ := f.Run(ctx)
		done <- sum
	}()
	var once sync.Once
	var sum devicesim.Summary
	stop := func() devicesim.Summary {
		once.Do(func() { cancel(); sum = <-done })
		return sum
	}
	b.Cleanup(func() { stop() })
	t0 = time.Now()
	for {
		st := f.Stats()
		if st.Ready == int64(f.Len()) && st.Configured >= int64(f.Len()) {
			break
		}
		if time.Since(t0) > 3*time.Minute {
			b.Fatalf("fleet not ready after 3 minutes:\n%s", devicesim.Report(st))
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.Logf("%d devices ready (session, configuration answered) in %v", f.Len(), time.Since(t0).Round(time.Millisecond))
	return f, stop
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// BenchmarkCommandRoundTrip (issue 5): commands (sd_info and reboot,
// alternating) posted with ?wait=15s at AMS_BENCH_CMD_RATE per second for
// AMS_BENCH_CMD_SECONDS to a fleet of AMS_BENCH_CMD_DEVICES simulated
// devices, round robin; the latency of each request is from sending the
// POST to reading its answer (the command final, with the device's reply).
func BenchmarkCommandRoundTrip(b *testing.B) {
	rate := benchEnv("AMS_BENCH_CMD_RATE", 500)
	secs := benchEnv("AMS_BENCH_CMD_SECONDS", 20)
	devices := benchEnv("AMS_BENCH_CMD_DEVICES", 200)
	s := startBenchStack(b, false)
	f, stop := s.fleet(devicesim.Config{
		Devices:   devices,
		SNPrefix:  "BC" + strings.ToUpper(hex.EncodeToString(e2eRandomBytes(b, 2))),
		Heartbeat: 30 * time.Second,
		UplinkQoS: 1,
	})
	sns := make([]string, f.Len())
	for i := range sns {
		sns[i] = f.Device(i).SN()
	}
	// Warm-up: one command per device, not measured. The API learns of a
	// registration through the Redis sink, which may still be behind the
	// processor (the fleet is ready once the processor has them): a 404
	// is tried again for a while.
	for i, sn := range sns[:min(20, len(sns))] {
		for deadline := time.Now().Add(30 * time.Second); ; {
			code, body, err := s.api(http.MethodPost, "/v1/devices/"+sn+"/commands?wait=15s", map[string]any{"kind": "sd_info"})
			if err == nil && code == http.StatusNotFound && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			if err != nil || code != http.StatusOK {
				b.Fatalf("warm-up %d: %d %s %v", i, code, body, err)
			}
			break
		}
	}
	b.Logf("load before the run: %s", benchLoad())

	total := rate * secs
	type result struct {
		lat   time.Duration
		state string
		code  int
		err   error
		// stages, from the command's history (processor times)
		toAccepted, toSucceeded, toAnswer time.Duration
	}
	results := make([]result, total)
	jobs := make(chan int, total)
	var wg sync.WaitGroup
	for range 400 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				kind := "sd_info"
				if i%2 == 1 {
					kind = "reboot"
				}
				t := time.Now()
				code, body, err := s.api(http.MethodPost, "/v1/devices/"+sns[i%len(sns)]+"/commands?wait=15s", map[string]any{"kind": kind})
				answered := time.Now()
				r := result{lat: answered.Sub(t), code: code, err: err}
				if err == nil {
					var a struct {
						State   string `json:"state"`
						History []struct {
							State string    `json:"state"`
							At    time.Time `json:"at"`
						} `json:"history"`
					}
					_ = json.Unmarshal(body, &a)
					r.state = a.State
					var acc, done time.Time
					for _, h := range a.History {
						switch h.State {
						case "ACCEPTED":
							acc = h.At
						case "SUCCEEDED":
							done = h.At
						}
					}
					if !acc.IsZero() && !done.IsZero() {
						r.toAccepted, r.toSucceeded, r.toAnswer = acc.Sub(t), done.Sub(acc), answered.Sub(done)
					}
				}
				results[i] = r
			}
		}()
	}
	b.ResetTimer()
	cpu0 := s.cpu()
	t0 := time.Now()
	interval := time.Second / time.Duration(rate)
	var behind time.Duration
	for i := range total {
		due := t0.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		} else {
			behind = max(behind, -d)
		}
		jobs <- i
	}
	sendEl := time.Since(t0)
	close(jobs)
	wg.Wait()
	el := time.Since(t0)
	b.StopTimer()
	b.Logf("CPU of the roles during the run (share of one core): %s", cpuShare(cpu0, s.cpu(), el))
	sum := stop()

	var lats, sAcc, sDone, sAns []time.Duration
	bad := map[string]int{}
	for _, r := range results {
		if r.toSucceeded > 0 {
			sAcc, sDone, sAns = append(sAcc, r.toAccepted), append(sDone, r.toSucceeded), append(sAns, r.toAnswer)
		}
		switch {
		case r.err != nil:
			bad["error: "+r.err.Error()]++
		case r.state != "SUCCEEDED":
			bad[fmt.Sprintf("%d %s", r.code, r.state)]++
		}
		lats = append(lats, r.lat)
	}
	slices.Sort(lats)
	for _, l := range [][]time.Duration{sAcc, sDone, sAns} {
		slices.Sort(l)
	}
	pq := func(l []time.Duration) string {
		return fmt.Sprintf("p50 %v p99 %v", percentile(l, 0.5).Round(time.Millisecond), percentile(l, 0.99).Round(time.Millisecond))
	}
	b.Logf("stages (history times are the processor's clock, same machine): POST sent -> ACCEPTED %s; ACCEPTED -> SUCCEEDED (downlink commit, egress, MQTT, device, ingest, processor) %s; SUCCEEDED -> answer read (commit, sink redis, API wake-up) %s",
		pq(sAcc), pq(sDone), pq(sAns))
	nonOK := 0
	for _, n := range bad {
		nonOK += n
	}
	p50, p99, pmax := percentile(lats, 0.50), percentile(lats, 0.99), lats[len(lats)-1]
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99_ms")
	b.ReportMetric(float64(pmax.Microseconds())/1000, "max_ms")
	b.ReportMetric(float64(total)/sendEl.Seconds(), "commands/s")
	b.ReportMetric(float64(nonOK), "non-succeeded")
	b.Logf("%d commands to %d devices: sent in %v (%.1f/s, pacing at most %v behind), all answered after %v; latency p50 %v p90 %v p99 %v p99.9 %v max %v; not SUCCEEDED: %d %v; fleet replies %d, failures %d; load %s",
		total, devices, sendEl.Round(time.Millisecond), float64(total)/sendEl.Seconds(), behind.Round(time.Millisecond), el.Round(time.Millisecond),
		p50.Round(100*time.Microsecond), percentile(lats, 0.90).Round(100*time.Microsecond), p99.Round(100*time.Microsecond),
		percentile(lats, 0.999).Round(100*time.Microsecond), pmax.Round(100*time.Microsecond), nonOK, bad,
		sum.Stats.Replies, sum.Stats.FailuresTotal, benchLoad())
}

// BenchmarkClickHouseLag (issue 6): AMS_BENCH_CH_DEVICES simulated devices
// with sessions each publish a heartbeat every AMS_BENCH_CH_INTERVAL
// (phases spread evenly; ~10k frames/s by default) for AMS_BENCH_CH_SECONDS;
// the pipeline includes `ams sink clickhouse` into a private database.
//
// Two measures of the lag from MQTT publish to the row being visible in
// device_events:
//   - per frame (sampled): every heartbeat carries its per-device sequence
//     number in iHeartBeat (read back with visitParamExtractInt: ClickHouse
//     18.16), and the publish times of every 100th device's heartbeats are
//     recorded (taken just before the publish). ClickHouse is polled every
//     100 ms (back to back when a poll takes longer) for those devices'
//     HEARTBEAT rows; a row's visible time is the start of the first poll
//     that returns it (a query reads the parts present when it starts), so
//     the lag is overstated by at most the time between two poll starts;
//   - whole stream: the count of HEARTBEAT rows polled every 100 ms against
//     the count of heartbeats published (sampled at the same instants); the
//     lag of the k-th frame is the time the visible count reached k minus the
//     time the published count reached k (the horizontal distance of the
//     two curves, assuming FIFO), summarised over all k.
func BenchmarkClickHouseLag(b *testing.B) {
	devices := benchEnv("AMS_BENCH_CH_DEVICES", 2000)
	interval := benchEnvDuration("AMS_BENCH_CH_INTERVAL", 200*time.Millisecond)
	secs := benchEnv("AMS_BENCH_CH_SECONDS", 20)
	s := startBenchStack(b, true)
	f, stop := s.fleet(devicesim.Config{
		Devices:   devices,
		SNPrefix:  "BL" + strings.ToUpper(hex.EncodeToString(e2eRandomBytes(b, 2))),
		Heartbeat: time.Hour, // the fleet's own heartbeats stay out of the way
		Jitter:    -1,
		UplinkQoS: 1,
		Ramp:      2000,
	})
	const sampleEvery = 100
	var sampled []string
	sampleIdx := map[string]int{}
	for i := 0; i < f.Len(); i += sampleEvery {
		sampleIdx[f.Device(i).SN()] = len(sampled)
		sampled = append(sampled, f.Device(i).SN())
	}
	chctx, chcancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer chcancel()
	conn, err := chsink.Open(chctx, stackCH(s.chDB))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	countRows := func() (int, error) {
		var n uint64
		err := conn.QueryRow(chctx, "SELECT count() FROM "+s.chDB+".device_events WHERE kind = 'HEARTBEAT'").Scan(&n)
		return int(n), err
	}
	base, err := countRows()
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("load before the run: %s; %d heartbeat rows before", benchLoad(), base)

	pubTimes := make([][]time.Time, len(sampled)) // [sample][seq-1]: before the publish call
	ackTimes := make([][]time.Time, len(sampled)) // [sample][seq-1]: PUBACK received
	var published atomic.Int64                    // publish calls started (the count curve's publish side)
	var acked atomic.Int64
	var pubFailed atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	b.ResetTimer()
	cpu0 := s.cpu()
	t0 := time.Now()
	end := t0.Add(time.Duration(secs) * time.Second)
	for i := range f.Len() {
		d := f.Device(i)
		si, isSample := sampleIdx[d.SN()]
		phase := time.Duration(int64(interval) * int64(i) / int64(f.Len()))
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := t0.Add(phase)
			for seq := 1; ; seq++ {
				if next.After(end) || ctx.Err() != nil {
					return
				}
				time.Sleep(time.Until(next))
				body, _ := json.Marshal(protocol.Heartbeat{DeviceSn: d.SN(), HeartBeat: seq})
				at := time.Now()
				published.Add(1)
				err := d.SendFrame(protocol.Frame{CmdType: protocol.CmdHeartbeat, ProtocolVersion: "V1.0"}, body)
				if err != nil {
					pubFailed.Add(1)
				} else {
					acked.Add(1)
				}
				if isSample {
					pubTimes[si] = append(pubTimes[si], at)
					ackTimes[si] = append(ackTimes[si], time.Now())
				}
				next = next.Add(interval)
			}
		}()
	}
	// Poll ClickHouse every 100 ms: the sampled devices' rows, and the count.
	type point struct {
		at             time.Time
		pub, vis       int64
		queryDurations time.Duration
	}
	var curve []point
	visible := map[string]time.Time{} // sn/seq -> first seen
	stamps := map[string][2]int64{}   // sn/seq -> ingest_time_ms, processed_at_ms
	inList := "'" + strings.Join(sampled, "','") + "'"
	var pubDone time.Time
	for {
		pub := published.Load()
		qt := time.Now()
		rows, err := conn.Query(chctx, "SELECT sn, visitParamExtractInt(body, 'iHeartBeat'), ingest_time_ms, processed_at_ms FROM "+s.chDB+
			".device_events WHERE kind = 'HEARTBEAT' AND sn IN ("+inList+")")
		if err != nil {
			b.Fatal(err)
		}
		var seen []string
		for rows.Next() {
			var sn string
			var seq int64
			var ing, proc uint64
			if err := rows.Scan(&sn, &seq, &ing, &proc); err != nil {
				b.Fatal(err)
			}
			k := fmt.Sprintf("%s/%d", sn, seq)
			seen = append(seen, k)
			stamps[k] = [2]int64{int64(ing), int64(proc)}
		}
		if err := rows.Err(); err != nil {
			b.Fatal(err)
		}
		rows.Close()
		n, err := countRows()
		if err != nil {
			b.Fatal(err)
		}
		now := time.Now()
		for _, k := range seen {
			if _, ok := visible[k]; !ok {
				// A query reads the parts present when it starts: the row
				// was visible by qt (and not by the previous poll's start).
				visible[k] = qt
			}
		}
		curve = append(curve, point{at: qt, pub: pub, vis: int64(n - base), queryDurations: now.Sub(qt)})
		if pubDone.IsZero() && time.Now().After(end.Add(interval)) {
			wg.Wait()
			pubDone = time.Now()
		}
		if !pubDone.IsZero() && int64(n-base) >= acked.Load() && len(visible) >= sampledSent(pubTimes) {
			break
		}
		if !pubDone.IsZero() && time.Since(pubDone) > 2*time.Minute {
			b.Logf("not every row visible 2 minutes after the last publish: %d of %d", n-base, published.Load())
			break
		}
		time.Sleep(max(0, 100*time.Millisecond-time.Since(qt)))
	}
	b.StopTimer()
	b.Logf("CPU of the roles from the first publish until every row was visible (share of one core): %s", cpuShare(cpu0, s.cpu(), time.Since(t0)))
	total := acked.Load()
	sum := stop()
	for _, role := range []string{"process", "sink-clickhouse"} {
		m, err := s.procs[role].Metrics()
		if err != nil {
			continue
		}
		var keep []string
		for _, line := range strings.Split(m, "\n") {
			for _, want := range []string{"ams_keyed_batch_seconds_sum", "ams_keyed_batch_seconds_count", "ams_keyed_transactions_total",
				"ams_sink_clickhouse_batch_seconds_sum", "ams_sink_clickhouse_batch_seconds_count"} {
				if strings.HasPrefix(line, want) {
					keep = append(keep, line)
				}
			}
		}
		b.Logf("%s metrics: %s", role, strings.Join(keep, "; "))
	}

	// Per-frame lags of the sampled devices.
	var lags, fromAck, toIngest, toProcessed, toVisible, ackLat []time.Duration
	missing := 0
	for si, sn := range sampled {
		for i, at := range pubTimes[si] {
			k := fmt.Sprintf("%s/%d", sn, i+1)
			v, ok := visible[k]
			if !ok {
				missing++
				continue
			}
			lags = append(lags, v.Sub(at))
			fromAck = append(fromAck, v.Sub(ackTimes[si][i]))
			ackLat = append(ackLat, ackTimes[si][i].Sub(at))
			st := stamps[k]
			ing, proc := time.UnixMilli(st[0]), time.UnixMilli(st[1])
			toIngest = append(toIngest, ing.Sub(at))
			toProcessed = append(toProcessed, proc.Sub(ing))
			toVisible = append(toVisible, v.Sub(proc))
		}
	}
	for _, l := range [][]time.Duration{lags, fromAck, toIngest, toProcessed, toVisible, ackLat} {
		slices.Sort(l)
	}
	pq := func(l []time.Duration) string {
		return fmt.Sprintf("p50 %v p99 %v", percentile(l, 0.5).Round(time.Millisecond), percentile(l, 0.99).Round(time.Millisecond))
	}
	b.Logf("sampled frames, stages: publish call -> PUBACK %s; publish call -> ingest_time %s; ingest_time -> processed_at %s; processed_at -> visible %s; PUBACK -> visible %s",
		pq(ackLat), pq(toIngest), pq(toProcessed), pq(toVisible), pq(fromAck))
	// Count-curve lags: for each k, first poll with vis >= k minus first
	// poll with pub >= k (both sampled at the poll instants).
	var curveLags []time.Duration
	// Step through k in 100-frame steps.
	pi, vi := 0, 0
	for k := int64(1); k <= total; k += 100 {
		for pi < len(curve) && curve[pi].pub < k {
			pi++
		}
		for vi < len(curve) && curve[vi].vis < k {
			vi++
		}
		if pi >= len(curve) || vi >= len(curve) {
			break
		}
		curveLags = append(curveLags, curve[vi].at.Sub(curve[pi].at))
	}
	slices.Sort(curveLags)
	var qmax time.Duration
	for _, p := range curve {
		qmax = max(qmax, p.queryDurations)
	}
	pubEl := pubDone.Sub(t0)
	b.ReportMetric(float64(total)/pubEl.Seconds(), "frames/s")
	b.ReportMetric(float64(percentile(lags, 0.5).Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(percentile(lags, 0.99).Microseconds())/1000, "p99_ms")
	b.ReportMetric(float64(percentile(curveLags, 0.5).Microseconds())/1000, "curve_p50_ms")
	b.ReportMetric(float64(percentile(curveLags, 0.99).Microseconds())/1000, "curve_p99_ms")
	var gaps []time.Duration
	for i := 1; i < len(curve); i++ {
		gaps = append(gaps, curve[i].at.Sub(curve[i-1].at))
	}
	slices.Sort(gaps)
	b.Logf("poll starts: %d polls, gap p50 %v p99 %v max %v; fleet failures by reason (heartbeat replies to frames the fleet did not send itself are expected): %v",
		len(curve), percentile(gaps, 0.5).Round(time.Millisecond), percentile(gaps, 0.99).Round(time.Millisecond), percentile(gaps, 1).Round(time.Millisecond), sum.Stats.Failures)
	b.Logf("%d heartbeats published by %d devices in %v (%.0f/s; %d publish failures); sampled %d frames of %d devices: lag p50 %v p90 %v p99 %v max %v (%d never visible); count curve: p50 %v p99 %v max %v; slowest poll %v; fleet failures %d; load %s",
		total, devices, pubEl.Round(time.Millisecond), float64(total)/pubEl.Seconds(), pubFailed.Load(),
		len(lags), len(sampled), percentile(lags, 0.5).Round(time.Millisecond), percentile(lags, 0.9).Round(time.Millisecond),
		percentile(lags, 0.99).Round(time.Millisecond), percentile(lags, 1).Round(time.Millisecond), missing,
		percentile(curveLags, 0.5).Round(time.Millisecond), percentile(curveLags, 0.99).Round(time.Millisecond), percentile(curveLags, 1).Round(time.Millisecond),
		qmax.Round(time.Millisecond), sum.Stats.FailuresTotal, benchLoad())
}

func sampledSent(pubTimes [][]time.Time) int {
	n := 0
	for _, ts := range pubTimes {
		n += len(ts)
	}
	return n
}

// stackCH returns the options of the stack's ClickHouse (user, password and TLS from testenv).
func stackCH(db string) chsink.Options {
	c := testenv.ClickHouseSettings()
	return chsink.Options{Addr: c.Addr, Database: db, Username: c.Username, Password: c.Password, TLS: c.TLS}
}
