package egress

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ivms/ams/pkg/hop"
)

// Metrics are egress's Prometheus metrics.
type Metrics struct {
	frames         *prometheus.CounterVec // by result: published, rejected
	rejects        *prometheus.CounterVec // by reason
	republished    prometheus.Counter
	receipts       prometheus.Counter
	inflight       prometheus.Gauge
	buffered       prometheus.Gauge
	publishSeconds prometheus.Histogram
	mqttUp         prometheus.Gauge
	mqttConnects   prometheus.Counter
	partitions     prometheus.Gauge
	lag            *prometheus.GaugeVec     // by topic, partition
	hops           *prometheus.HistogramVec // per-hop latency, by hop
	hopToPublish   prometheus.Observer      // downlink record timestamp -> PUBLISH
	hopPuback      prometheus.Observer      // PUBLISH -> PUBACK
	hopReceipt     prometheus.Observer      // PUBACK -> receipt acknowledged by Kafka
}

// NewMetrics registers egress's metrics with reg (nil: a private registry).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ams_egress_frames_total",
			Help: "Downlinks handled, by result: published (PUBACK received), rejected, expired_before_publish, delivery_unknown, already_settled (published by an earlier owner), scan_failed (reading earlier receipts failed; retried).",
		}, []string{"result"}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ams_egress_rejects_total",
			Help: "Downlinks refused and written to ams.rejects, by reason.",
		}, []string{"reason"}),
		republished: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ams_egress_republished_total",
			Help: "Publishes retried after a failure (connection lost, PUBACK timeout).",
		}),
		receipts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ams_egress_receipts_total",
			Help: "Receipts written to ams.downlink.receipts.",
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ams_egress_inflight",
			Help: "Downlinks published and waiting for their PUBACK.",
		}),
		buffered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ams_egress_buffered",
			Help: "Downlinks fetched and not yet done (queued or in flight).",
		}),
		publishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ams_egress_publish_seconds",
			Help:    "Time from PUBLISH to PUBACK.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16),
		}),
		mqttUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ams_egress_mqtt_connections_up",
			Help: "Pooled MQTT connections currently up.",
		}),
		mqttConnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ams_egress_mqtt_connects_total",
			Help: "MQTT connections established (first and reconnects).",
		}),
		partitions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ams_egress_partitions",
			Help: "Partitions of ams.downlink assigned to this instance.",
		}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ams_egress_lag",
			Help: "Records behind the partition's high watermark at the last fetch.",
		}, []string{"topic", "partition"}),
		hops: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ams_egress_hop_seconds",
			Help: "Per-hop latency of published downlinks, by hop: kafka_to_publish (downlink record timestamp, i.e. when the processor " +
				"produced it in its transaction, to the PUBLISH: includes the transaction commit and the read-committed fetch), " +
				"publish_to_puback (PUBLISH to PUBACK), puback_to_receipt (PUBACK to the receipt acknowledged by Kafka).",
			Buckets: hop.Buckets(),
		}, []string{"hop"}),
	}
	m.hopToPublish = m.hops.WithLabelValues("kafka_to_publish")
	m.hopPuback = m.hops.WithLabelValues("publish_to_puback")
	m.hopReceipt = m.hops.WithLabelValues("puback_to_receipt")
	reg.MustRegister(m.hops, m.frames, m.rejects, m.republished, m.receipts, m.inflight, m.buffered,
		m.publishSeconds, m.mqttUp, m.mqttConnects, m.partitions, m.lag)
	return m
}
