package roles

import (
	"context"
	"flag"
	"time"

	"github.com/ivms/ams/pkg/kafkagroup"
	"github.com/ivms/ams/sinks/chsink"
)

// SinkClickHouseOptions configure `ams sink clickhouse`: the event topics
// copied into ClickHouse tables (history).
type SinkClickHouseOptions struct {
	Output
	Kafka           Kafka
	Log             Log
	ClickHouse      ClickHouse
	OpsAddr         string
	Group           string
	BatchRows       int
	BatchInterval   time.Duration
	RetryMax        time.Duration
	InstanceID      string
	SessionTimeout  time.Duration
	ShutdownTimeout time.Duration
}

// DefaultSinkClickHouse returns the defaults of `ams sink clickhouse`.
func DefaultSinkClickHouse() SinkClickHouseOptions {
	return SinkClickHouseOptions{
		Kafka: DefaultKafka(), Log: DefaultLog(), ClickHouse: DefaultClickHouse(),
		OpsAddr:         ":9104",
		Group:           "ams-sink-clickhouse",
		BatchRows:       10000,
		BatchInterval:   time.Second,
		RetryMax:        5 * time.Second,
		SessionTimeout:  kafkagroup.DefaultSessionTimeout,
		ShutdownTimeout: 10 * time.Second,
	}
}

// Flags declares the flags of `ams sink clickhouse` on o's fields.
func (o *SinkClickHouseOptions) Flags(fs *flag.FlagSet) {
	o.Kafka.Flags(fs)
	o.Log.Flags(fs)
	o.ClickHouse.Flags(fs)
	o.ClickHouse.ClusterFlag(fs, "ClickHouse cluster the tables were migrated for (ams migrate -clickhouse-cluster): inserts into its Distributed tables return once written to a replica of each shard; empty: one server")
	fs.StringVar(&o.OpsAddr, "ops-addr", o.OpsAddr, "listen address of /healthz, /readyz and /metrics (empty: off)")
	fs.StringVar(&o.Group, "sink-group", o.Group, "Kafka consumer group of the ClickHouse sink instances")
	fs.IntVar(&o.BatchRows, "batch-rows", o.BatchRows, "insert when this many rows are buffered")
	fs.DurationVar(&o.BatchInterval, "batch-interval", o.BatchInterval, "insert at the latest this long after the first buffered record")
	fs.DurationVar(&o.RetryMax, "retry-max", o.RetryMax, "longest backoff between failed inserts (they are retried forever)")
	instanceIDFlag(fs, &o.InstanceID, "")
	sessionTimeoutFlag(fs, &o.SessionTimeout)
	fs.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", o.ShutdownTimeout, "at shutdown, how long the last insert may take")
}

// RunSinkClickHouse runs the ClickHouse sink until ctx is done.
func RunSinkClickHouse(ctx context.Context, o SinkClickHouseOptions) error {
	e, _, kopts, err := newKafkaEnv("sink-clickhouse", o.Output, o.Log, o.Kafka)
	if err != nil {
		return err
	}
	cho, err := o.ClickHouse.Options()
	if err != nil {
		return err
	}
	s, err := chsink.New(chsink.Config{
		Seeds:           o.Kafka.Seeds(),
		Names:           o.Kafka.Names(),
		Group:           o.Group,
		ClickHouse:      cho,
		BatchRows:       o.BatchRows,
		BatchInterval:   o.BatchInterval,
		RetryMax:        o.RetryMax,
		ShutdownTimeout: o.ShutdownTimeout,
		SessionTimeout:  o.SessionTimeout,
		ExtraKafkaOpts:  kopts,
		InstanceID:      o.InstanceID,
		Schemas:         e.reg,
		Log:             e.log,
		Metrics:         e.ops.Registry,
	})
	if err != nil {
		return err
	}
	e.ops.AddCheck("clickhouse", s.Ready)
	e.log.Info("clickhouse sink starting", "clickhouse", o.ClickHouse.Addr, "database", o.ClickHouse.Database,
		"cluster", o.ClickHouse.Cluster, "group", o.Group, "clickhouse_tls", cho.TLS != nil)
	return e.serve(ctx, o.OpsAddr, s.Run)
}
