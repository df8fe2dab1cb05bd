//go:build integration

package kafkaconsume_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/kafkaconsume"
	"github.com/ivms/ams/pkg/testkit/testenv"
)

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }

// TestCommitAfterHandler: offsets are committed only after Handle returned
// commit=true. A member whose handler fails commits nothing, so the next
// member of the group gets every record again; once it handled them, the
// group's committed offsets are at the end and the lag gauge says 0.
func TestCommitAfterHandler(t *testing.T) {
	const n = 20
	start := time.Now()
	admin := testenv.KafkaClient(t)
	topic := testenv.Unique(t, "it_consume")
	group := testenv.Unique(t, "it_consume_g")
	testenv.CreateTopics(t, admin, 2, topic)
	for i := range n {
		if err := admin.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Key: []byte(fmt.Sprint(i % 4)), Value: []byte(fmt.Sprint(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%s: produced", time.Since(start))
	cfg := kafkaconsume.Config{Name: "test", Seeds: testenv.KafkaBrokers(), Group: group, Topics: []string{topic},
		KafkaOpts: testenv.KafkaOpts(), InstanceID: testenv.Unique(t, "member"), SessionTimeout: 10 * time.Second,
		Log: slog.New(slog.NewTextHandler(tWriter{t}, nil))}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// 1: the handler fails on its first records.
	c1, err := kafkaconsume.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("handler failed")
	err = c1.Run(ctx, kafkaconsume.Handler{Handle: func(_ context.Context, fs kgo.Fetches) (bool, error) {
		if fs.NumRecords() == 0 {
			return false, nil
		}
		return true, boom // commit=true is ignored with an error
	}})
	if !errors.Is(err, boom) {
		t.Fatalf("Run = %v, want the handler's error", err)
	}
	t.Logf("%s: first member stopped", time.Since(start))

	// 2: the same group (same static member, which 1 left) gets them all.
	lag := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lag"}, []string{"topic", "partition"})
	cfg.Lag = lag
	c2, err := kafkaconsume.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	commits := 0
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	h := kafkaconsume.Handler{
		Handle: func(_ context.Context, fs kgo.Fetches) (bool, error) {
			fs.EachRecord(func(r *kgo.Record) { seen[string(r.Value)] = true })
			return fs.NumRecords() > 0, nil
		},
		Committed: func(err error) {
			if err != nil {
				t.Errorf("commit: %v", err)
			}
			commits++
			t.Logf("%s: commit %d: %d records seen", time.Since(start), commits, len(seen))
			if len(seen) == n {
				stop()
			}
		},
	}
	if err := c2.Run(rctx, h); err != nil {
		t.Fatalf("Run: %v", err)
	}
	t.Logf("%s: second member stopped", time.Since(start))
	if len(seen) != n || commits == 0 {
		t.Fatalf("second member saw %d of %d records in %d commits", len(seen), n, commits)
	}
	offs, err := kadm.NewClient(admin).FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	total := int64(0)
	offs.Each(func(o kadm.OffsetResponse) { total += o.At })
	if total != n {
		t.Errorf("committed offsets sum to %d, want %d", total, n)
	}
	for p := range 2 {
		if v := testutil.ToFloat64(lag.WithLabelValues(topic, fmt.Sprint(p))); v != 0 {
			t.Errorf("lag of partition %d = %v, want 0", p, v)
		}
	}
}
