//go:build integration

package keyed

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/testkit/testenv"
)

// BenchmarkTxnBackToBack runs transactions back to back as the runner does
// (End, then at once Begin and produce) and reports the round trip's
// p50/p99/max and how many transactions took a second or more ("stalls"):
// with franz-go's default MetadataMinAge (5s) a first produce that meets
// CONCURRENT_TRANSACTIONS (the previous transaction's markers still being
// written) waits for a metadata update up to 5s away; with the runner's
// metadataMinAge it is sent again within milliseconds. The stall is a client
// timer, so it shows on a loaded machine as well as on an idle one.
//
//	go test -tags integration -run '^$' -bench TxnBackToBack -benchtime 300x ./processors/keyed/
func BenchmarkTxnBackToBack(b *testing.B) {
	for _, c := range []struct {
		name string
		age  time.Duration
	}{{"metadata-min-age=5s", 5 * time.Second}, {"metadata-min-age=runner", metadataMinAge}} {
		b.Run(c.name, func(b *testing.B) {
			topic := testenv.Unique(b, "bench_stall")
			admin := testenv.KafkaClient(b)
			testenv.CreateTopics(b, admin, 4, topic)
			cl := testenv.KafkaClient(b, kgo.TransactionalID(testenv.Unique(b, "bench_stall_txid")),
				kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()),
				kgo.ProducerLinger(0), kgo.RetryBackoffFn(fastRetryBackoff),
				kgo.ConcurrentTransactionsBackoff(2*time.Millisecond), kgo.MetadataMinAge(c.age))
			ctx := context.Background()
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				t0 := time.Now()
				if err := cl.BeginTransaction(); err != nil {
					b.Fatal(err)
				}
				for range 4 {
					cl.Produce(ctx, &kgo.Record{Value: []byte("x")}, nil)
				}
				if err := cl.Flush(ctx); err != nil {
					b.Fatal(err)
				}
				if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			slices.Sort(lat)
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
			stalls := 0
			for _, d := range lat {
				if d >= time.Second {
					stalls++
				}
			}
			b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
			b.ReportMetric(ms(lat[min(len(lat)-1, len(lat)*99/100)]), "p99-ms")
			b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
			b.ReportMetric(float64(stalls), "stalls")
		})
	}
}
