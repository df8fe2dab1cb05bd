package redissink

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/kafkaconsume"
	"github.com/ivms/ams/schemas"
)

// Metrics of the Redis sink.
type Metrics struct {
	Records *prometheus.CounterVec // by topic and outcome: consumed, rejected (undecodable or refused for its data)
	Applied prometheus.Counter     // records that changed the state (the others were duplicates or older)
	Errors  prometheus.Counter     // Redis failures (each retried)
	Batch   prometheus.Histogram   // seconds to apply one polled batch
	Lag     *prometheus.GaugeVec   // records behind the high watermark, by topic and partition
}

// NewMetrics registers the sink's metrics with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Records: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ams_redis_sink_records_total",
			Help: "records consumed by the Redis sink, by topic and outcome (consumed, rejected)"}, []string{"topic", "outcome"}),
		Applied: prometheus.NewCounter(prometheus.CounterOpts{Name: "ams_redis_sink_applied_total",
			Help: "records that changed the Redis state (the rest were replays or older than the state)"}),
		Errors: prometheus.NewCounter(prometheus.CounterOpts{Name: "ams_redis_sink_errors_total",
			Help: "Redis failures of the Redis sink (the batch is retried)"}),
		Batch: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ams_redis_sink_batch_seconds",
			Help: "time to apply one polled batch to Redis", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		Lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ams_redis_sink_lag",
			Help: "records behind the partition's high watermark at the last fetch"}, []string{"topic", "partition"}),
	}
	if reg != nil {
		reg.MustRegister(m.Records, m.Applied, m.Errors, m.Batch, m.Lag)
	}
	return m
}

// SinkConfig configures a Sink.
type SinkConfig struct {
	Seeds []string
	// Group is the Kafka consumer group.
	Group string
	// MaxPoll is the most records applied in one batch.
	MaxPoll int
	// InstanceID makes the sink a static member of its group
	// (group.instance.id): a restart with the same id within SessionTimeout
	// takes its partitions back at once, without a rebalance. It must be
	// stable across restarts and unique among live instances (the pod name).
	// Empty: dynamic membership.
	InstanceID string
	// SessionTimeout of the group member; 0 keeps franz-go's default (45 s).
	SessionTimeout time.Duration
	// KafkaOpts are applied after the defaults.
	KafkaOpts []kgo.Opt
	// Projector applies the records (required).
	Projector *Projector
	// Redis is the client the projector writes with (Ready pings it).
	Redis goredis.UniversalClient
	// Log (nil: discarded) and Metrics, the registerer of the sink's
	// metrics (nil: not registered).
	Log     *slog.Logger
	Metrics prometheus.Registerer
}

// Sink consumes the projected topics (read-committed, in a consumer group)
// and applies them with a Projector, in the loop of pkg/kafkaconsume.
//
// Delivery: at-least-once. Offsets are committed only after the Redis writes
// of every record up to them succeeded; a Redis failure is retried (with
// backoff) until it succeeds or the sink stops, and a crash re-applies the
// uncommitted suffix, which the idempotent scripts make harmless. A record
// that cannot be decoded, or that Redis refuses for its data (WRONGTYPE, a
// script error: see DataError), is not retried: it goes to ams.rejects
// (stage SINK, with its reason) before the offsets past it are committed,
// and the sink moves on. Outages (connection refused, timeouts, LOADING)
// are retried forever with backoff.
// A group that has no committed offsets starts at the beginning of every
// topic, so a new group and an empty key prefix rebuild the whole state.
type Sink struct {
	cfg  SinkConfig
	proj *Projector
	enc  Codec
	rdb  goredis.UniversalClient
	cons *kafkaconsume.Consumer
	cl   *kgo.Client // set by Run, for the rejects
	log  *slog.Logger
	m    *Metrics

	polled   int64 // records applied and not yet committed
	consumed atomic.Int64
}

// NewSink returns a sink; it does no I/O. Run starts it.
func NewSink(cfg SinkConfig) (*Sink, error) {
	if cfg.Projector == nil || cfg.Redis == nil {
		return nil, errors.New("redis sink: no projector or Redis client")
	}
	if cfg.MaxPoll <= 0 {
		cfg.MaxPoll = 1000
	}
	log := cmp.Or(cfg.Log, slog.New(slog.DiscardHandler))
	m := NewMetrics(cfg.Metrics)
	cons, err := kafkaconsume.New(kafkaconsume.Config{
		Name:           "redis sink",
		Seeds:          cfg.Seeds,
		Group:          cfg.Group,
		Topics:         cfg.Projector.Topics(),
		InstanceID:     cfg.InstanceID,
		SessionTimeout: cfg.SessionTimeout,
		Opts:           []kgo.Opt{kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll()},
		KafkaOpts:      cfg.KafkaOpts,
		Lag:            m.Lag,
		Log:            log,
	})
	if err != nil {
		return nil, err
	}
	return &Sink{cfg: cfg, proj: cfg.Projector, enc: cfg.Projector.codec, rdb: cfg.Redis, cons: cons, log: log, m: m}, nil
}

// Consumed is how many records the sink has applied to Redis or skipped
// (for tests and progress reports).
func (s *Sink) Consumed() int64 { return s.consumed.Load() }

// Ready reports whether Kafka and Redis answer.
func (s *Sink) Ready(ctx context.Context) error {
	if err := s.cons.Ping(ctx); err != nil {
		return err
	}
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return nil
}

// Run loads the projector's scripts, consumes until ctx is done, then
// commits what was applied and closes the Kafka client. It returns nil on
// a clean stop.
func (s *Sink) Run(ctx context.Context) error {
	return s.cons.Run(ctx, kafkaconsume.Handler{
		Start: func(ctx context.Context, cl *kgo.Client) error {
			s.cl = cl
			if err := s.proj.Load(ctx); err != nil {
				return err
			}
			s.log.Info("redis sink running", "group", s.cfg.Group, "topics", s.proj.Topics(), "prefix", s.proj.keys.Prefix)
			return nil
		},
		Limit: func(context.Context) (int, time.Duration) { return s.cfg.MaxPoll, 0 },
		Handle: func(ctx context.Context, fs kgo.Fetches) (bool, error) {
			recs := fs.Records()
			if len(recs) == 0 {
				return false, nil
			}
			if err := s.apply(ctx, recs); err != nil {
				return false, err
			}
			s.polled = int64(len(recs))
			return true, nil // committed even when ctx is done (the records are applied)
		},
		Committed: func(error) { s.consumed.Add(s.polled); s.polled = 0 },
	})
}

// apply applies one batch, retrying Redis failures with backoff until ctx
// is done, then produces the rejects of the records it could not apply
// (also retried until they are written).
func (s *Sink) apply(ctx context.Context, recs []*kgo.Record) error {
	var backoff kafkaconsume.Backoff
	wait := func(what string, err error) error {
		s.m.Errors.Inc()
		d := backoff.Next()
		s.log.Warn("redis sink: "+what+" failed; retrying", "records", len(recs), "err", err, "backoff", d)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
		return nil
	}
	for {
		start := time.Now()
		applied, skipped, err := s.proj.Apply(ctx, recs)
		if err != nil {
			if werr := wait("apply", err); werr != nil {
				return werr
			}
			continue
		}
		s.m.Batch.Observe(time.Since(start).Seconds())
		byTopic := map[string]int{}
		for _, r := range recs {
			byTopic[r.Topic]++
		}
		rejects := make([]*kgo.Record, 0, len(skipped))
		for _, se := range skipped {
			byTopic[se.Topic]--
			s.m.Records.WithLabelValues(se.Topic, "rejected").Inc()
			s.log.Warn("redis sink: record rejected", "topic", se.Topic, "offset", se.Offset, "reason", se.Reason, "err", se.Err)
			if rec, err := s.rejectRecord(se); err != nil {
				s.log.Error("redis sink: encode reject", "err", err)
			} else {
				rejects = append(rejects, rec)
			}
		}
		for len(rejects) > 0 {
			err := s.cl.ProduceSync(ctx, rejects...).FirstErr()
			if err == nil {
				break
			}
			if werr := wait("produce rejects", err); werr != nil {
				return werr
			}
		}
		for t, n := range byTopic {
			s.m.Records.WithLabelValues(t, "consumed").Add(float64(n))
		}
		s.m.Applied.Add(float64(applied))
		return nil
	}
}

// rejectRecord builds the ams.rejects record of a record not applied.
func (s *Sink) rejectRecord(se *SkipError) (*kgo.Record, error) {
	r := se.Record
	if r == nil {
		r = &kgo.Record{Topic: se.Topic, Offset: se.Offset}
	}
	rj := schemas.RecordReject(schemas.StageSink, "redis-sink", se.Reason, se.Err.Error(), string(r.Key),
		r.Topic, r.Partition, r.Offset, r.Value, r.Timestamp)
	v, err := s.enc.Encode(rj)
	if err != nil {
		return nil, fmt.Errorf("reject of %s@%d: %w", r.Topic, r.Offset, err)
	}
	return &kgo.Record{Topic: s.proj.names.Rejects, Key: r.Key, Value: v}, nil
}
