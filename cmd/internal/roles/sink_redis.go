package roles

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/ivms/ams/pkg/kafkagroup"
	"github.com/ivms/ams/sinks/redissink"
)

// SinkRedisOptions configure `ams sink redis`: presence, devices and command
// states projected into Redis (current state).
type SinkRedisOptions struct {
	Output
	Kafka          Kafka
	Log            Log
	Redis          Redis
	OpsAddr        string
	Group          string
	MaxPoll        int
	InstanceID     string
	SessionTimeout time.Duration
}

// DefaultSinkRedis returns the defaults of `ams sink redis`.
func DefaultSinkRedis() SinkRedisOptions {
	return SinkRedisOptions{
		Kafka: DefaultKafka(), Log: DefaultLog(), Redis: DefaultRedis(),
		OpsAddr:        ":9105",
		Group:          "ams-sink-redis",
		MaxPoll:        1000,
		SessionTimeout: kafkagroup.DefaultSessionTimeout,
	}
}

// Flags declares the flags of `ams sink redis` on o's fields.
func (o *SinkRedisOptions) Flags(fs *flag.FlagSet) {
	o.Kafka.Flags(fs)
	o.Log.Flags(fs)
	o.Redis.Flags(fs)
	fs.StringVar(&o.OpsAddr, "ops-addr", o.OpsAddr, "listen address of /healthz, /readyz and /metrics (empty: off)")
	fs.StringVar(&o.Group, "sink-group", o.Group, "Kafka consumer group of the Redis sink instances (a new group replays the whole log)")
	fs.IntVar(&o.MaxPoll, "max-poll", o.MaxPoll, "most records applied to Redis in one pipeline")
	instanceIDFlag(fs, &o.InstanceID, "")
	sessionTimeoutFlag(fs, &o.SessionTimeout)
}

// RunSinkRedis runs the Redis sink until ctx is done.
func RunSinkRedis(ctx context.Context, o SinkRedisOptions) error {
	e, _, kopts, err := newKafkaEnv("sink-redis", o.Output, o.Log, o.Kafka)
	if err != nil {
		return err
	}
	rdb, err := o.Redis.open(e.log)
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := e.ops.Registry.Register(redissink.NewFleetCollector(rdb, o.Redis.Keys())); err != nil {
		return fmt.Errorf("fleet gauges: %w", err)
	}
	proj := redissink.NewProjector(rdb, o.Redis.Keys(), o.Kafka.Names(), e.reg)
	s, err := redissink.NewSink(redissink.SinkConfig{Seeds: o.Kafka.Seeds(), Group: o.Group, MaxPoll: o.MaxPoll,
		InstanceID: o.InstanceID, SessionTimeout: o.SessionTimeout, KafkaOpts: kopts,
		Projector: proj, Redis: rdb, Log: e.log, Metrics: e.ops.Registry})
	if err != nil {
		return fmt.Errorf("redis sink: %w", err)
	}
	e.ops.AddCheck("kafka+redis", s.Ready)
	e.log.Info("redis sink starting", "redis", o.Redis.Addr, "prefix", o.Redis.Prefix, "group", o.Group)
	return e.serve(ctx, o.OpsAddr, s.Run)
}
