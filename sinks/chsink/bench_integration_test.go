//go:build integration

package chsink_test

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/ivms/ams/pkg/testkit/testenv"
	"github.com/ivms/ams/sinks/chsink"
)

// BenchmarkSinkDeviceEvents measures the sink end to end: Kafka (already
// holding the records, 4 partitions) -> decode -> columnar insert into the
// shared ClickHouse, with the default batching (10k rows / 1 s). Every tenth
// event is a CONFIGURATION whose JSON body the sink parses. Each iteration
// reads all records again with a new consumer group.
//
//	go test -tags integration -run '^$' -bench SinkDeviceEvents -benchtime 1x ./sinks/chsink/
//
// AMS_BENCH_EVENTS sets the number of events (default 500000).
func BenchmarkSinkDeviceEvents(b *testing.B) {
	n := 500_000
	if v, err := strconv.Atoi(os.Getenv("AMS_BENCH_EVENTS")); err == nil && v > 0 {
		n = v
	}
	e := newEnv(b, testenv.ClickHouseAddr())
	run := "bench"
	events := deviceEvents(run, n, 10_000, time.Now().UTC().Add(-time.Hour))
	for i := 0; i < n; i += 50_000 {
		e.produce(e.names.DeviceEvents, events[i:min(n, i+50_000)]...)
	}
	b.ResetTimer()
	var elapsed time.Duration
	for range b.N {
		start := time.Now()
		s := e.runSink(testenv.Unique(b, "bench"), func(c *chsink.Config) { c.BatchInterval = time.Second })
		s.waitInserted(b, n, 5*time.Minute)
		elapsed += time.Since(start)
		s.stop()
	}
	b.ReportMetric(float64(n*b.N)/elapsed.Seconds(), "rows/s")
}
