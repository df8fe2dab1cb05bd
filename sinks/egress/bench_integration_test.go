//go:build integration

package egress_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestEgressThroughput measures `ams egress` from Kafka to MQTT: AMS_BENCH_FRAMES
// (default 100000) downlinks of AMS_BENCH_DEVICES (default 10000) devices are
// written to ams.downlink first, then egress is started and the time until
// the subscriber received them all is measured, with egress's CPU per frame
// and memory. It runs only when asked:
//
//	AMS_BENCH=1 go test -tags integration -count=1 -run TestEgressThroughput -v ./sinks/egress/
func TestEgressThroughput(t *testing.T) {
	if os.Getenv("AMS_BENCH") == "" {
		t.Skip("set AMS_BENCH=1 to measure egress throughput")
	}
	frames := envInt("AMS_BENCH_FRAMES", 100000)
	devices := envInt("AMS_BENCH_DEVICES", 10000)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	h := newEgressHarness(t, "-mqtt-connections", "4", "-window", "256", "-commit-interval", "1s")
	payload := []byte(strings.Repeat("y", 200))
	recs := make([]*kgo.Record, 0, frames)
	for i := range frames {
		recs = append(recs, h.downlink(fmt.Sprintf("EBENCH%010d", i%devices), payload))
	}
	if err := h.prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	got := 0
	start := time.Now()
	h.Start(t)
	pid := h.proc.Pid()
	deadline := time.After(5 * time.Minute)
	for got < frames {
		select {
		case <-h.Received():
			got++
		case <-deadline:
			t.Fatalf("%d of %d frames received", got, frames)
		}
	}
	elapsed := time.Since(start)
	cpu := procCPU(pid) / 100
	rss, hwm := procMem(pid)
	t.Logf("egress: %d downlinks of %d devices (200 B) in %v including start-up: %.0f frames/s; CPU %.2f s = %.1f µs per frame; RSS %d MiB, peak %d MiB",
		frames, devices, elapsed.Round(time.Millisecond), float64(frames)/elapsed.Seconds(), cpu, cpu/float64(frames)*1e6, rss>>10, hwm>>10)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// procCPU returns utime+stime of pid in clock ticks.
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(fields[11], 64)
	st, _ := strconv.ParseFloat(fields[12], 64)
	return ut + st
}

// procMem returns VmRSS and VmHWM of pid in KiB.
func procMem(pid int) (rss, hwm int) {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "VmRSS:":
			rss = v
		case "VmHWM:":
			hwm = v
		}
	}
	return rss, hwm
}
