// Package kafkaconsume is the at-least-once consume loop of ams's egress and
// sinks: one member of a consumer group that polls read-committed records,
// hands them to the role, and commits their offsets only after the role says
// they are done. It also holds the pieces every consumer of ams shares with
// the keyed runtime's transactional loop: fetch-error filtering and the lag
// gauge.
//
// Delivery: at-least-once. An offset is committed only when the Handler
// returned commit=true after handling every record up to it (or, for a role
// that marks offsets itself with kgo.AutoCommitMarks, when it marked them).
// A crash, a failed commit or a rebalance between the handling and the
// commit hands the uncommitted suffix to the next owner, which handles it
// again; the roles make that harmless (idempotent writes, receipts).
//
// Ordering: records of one partition reach Handle in offset order, one poll
// at a time, from one goroutine. Nothing is promised across partitions.
//
// Failure: a Handler error stops the loop and Run returns it (a role retries
// what it can retry itself, with Backoff). A fetch error is logged (not the
// ones a stop causes) and the client retries the fetch. At the end Run calls
// Stop (the role's last flush and commit), closes the client and, for a
// static member (InstanceID), leaves the group so its partitions move at
// once instead of after the session timeout (pkg/kafkagroup).
package kafkaconsume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/kafkagroup"
)

// Config configures a Consumer.
type Config struct {
	// Name prefixes the consumer's log messages ("redis sink").
	Name   string
	Seeds  []string
	Group  string
	Topics []string
	// InstanceID makes the consumer a static member of its group
	// (kafkagroup); empty: dynamic membership.
	InstanceID string
	// SessionTimeout of the group member; 0 keeps franz-go's default.
	SessionTimeout time.Duration
	// StartAtEnd: a group with no committed offset starts at the end of the
	// partitions instead of their start.
	StartAtEnd bool
	// Opts are the role's own client options (commit mode, rebalance
	// callbacks, producer settings), applied after the common ones.
	Opts []kgo.Opt
	// KafkaOpts are the connection and security options (cmd/ams's Kafka
	// flag group, testenv.KafkaOpts), applied last.
	KafkaOpts []kgo.Opt
	// Lag, if set, is the gauge (labels topic, partition) of the records
	// behind each partition's high watermark at its last fetch.
	Lag *prometheus.GaugeVec
	// CommitTimeout bounds a commit after a handled poll, which runs even
	// when the context is done (the records are handled). Default 10 s.
	CommitTimeout time.Duration
	Log           *slog.Logger
}

// Handler is a role's side of the loop. Every function but Handle may be nil.
type Handler struct {
	// Start runs once the client exists, before the first poll (topic
	// checks, connections, loading state). An error stops Run.
	Start func(ctx context.Context, cl *kgo.Client) error
	// Limit runs before each poll and returns the most records to poll and
	// how long to wait for them (0: until some come or ctx ends). It may
	// block (back-pressure) until ctx ends. max <= 0 skips the poll: Handle
	// is called with no records (a due flush). nil: 1000 records, no wait
	// limit.
	Limit func(ctx context.Context) (max int, wait time.Duration)
	// Handle takes one poll's records (fetch errors are already logged and
	// the lag gauge set). It returns commit=true when every record handed to
	// it so far is done, and the consumed offsets are then committed. An
	// error stops the loop: Run returns it, or nil if ctx is done (a stop
	// while retrying).
	Handle func(ctx context.Context, fetches kgo.Fetches) (commit bool, err error)
	// Committed is told the outcome of each commit Commit or the loop made.
	Committed func(err error)
	// Stop runs at the end, with the client still open and a context that
	// is not canceled: the role's last flush and commit (bound it yourself).
	Stop func(ctx context.Context) error
}

// Consumer is one member of a consumer group running the at-least-once
// loop. New does no I/O; Run creates the client, owns it, and closes it.
type Consumer struct {
	cfg Config
	cl  atomic.Pointer[kgo.Client]
}

// New checks cfg and returns a consumer; Run starts it.
func New(cfg Config) (*Consumer, error) {
	if cfg.Group == "" {
		return nil, fmt.Errorf("%s: no consumer group", cfg.Name)
	}
	if len(cfg.Topics) == 0 {
		return nil, fmt.Errorf("%s: no topics", cfg.Name)
	}
	if cfg.CommitTimeout <= 0 {
		cfg.CommitTimeout = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Consumer{cfg: cfg}, nil
}

// ClientOpts are the options of the consumer's client: seeds, group,
// topics, read-committed, reset offset, membership, then cfg.Opts and
// cfg.KafkaOpts.
func (c *Consumer) ClientOpts() []kgo.Opt {
	reset := kgo.NewOffset().AtStart()
	if c.cfg.StartAtEnd {
		reset = kgo.NewOffset().AtEnd()
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.cfg.Seeds...),
		kgo.ConsumerGroup(c.cfg.Group),
		kgo.ConsumeTopics(c.cfg.Topics...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(reset),
	}
	opts = append(opts, kafkagroup.Opts(c.cfg.InstanceID, c.cfg.SessionTimeout)...)
	opts = append(opts, c.cfg.Opts...)
	return append(opts, c.cfg.KafkaOpts...)
}

// Client is the running client, nil before Run and after it returns.
func (c *Consumer) Client() *kgo.Client { return c.cl.Load() }

// Ping reports whether Kafka answers (an error before Run).
func (c *Consumer) Ping(ctx context.Context) error {
	cl := c.Client()
	if cl == nil {
		return errors.New("kafka: not running")
	}
	if err := cl.Ping(ctx); err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	return nil
}

// commit commits the offsets consumed so far (within CommitTimeout, even
// when ctx is done) and tells h.Committed; a failure is logged and
// returned.
func (c *Consumer) commit(ctx context.Context, h *Handler, cl *kgo.Client) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.CommitTimeout)
	defer cancel()
	err := cl.CommitUncommittedOffsets(cctx)
	if err != nil {
		// Not fatal: a later commit covers these records, or the next owner
		// handles them again.
		c.cfg.Log.Warn(c.cfg.Name+": offset commit failed; the records will be handled again", "err", err)
	}
	if h.Committed != nil {
		h.Committed(err)
	}
	return err
}

// Run creates the client, runs h.Start, then polls and hands the records to
// h.Handle until ctx is done, the client is closed or Handle fails; then it
// runs h.Stop, closes the client and leaves the group. It returns nil after
// a stop by ctx, else the error that stopped it.
func (c *Consumer) Run(ctx context.Context, h Handler) (err error) {
	cl, err := kgo.NewClient(c.ClientOpts()...)
	if err != nil {
		return fmt.Errorf("%s: kafka client: %w", c.cfg.Name, err)
	}
	c.cl.Store(cl)
	defer func() {
		if h.Stop != nil {
			if serr := h.Stop(context.WithoutCancel(ctx)); serr != nil && err == nil {
				err = serr
			}
		}
		cl.Close() // leaves the group if dynamic; a static member leaves here:
		c.cl.Store(nil)
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if lerr := kafkagroup.Leave(lctx, nil, append([]kgo.Opt{kgo.SeedBrokers(c.cfg.Seeds...)}, c.cfg.KafkaOpts...),
			c.cfg.Group, c.cfg.InstanceID); lerr != nil {
			c.cfg.Log.Warn(c.cfg.Name+": leave group; its partitions move after the session timeout", "err", lerr)
		}
	}()
	if h.Start != nil {
		if err := h.Start(ctx, cl); err != nil {
			return err
		}
	}
	for ctx.Err() == nil {
		maxRecs, wait := 1000, time.Duration(0)
		if h.Limit != nil {
			maxRecs, wait = h.Limit(ctx)
			if ctx.Err() != nil {
				break
			}
		}
		var fetches kgo.Fetches
		if maxRecs > 0 {
			pctx, cancel := ctx, context.CancelFunc(func() {})
			if wait > 0 {
				pctx, cancel = context.WithTimeout(ctx, wait)
			}
			fetches = cl.PollRecords(pctx, maxRecs)
			cancel()
			if fetches.IsClientClosed() {
				cl.AllowRebalance()
				return errors.New(c.cfg.Name + ": kafka client closed")
			}
			if ctx.Err() != nil {
				cl.AllowRebalance() // nothing handled past what was committed
				break
			}
			LogFetchErrors(c.cfg.Log, c.cfg.Name, fetches)
			if c.cfg.Lag != nil {
				fetches.EachPartition(func(p kgo.FetchTopicPartition) { SetLag(c.cfg.Lag, p) })
			}
		}
		commit, herr := h.Handle(ctx, fetches)
		if herr != nil {
			cl.AllowRebalance()
			if ctx.Err() != nil {
				return nil // stopped while retrying: nothing committed past what was handled
			}
			return herr
		}
		if commit {
			_ = c.commit(ctx, &h, cl)
		}
		cl.AllowRebalance()
	}
	return nil
}

// Commit commits the offsets consumed so far with the running client (see
// Run's Handler.Stop), telling h.Committed.
func (c *Consumer) Commit(ctx context.Context, h *Handler) error {
	cl := c.Client()
	if cl == nil {
		return errors.New(c.cfg.Name + ": commit: not running")
	}
	return c.commit(ctx, h, cl)
}

// Stopping reports whether err is what a fetch gets when its poll was cut
// short on purpose (ctx done, poll deadline, client closed): not worth a log.
func Stopping(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, kgo.ErrClientClosed)
}

// LogFetchErrors logs the fetch errors of fetches that a stop or a poll
// deadline did not cause. The client retries the fetches itself.
func LogFetchErrors(log *slog.Logger, name string, fetches kgo.Fetches) {
	fetches.EachError(func(t string, p int32, err error) {
		if !Stopping(err) {
			msg := "fetch error"
			if name != "" {
				msg = name + ": " + msg
			}
			log.Warn(msg, "topic", t, "partition", p, "err", err)
		}
	})
}

// SetLag sets g{topic, partition} to the records of p behind its high
// watermark after its last fetched record (nothing when p has no records).
func SetLag(g *prometheus.GaugeVec, p kgo.FetchTopicPartition) {
	if n := len(p.Records); n > 0 {
		last := p.Records[n-1].Offset
		g.WithLabelValues(p.Topic, strconv.Itoa(int(p.Partition))).Set(float64(max(0, p.HighWatermark-last-1)))
	}
}

// Backoff is an exponential backoff between Min and Max for retrying an
// operation that fails while its dependency is out. The zero value waits
// 100 ms doubling to 5 s. Not safe for concurrent use.
type Backoff struct {
	Min, Max time.Duration
	next     time.Duration
}

// Next returns the wait before the next attempt and doubles the one after.
func (b *Backoff) Next() time.Duration {
	if b.Min <= 0 {
		b.Min = 100 * time.Millisecond
	}
	if b.Max <= 0 {
		b.Max = 5 * time.Second
	}
	if b.next < b.Min {
		b.next = b.Min
	}
	d := b.next
	b.next = min(2*b.next, b.Max)
	return d
}

// Wait sleeps Next() or until ctx is done (then it returns ctx.Err()).
func (b *Backoff) Wait(ctx context.Context) error {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Reset makes the next wait Min again (after a success).
func (b *Backoff) Reset() { b.next = 0 }
