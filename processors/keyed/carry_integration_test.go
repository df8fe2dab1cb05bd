//go:build integration

package keyed_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/testkit/testenv"

	"github.com/ivms/ams/processors/keyed"
	"github.com/ivms/ams/processors/keyed/internal/counter"
)

// noopHandler leaves the state alone and produces nothing for inputs whose
// value starts with "noop" (like the device processor on a receipt of an
// automatic reply); any other input counts as in counter.Handler.
type noopHandler struct{ counter.Handler }

func (h noopHandler) Process(now time.Time, key string, st *counter.State, in keyed.Input) (*counter.State, []keyed.Output, error) {
	if bytes.HasPrefix(in.Value, []byte("noop")) {
		return st, nil, nil
	}
	return h.Handler.Process(now, key, st, in)
}

// TestCarriedOffsetsCommit: batches that produce nothing carry their offsets
// into a later transaction instead of ending an offsets-only one (ORDERING.md
// step 6). Their offsets must still be committed: with producing batches
// mixed in, with only such batches (the idle path ends the carried
// transaction), and when Run ends. No input may be lost or counted twice.
func TestCarriedOffsetsCommit(t *testing.T) {
	tp := newITTopics(t, 3)
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg := tp.config("carry", log)
	cfg.Registerer = reg
	r, err := keyed.NewRunner[counter.State](cfg, noopHandler{counter.Handler{Out: tp.out}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- r.Run(ctx) }()
	defer func() {
		cancel()
		<-runErr
	}()

	cl, err := kgo.NewClient(append(testenv.KafkaSeedOpts(), kgo.DefaultProduceTopic(tp.in))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	produce := func(values ...string) {
		t.Helper()
		var recs []*kgo.Record
		for i, v := range values {
			recs = append(recs, &kgo.Record{Key: fmt.Appendf(nil, "k%d", i%7), Value: []byte(v)})
		}
		if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	adm := kadm.NewClient(cl)
	// caughtUp waits until the group's committed offsets reach the input's
	// end offsets (what the runner has polled is committed).
	caughtUp := func(what string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			ends, err := adm.ListEndOffsets(context.Background(), tp.in)
			if err != nil {
				t.Fatal(err)
			}
			got, err := adm.FetchOffsets(context.Background(), tp.group)
			if err == nil {
				done := true
				ends.Each(func(o kadm.ListedOffset) {
					c, ok := got.Lookup(o.Topic, o.Partition)
					if !ok || c.At != o.Offset {
						done = false
					}
				})
				if done {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: committed offsets %v never reached the end offsets %v", what, got, ends)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	for r.Ready(ctx) != nil {
		time.Sleep(20 * time.Millisecond)
	}
	// Mixed: producing inputs between runs of no-op ones, in small polls
	// (the runner is ready: batches follow the produces).
	var mixed []string
	for i := range 300 {
		if i%10 == 0 {
			mixed = append(mixed, fmt.Sprint(i))
		} else {
			mixed = append(mixed, "noop")
		}
	}
	for i := 0; i < len(mixed); i += 5 {
		produce(mixed[i : i+5]...)
		time.Sleep(5 * time.Millisecond)
	}
	caughtUp("mixed")
	// Only no-op inputs: nothing produces, the carried offsets commit alone.
	noops := make([]string, 50)
	for i := range noops {
		noops[i] = "noop"
	}
	produce(noops...)
	caughtUp("no-op only")
	// No-op inputs, then Run ends at once: the shutdown commits them (or,
	// if the cycle had not polled them yet, they stay for the next owner;
	// either way the committed offsets never pass what was processed).
	produce(noops[:10]...)
	time.Sleep(300 * time.Millisecond)
	cancel()
	if err := <-runErr; err != nil {
		t.Fatalf("Run: %v", err)
	}
	runErr <- nil

	// Every producing input counted exactly once: each is the first of
	// its produce call, so key k0, counts 1..30 in order.
	rd := itReader(t, tp.out)
	vals := rd.until(t, 30*time.Second, func(v []string) bool { return len(v) >= 30 })
	checkCounts(t, vals, []string{"k0"}, 30)
	if got := counterValue(t, reg, "ams_keyed_carried_records_total"); got == 0 {
		t.Errorf("ams_keyed_carried_records_total = 0: no batch was carried")
	} else {
		t.Logf("carried records %v, transactions committed %v, aborted %v", got,
			counterValue(t, reg, "ams_keyed_transactions_total", "result", "committed"),
			counterValue(t, reg, "ams_keyed_transactions_total", "result", "aborted"))
	}
}

// counterValue sums the counter series named name (whose labels include
// label=value, when given) in reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, labelValue ...string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if len(labelValue) == 2 && !hasLabel(m, labelValue[0], labelValue[1]) {
				continue
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}
