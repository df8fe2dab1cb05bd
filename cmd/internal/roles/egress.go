package roles

import (
	"context"
	"flag"
	"time"

	"github.com/ivms/ams/pkg/kafkagroup"
	"github.com/ivms/ams/sinks/egress"
)

// EgressOptions configure `ams egress`: downlinks from Kafka (ams.downlink)
// to the devices over MQTT, with receipts.
type EgressOptions struct {
	Output
	Kafka          Kafka
	Log            Log
	MQTT           MQTT
	OpsAddr        string
	EgressID       string // empty: {namespace client prefix}egress-{host}-{pid}
	Group          string
	Connections    int
	Window         int
	MaxBuffered    int
	PublishTimeout time.Duration
	DrainTimeout   time.Duration
	CommitInterval time.Duration
	InstanceID     string
	// KafkaInstanceID is the deprecated name of InstanceID (used when InstanceID is empty).
	KafkaInstanceID string
	SessionTimeout  time.Duration
	StartAtEnd      bool
}

// DefaultEgress returns the defaults of `ams egress`.
func DefaultEgress() EgressOptions {
	return EgressOptions{
		Kafka: DefaultKafka(), Log: DefaultLog(), MQTT: DefaultMQTT(),
		OpsAddr:        ":9102",
		Group:          "ams-egress",
		Connections:    4,
		Window:         256,
		MaxBuffered:    10000,
		PublishTimeout: egress.DefaultPublishTimeout,
		DrainTimeout:   15 * time.Second,
		CommitInterval: time.Second,
		SessionTimeout: kafkagroup.DefaultSessionTimeout,
	}
}

// Flags declares the flags of `ams egress` on o's fields.
func (o *EgressOptions) Flags(fs *flag.FlagSet) {
	o.Kafka.Flags(fs)
	o.Log.Flags(fs)
	o.MQTT.Flags(fs)
	fs.StringVar(&o.OpsAddr, "ops-addr", o.OpsAddr, "listen address of /healthz, /readyz and /metrics (empty: off)")
	fs.StringVar(&o.EgressID, "egress-id", o.EgressID, "name of this egress instance: MQTT client ids are {egress-id}-{i}, receipts carry it (default ams-egress-{host}-{pid}; ams-{namespace}-egress-... with -namespace)")
	fs.StringVar(&o.Group, "egress-group", o.Group, "Kafka consumer group of the egress instances")
	fs.IntVar(&o.Connections, "mqtt-connections", o.Connections, "MQTT connections in the pool; a device is pinned to one (hash of sn)")
	fs.IntVar(&o.Window, "window", o.Window, "most frames of one partition published and not yet acknowledged")
	fs.IntVar(&o.MaxBuffered, "max-buffered", o.MaxBuffered, "most frames fetched and not yet done, over all partitions")
	fs.DurationVar(&o.PublishTimeout, "publish-timeout", o.PublishTimeout, "wait for a PUBACK; past it the connection is rebuilt and the frame published again")
	fs.DurationVar(&o.DrainTimeout, "drain-timeout", o.DrainTimeout, "at revocation and shutdown, how long to wait for frames in flight")
	fs.DurationVar(&o.CommitInterval, "commit-interval", o.CommitInterval, "how often committable offsets are committed")
	instanceIDFlag(fs, &o.InstanceID, "")
	fs.StringVar(&o.KafkaInstanceID, "kafka-instance-id", o.KafkaInstanceID, "deprecated name of -instance-id")
	sessionTimeoutFlag(fs, &o.SessionTimeout)
	fs.BoolVar(&o.StartAtEnd, "start-at-end", o.StartAtEnd, "a new consumer group starts at the end of ams.downlink instead of the start")
}

// instanceIDFlag declares -instance-id of a consumer-group role.
func instanceIDFlag(fs *flag.FlagSet, p *string, more string) {
	fs.StringVar(p, "instance-id", *p, "this instance's stable name (the pod name), unique among live instances: its Kafka group.instance.id (static membership: restarted after a crash, it takes its partitions back at once)"+more+"; empty: dynamic membership")
}

// sessionTimeoutFlag declares -kafka-session-timeout of a consumer-group role.
func sessionTimeoutFlag(fs *flag.FlagSet, p *time.Duration) {
	fs.DurationVar(p, "kafka-session-timeout", *p, "Kafka group session timeout: how long the partitions of a crashed instance that is not restarted with its -instance-id wait before they move")
}

// RunEgress runs egress until ctx is done.
func RunEgress(ctx context.Context, o EgressOptions) error {
	if o.InstanceID == "" {
		o.InstanceID = o.KafkaInstanceID
	}
	e, err := newBridge("egress", o.Output, o.Log, o.Kafka, o.MQTT)
	if err != nil {
		return err
	}
	if o.EgressID == "" {
		o.EgressID = e.ns.ClientIDPrefix + "egress-" + instanceName()
	}
	eg, err := egress.New(egress.Config{
		Seeds:          o.Kafka.Seeds(),
		Names:          o.Kafka.Names(),
		Group:          o.Group,
		EgressID:       o.EgressID,
		Window:         o.Window,
		MaxBuffered:    o.MaxBuffered,
		DrainTimeout:   o.DrainTimeout,
		CommitInterval: o.CommitInterval,
		InstanceID:     o.InstanceID,
		SessionTimeout: o.SessionTimeout,
		StartAtEnd:     o.StartAtEnd,
		KafkaOpts:      e.kopts,
		MQTT: egress.MQTTConfig{
			URL:            o.MQTT.URL,
			Username:       o.MQTT.Username,
			Password:       e.mqttPassword,
			TLS:            e.mqttTLS,
			ClientIDPrefix: o.EgressID,
			Connections:    o.Connections,
			KeepAlive:      o.MQTT.KeepAlive,
			ConnectTimeout: o.MQTT.ConnectTimeout,
			PublishTimeout: o.PublishTimeout,
		},
		Schemas: e.reg,
		Log:     e.log,
		Metrics: e.ops.Registry,
	})
	if err != nil {
		return err
	}
	e.ops.AddCheck("kafka+mqtt", eg.Ready)
	e.log.Info("egress starting", "egress_id", o.EgressID, "mqtt_url", o.MQTT.URL, "group", o.Group, "topic", o.Kafka.Names().Downlink)
	return e.serve(ctx, o.OpsAddr, eg.Run)
}
