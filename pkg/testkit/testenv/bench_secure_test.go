//go:build integration

package testenv_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/testkit/testenv"
)

// BenchmarkKafkaTxnRoundTrip measures one exactly-once hop on the stack's Kafka as the
// processors do it: begin, produce one record, commit; with whatever TLS and SASL the
// environment sets (compare a secure stack's env file with a plaintext one). Reports the
// p50/p99/p999 of the round trip.
//
//	source .stack/env && go test -tags integration -run '^$' -bench KafkaTxnRoundTrip -benchtime 2000x ./pkg/testkit/testenv
func BenchmarkKafkaTxnRoundTrip(b *testing.B) {
	topic := testenv.Unique(b, "bench_txn")
	admin := testenv.KafkaClient(b)
	testenv.CreateTopics(b, admin, 1, topic)
	cl := testenv.KafkaClient(b, kgo.TransactionalID(testenv.Unique(b, "bench_txid")), kgo.DefaultProduceTopic(topic),
		kgo.ProducerLinger(0))
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if err := cl.BeginTransaction(); err != nil {
			b.Fatal(err)
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("x")}).FirstErr(); err != nil {
			b.Fatal(err)
		}
		if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	q := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(0.999), "p999-ms")
}
