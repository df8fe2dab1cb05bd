package chsink

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the ClickHouse sink's Prometheus metrics.
type Metrics struct {
	rows         *prometheus.CounterVec   // by table
	batchSeconds *prometheus.HistogramVec // by table
	failures     *prometheus.CounterVec   // by table
	splits       *prometheus.CounterVec   // by table
	rejects      *prometheus.CounterVec   // by reason
	lag          *prometheus.GaugeVec     // by topic, partition
	buffered     prometheus.Gauge
	commits      prometheus.Counter
	commitErrors prometheus.Counter
}

// NewMetrics registers the sink's metrics with reg (nil: a private registry).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ams_sink_clickhouse_rows_inserted_total",
			Help: "Rows inserted into ClickHouse, by table (a replayed row counts again).",
		}, []string{"table"}),
		batchSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ams_sink_clickhouse_batch_seconds",
			Help:    "Time of one successful batch insert, by table.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}, []string{"table"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ams_sink_clickhouse_insert_failures_total",
			Help: "Batch inserts that failed and were retried, by table.",
		}, []string{"table"}),
		splits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ams_sink_clickhouse_batch_splits_total",
			Help: "Inserts refused for their data and split in halves to isolate the refused record, by table.",
		}, []string{"table"}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ams_sink_clickhouse_rejects_total",
			Help: "Records the sink could not convert or ClickHouse refused for their data, written to ams.rejects, by reason.",
		}, []string{"reason"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ams_sink_clickhouse_lag",
			Help: "Records behind the partition's high watermark at the last fetch.",
		}, []string{"topic", "partition"}),
		buffered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ams_sink_clickhouse_buffered_rows",
			Help: "Rows polled and not yet inserted.",
		}),
		commits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ams_sink_clickhouse_commits_total",
			Help: "Offset commits after a flushed batch.",
		}),
		commitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ams_sink_clickhouse_commit_errors_total",
			Help: "Offset commits that failed (the batch will be inserted again: harmless, deduplicated).",
		}),
	}
	reg.MustRegister(m.rows, m.batchSeconds, m.failures, m.splits, m.rejects, m.lag, m.buffered, m.commits, m.commitErrors)
	return m
}
