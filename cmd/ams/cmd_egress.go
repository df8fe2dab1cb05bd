package main

import (
	"context"
	"flag"
	"io"
	"time"

	"github.com/ivms/ams/pkg/kafkagroup"
	"github.com/ivms/ams/pkg/opshttp"
	"github.com/ivms/ams/schemas"
	"github.com/ivms/ams/sinks/egress"
)

func egressCommand() command {
	return command{
		name:    "egress",
		summary: "publish downlinks from Kafka (ams.downlink) to the devices over MQTT, with receipts",
		flags: func(fs *flag.FlagSet) func(context.Context, io.Writer, io.Writer) error {
			var k kafkaFlags
			var lf logFlags
			var mf mqttFlags
			k.register(fs)
			lf.register(fs)
			mf.register(fs)
			opsAddr := fs.String("ops-addr", ":9102", "listen address of /healthz, /readyz and /metrics (empty: off)")
			id := fs.String("egress-id", "", "name of this egress instance: MQTT client ids are {egress-id}-{i}, receipts carry it (default ams-egress-{host}-{pid}; ams-{namespace}-egress-... with -namespace)")
			group := fs.String("egress-group", "ams-egress", "Kafka consumer group of the egress instances")
			conns := fs.Int("mqtt-connections", 4, "MQTT connections in the pool; a device is pinned to one (hash of sn)")
			window := fs.Int("window", 256, "most frames of one partition published and not yet acknowledged")
			maxBuffered := fs.Int("max-buffered", 10000, "most frames fetched and not yet done, over all partitions")
			pubTimeout := fs.Duration("publish-timeout", 10*time.Second, "wait for a PUBACK; past it the connection is rebuilt and the frame published again")
			drain := fs.Duration("drain-timeout", 15*time.Second, "at revocation and shutdown, how long to wait for frames in flight")
			commitEvery := fs.Duration("commit-interval", time.Second, "how often committable offsets are committed")
			instanceID := fs.String("instance-id", "", "this instance's stable name (the pod name), unique among live instances: its Kafka group.instance.id (static membership: restarted after a crash, it takes its partitions back at once); empty: dynamic membership")
			oldInstanceID := fs.String("kafka-instance-id", "", "deprecated name of -instance-id")
			session := fs.Duration("kafka-session-timeout", kafkagroup.DefaultSessionTimeout, "Kafka group session timeout: how long the partitions of a crashed instance that is not restarted with its -instance-id wait before they move")
			startAtEnd := fs.Bool("start-at-end", false, "a new consumer group starts at the end of ams.downlink instead of the start")
			return func(ctx context.Context, stdout, stderr io.Writer) error {
				log, err := lf.logger(stderr)
				if err != nil {
					return err
				}
				if *instanceID == "" {
					*instanceID = *oldInstanceID
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
				if *id == "" {
					*id = nsNames.ClientIDPrefix + "egress-" + instanceName()
				}
				reg, err := schemas.NewRegistry()
				if err != nil {
					return err
				}
				ops := opshttp.New(log)
				e, err := egress.New(egress.Config{
					Seeds:          k.seeds(),
					Names:          k.names(),
					Group:          *group,
					EgressID:       *id,
					Window:         *window,
					MaxBuffered:    *maxBuffered,
					DrainTimeout:   *drain,
					CommitInterval: *commitEvery,
					InstanceID:     *instanceID,
					SessionTimeout: *session,
					StartAtEnd:     *startAtEnd,
					KafkaOpts:      kopts,
					MQTT: egress.MQTTConfig{
						URL:            mf.url,
						Username:       mf.username,
						Password:       mqttPassword,
						TLS:            mqttTLS,
						ClientIDPrefix: *id,
						Connections:    *conns,
						KeepAlive:      mf.keepAlive,
						ConnectTimeout: mf.connectTimeout,
						PublishTimeout: *pubTimeout,
					},
					Schemas: reg,
					Log:     log,
					Metrics: ops.Registry,
				})
				if err != nil {
					return err
				}
				ops.AddCheck("kafka+mqtt", e.Ready)
				log.Info("egress starting", "egress_id", *id, "mqtt_url", mf.url, "group", *group, "topic", k.names().Downlink)
				return runWithOps(ctx, ops, *opsAddr, e.Run)
			}
		},
	}
}
