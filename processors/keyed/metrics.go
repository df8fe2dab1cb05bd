package keyed

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ivms/ams/pkg/hop"
)

// metrics of one Runner; every series carries the const label processor.
type metrics struct {
	records      *prometheus.CounterVec   // committed input records, by topic
	outputs      *prometheus.CounterVec   // committed output records, by topic
	txns         *prometheus.CounterVec   // transactions, by result committed|aborted
	batchSeconds prometheus.Histogram     // poll-to-end of one transaction
	stateKeys    *prometheus.GaugeVec     // keys with state, by partition
	restoreSecs  prometheus.Histogram     // duration of one partition restore
	restoreRecs  prometheus.Counter       // changelog records read by restores
	timersFired  prometheus.Counter       // committed timer firings
	lag          *prometheus.GaugeVec     // high watermark - next offset, by topic, partition
	changelog    prometheus.Counter       // committed changelog records
	restoring    prometheus.Gauge         // partitions being restored
	carried      prometheus.Counter       // input records whose offsets were carried into a later transaction
	hops         *prometheus.HistogramVec // per-hop latency of committed input records, by hop
	hopPoll      prometheus.Observer      // record timestamp -> polled
	hopCommit    prometheus.Observer      // polled -> transaction committed
	hopTotal     prometheus.Observer      // record timestamp -> transaction committed

	// KEK rotation and recovery (rewrap.go, restore.go).
	staleKeys      *prometheus.GaugeVec // keys whose state the Handler reports stale, by partition
	restoreSkipped prometheus.Counter   // undecodable latest changelog records skipped by restores

	phases       *prometheus.HistogramVec // one committed or aborted batch's phases, by phase
	phaseProcess prometheus.Observer      // poll -> every worker done
	phaseFlush   prometheus.Observer      // -> every produce acknowledged
	phaseEnd     prometheus.Observer      // End: offsets, heartbeat, EndTxn
	requests     *prometheus.HistogramVec // the session client's Kafka requests, by request kind
}

// requestHook observes the session client's requests (a franz-go
// HookBrokerE2E): from when the client built a request to the end of its
// response, so queueing in the client counts as well as the broker's time.
// A stall that shows here is in Kafka or on the way to it; one that does not
// is in the runner or in client-side backoff.
type requestHook struct{ h *prometheus.HistogramVec }

func (k requestHook) OnBrokerE2E(_ kgo.BrokerMetadata, key int16, e kgo.BrokerE2E) {
	k.h.WithLabelValues(kmsg.NameForKey(key)).Observe((e.WriteWait + e.DurationE2E()).Seconds())
}

func newMetrics(name string, reg prometheus.Registerer) (*metrics, error) {
	cl := prometheus.Labels{"processor": name}
	m := &metrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ams_keyed_records_total",
			Help: "Input records processed in committed transactions.", ConstLabels: cl}, []string{"topic"}),
		outputs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ams_keyed_outputs_total",
			Help: "Output records in committed transactions.", ConstLabels: cl}, []string{"topic"}),
		txns: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ams_keyed_transactions_total",
			Help: "Transactions ended, by result (committed, aborted).", ConstLabels: cl}, []string{"result"}),
		batchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ams_keyed_batch_seconds",
			Help: "Time from a batch's poll to the end of its transaction.", ConstLabels: cl,
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		stateKeys: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ams_keyed_state_keys",
			Help: "Keys with state, per owned partition.", ConstLabels: cl}, []string{"partition"}),
		restoreSecs: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ams_keyed_restore_seconds",
			Help: "Duration of a partition's state restore from its changelog.", ConstLabels: cl,
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14)}),
		restoreRecs: prometheus.NewCounter(prometheus.CounterOpts{Name: "ams_keyed_restore_records_total",
			Help: "Changelog records read while restoring.", ConstLabels: cl}),
		timersFired: prometheus.NewCounter(prometheus.CounterOpts{Name: "ams_keyed_timers_fired_total",
			Help: "Timers fired in committed transactions.", ConstLabels: cl}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ams_keyed_lag",
			Help: "Records between the last polled offset and the high watermark, per input partition.", ConstLabels: cl}, []string{"topic", "partition"}),
		changelog: prometheus.NewCounter(prometheus.CounterOpts{Name: "ams_keyed_changelog_records_total",
			Help: "State changes written to the changelog in committed transactions.", ConstLabels: cl}),
		restoring: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ams_keyed_restoring_partitions",
			Help: "Assigned partitions whose state is being restored (not yet taking input).", ConstLabels: cl}),
		staleKeys: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ams_keyed_state_stale_keys",
			Help: "Keys of an owned partition whose state is still sealed under a previous key (KEK rotation: drop the previous KEK once 0 on every partition).", ConstLabels: cl}, []string{"partition"}),
		restoreSkipped: prometheus.NewCounter(prometheus.CounterOpts{Name: "ams_keyed_restore_skipped_total",
			Help: "Keys whose latest changelog record did not decode and was skipped by a restore (SkipCorruptState); each keeps its last good state.", ConstLabels: cl}),
		carried: prometheus.NewCounter(prometheus.CounterOpts{Name: "ams_keyed_carried_records_total",
			Help: "Input records that produced nothing and whose offsets were carried into the next transaction instead of an offsets-only one.", ConstLabels: cl}),
		hops: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ams_keyed_hop_seconds",
			Help: "Per-hop latency of input records in committed transactions, by hop: kafka_to_poll (record timestamp, i.e. when its producer " +
				"created it, to the batch's first poll), poll_to_commit (that poll to the end of the committing transaction), " +
				"kafka_to_commit (the sum: Kafka to processed, transaction commit included).",
			ConstLabels: cl, Buckets: hop.Buckets()}, []string{"hop"}),
	}
	m.phases = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ams_keyed_phase_seconds",
		Help: "Phases of one ended transaction, by phase: process (poll to every worker done), flush (to every produce " +
			"acknowledged), end (End: offset commit, heartbeat, EndTxn).",
		ConstLabels: cl, Buckets: hop.Buckets()}, []string{"phase"})
	m.requests = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ams_keyed_kafka_request_seconds",
		Help: "Kafka requests of the transactional session, by request kind (Produce, TxnOffsetCommit, Heartbeat, EndTxn, Fetch, ...): " +
			"from when the client built the request to the end of the response. A Fetch waits up to its max wait for data.",
		ConstLabels: cl, Buckets: hop.Buckets()}, []string{"request"})
	m.phaseProcess = m.phases.WithLabelValues("process")
	m.phaseFlush = m.phases.WithLabelValues("flush")
	m.phaseEnd = m.phases.WithLabelValues("end")
	m.hopPoll = m.hops.WithLabelValues("kafka_to_poll")
	m.hopCommit = m.hops.WithLabelValues("poll_to_commit")
	m.hopTotal = m.hops.WithLabelValues("kafka_to_commit")
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.records, m.outputs, m.txns, m.batchSeconds, m.stateKeys,
		m.restoreSecs, m.restoreRecs, m.timersFired, m.lag, m.changelog, m.restoring, m.hops, m.carried, m.staleKeys, m.restoreSkipped,
		m.phases, m.requests} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	return m, errors.Join(errs...)
}
