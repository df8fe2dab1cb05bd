//go:build integration

package kafkaconsume_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/kafkaconsume"
	"github.com/ivms/ams/pkg/testkit/testenv"
)

// TestCommittedShortOfCommitMarker pins what docs/OPERATIONS.md
// ("Back-pressure") tells operators: a group that handled every record of a
// transactionally written partition (as the processors write) commits past
// its last record, which is one short of the end offset, because the end
// counts the transaction's commit marker; the lag gauge reads 1. Caught up
// is committed >= end-1 there, not committed == end.
func TestCommittedShortOfCommitMarker(t *testing.T) {
	const n = 5
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := testenv.KafkaClient(t)
	topic := testenv.Unique(t, "it_marker")
	group := testenv.Unique(t, "it_marker_g")
	testenv.CreateTopics(t, admin, 1, topic)
	w := testenv.KafkaClient(t, kgo.TransactionalID(testenv.Unique(t, "it_marker_txn")))
	if err := w.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := w.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte(fmt.Sprint(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}

	lag := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lag"}, []string{"topic", "partition"})
	c, err := kafkaconsume.New(kafkaconsume.Config{Name: "test", Seeds: testenv.KafkaBrokers(), Group: group,
		Topics: []string{topic}, KafkaOpts: testenv.KafkaOpts(), Lag: lag})
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	if err := c.Run(rctx, kafkaconsume.Handler{
		Handle: func(_ context.Context, fs kgo.Fetches) (bool, error) {
			seen += fs.NumRecords()
			return fs.NumRecords() > 0, nil
		},
		Committed: func(err error) {
			if err == nil && seen == n {
				stop()
			}
		},
	}); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if seen != n {
		t.Fatalf("handled %d of %d records", seen, n)
	}
	adm := kadm.NewClient(admin)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	end, _ := ends.Lookup(topic, 0)
	offs, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	committed, _ := offs.Lookup(topic, 0)
	if end.Offset != n+1 || committed.At != n {
		t.Errorf("end offset %d, committed %d; want %d (records and the commit marker) and %d (past the last record)",
			end.Offset, committed.At, n+1, n)
	}
	if v := testutil.ToFloat64(lag.WithLabelValues(topic, "0")); v != 1 {
		t.Errorf("lag gauge = %v, want 1 (the commit marker)", v)
	}
}
