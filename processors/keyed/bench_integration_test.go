//go:build integration

package keyed_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/testkit/testenv"
	"github.com/ivms/ams/processors/keyed"
	"github.com/ivms/ams/processors/keyed/internal/counter"
)

// Benchmarks against the real Kafka; each does one fixed workload:
//
//	go test -tags integration -run '^$' -bench . -benchtime 1x ./processors/keyed/

// noop keeps no state and emits nothing: the runtime's own cost.
type noop struct{ counter.Handler }

func (noop) Process(_ time.Time, _ string, st *counter.State, _ keyed.Input) (*counter.State, []keyed.Output, error) {
	return st, nil, nil
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func preload(b *testing.B, topic string, n, keys, valueSize int, partition int32) {
	b.Helper()
	opts := append(testenv.KafkaSeedOpts(), kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(5*time.Millisecond))
	if partition >= 0 {
		opts = append(opts, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	val := []byte(strings.Repeat("v", valueSize))
	errs := make(chan error, 1)
	for i := range n {
		r := &kgo.Record{Key: fmt.Appendf(nil, "dev-%06d", i%keys), Value: val, Partition: max(partition, 0)}
		cl.Produce(context.Background(), r, func(_ *kgo.Record, err error) {
			if err != nil {
				select {
				case errs <- err:
				default:
				}
			}
		})
	}
	if err := cl.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
}

// BenchmarkThroughput: records/s through one runner on the real Kafka,
// 12 partitions, records already in the input topic.
func BenchmarkThroughput(b *testing.B) {
	n := envInt("KEYED_BENCH_RECORDS", 300_000)
	for _, tc := range []struct {
		name string
		h    keyed.Handler[counter.State]
	}{
		{"noop", noop{}},
		{"counter", counter.Handler{}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			tp := newITTopics(b, 12)
			if c, ok := tc.h.(counter.Handler); ok {
				c.Out = tp.out
				tc.h = c
			}
			preload(b, tp.in, n, 10_000, 100, -1)
			reg := prometheus.NewRegistry()
			cfg := tp.config("bench", slog.New(slog.NewTextHandler(io.Discard, nil)))
			cfg.Registerer = reg
			cfg.MaxRecords = envInt("KEYED_BENCH_MAX", 1000)
			r, err := keyed.NewRunner[counter.State](cfg, tc.h)
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			b.ResetTimer()
			go func() { done <- r.Run(ctx) }()
			var start time.Time
			for {
				got := metric(b, reg, "ams_keyed_records_total")
				if start.IsZero() && r.Ready(ctx) == nil {
					start = time.Now()
				}
				if got >= float64(n) {
					break
				}
				select {
				case err := <-done:
					b.Fatalf("runner stopped: %v", err)
				case <-time.After(10 * time.Millisecond):
				}
			}
			el := time.Since(start)
			b.StopTimer()
			txns := metric(b, reg, "ams_keyed_transactions_total")
			b.ReportMetric(float64(n)/el.Seconds(), "records/s")
			b.ReportMetric(float64(n)/txns, "records/txn")
			b.Logf("%s: %d records in %v (%.0f records/s, %.0f transactions)", tc.name, n, el.Round(time.Millisecond), float64(n)/el.Seconds(), txns)
			cancel()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkRestore: one partition's restore of 100k keys of ~200-byte state.
func BenchmarkRestore(b *testing.B) {
	keys := envInt("KEYED_BENCH_KEYS", 100_000)
	tp := newITTopics(b, 1)
	st, _ := counter.Handler{}.EncodeState("", &counter.State{Count: 42, Last: time.Now(), Pad: strings.Repeat("x", 150)})
	b.Logf("state size %d bytes", len(st))
	cl, err := testenv.NewKafkaClient(kgo.DefaultProduceTopic(tp.changelog), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		b.Fatal(err)
	}
	for i := range keys {
		cl.Produce(context.Background(), &kgo.Record{Key: fmt.Appendf(nil, "dev-%06d", i), Value: st}, nil)
	}
	if err := cl.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	cl.Close()

	for i := range 2 {
		reg := prometheus.NewRegistry()
		cfg := tp.config(fmt.Sprint("restore", i), slog.New(slog.NewTextHandler(io.Discard, nil)))
		cfg.Registerer = reg
		r, err := keyed.NewRunner[counter.State](cfg, counter.Handler{Out: tp.out, IdleAfter: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		for metric(b, reg, "ams_keyed_restore_records_total") < float64(keys) || r.Ready(ctx) != nil {
			time.Sleep(5 * time.Millisecond)
		}
		secs := histSum(b, reg, "ams_keyed_restore_seconds")
		b.ReportMetric(secs, fmt.Sprintf("s/restore%d", i))
		b.Logf("run %d: restored %d keys (%d bytes each) in %.3fs", i, keys, len(st), secs)
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
}

func histSum(b *testing.B, reg *prometheus.Registry, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetHistogram().GetSampleSum()
		}
	}
	return 0
}
