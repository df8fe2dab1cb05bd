package device

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the processor's counters. They count work done, including work
// of transactions that are later aborted and redone (a retried batch counts
// twice): they are rates for dashboards, not exact totals.
type metrics struct {
	frames      *prometheus.CounterVec // by event kind
	rejects     *prometheus.CounterVec // by reason
	replies     *prometheus.CounterVec // by downlink purpose
	unanswered  *prometheus.CounterVec // requests not answered, by request and reason
	transitions *prometheus.CounterVec // presence transitions, by online and reason
	cmdEvents   *prometheus.CounterVec // command state changes, by state
	cmdInputs   *prometheus.CounterVec // command requests, receipts and replies, by input and outcome
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ams", Subsystem: "device", Name: "events_total",
			Help: "Accepted uplinks (frames and connection events), by device event kind.",
		}, []string{"kind"}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ams", Subsystem: "device", Name: "rejects_total",
			Help: "Inputs refused by the device processor, by reason.",
		}, []string{"reason"}),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ams", Subsystem: "device", Name: "downlinks_total",
			Help: "Downlinks produced by the device processor, by purpose.",
		}, []string{"purpose"}),
		unanswered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ams", Subsystem: "device", Name: "requests_unanswered_total",
			Help: "Device requests accepted but not answered, by request and reason.",
		}, []string{"request", "reason"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ams", Subsystem: "device", Name: "presence_transitions_total",
			Help: "Presence transitions, by new state and reason.",
		}, []string{"online", "reason"}),
		cmdEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ams", Subsystem: "device", Name: "command_events_total",
			Help: "Command state changes recorded on ams.command.events, by state.",
		}, []string{"state"}),
		cmdInputs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ams", Subsystem: "device", Name: "command_inputs_total",
			Help: "Command requests, broker receipts and device replies, by input (request, receipt, reply) and " +
				"outcome (accepted, rejected, duplicate, applied, finished, unknown, stale).",
		}, []string{"input", "outcome"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.frames, m.rejects, m.replies, m.unanswered, m.transitions, m.cmdEvents, m.cmdInputs} {
		if err := reg.Register(c); err != nil {
			return nil, errors.Join(errors.New("device: registering metrics"), err)
		}
	}
	return m, nil
}
