package api

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ivms/ams/pkg/devicestate"
	"github.com/ivms/ams/schemas"
)

func TestObserveStages(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newMetrics(reg)
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	// Delivered before the reply.
	m.observeStages(at(0), at(100), []devicestate.CommandEvent{
		{State: schemas.CommandAccepted, At: at(5)}, {State: schemas.CommandSent, At: at(6)},
		{State: schemas.CommandDelivered, At: at(20)}, {State: schemas.CommandSucceeded, At: at(60)},
	})
	// The reply's event before the receipt's: SUCCEEDED without DELIVERED first.
	m.observeStages(at(0), at(50), []devicestate.CommandEvent{
		{State: schemas.CommandAccepted, At: at(1)}, {State: schemas.CommandSent, At: at(2)},
		{State: schemas.CommandSucceeded, At: at(30)},
	})
	// Rejected at once (no ACCEPTED event): only final_to_answer.
	m.observeStages(at(0), at(10), []devicestate.CommandEvent{{State: schemas.CommandRejected, At: at(3)}})
	want := map[string]int{"post_to_accepted": 2, "accepted_to_sent": 2, "sent_to_delivered": 1,
		"delivered_to_final": 1, "sent_to_final": 1, "final_to_answer": 3}
	for stage, n := range want {
		ch := make(chan prometheus.Metric, 1)
		m.stages.WithLabelValues(stage).(prometheus.Histogram).Collect(ch)
		var pb dto.Metric
		if err := (<-ch).Write(&pb); err != nil {
			t.Fatal(err)
		}
		if got := pb.GetHistogram().GetSampleCount(); int(got) != n {
			t.Errorf("stage %s: %d observations, want %d", stage, got, n)
		}
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == "ams_api_command_stage_seconds" && len(f.GetMetric()) != len(want) {
			t.Errorf("%d stage series, want %d", len(f.GetMetric()), len(want))
		}
	}
}
