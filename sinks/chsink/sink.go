// Package chsink is the ClickHouse sink: it copies ams.device.events,
// ams.presence, ams.command.events, ams.rejects and ams.uplink.raw into
// ClickHouse tables, the history the data team queries (README.md).
//
// Delivery: at-least-once into idempotent tables. The sink polls records,
// buffers them column by column per table, inserts a batch when it holds
// BatchRows rows or BatchInterval has passed since its first record, and
// commits the consumed offsets only after every table's insert (and every
// reject it produced) succeeded. A crash between insert and commit inserts
// the batch again on restart; every table is a ReplacingMergeTree keyed by
// the record's deterministic id, and the views and documented queries read
// deduplicated data, so a replayed row is never counted twice.
//
// Failure: an insert that fails is retried with backoff, forever, and the
// sink polls nothing meanwhile (memory stays bounded by one batch); so a
// ClickHouse outage pauses the sink, which catches up afterwards. An insert
// the server refuses for its data (DataErrorCode) is not retried: the
// batch is split until the refused record is alone, which goes to
// ams.rejects (reason clickhouse_data); the other rows are inserted. A record
// that does not decode goes to ams.rejects (stage SINK, with the reason)
// and is committed like the others. Nothing is dropped.
package chsink

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/kafkaconsume"
	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/schemas"
)

// Config configures a Sink. Zero durations and counts take the defaults.
type Config struct {
	Seeds      []string
	Names      kafkatopics.Names
	Group      string // consumer group, default ams-sink-clickhouse
	ClickHouse Options
	// BatchRows: insert when this many rows are buffered (default 10000).
	BatchRows int
	// BatchInterval: insert at the latest this long after the first
	// buffered record (default 1 s).
	BatchInterval time.Duration
	// RetryMin, RetryMax bound the backoff between failed inserts
	// (defaults 200 ms, 5 s).
	RetryMin, RetryMax time.Duration
	// ShutdownTimeout bounds the last flush at shutdown (default 10 s);
	// what it cannot insert is not committed and is read again next time.
	ShutdownTimeout time.Duration
	// SessionTimeout is the Kafka group session timeout (0: franz-go's
	// default, 45 s): how long a crashed instance keeps its partitions.
	SessionTimeout time.Duration
	// InstanceID makes the sink a static member of its group
	// (group.instance.id): a restart with the same id within SessionTimeout
	// takes its partitions back at once. Stable across restarts, unique
	// among live instances (the pod name). Empty: dynamic membership.
	InstanceID string
	// ExtraKafkaOpts are appended to the client options (security, tests).
	ExtraKafkaOpts []kgo.Opt
	// Schemas decodes and encodes the records (required).
	Schemas *schemas.Registry
	// Log (nil: discarded) and Metrics, the registerer of the sink's
	// metrics (nil: a private registry).
	Log     *slog.Logger
	Metrics prometheus.Registerer
}

func (c *Config) defaults() {
	if c.Group == "" {
		c.Group = "ams-sink-clickhouse"
	}
	if c.BatchRows <= 0 {
		c.BatchRows = 10000
	}
	if c.BatchInterval <= 0 {
		c.BatchInterval = time.Second
	}
	if c.RetryMin <= 0 {
		c.RetryMin = 200 * time.Millisecond
	}
	if c.RetryMax <= 0 {
		c.RetryMax = 5 * time.Second
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
}

// Sink is one ClickHouse sink instance, a member of the consumer group,
// running the loop of pkg/kafkaconsume. Build it with New, run it once with
// Run.
type Sink struct {
	cfg     Config
	cons    *kafkaconsume.Consumer
	h       kafkaconsume.Handler
	cl      *kgo.Client // set by Run
	chMu    sync.Mutex
	ch      driver.Conn // set by Run
	reg     *schemas.Registry
	log     *slog.Logger
	m       *Metrics
	buf     *buffers
	rejects []*kgo.Record // SINK-stage rejects to produce before the next commit
	first   time.Time     // when the first record of the pending batch was polled
	pending int           // records polled since the last commit
	failing atomic.Bool   // the last insert attempt failed
}

// New returns a sink; it does no I/O. Run connects to ClickHouse, checks
// that its schema is migrated (it fails with ErrNotMigrated otherwise) and
// joins the consumer group.
func New(cfg Config) (*Sink, error) {
	cfg.defaults()
	reg := cfg.Schemas
	if reg == nil {
		return nil, errors.New("clickhouse sink: no schema registry")
	}
	log := cmp.Or(cfg.Log, slog.New(slog.DiscardHandler))
	m := NewMetrics(cfg.Metrics)
	buf, err := newBuffers(cfg.ClickHouse.Database, cfg.Names)
	if err != nil {
		return nil, err
	}
	cons, err := kafkaconsume.New(kafkaconsume.Config{
		Name:           "clickhouse sink",
		Seeds:          cfg.Seeds,
		Group:          cfg.Group,
		Topics:         buf.topics(),
		InstanceID:     cfg.InstanceID,
		SessionTimeout: cfg.SessionTimeout,
		Opts:           []kgo.Opt{kgo.DisableAutoCommit(), kgo.ProducerLinger(0)},
		KafkaOpts:      cfg.ExtraKafkaOpts,
		Lag:            m.lag,
		Log:            log,
	})
	if err != nil {
		return nil, err
	}
	s := &Sink{cfg: cfg, cons: cons, reg: reg, log: log, m: m, buf: buf}
	s.h = kafkaconsume.Handler{Start: s.start, Limit: s.limit, Handle: s.handle, Committed: s.committed, Stop: s.stop}
	return s, nil
}

func (s *Sink) conn() driver.Conn {
	s.chMu.Lock()
	defer s.chMu.Unlock()
	return s.ch
}

// Ready reports whether ClickHouse answers and the last insert succeeded.
func (s *Sink) Ready(ctx context.Context) error {
	ch := s.conn()
	if ch == nil {
		return errors.New("clickhouse: not connected yet")
	}
	if err := ch.Ping(ctx); err != nil {
		return fmt.Errorf("clickhouse: %w", err)
	}
	if s.failing.Load() {
		return errors.New("clickhouse: inserts are failing (retrying)")
	}
	return nil
}

// Run connects to ClickHouse, consumes until ctx is done, then inserts and
// commits what it holds (within ShutdownTimeout), leaves the group and
// closes. It returns nil after a graceful stop, or the error that stopped
// it.
func (s *Sink) Run(ctx context.Context) error {
	defer func() {
		if ch := s.conn(); ch != nil {
			_ = ch.Close()
		}
	}()
	return s.cons.Run(ctx, s.h)
}

// start connects to ClickHouse and checks its schema.
func (s *Sink) start(ctx context.Context, cl *kgo.Client) error {
	ch, err := Open(ctx, s.cfg.ClickHouse)
	if err != nil {
		return err
	}
	s.chMu.Lock()
	s.ch, s.cl = ch, cl
	s.chMu.Unlock()
	return CheckMigrated(ctx, ch, s.cfg.ClickHouse.Database)
}

// limit polls at most what fills the batch, and waits at most until the
// batch is due; nothing when it is full or due (handle flushes it).
func (s *Sink) limit(context.Context) (int, time.Duration) {
	wait := s.cfg.BatchInterval
	if s.pending > 0 {
		wait = time.Until(s.first.Add(s.cfg.BatchInterval))
	}
	if wait <= 0 || s.buf.rows() >= s.cfg.BatchRows {
		return 0, 0
	}
	return s.cfg.BatchRows - s.buf.rows(), wait
}

// handle buffers a poll and flushes the batch when it is full or due; the
// offsets are committed after a flush.
func (s *Sink) handle(ctx context.Context, fetches kgo.Fetches) (bool, error) {
	fetches.EachPartition(s.takePartition)
	full := s.buf.rows() >= s.cfg.BatchRows
	due := s.pending > 0 && time.Since(s.first) >= s.cfg.BatchInterval
	if !full && !due {
		return false, nil
	}
	if err := s.flush(ctx); err != nil {
		return false, err
	}
	return true, nil
}

func (s *Sink) committed(err error) {
	if err != nil {
		// The rows are in ClickHouse; they will be inserted again after a
		// restart or rebalance, and read once.
		s.m.commitErrors.Inc()
	} else {
		s.m.commits.Inc()
	}
}

// stop inserts and commits the last batch within ShutdownTimeout; what it
// cannot insert is read again next time.
func (s *Sink) stop(ctx context.Context) error {
	if s.pending == 0 || s.conn() == nil {
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, s.cfg.ShutdownTimeout)
	defer cancel()
	if err := s.flush(sctx); err != nil {
		s.log.Warn("last batch not inserted at shutdown; it will be read again", "err", err)
		return nil
	}
	_ = s.cons.Commit(sctx, &s.h)
	return nil
}

// takePartition buffers one partition's fetched records.
func (s *Sink) takePartition(p kgo.FetchTopicPartition) {
	for _, r := range p.Records {
		if s.pending == 0 {
			s.first = time.Now()
		}
		s.pending++
		if reason, err := s.buf.add(s.reg, r); err != nil {
			s.reject(r, reason, err)
		}
	}
	s.m.buffered.Set(float64(s.buf.rows()))
}

// reject queues a SINK-stage reject for a record that did not convert. Its
// id and time derive from the record's position and timestamp, so a replay
// produces the same reject row.
func (s *Sink) reject(r *kgo.Record, reason string, err error) {
	rj := schemas.RecordReject(schemas.StageSink, "sink", reason, err.Error(), string(r.Key), r.Topic, r.Partition, r.Offset, r.Value, r.Timestamp)
	v, encErr := s.reg.Encode(rj)
	if encErr != nil { // cannot happen with a valid Reject; say so loudly
		s.log.Error("encode reject", "err", encErr)
		return
	}
	s.m.rejects.WithLabelValues(reason).Inc()
	s.log.Warn("record rejected", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "reason", reason, "err", err)
	s.rejects = append(s.rejects, &kgo.Record{Topic: s.cfg.Names.Rejects, Key: r.Key, Value: v})
}

// flush inserts every buffered table (retrying each until it succeeds or ctx
// ends) and produces the queued rejects; the caller commits the polled
// offsets.
func (s *Sink) flush(ctx context.Context) error {
	for _, t := range s.buf.tables {
		if t.rows == 0 {
			continue
		}
		if err := s.insertRows(ctx, t, 0, t.rows); err != nil {
			return err
		}
		t.reset()
	}
	if len(s.rejects) > 0 {
		if err := s.retry(ctx, "produce rejects", func() error {
			return s.cl.ProduceSync(ctx, s.rejects...).FirstErr()
		}, "", nil); err != nil {
			return err
		}
		s.rejects = s.rejects[:0]
	}
	s.pending = 0
	s.m.buffered.Set(0)
	return nil
}

// insertRows inserts rows lo..hi-1 of t. An insert the server refuses
// for its data (DataErrorCode) is split in halves, recursively, until the
// refused record is alone: it goes to ams.rejects (reason clickhouse_data,
// the server's error as detail) and the rest is inserted. Outages are
// retried forever (until ctx ends). A row already inserted by a half that
// succeeded is harmless to insert again (ReplacingMergeTree).
func (s *Sink) insertRows(ctx context.Context, t *table, lo, hi int) error {
	err := s.retry(ctx, "insert "+t.name, func() error { return s.insert(ctx, t, lo, hi) }, t.name, isDataError)
	if err == nil || !isDataError(err) {
		return err
	}
	if hi-lo > 1 {
		s.m.splits.WithLabelValues(t.name).Inc()
		mid := lo + (hi-lo)/2
		if err := s.insertRows(ctx, t, lo, mid); err != nil {
			return err
		}
		return s.insertRows(ctx, t, mid, hi)
	}
	r := t.srcs[lo]
	if r.Topic == s.cfg.Names.Rejects {
		// A reject of a reject would come back to this table and fail
		// again: the record stays in ams.rejects (Kafka) and is reported here.
		s.m.rejects.WithLabelValues("clickhouse_data_reject_row").Inc()
		s.log.Error("ams.rejects record refused by ClickHouse; not inserted (it stays in Kafka)",
			"topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
		return nil
	}
	s.reject(r, "clickhouse_data", err)
	return nil
}

// Data errors: ClickHouse exception codes that the inserted values cause,
// which a retry of the same rows would meet again. Every other error (no
// exception: network, timeout, closed connection; or another code, e.g.
// 241 MEMORY_LIMIT_EXCEEDED, 252 TOO_MANY_PARTS, 202
// TOO_MANY_SIMULTANEOUS_QUERIES, 159 TIMEOUT_EXCEEDED, 60 UNKNOWN_TABLE,
// 16 NO_SUCH_COLUMN_IN_TABLE, 516 AUTHENTICATION_FAILED, 164 READONLY) is
// an outage or an operator's problem and is retried forever.
var dataErrorCodes = map[int32]string{
	6:   "CANNOT_PARSE_TEXT",
	27:  "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
	38:  "CANNOT_PARSE_DATE",
	41:  "CANNOT_PARSE_DATETIME",
	53:  "TYPE_MISMATCH",
	69:  "ARGUMENT_OUT_OF_BOUND",
	70:  "CANNOT_CONVERT_TYPE",
	72:  "CANNOT_PARSE_NUMBER",
	117: "INCORRECT_DATA",
	131: "TOO_LARGE_STRING_SIZE",
	190: "SIZES_OF_ARRAYS_DOESNT_MATCH",
	321: "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
	349: "CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN",
	395: "FUNCTION_THROW_IF_VALUE_IS_NON_ZERO",
	407: "DECIMAL_OVERFLOW",
	469: "VIOLATED_CONSTRAINT",
}

// DataErrorCode reports whether err is a ClickHouse exception caused by the
// inserted data (see dataErrorCodes), and its code.
func DataErrorCode(err error) (int32, bool) {
	var ex *clickhouse.Exception
	if !errors.As(err, &ex) {
		return 0, false
	}
	_, ok := dataErrorCodes[ex.Code]
	return ex.Code, ok
}

func isDataError(err error) bool { _, ok := DataErrorCode(err); return ok }

// retry runs op until it succeeds, with exponential backoff between
// RetryMin and RetryMax; it gives up when ctx ends, or at once with the
// error when permanent (if not nil) says it would fail again.
func (s *Sink) retry(ctx context.Context, what string, op func() error, table string, permanent func(error) bool) error {
	backoff := kafkaconsume.Backoff{Min: s.cfg.RetryMin, Max: s.cfg.RetryMax}
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil {
			if attempt > 1 {
				s.log.Info("recovered", "op", what, "attempts", attempt)
			}
			s.failing.Store(false)
			return nil
		}
		if permanent != nil && permanent(err) {
			if table != "" {
				s.m.failures.WithLabelValues(table).Inc()
			}
			return err
		}
		s.failing.Store(true)
		if table != "" {
			s.m.failures.WithLabelValues(table).Inc()
		}
		wait := backoff.Next()
		if attempt == 1 || attempt%10 == 0 {
			s.log.Warn("failed; retrying", "op", what, "attempt", attempt, "backoff", wait, "err", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (gave up: %w)", what, err, ctx.Err())
		case <-time.After(wait):
		}
	}
}

// insert sends rows lo..hi-1 of a table's buffer as one columnar batch.
func (s *Sink) insert(ctx context.Context, t *table, lo, hi int) error {
	start := time.Now()
	batch, err := s.conn().PrepareBatch(ctx, t.insert)
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	for i, c := range t.cols {
		if err := batch.Column(i).Append(c.slice(lo, hi)); err != nil {
			_ = batch.Abort()
			return fmt.Errorf("column %s: %w", c.colName(), err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	s.m.rows.WithLabelValues(t.name).Add(float64(hi - lo))
	s.m.batchSeconds.WithLabelValues(t.name).Observe(time.Since(start).Seconds())
	return nil
}
