// Package egress publishes the downlinks of ams.downlink to the devices over
// MQTT and reports every broker acknowledgement as a receipt on
// ams.downlink.receipts.
//
// Delivery: at-least-once. A frame's offset is committed only after the
// broker acknowledged (PUBACK, QoS 1) that frame and every earlier frame of
// its partition, and after their receipts were written. A crash, a broker
// outage or a rebalance can make a device receive a frame twice, never lose
// one.
//
// Ordering: the frames of one device are in one partition (keyed by sn);
// one goroutine per partition publishes them in offset order over the one
// pooled connection the device is pinned to, and a failed publish is retried
// only after every publish in flight of the partition has resolved, in
// offset order. A device may see a frame again, but never a frame for the
// first time before every earlier frame.
//
// Only read-committed records are consumed, so aborted processor
// transactions never reach a device.
//
// Rebalance: when partitions are revoked, their workers stop publishing,
// wait (up to DrainTimeout) for the frames in flight, and the offsets of what
// is done are committed before the partitions move.
package egress

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/kafkaconsume"
	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/schemas"
)

// Config configures an Egress.
type Config struct {
	Seeds []string
	Names kafkatopics.Names
	// Group is the Kafka consumer group.
	Group string
	// EgressID names this instance in receipts.
	EgressID string
	// Window is the most frames of one partition published and not yet done.
	Window int
	// MaxBuffered caps the frames fetched and not yet done, over all
	// partitions; polling pauses at the cap.
	MaxBuffered int
	// DrainTimeout bounds the wait for frames in flight at a revocation and
	// at shutdown. Keep it above the pool's PublishTimeout.
	DrainTimeout time.Duration
	// CommitInterval is how often committable offsets are committed.
	CommitInterval time.Duration
	// InstanceID enables static group membership (a restarted instance with
	// the same id takes its partitions back without a rebalance).
	InstanceID string
	// SessionTimeout of the group member; 0 keeps franz-go's default (45 s).
	SessionTimeout time.Duration
	// StartAtEnd: a group with no committed offset starts at the end of the
	// partitions instead of the start.
	StartAtEnd bool
	// KafkaOpts are applied after the defaults.
	KafkaOpts []kgo.Opt
	// MQTT configures the connection pool the frames go out through.
	MQTT MQTTConfig
	// Schemas frames the records (required).
	Schemas *schemas.Registry
	// Log (nil: discarded) and Metrics, the registerer of egress's metrics
	// (nil: a private registry).
	Log     *slog.Logger
	Metrics prometheus.Registerer
}

// Egress consumes ams.downlink and publishes through a Pool, in the loop of
// pkg/kafkaconsume.
type Egress struct {
	cfg   Config
	pool  *Pool
	codec codec
	log   *slog.Logger
	m     *Metrics
	cons  *kafkaconsume.Consumer
	// cl is the running client, stored by the first assignment (before any
	// worker exists) and by Run's start.
	cl atomic.Pointer[kgo.Client]

	mu      sync.Mutex
	workers map[int32]*partWorker
	// wctx is the workers' context: canceled only on a fatal error (a
	// shutdown stops workers with stop, so they drain).
	wctx    context.Context
	wcancel context.CancelCauseFunc
	// fatalc is closed on a fatal error; fatalErr is the error.
	fatalOnce sync.Once
	fatalc    chan struct{}
	fatalErr  error

	buffered atomic.Int64
	space    chan struct{} // cap 1: buffered went down
}

// New returns an egress; it does no I/O (Run connects).
func New(cfg Config) (*Egress, error) {
	if cfg.Window <= 0 {
		cfg.Window = 256
	}
	if cfg.MaxBuffered <= 0 {
		cfg.MaxBuffered = 10000
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 15 * time.Second
	}
	if cfg.CommitInterval <= 0 {
		cfg.CommitInterval = time.Second
	}
	if cfg.Group == "" {
		return nil, errors.New("egress: no consumer group")
	}
	reg := cfg.Schemas
	if reg == nil {
		return nil, errors.New("egress: no schema registry")
	}
	log := cmp.Or(cfg.Log, slog.New(slog.DiscardHandler))
	m := NewMetrics(cfg.Metrics)
	e := &Egress{cfg: cfg, pool: NewPool(cfg.MQTT, log, m), codec: reg, log: log, m: m, workers: map[int32]*partWorker{},
		space: make(chan struct{}, 1), fatalc: make(chan struct{})}
	e.wctx, e.wcancel = context.WithCancelCause(context.Background())
	cons, err := kafkaconsume.New(kafkaconsume.Config{
		Name:           "egress",
		Seeds:          cfg.Seeds,
		Group:          cfg.Group,
		Topics:         []string{cfg.Names.Downlink},
		InstanceID:     cfg.InstanceID,
		SessionTimeout: cfg.SessionTimeout,
		StartAtEnd:     cfg.StartAtEnd,
		Opts: []kgo.Opt{
			// The workers mark what is done; marks are committed in the background.
			kgo.AutoCommitMarks(),
			kgo.AutoCommitInterval(cfg.CommitInterval),
			kgo.BlockRebalanceOnPoll(),
			kgo.OnPartitionsAssigned(e.assigned),
			kgo.OnPartitionsRevoked(e.revoked),
			kgo.OnPartitionsLost(e.lost),
			// Receipts and rejects.
			kgo.RequiredAcks(kgo.AllISRAcks()),
			kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
			kgo.ProducerLinger(2 * time.Millisecond),
		},
		KafkaOpts: cfg.KafkaOpts,
		Lag:       m.lag,
		Log:       log,
	})
	if err != nil {
		return nil, err
	}
	e.cons = cons
	return e, nil
}

// Ready reports whether Kafka answers and every MQTT connection is up.
func (e *Egress) Ready(ctx context.Context) error {
	if err := e.cons.Ping(ctx); err != nil {
		return err
	}
	return e.pool.Ready()
}

// Produce writes a receipt or reject (producer).
func (e *Egress) Produce(rec *kgo.Record, done func(error)) {
	e.cl.Load().Produce(context.Background(), rec, func(_ *kgo.Record, err error) { done(err) })
}

// Run checks the topics, connects the pool, and consumes until ctx is done
// or a fatal error (a receipt or reject Kafka refused). At the end it stops
// every worker, waits for the frames in flight, commits what is done, and
// closes the pool and the client.
func (e *Egress) Run(ctx context.Context) error {
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer e.wcancel(nil)
	go func() {
		select {
		case <-e.fatalc:
			cancel(e.fatalErr)
		case <-runCtx.Done():
		}
	}()
	err := e.cons.Run(runCtx, kafkaconsume.Handler{
		Start: func(ctx context.Context, cl *kgo.Client) error {
			e.cl.Store(cl)
			if err := e.checkTopics(ctx); err != nil {
				return err
			}
			if err := e.pool.Connect(ctx); err != nil {
				return err
			}
			e.log.Info("egress running", "group", e.cfg.Group, "topic", e.cfg.Names.Downlink, "connections", len(e.pool.conns), "window", e.cfg.Window)
			return nil
		},
		Limit:  e.limit,
		Handle: e.dispatch,
		Stop:   e.shutdown,
	})
	select {
	case <-e.fatalc:
		return e.fatalErr
	default:
	}
	if err != nil {
		return err
	}
	if cause := context.Cause(runCtx); cause != nil && ctx.Err() == nil {
		return cause
	}
	e.log.Info("egress stopped")
	return nil
}

// limit waits while MaxBuffered frames are fetched and not done.
func (e *Egress) limit(ctx context.Context) (int, time.Duration) {
	for e.buffered.Load() >= int64(e.cfg.MaxBuffered) && ctx.Err() == nil {
		select {
		case <-e.space:
		case <-ctx.Done():
		}
	}
	return 1000, 0
}

// dispatch hands each partition's records to its worker; the workers mark
// the offsets they are done with (committed in the background).
func (e *Egress) dispatch(_ context.Context, fetches kgo.Fetches) (bool, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	fetches.EachPartition(func(ftp kgo.FetchTopicPartition) {
		if len(ftp.Records) == 0 {
			return
		}
		w := e.workers[ftp.Partition]
		if w == nil {
			// Not ours (any more): the owner reads it from the committed offset.
			return
		}
		e.buffered.Add(int64(len(ftp.Records)))
		e.m.buffered.Add(float64(len(ftp.Records)))
		w.enqueue(ftp.Records)
	})
	return false, nil
}

// shutdown stops the workers, waits for what is in flight, commits what
// they marked and closes the pool.
func (e *Egress) shutdown(ctx context.Context) error {
	stopCtx, stopCancel := context.WithTimeout(ctx, e.cfg.DrainTimeout+10*time.Second)
	defer stopCancel()
	e.mu.Lock()
	all := make([]int32, 0, len(e.workers))
	for p := range e.workers {
		all = append(all, p)
	}
	e.mu.Unlock()
	e.stopWorkers(all)
	if cl := e.cl.Load(); cl != nil {
		if err := cl.CommitMarkedOffsets(stopCtx); err != nil {
			e.log.Warn("egress final commit failed; the next owner republishes from the last committed offset", "err", err)
		}
	}
	_ = e.pool.Close(stopCtx)
	return nil
}

func (e *Egress) checkTopics(ctx context.Context) error {
	adm := kadm.NewClient(e.cl.Load())
	topics := []string{e.cfg.Names.Downlink, e.cfg.Names.DownlinkReceipts, e.cfg.Names.Rejects}
	for {
		td, err := adm.ListTopics(ctx, topics...)
		if err == nil {
			for _, t := range topics {
				if d, ok := td[t]; !ok || d.Err != nil {
					return fmt.Errorf("kafka topic %s is missing (run `ams migrate`)", t)
				}
			}
			return nil
		}
		e.log.Warn("egress: kafka not reachable yet", "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(time.Second):
		}
	}
}

func (e *Egress) deps() workerDeps {
	return workerDeps{
		pub:      e.pool,
		prod:     e,
		codec:    e.codec,
		receipts: e.cfg.Names.DownlinkReceipts,
		rejects:  e.cfg.Names.Rejects,
		egressID: e.cfg.EgressID,
		window:   e.cfg.Window,
		scan:     e.scanReceipts,
		mark: func(rec *kgo.Record) {
			e.cl.Load().MarkCommitOffsets(map[string]map[int32]kgo.EpochOffset{
				rec.Topic: {rec.Partition: {Epoch: rec.LeaderEpoch, Offset: rec.Offset + 1}},
			})
		},
		retired: func(n int) {
			if n == 0 {
				return
			}
			e.buffered.Add(-int64(n))
			e.m.buffered.Sub(float64(n))
			select {
			case e.space <- struct{}{}:
			default:
			}
		},
		fail: func(err error) {
			e.fatalOnce.Do(func() {
				e.log.Error("egress: fatal error", "err", err)
				e.fatalErr = err
				close(e.fatalc)
				e.wcancel(err)
			})
		},
		m: e.m,
	}
}

// assigned starts a worker per new partition.
func (e *Egress) assigned(_ context.Context, cl *kgo.Client, assigned map[string][]int32) {
	e.cl.Store(cl)
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, p := range assigned[e.cfg.Names.Downlink] {
		if e.workers[p] != nil {
			continue
		}
		w := newPartWorker(e.cfg.Names.Downlink, p, e.deps())
		e.workers[p] = w
		go w.run(e.wctx)
	}
	e.m.partitions.Set(float64(len(e.workers)))
	e.log.Info("egress partitions assigned", "partitions", assigned[e.cfg.Names.Downlink], "owned", len(e.workers))
}

// revoked stops the revoked partitions' workers and commits what they did.
func (e *Egress) revoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	if n := e.stopWorkers(revoked[e.cfg.Names.Downlink]); n == 0 {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := cl.CommitMarkedOffsets(cctx); err != nil {
		e.log.Warn("egress: commit at revocation failed; the next owner republishes from the last committed offset", "err", err)
	}
	e.log.Info("egress partitions revoked", "partitions", revoked[e.cfg.Names.Downlink])
}

// lost stops the lost partitions' workers; nothing can be committed for them.
func (e *Egress) lost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	e.stopWorkers(lost[e.cfg.Names.Downlink])
	e.log.Warn("egress partitions lost", "partitions", lost[e.cfg.Names.Downlink])
}

// stopWorkers stops the workers of partitions, waits for them (up to
// DrainTimeout) and forgets them. It returns how many it stopped.
func (e *Egress) stopWorkers(partitions []int32) int {
	e.mu.Lock()
	var ws []*partWorker
	for _, p := range partitions {
		if w := e.workers[p]; w != nil {
			ws = append(ws, w)
			delete(e.workers, p)
		}
	}
	e.m.partitions.Set(float64(len(e.workers)))
	e.mu.Unlock()
	for _, w := range ws {
		w.stop()
	}
	deadline := time.NewTimer(e.cfg.DrainTimeout)
	defer deadline.Stop()
	for _, w := range ws {
		select {
		case <-w.done:
		case <-deadline.C:
			e.log.Warn("egress: partition worker did not drain in time; its frames in flight are left to the next owner", "partition", w.partition)
			return len(ws)
		}
	}
	return len(ws)
}
