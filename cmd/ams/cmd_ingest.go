package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ivms/ams/ingest"
	"github.com/ivms/ams/pkg/opshttp"
	"github.com/ivms/ams/schemas"
)

func ingestCommand() command {
	return command{
		name:    "ingest",
		summary: "move device frames and broker connection events from MQTT to Kafka (ams.uplink.raw)",
		flags: func(fs *flag.FlagSet) func(context.Context, io.Writer, io.Writer) error {
			var k kafkaFlags
			var lf logFlags
			var mf mqttFlags
			k.register(fs)
			lf.register(fs)
			mf.register(fs)
			opsAddr := fs.String("ops-addr", ":9101", "listen address of /healthz, /readyz and /metrics (empty: off)")
			instance := fs.String("instance", "", "name of this ingest instance, written to every record (default host-pid)")
			clientID := fs.String("mqtt-client-id", "", "MQTT client id; keep it stable across restarts so the broker keeps the session (default ams-ingest-{host}; ams-{namespace}-ingest-{host} with -namespace)")
			group := fs.String("mqtt-share-group", "ams", "shared-subscription group of /ivms/pub/+, letters and digits (empty: plain subscription, every instance gets every frame)")
			shareEvents := fs.Bool("mqtt-share-events", true, "subscribe the connection-event filters through the shared group too")
			connFilter := fs.String("event-connected-filter", ingest.DefaultConnectedFilter, "topic filter of client connected events (two + levels: node, client id); empty: none")
			discFilter := fs.String("event-disconnected-filter", ingest.DefaultDisconnectedFilter, "topic filter of client disconnected events; empty: none")
			ownPrefixes := fs.String("own-client-prefixes", "ams-", "comma-separated client id prefixes of ams's own MQTT clients, whose connection events are skipped")
			maxPayload := fs.Int("max-payload", 256<<10, "largest frame accepted, in bytes; larger ones are rejected (oversize_payload)")
			maxInflight := fs.Int("max-inflight", 10000, "most messages read and not yet acknowledged; at the cap ingest stops reading (back-pressure)")
			queue := fs.Int("mqtt-queue", 1024, "messages buffered between the MQTT client and the pipeline")
			unsub := fs.Bool("mqtt-unsubscribe-on-exit", false, "unsubscribe at shutdown (scale-in for good: the broker stops queueing for this client id)")
			maxRecord := fs.Int("kafka-max-record-bytes", ingest.DefaultMaxRecordBytes, "the producer's limit on one Kafka record batch (keep it at most the topics' max.message.bytes); -max-payload must fit in it with the record's other fields, checked at start; a larger record is rejected (too_large)")
			linger := fs.Duration("kafka-linger", time.Millisecond, "producer linger: how long a batch waits to fill (each heartbeat waits it; under load records also batch behind the requests in flight)")
			drain := fs.Duration("drain-timeout", 15*time.Second, "at shutdown, how long to wait for records in flight before disconnecting")
			return func(ctx context.Context, stdout, stderr io.Writer) error {
				log, err := lf.logger(stderr)
				if err != nil {
					return err
				}
				nsNames, err := applyNamespace(fs)
				if err != nil {
					return err
				}
				mqttPassword, mqttTLS, err := mf.connection()
				if err != nil {
					return err
				}
				kopts, err := k.opts()
				if err != nil {
					return err
				}
				k.logSecurity(log)
				mf.logSecurity(log, mqttTLS)
				if *instance == "" {
					*instance = instanceName()
				}
				if *clientID == "" {
					*clientID = nsNames.ClientIDPrefix + "ingest-" + hostname()
				}
				var events []ingest.EventFilter
				for _, f := range []struct{ filter, kind string }{
					{*connFilter, schemas.UplinkConnected}, {*discFilter, schemas.UplinkDisconnected},
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
				if err := ingest.CheckLimits(*maxPayload, *maxRecord, *instance); err != nil {
					return fmt.Errorf("configuration: %w", err)
				}
				if *group != "" && strings.ContainsAny(*group, "/+#") {
					return fmt.Errorf("-mqtt-share-group %q: must not contain / + #", *group)
				}
				reg, err := schemas.NewRegistry()
				if err != nil {
					return err
				}
				ops := opshttp.New(log)
				if err := ops.ExportReady("ingest"); err != nil {
					return err
				}
				m := ingest.NewMetrics(ops.Registry)
				names := k.names()
				out, err := ingest.NewKafkaOutput(ingest.KafkaConfig{
					Seeds:          k.seeds(),
					Topics:         []string{names.UplinkRaw, names.Rejects},
					Linger:         *linger,
					MaxBuffered:    *maxInflight + 1000,
					MaxRecordBytes: *maxRecord,
					Opts:           kopts,
				})
				if err != nil {
					return err
				}
				in := ingest.NewMQTTInput(ingest.MQTTConfig{
					URL:                mf.url,
					ClientID:           *clientID,
					Username:           mf.username,
					Password:           mqttPassword,
					TLS:                mqttTLS,
					Group:              *group,
					ShareEvents:        *shareEvents,
					Events:             events,
					QueueSize:          *queue,
					UnsubscribeOnClose: *unsub,
					KeepAlive:          mf.keepAlive,
					ConnectTimeout:     mf.connectTimeout,
				}, log, m)
				conv := ingest.NewConverter(ingest.ConverterConfig{
					Names:             names,
					IngestID:          *instance,
					MaxPayload:        *maxPayload,
					MaxRecordBytes:    *maxRecord,
					Events:            events,
					OwnClientPrefixes: splitList(*ownPrefixes),
				}, reg)
				p := ingest.NewPipeline(in, out, conv, ingest.Config{MaxInflight: *maxInflight, DrainTimeout: *drain}, log, m)
				ops.AddCheck("kafka", func(ctx context.Context) error { return out.Client().Ping(ctx) })
				ops.AddCheck("mqtt", func(context.Context) error { return in.Ready() })

				log.Info("ingest starting", "instance", *instance, "mqtt_url", mf.url, "client_id", *clientID,
					"filters", in.Filters(), "uplink_topic", names.UplinkRaw)
				return runWithOps(ctx, ops, *opsAddr, p.Run)
			}
		},
	}
}
