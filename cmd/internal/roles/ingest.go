package roles

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/ivms/ams/ingest"
	"github.com/ivms/ams/schemas"
)

// IngestOptions configure `ams ingest`: device frames and broker connection
// events from MQTT to Kafka (ams.uplink.raw).
type IngestOptions struct {
	Output
	Kafka              Kafka
	Log                Log
	MQTT               MQTT
	OpsAddr            string
	Instance           string // empty: host-pid
	ClientID           string // empty: {namespace client prefix}ingest-{host}
	ShareGroup         string
	ShareEvents        bool
	ConnectedFilter    string
	DisconnectedFilter string
	OwnClientPrefixes  string // comma-separated
	MaxPayload         int
	MaxInflight        int
	Queue              int
	UnsubscribeOnExit  bool
	MaxRecordBytes     int
	Linger             time.Duration
	DrainTimeout       time.Duration
}

// DefaultIngest returns the defaults of `ams ingest`.
func DefaultIngest() IngestOptions {
	return IngestOptions{
		Kafka: DefaultKafka(), Log: DefaultLog(), MQTT: DefaultMQTT(),
		OpsAddr:            ":9101",
		ShareGroup:         "ams",
		ShareEvents:        true,
		ConnectedFilter:    ingest.DefaultConnectedFilter,
		DisconnectedFilter: ingest.DefaultDisconnectedFilter,
		OwnClientPrefixes:  "ams-",
		MaxPayload:         256 << 10,
		MaxInflight:        10000,
		Queue:              ingest.DefaultQueueSize,
		MaxRecordBytes:     ingest.DefaultMaxRecordBytes,
		// 5ms, not less: at 1ms the closed-loop round trip of 50 cameras
		// doubled (p50 25 -> 62 ms; the processor's Kafka -> poll hop
		// 11 -> 36 ms), measured with deploy/bench/closed-loop.sh.
		Linger:       5 * time.Millisecond,
		DrainTimeout: 15 * time.Second,
	}
}

// Flags declares the flags of `ams ingest` on o's fields.
func (o *IngestOptions) Flags(fs *flag.FlagSet) {
	o.Kafka.Flags(fs)
	o.Log.Flags(fs)
	o.MQTT.Flags(fs)
	fs.StringVar(&o.OpsAddr, "ops-addr", o.OpsAddr, "listen address of /healthz, /readyz and /metrics (empty: off)")
	fs.StringVar(&o.Instance, "instance", o.Instance, "name of this ingest instance, written to every record (default host-pid)")
	fs.StringVar(&o.ClientID, "mqtt-client-id", o.ClientID, "MQTT client id; keep it stable across restarts so the broker keeps the session (default ams-ingest-{host}; ams-{namespace}-ingest-{host} with -namespace)")
	fs.StringVar(&o.ShareGroup, "mqtt-share-group", o.ShareGroup, "shared-subscription group of /ivms/pub/+, letters and digits (empty: plain subscription, every instance gets every frame)")
	fs.BoolVar(&o.ShareEvents, "mqtt-share-events", o.ShareEvents, "subscribe the connection-event filters through the shared group too")
	fs.StringVar(&o.ConnectedFilter, "event-connected-filter", o.ConnectedFilter, "topic filter of client connected events (two + levels: node, client id); empty: none")
	fs.StringVar(&o.DisconnectedFilter, "event-disconnected-filter", o.DisconnectedFilter, "topic filter of client disconnected events; empty: none")
	fs.StringVar(&o.OwnClientPrefixes, "own-client-prefixes", o.OwnClientPrefixes, "comma-separated client id prefixes of ams's own MQTT clients, whose connection events are skipped")
	fs.IntVar(&o.MaxPayload, "max-payload", o.MaxPayload, "largest frame accepted, in bytes; larger ones are rejected (oversize_payload)")
	fs.IntVar(&o.MaxInflight, "max-inflight", o.MaxInflight, "most messages read and not yet acknowledged; at the cap ingest stops reading (back-pressure)")
	fs.IntVar(&o.Queue, "mqtt-queue", o.Queue, "messages buffered between the MQTT client and the pipeline")
	fs.BoolVar(&o.UnsubscribeOnExit, "mqtt-unsubscribe-on-exit", o.UnsubscribeOnExit, "unsubscribe at shutdown (scale-in for good: the broker stops queueing for this client id)")
	fs.IntVar(&o.MaxRecordBytes, "kafka-max-record-bytes", o.MaxRecordBytes, "the producer's limit on one Kafka record batch (keep it at most the topics' max.message.bytes); -max-payload must fit in it with the record's other fields, checked at start; a larger record is rejected (too_large)")
	fs.DurationVar(&o.Linger, "kafka-linger", o.Linger, "producer linger: how long a batch waits to fill (each frame waits it, but 1ms made the round trip slower: fewer records per processor transaction; deploy/bench/closed-loop.sh, deploy/bench/README.md)")
	fs.DurationVar(&o.DrainTimeout, "drain-timeout", o.DrainTimeout, "at shutdown, how long to wait for records in flight before disconnecting")
}

// RunIngest runs ingest until ctx is done.
func RunIngest(ctx context.Context, o IngestOptions) error {
	e, err := newBridge("ingest", o.Output, o.Log, o.Kafka, o.MQTT)
	if err != nil {
		return err
	}
	if o.Instance == "" {
		o.Instance = instanceName()
	}
	if o.ClientID == "" {
		o.ClientID = e.ns.ClientIDPrefix + "ingest-" + hostname()
	}
	var events []ingest.EventFilter
	for _, f := range []struct{ filter, kind string }{
		{o.ConnectedFilter, schemas.UplinkConnected}, {o.DisconnectedFilter, schemas.UplinkDisconnected},
	} {
		if f.filter == "" {
			continue
		}
		ef, err := ingest.NewEventFilter(f.filter, f.kind)
		if err != nil {
			return err
		}
		events = append(events, ef)
	}
	if err := ingest.CheckLimits(o.MaxPayload, o.MaxRecordBytes, o.Instance); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	if o.ShareGroup != "" && strings.ContainsAny(o.ShareGroup, "/+#") {
		return fmt.Errorf("-mqtt-share-group %q: must not contain / + #", o.ShareGroup)
	}
	m := ingest.NewMetrics(e.ops.Registry)
	topics := o.Kafka.Names()
	out, err := ingest.NewKafkaOutput(ingest.KafkaConfig{
		Seeds:          o.Kafka.Seeds(),
		Topics:         []string{topics.UplinkRaw, topics.Rejects},
		Linger:         o.Linger,
		MaxBuffered:    o.MaxInflight + 1000,
		MaxRecordBytes: o.MaxRecordBytes,
		Opts:           e.kopts,
	})
	if err != nil {
		return err
	}
	in := ingest.NewMQTTInput(ingest.MQTTConfig{
		URL:                o.MQTT.URL,
		ClientID:           o.ClientID,
		Username:           o.MQTT.Username,
		Password:           e.mqttPassword,
		TLS:                e.mqttTLS,
		Group:              o.ShareGroup,
		ShareEvents:        o.ShareEvents,
		Events:             events,
		QueueSize:          o.Queue,
		UnsubscribeOnClose: o.UnsubscribeOnExit,
		KeepAlive:          o.MQTT.KeepAlive,
		ConnectTimeout:     o.MQTT.ConnectTimeout,
	}, e.log, m)
	conv := ingest.NewConverter(ingest.ConverterConfig{
		Names:             topics,
		IngestID:          o.Instance,
		MaxPayload:        o.MaxPayload,
		MaxRecordBytes:    o.MaxRecordBytes,
		Events:            events,
		OwnClientPrefixes: SplitList(o.OwnClientPrefixes),
	}, e.reg)
	p := ingest.NewPipeline(in, out, conv, ingest.Config{MaxInflight: o.MaxInflight, DrainTimeout: o.DrainTimeout}, e.log, m)
	e.ops.AddCheck("kafka", func(ctx context.Context) error { return out.Client().Ping(ctx) })
	e.ops.AddCheck("mqtt", func(context.Context) error { return in.Ready() })
	e.log.Info("ingest starting", "instance", o.Instance, "mqtt_url", o.MQTT.URL, "client_id", o.ClientID,
		"filters", in.Filters(), "uplink_topic", topics.UplinkRaw)
	return e.serve(ctx, o.OpsAddr, p.Run)
}
