package ingest

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ivms/ams/pkg/hop"
)

// Metrics are ingest's Prometheus metrics. Build them once per process with
// NewMetrics and share them between the input and the pipeline.
type Metrics struct {
	messages       *prometheus.CounterVec // by outcome
	rejects        *prometheus.CounterVec // by reason
	skipped        *prometheus.CounterVec // by reason
	acked          prometheus.Counter
	inflight       prometheus.Gauge
	produceSeconds prometheus.Histogram
	hopSeconds     *prometheus.HistogramVec // by hop
	produceErrors  prometheus.Counter
	mqttConnected  prometheus.Gauge
	mqttConnects   prometheus.Counter
	mqttLost       prometheus.Counter
	handlerBlocked prometheus.Counter
}

// NewMetrics registers ingest's metrics with reg (nil: a private registry).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ams_ingest_messages_total",
			Help: "MQTT messages read, by outcome: frame, connected, disconnected, reject, skip.",
		}, []string{"outcome"}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ams_ingest_rejects_total",
			Help: "Messages written to ams.rejects, by reason.",
		}, []string{"reason"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ams_ingest_events_skipped_total",
			Help: "Connection events not written because the client is not a device, by reason.",
		}, []string{"reason"}),
		acked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ams_ingest_acked_total",
			Help: "MQTT messages acknowledged to the broker (after Kafka acknowledged their record).",
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ams_ingest_inflight",
			Help: "MQTT messages read and not yet acknowledged.",
		}),
		produceSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ams_ingest_produce_seconds",
			Help:    "Time from handing a record to the Kafka producer to its acknowledgement.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		hopSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ams_ingest_hop_seconds",
			Help:    "Per-hop latency in ingest, by hop: mqtt_to_kafka_ack (MQTT message received to its Kafka record acknowledged).",
			Buckets: hop.Buckets(),
		}, []string{"hop"}),
		produceErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ams_ingest_produce_errors_total",
			Help: "Records Kafka failed (each stops ingest; nothing is acknowledged past it).",
		}),
		mqttConnected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ams_ingest_mqtt_connected",
			Help: "1 while the MQTT connection is up and subscribed.",
		}),
		mqttConnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ams_ingest_mqtt_connects_total",
			Help: "MQTT connections established (the first and every reconnect).",
		}),
		mqttLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ams_ingest_mqtt_connection_lost_total",
			Help: "MQTT connections lost.",
		}),
		handlerBlocked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ams_ingest_backpressure_total",
			Help: "Times the MQTT handler found the queue full and blocked (back-pressure on the broker).",
		}),
	}
	reg.MustRegister(m.messages, m.rejects, m.skipped, m.acked, m.inflight, m.produceSeconds,
		m.hopSeconds, m.produceErrors, m.mqttConnected, m.mqttConnects, m.mqttLost, m.handlerBlocked)
	return m
}
