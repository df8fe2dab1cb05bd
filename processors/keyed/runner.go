package keyed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ivms/ams/pkg/kafkaconsume"
	"github.com/ivms/ams/pkg/kafkagroup"
	"github.com/ivms/ams/processors/keyed/internal/store"
)

// Runner runs a Handler over its Config's topics: one consumer group member
// with one Kafka transaction per batch. See ORDERING.md beside this file for
// the order of its steps.
//
// Guarantees (in addition to the package's):
//   - Exactly-once: a batch's outputs, its changelog records and its input
//     offsets commit in one transaction (GroupTransactSession). A batch that
//     aborts (a rebalance, a failed produce, a failed offset commit) is
//     rolled back in memory, key by key, and polled again; its records, seen
//     only read-committed downstream, are never visible.
//   - Fencing: the transactional id is per process, not per partition. A
//     stale owner is fenced by its consumer group generation (KIP-447): its
//     TxnOffsetCommit fails, so End aborts. A transaction with no input
//     offsets (timers only) carries no such commit, so before ending it the
//     runner heartbeats with its generation and aborts unless it is still a
//     member; a new owner, which restores to the changelog's high watermark,
//     then waits for that transaction to end and sees its outcome.
//   - State: before partition p takes input, its state is restored from
//     changelog partition p up to the high watermark (read-committed; an open
//     transaction of the previous owner is waited for). Fetching p's input
//     is paused from the moment it is assigned until then.
//   - Timers fire at the first tick (Config.TimerTick) at or after their
//     deadline, in a transaction like an input, possibly shared with inputs,
//     but never early because the partition's input is behind: while the
//     records polled of a partition end before its high watermark (a backlog,
//     or a partition just restored whose input is not polled yet), its
//     timers fire only up to the newest record timestamp processed from that
//     input. A key whose input waits in the backlog is not timed out (see
//     ORDERING.md, "Timers"; an idle partition's timers may be held up to 2s
//     after a restore).
//   - Failure: a Handler error, an undecodable changelog record or an error
//     from ending a transaction stops Run with that error; nothing is
//     retried in-process. Restart the process: the group resumes from the
//     last committed transaction.
type Runner[S any] struct {
	cfg Config
	h   Handler[S]
	log *slog.Logger
	m   *metrics

	sess   *kgo.GroupTransactSession
	meta   *kgo.Client // admin, restores, membership checks
	reader *changelogReader
	outs   map[string]bool

	runCtx context.Context // restores live in it; canceled when Run ends

	mu     sync.Mutex // guards parts and parked (callbacks vs the poll loop)
	parts  map[int32]*partition[S]
	parked map[int32]parked[S]

	joined  atomic.Bool
	running atomic.Bool
	// revoked is set by onRevoked: the session then aborts the next End,
	// whenever the transaction began.
	revoked atomic.Bool
	// backoff is the pause after an aborted transaction, doubled while
	// transactions keep aborting and reset by a commit; the poll loop
	// sleeps it outside the rebalance gate.
	backoff time.Duration
	lastEnd time.Time // when the last End returned

	// A batch that produced nothing (no output, no state change) does not
	// end its transaction: its offsets ride along with the next batch's
	// (see carryFor). inTxn: a transaction is open across cycles;
	// carried: input records in it; carriedSince: the first one's poll.
	inTxn        bool
	carried      int
	carriedSince time.Time

	// marksAtBegin: the partitions' input marks when the open transaction
	// began (snapshotMarks).
	marksAtBegin map[*partition[S]]map[string]inputMark

	// The open transaction's produces.
	txWG       sync.WaitGroup
	txMu       sync.Mutex
	txErr      error
	txProduced atomic.Int64
}

// emptyTxnGap is how long after the previous End a transaction that produced
// nothing (offsets only) waits before ending. With transactions V2 (KIP-890,
// Kafka 4) such a transaction's first request is its TxnOffsetCommit; while
// the previous transaction is still completing, the broker answers
// CONCURRENT_TRANSACTIONS, which the session treats as abortable. Without the
// gap about a third of back-to-back offsets-only transactions aborted on the
// test broker; with 5ms, none. A transaction that produced records is not
// delayed: its produce requests retry that error themselves.
const emptyTxnGap = 5 * time.Millisecond

// carryFor bounds how long the offsets of batches that produced nothing are
// carried in an open transaction before one ends just to commit them. Such
// offsets-only transactions were the aborted transactions under load: their
// TxnOffsetCommit is their first request, and when it comes while the
// previous transaction's markers are still being written the broker answers
// CONCURRENT_TRANSACTIONS, which the session turns into an abort (the
// emptyTxnGap is not enough once the broker is busy). Carried, the offsets
// commit with the next transaction that produces, whose produce requests
// retry that error. A carried batch changed nothing, so if its transaction
// aborts after all, processing it again is all that is lost.
const carryFor = 100 * time.Millisecond

// metadataMinAge is the session client's kgo.MetadataMinAge: how soon a
// produce retried after CONCURRENT_TRANSACTIONS (or any retriable partition
// error) can be sent again (see Run). A metadata request is cheap; it is
// only made when something failed.
const metadataMinAge = 20 * time.Millisecond

// NewRunner checks cfg and returns a Runner; nothing connects before Run.
func NewRunner[S any](cfg Config, h Handler[S]) (*Runner[S], error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Name, cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("keyed metrics: %w", err)
	}
	outs := map[string]bool{}
	for _, t := range cfg.Outputs {
		outs[t] = true
	}
	return &Runner[S]{
		cfg:    cfg,
		h:      h,
		log:    cfg.Logger.With("processor", cfg.Name),
		m:      m,
		outs:   outs,
		parts:  map[int32]*partition[S]{},
		parked: map[int32]parked[S]{},
	}, nil
}

// Ready reports nil once the runner has joined its group and every assigned
// partition is restored (an opshttp readiness check).
func (r *Runner[S]) Ready(context.Context) error {
	if !r.running.Load() || !r.joined.Load() {
		return errors.New("not in the consumer group yet")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var restoring []int32
	for id, p := range r.parts {
		if p.jobs == nil {
			restoring = append(restoring, id)
		}
	}
	if len(restoring) > 0 {
		slices.Sort(restoring)
		return fmt.Errorf("restoring partitions %v", restoring)
	}
	return nil
}

// Run checks the topology, joins the group and processes until ctx is done
// (then it finishes the transaction in flight, leaves the group and returns
// nil) or a fatal error occurs (returned).
func (r *Runner[S]) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("keyed: Run called twice")
	}
	defer r.running.Store(false)
	base := []kgo.Opt{
		kgo.SeedBrokers(r.cfg.Brokers...),
		kgo.WithLogger(kgoLogger{r.log}),
		kgo.FetchMaxWait(500 * time.Millisecond),
	}
	meta, err := kgo.NewClient(slices.Concat(base, r.cfg.KafkaOpts)...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer meta.Close()
	r.meta = meta
	r.reader = &changelogReader{cl: meta, topic: r.cfg.Changelog, dec: kgo.DefaultDecompressor(), maxWait: 500 * time.Millisecond}

	checkCtx, cancel := context.WithTimeout(ctx, time.Minute)
	parts, err := CheckTopology(checkCtx, kadm.NewClient(meta), r.cfg)
	cancel()
	if err != nil {
		return fmt.Errorf("keyed %s: topology: %w", r.cfg.Name, err)
	}

	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	r.runCtx = runCtx

	// The group must use the range balancer. Every input has the same
	// partition count, and range assignment hands each member the same
	// partition numbers of every topic, so partition p of every input
	// (and so every record of a key, and its changelog partition) meets
	// in one member. franz-go's default cooperative-sticky balancer
	// places each topic's partitions on its own: partition 3 of one input
	// could go to member A and partition 3 of another to member B, and B
	// would then handle a key whose state A holds. Range is eager: every
	// rebalance revokes everything, which is why revoked state is parked
	// rather than dropped (see onRevoked).
	// Latency defaults, before KafkaOpts so a deployment can override
	// them. Linger 10ms (franz-go's default, stated): every batch ends
	// with Flush, which sends what lingers at once, so a small batch goes
	// in one produce request per broker (with no linger the first record
	// went alone and Flush waited for that request before sending the
	// rest: two round trips per transaction), while a large batch still
	// ships during its processing (with a 1s linger, 5000-record batches
	// lost that overlap: 17k instead of 24k frames/s). And fast first
	// retries. A transaction's
	// first produce often meets CONCURRENT_TRANSACTIONS while the previous
	// transaction's markers are still being written (KIP-890); franz-go
	// retries it after its produce retry backoff, 250ms by default, which
	// was the processor's tail latency (see ORDERING.md).
	//
	// And a short metadata min age: that, not the retry backoff, is what
	// a produce that met CONCURRENT_TRANSACTIONS waits for. franz-go
	// handles every retriable per-partition produce error (that one
	// included) by marking the partition failing and triggering a
	// metadata update, and sends the batch again only after that update,
	// which waits until MetadataMinAge (5s by default) after the last
	// one. Those were the processor's multi-second stalls (flush phase
	// 4-5s with one or two Produce requests in it, see
	// ams_keyed_phase_seconds and ams_keyed_kafka_request_seconds); they
	// grew with the broker's load because the previous transaction's
	// markers then take longer to write.
	latency := []kgo.Opt{
		kgo.ProducerLinger(10 * time.Millisecond),
		kgo.RetryBackoffFn(fastRetryBackoff),
		kgo.ConcurrentTransactionsBackoff(2 * time.Millisecond),
		kgo.MetadataMinAge(metadataMinAge),
	}
	opts := slices.Concat(base, latency, r.cfg.KafkaOpts, []kgo.Opt{
		kgo.ConsumerGroup(r.cfg.Group),
		kgo.ConsumeTopics(r.cfg.Inputs...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.Balancers(kgo.RangeBalancer()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.TransactionalID(r.cfg.TransactionalID()),
		kgo.TransactionTimeout(r.cfg.TransactionTimeout),
		// Rebalance callbacks run only between transactions (see
		// ORDERING.md), so they never race a batch's workers.
		kgo.BlockRebalanceOnPoll(),
		kgo.RecordPartitioner(changelogPartitioner{changelog: r.cfg.Changelog, other: kgo.StickyKeyPartitioner(nil)}),
		kgo.OnPartitionsAssigned(r.onAssigned),
		kgo.OnPartitionsRevoked(r.onRevoked),
		kgo.OnPartitionsLost(r.onRevoked),
		kgo.WithHooks(requestHook{r.m.requests}),
	})
	if id := r.groupInstanceID(); id != "" {
		opts = append(opts, kgo.InstanceID(id))
	}
	sess, err := kgo.NewGroupTransactSession(opts...)
	if err != nil {
		return fmt.Errorf("kafka transact session: %w", err)
	}
	r.sess = sess
	// Register the transactional id now, not at the first transaction: that
	// fences a predecessor with the same id and aborts its open transaction
	// at once. Otherwise a SIGKILLed instance's transaction holds every
	// read-committed fetch of its partitions back (nothing to poll, so no
	// transaction begins) until the transaction timeout.
	pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
	if _, _, err := sess.Client().ProducerID(pctx); err != nil && ctx.Err() == nil {
		r.log.Warn("keyed: producer id at start (retried at the first transaction)", "err", err)
	}
	pcancel()
	r.log.Info("keyed processor starting", "group", r.cfg.Group, "inputs", r.cfg.Inputs,
		"changelog", r.cfg.Changelog, "partitions", parts, "transactional_id", r.cfg.TransactionalID())

	err = r.loop(ctx)
	if err != nil {
		r.log.Error("keyed processor stopping", "err", err)
	}
	// Leaving the group revokes everything (onRevoked stops the workers).
	sess.CloseAllowingRebalance()
	lctx, lcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	if err := kafkagroup.Leave(lctx, meta, nil, r.cfg.Group, r.groupInstanceID()); err != nil {
		r.log.Warn("keyed: leave group; its partitions move after the session timeout", "err", err)
	}
	lcancel()
	stop()
	r.dropAll()
	return err
}

func (r *Runner[S]) loop(ctx context.Context) error {
	for ctx.Err() == nil {
		if err := r.cycle(ctx); err != nil {
			if errors.Is(err, kgo.ErrClientClosed) {
				return nil
			}
			return err
		}
		if r.backoff > 0 {
			select {
			case <-time.After(r.backoff):
			case <-ctx.Done():
			}
		}
	}
	// A clean stop after a whole cycle: every polled record was
	// processed, so the carried offsets can be committed. (After an
	// error, polled records may be unprocessed: nothing is committed, the
	// session's close aborts.)
	if r.inTxn {
		if err := r.endCarried(ctx); err != nil {
			r.log.Warn("ending the carried transaction at shutdown", "err", err)
		}
	}
	return nil
}

// cycle is one poll and, when there is work, one transaction. It is the
// "act" side of the loop: it polls, gathers the facts, and does what
// planStart and planEnd (plan.go) decide.
func (r *Runner[S]) cycle(ctx context.Context) error {
	pollCtx, cancel := context.WithTimeout(ctx, r.cfg.TimerTick)
	fetches := r.sess.PollRecords(pollCtx, r.cfg.MaxRecords)
	cancel()
	// From here until AllowRebalance, no rebalance callback runs.
	defer r.sess.AllowRebalance()
	start := time.Now()
	if fetches.IsClientClosed() {
		return kgo.ErrClientClosed
	}
	fetches = r.linger(ctx, fetches, start)
	kafkaconsume.LogFetchErrors(r.log, "", fetches)
	revoked := r.revoked.Swap(false)
	if !revoked {
		if err := r.installRestored(); err != nil {
			return err
		}
	}

	byPart := map[int32][]*kgo.Record{}
	polled := map[int32]int{}
	inputs := map[int32]map[string]*polledInput{}
	fetches.EachPartition(func(ft kgo.FetchTopicPartition) {
		if len(ft.Records) == 0 {
			return
		}
		byPart[ft.Partition] = append(byPart[ft.Partition], ft.Records...)
		polled[ft.Partition] += len(ft.Records)
		if !revoked { // the partition may be gone; its records come again
			kafkaconsume.SetLag(r.m.lag, ft)
		}
		if inputs[ft.Partition] == nil {
			inputs[ft.Partition] = map[string]*polledInput{}
		}
		in := inputs[ft.Partition][ft.Topic]
		if in == nil {
			in = &polledInput{newest: math.MinInt64}
			inputs[ft.Partition][ft.Topic] = in
		}
		in.last, in.hwm = ft.Records[len(ft.Records)-1].Offset, ft.HighWatermark
		for _, rec := range ft.Records {
			in.newest = max(in.newest, rec.Timestamp.UnixNano())
		}
	})
	n := fetches.NumRecords()

	now := r.cfg.Clock()
	wall := time.Now()
	r.mu.Lock()
	views := make(map[int32]partView, len(r.parts))
	marks := make(map[int32]map[string]inputMark, len(r.parts))
	for id, p := range r.parts {
		v := partView{ready: p.jobs != nil, next: p.next.Load()}
		if v.ready {
			// The marks as they are once this poll's records are
			// processed (before the batch's timers fire).
			m := make(map[string]inputMark, len(p.marks))
			for t, mk := range p.marks {
				m[t] = observe(mk, inputs[id][t], wall)
			}
			v.marks, marks[id] = m, m
		}
		views[id] = v
	}
	plan := planStart(startFacts{revoked: revoked, polled: polled, parts: views, clock: now,
		inTxn: r.inTxn, carriedSince: r.carriedSince, wall: wall})
	if plan.action != startAbortPolled { // else the polled records come again
		if plan.begin {
			r.snapshotMarks()
		}
		for id, m := range marks {
			r.parts[id].marks = m
		}
	}
	work := make([]*partition[S], 0, len(plan.work))
	for _, id := range plan.work {
		work = append(work, r.parts[id])
	}
	r.mu.Unlock()

	switch plan.action {
	case startIdle:
		return nil
	case startEndCarried:
		return r.endCarried(ctx)
	case startAbortPolled:
		// After a revocation the session aborts the first End, even of a
		// transaction begun after it: end an empty one now rather than do
		// a batch's work to abort it; the polled records come again.
		// Stray records cannot happen (a partition is paused from its
		// assignment until its state is restored): never commit their
		// offsets.
		if len(plan.stray) > 0 {
			r.log.Error("records polled for partitions without restored state; aborting the batch", "partitions", plan.stray)
		}
		return r.abortPolled(ctx)
	}
	return r.transact(ctx, plan, work, byPart, n, now, start)
}

// linger polls again, up to MaxLinger after the first poll, to fill a batch
// that has records but fewer than MaxRecords.
func (r *Runner[S]) linger(ctx context.Context, fetches kgo.Fetches, start time.Time) kgo.Fetches {
	n := fetches.NumRecords()
	for n > 0 && n < r.cfg.MaxRecords && time.Since(start) < r.cfg.MaxLinger {
		lctx, cancel := context.WithDeadline(ctx, start.Add(r.cfg.MaxLinger))
		more := r.sess.PollRecords(lctx, r.cfg.MaxRecords-n)
		cancel()
		fetches = append(fetches, more...)
		n = fetches.NumRecords()
	}
	return fetches
}

// transact runs one batch in the open (or a new) transaction: the workers
// process it, the produces are flushed, and planEnd decides whether the
// transaction commits, aborts or stays open carrying the batch's offsets.
func (r *Runner[S]) transact(ctx context.Context, plan startPlan, work []*partition[S],
	byPart map[int32][]*kgo.Record, n int, now, start time.Time) error {
	if plan.begin {
		if err := r.sess.Begin(); err != nil {
			return fmt.Errorf("begin transaction: %w", err)
		}
		r.inTxn = true
	}
	r.txErr = nil
	r.txProduced.Store(0)
	done := make(chan result, len(work))
	for _, p := range work {
		until := time.Unix(0, fireHorizon(now, p.marks)).In(now.Location())
		p.jobs <- job{op: opBatch, recs: byPart[p.id], now: now, until: until, budget: r.cfg.MaxRecords, done: done}
	}
	results := make([]result, 0, len(work))
	var fatal error
	for range work {
		res := <-done
		results = append(results, res)
		if res.err != nil && fatal == nil {
			fatal = fmt.Errorf("partition %d: %w", res.id, res.err)
		}
	}
	processed := time.Now()

	endCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.TransactionTimeout+30*time.Second)
	defer cancel()
	if err := r.sess.Client().Flush(endCtx); err != nil {
		return fmt.Errorf("flush transaction: %w", err)
	}
	r.txWG.Wait()
	flushed := time.Now()
	if err := r.txErr; err != nil && fatal == nil {
		r.log.Warn("a produce in the transaction failed; aborting it", "err", err)
	}
	facts := endFacts{fatal: fatal != nil, produceFailed: r.txErr != nil, polled: n,
		produced: r.txProduced.Load(), carried: r.carried, carriedSince: r.carriedSince,
		maxRecords: r.cfg.MaxRecords, lastEnd: r.lastEnd, wall: time.Now()}
	plan2 := planEnd(facts)
	if plan2.action == endCheckMember {
		err := r.stillMember(endCtx)
		if err != nil {
			r.log.Info("not a current group member; aborting a transaction of timers", "err", err)
		}
		facts.memberChecked, facts.member, facts.wall = true, err == nil, time.Now()
		plan2 = planEnd(facts)
	}
	if plan2.action == endCarry {
		// Nothing produced, so no state changed: carry the offsets into
		// the next transaction instead of an offsets-only one now.
		for _, p := range work {
			p.jobs <- job{op: opCommit}
		}
		if r.carried == 0 {
			r.carriedSince = start
		}
		r.carried += n
		r.m.carried.Add(float64(n))
		r.count(results)
		return nil
	}
	if plan2.wait > 0 {
		time.Sleep(plan2.wait)
	}
	endStart := time.Now()
	committed, err := r.end(endCtx, plan2.action == endCommit)
	if err != nil {
		return err
	}
	ended := time.Now()
	op := opRollback
	if committed {
		op = opCommit
	}
	for _, p := range work {
		p.jobs <- job{op: op}
	}
	if fatal != nil {
		return fatal
	}
	r.m.batchSeconds.Observe(ended.Sub(start).Seconds())
	r.m.phaseProcess.Observe(processed.Sub(start).Seconds())
	r.m.phaseFlush.Observe(flushed.Sub(processed).Seconds())
	r.m.phaseEnd.Observe(ended.Sub(endStart).Seconds())
	if d := ended.Sub(start); d >= slowBatch {
		r.log.Warn("slow transaction", "records", n, "produced", facts.produced, "committed", committed,
			"process", processed.Sub(start).Round(time.Millisecond), "flush", flushed.Sub(processed).Round(time.Millisecond),
			"end", ended.Sub(endStart).Round(time.Millisecond), "total", d.Round(time.Millisecond))
	}
	r.backoff = nextBackoff(r.backoff, committed)
	if !committed {
		r.m.txns.WithLabelValues("aborted").Inc()
		r.log.Info("transaction aborted; its batch will be polled again", "records", n, "backoff", r.backoff)
		return nil
	}
	r.m.txns.WithLabelValues("committed").Inc()
	for _, recs := range byPart {
		for _, rec := range recs {
			r.m.hopPoll.Observe(start.Sub(rec.Timestamp).Seconds())
			r.m.hopCommit.Observe(ended.Sub(start).Seconds())
			r.m.hopTotal.Observe(ended.Sub(rec.Timestamp).Seconds())
		}
	}
	r.count(results)
	return nil
}

// slowBatch: a transaction that takes longer is logged with its phases.
const slowBatch = time.Second

// end ends the open transaction (commit: try to commit) and resets the
// carry.
func (r *Runner[S]) end(ctx context.Context, commit bool) (bool, error) {
	committed, err := r.sess.End(ctx, kgo.TransactionEndTry(commit))
	r.lastEnd = time.Now()
	r.inTxn, r.carried, r.carriedSince = false, 0, time.Time{}
	if !committed {
		r.rewindMarks()
	}
	r.marksAtBegin = nil
	if err != nil {
		return false, fmt.Errorf("end transaction: %w", err)
	}
	return committed, nil
}

// snapshotMarks keeps every partition's input marks as they are when a
// transaction begins; rewindMarks puts them back when it aborts: its polled
// records come again, and until they are processed again no timer may fire
// on the strength of their timestamps. Called by the poll loop only, with
// r.mu held or between cycles (no callback runs then).
func (r *Runner[S]) snapshotMarks() {
	r.marksAtBegin = make(map[*partition[S]]map[string]inputMark, len(r.parts))
	for _, p := range r.parts {
		r.marksAtBegin[p] = p.marks
	}
}

func (r *Runner[S]) rewindMarks() {
	if r.marksAtBegin == nil { // an empty transaction (abortPolled): no marks moved
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.parts {
		if m, ok := r.marksAtBegin[p]; ok {
			p.marks = m
		} else if p.jobs != nil { // installed since the transaction began
			p.marks = make(map[string]inputMark, len(r.cfg.Inputs))
			for _, t := range r.cfg.Inputs {
				p.marks[t] = unknownMark(time.Now())
			}
		}
	}
}

// endCarried commits a transaction that holds only carried offsets (no
// worker has a job in it). An abort rewinds them: they are polled again.
func (r *Runner[S]) endCarried(ctx context.Context) error {
	if w := emptyTxnGap - time.Since(r.lastEnd); w > 0 {
		time.Sleep(w)
	}
	endCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.TransactionTimeout+30*time.Second)
	defer cancel()
	n := r.carried
	committed, err := r.end(endCtx, true)
	if err != nil {
		return err
	}
	if !committed {
		r.m.txns.WithLabelValues("aborted").Inc()
		r.log.Info("transaction of carried offsets aborted; its records will be polled again", "records", n)
		return nil
	}
	r.m.txns.WithLabelValues("committed").Inc()
	return nil
}

// count adds a batch's results to the record, output, timer and changelog
// counters.
func (r *Runner[S]) count(results []result) {
	for _, res := range results {
		for t, c := range res.records {
			r.m.records.WithLabelValues(t).Add(float64(c))
		}
		for t, c := range res.outputs {
			r.m.outputs.WithLabelValues(t).Add(float64(c))
		}
		r.m.timersFired.Add(float64(res.fired))
		r.m.changelog.Add(float64(res.changes))
	}
}

// abortPolled ends an empty transaction with an abort: the polled offsets are
// rewound to the committed ones, and the session's rebalance flags reset.
func (r *Runner[S]) abortPolled(ctx context.Context) error {
	if !r.inTxn {
		if err := r.sess.Begin(); err != nil {
			return fmt.Errorf("begin transaction: %w", err)
		}
	}
	_, err := r.end(context.WithoutCancel(ctx), false)
	return err
}

// emit produces a Handler's outputs into the open transaction.
func (r *Runner[S]) emit(out []Output, count map[string]int) error {
	for _, o := range out {
		if (len(r.outs) > 0 && !r.outs[o.Topic]) || o.Topic == r.cfg.Changelog {
			return fmt.Errorf("output to undeclared topic %q", o.Topic)
		}
		rec := &kgo.Record{Topic: o.Topic, Value: o.Value}
		if o.Key != "" {
			rec.Key = []byte(o.Key)
		}
		r.produce(rec, nil)
		count[o.Topic]++
	}
	return nil
}

// produce produces rec in the open transaction; a failure aborts it.
func (r *Runner[S]) produce(rec *kgo.Record, ok func(*kgo.Record)) {
	r.txProduced.Add(1)
	r.txWG.Add(1)
	r.sess.Produce(r.runCtx, rec, func(rec *kgo.Record, err error) {
		defer r.txWG.Done()
		if err != nil {
			r.txMu.Lock()
			if r.txErr == nil {
				r.txErr = fmt.Errorf("produce to %s/%d: %w", rec.Topic, rec.Partition, err)
			}
			r.txMu.Unlock()
			return
		}
		if ok != nil {
			ok(rec)
		}
	})
}

// groupInstanceID is the member's group.instance.id: InstanceID when
// StaticMembership, else "" (dynamic).
func (r *Runner[S]) groupInstanceID() string {
	if r.cfg.StaticMembership {
		return r.cfg.InstanceID
	}
	return ""
}

// stillMember heartbeats with the member id and generation the client holds:
// nil (or REBALANCE_IN_PROGRESS, which is only returned to a current
// member, who keeps its partitions until it rejoins after this transaction)
// means no other member can own our partitions yet.
func (r *Runner[S]) stillMember(ctx context.Context) error {
	member, gen := r.sess.Client().GroupMetadata()
	if member == "" || gen < 0 {
		return errors.New("not joined")
	}
	req := kmsg.NewPtrHeartbeatRequest()
	req.Group = r.cfg.Group
	req.MemberID = member
	req.Generation = gen
	if id := r.groupInstanceID(); id != "" {
		req.InstanceID = &id
	}
	resp, err := req.RequestWith(ctx, r.sess.Client())
	if err != nil {
		return err
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil && !errors.Is(err, kerr.RebalanceInProgress) {
		return err
	}
	return nil
}

// partitionIDs is the set of partition numbers in a callback's map; with
// range assignment of co-partitioned topics every topic lists the same.
func partitionIDs(m map[string][]int32) []int32 {
	var ids []int32
	for _, ps := range m {
		for _, p := range ps {
			if !slices.Contains(ids, p) {
				ids = append(ids, p)
			}
		}
	}
	slices.Sort(ids)
	return ids
}

func (r *Runner[S]) inputsOf(ids []int32) map[string][]int32 {
	m := map[string][]int32{}
	for _, t := range r.cfg.Inputs {
		m[t] = slices.Clone(ids)
	}
	return m
}

// onAssigned runs before fetching of the assigned partitions begins. It
// pauses their inputs and starts restoring their state; installRestored
// resumes each one once its state is complete. Restoring in the callback
// itself would also keep input back, but it would stall the whole member
// (polls wait for callbacks) and the group (the next rebalance waits for
// it), for as long as the slowest restore.
func (r *Runner[S]) onAssigned(_ context.Context, cl *kgo.Client, assigned map[string][]int32) {
	ids := partitionIDs(assigned)
	r.mu.Lock()
	defer r.mu.Unlock()
	for id := range r.parked {
		if !slices.Contains(ids, id) {
			delete(r.parked, id)
			r.forget(id)
		}
	}
	var fresh []int32
	for _, id := range ids {
		if _, ok := r.parts[id]; ok {
			continue
		}
		p := &partition[S]{id: id}
		p.pending.Store(-1)
		if pk, ok := r.parked[id]; ok {
			p.st, p.pos = pk.st, pk.pos
			delete(r.parked, id)
		} else {
			p.st = store.New[S, Input, Output](r.h)
		}
		r.parts[id] = p
		fresh = append(fresh, id)
	}
	if len(fresh) > 0 {
		cl.PauseFetchPartitions(r.inputsOf(fresh))
		for _, id := range fresh {
			r.startRestore(r.parts[id])
		}
	}
	r.joined.Store(true)
	r.log.Info("partitions assigned", "partitions", ids)
}

// onRevoked (also OnPartitionsLost) runs between transactions. It stops the
// revoked partitions' workers or restores and parks their state: with the
// eager range balancer every rebalance revokes every partition, and most
// come straight back. State is parked only while consistent with the
// changelog up to its position (every transaction ended, aborted changes
// rolled back); onAssigned drops what is not reassigned.
func (r *Runner[S]) onRevoked(_ context.Context, cl *kgo.Client, revoked map[string][]int32) {
	ids := partitionIDs(revoked)
	r.revoked.Store(true)
	r.mu.Lock()
	defer r.mu.Unlock()
	var paused []int32
	for _, id := range ids {
		p, ok := r.parts[id]
		if !ok {
			continue
		}
		delete(r.parts, id)
		if p.jobs == nil {
			p.cancel()
			<-p.restored
			paused = append(paused, id)
			if p.restoreErr != nil && !errors.Is(p.restoreErr, context.Canceled) {
				r.forget(id)
				continue
			}
		} else {
			close(p.jobs)
			<-p.exited
		}
		r.parked[id] = parked[S]{st: p.st, pos: p.pos}
	}
	if len(paused) > 0 {
		cl.ResumeFetchPartitions(r.inputsOf(paused))
	}
	r.log.Info("partitions revoked", "partitions", ids)
}

func (r *Runner[S]) forget(id int32) {
	label := strconv.Itoa(int(id))
	r.m.stateKeys.DeleteLabelValues(label)
	r.m.staleKeys.DeleteLabelValues(label)
	r.m.lag.DeletePartialMatch(map[string]string{"partition": label})
}

// startRestore reads p's changelog from p.pos into p.st in a goroutine.
func (r *Runner[S]) startRestore(p *partition[S]) {
	ctx, cancel := context.WithCancel(r.runCtx)
	p.cancel = cancel
	p.restored = make(chan struct{})
	r.m.restoring.Inc()
	go func() {
		defer close(p.restored)
		defer r.m.restoring.Dec()
		start := time.Now()
		from, pos, n, err := r.restore(ctx, p) // restore.go
		p.pos, p.restoreErr = pos, err
		r.m.restoreRecs.Add(float64(n))
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				r.log.Error("restore failed", "partition", p.id, "err", err)
			}
			return
		}
		r.m.restoreSecs.Observe(time.Since(start).Seconds())
		r.log.Info("partition restored", "partition", p.id, "from", from, "to", pos, "records", n,
			"keys", p.st.Len(), "timers", p.st.Armed(), "took", time.Since(start).Round(time.Millisecond))
	}()
}

// installRestored starts a worker for every partition whose restore ended
// and resumes its inputs. It runs in the poll loop between a poll and
// AllowRebalance, so no callback runs concurrently.
func (r *Runner[S]) installRestored() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ready []int32
	for id, p := range r.parts {
		if p.jobs != nil {
			continue
		}
		select {
		case <-p.restored:
		default:
			continue
		}
		if p.restoreErr != nil {
			return fmt.Errorf("restore partition %d: %w", id, p.restoreErr)
		}
		p.marks = make(map[string]inputMark, len(r.cfg.Inputs))
		for _, t := range r.cfg.Inputs {
			p.marks[t] = unknownMark(time.Now())
		}
		p.jobs = make(chan job, 4)
		p.exited = make(chan struct{})
		r.publish(p) // before the worker owns p.st
		go r.work(p)
		ready = append(ready, id)
	}
	if len(ready) > 0 {
		slices.Sort(ready)
		r.sess.Client().ResumeFetchPartitions(r.inputsOf(ready))
	}
	return nil
}

// dropAll stops whatever the group did not revoke (a failed join) and drops
// all state.
func (r *Runner[S]) dropAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, p := range r.parts {
		if p.jobs == nil {
			p.cancel()
			<-p.restored
		} else {
			close(p.jobs)
			<-p.exited
		}
		delete(r.parts, id)
		r.forget(id)
	}
	for id := range r.parked {
		delete(r.parked, id)
		r.forget(id)
	}
}

// changelogPartitioner sends changelog records to the partition the runner
// set (the state's partition, whatever the key hashes to) and every other
// record by key, like Kafka's default partitioner.
type changelogPartitioner struct {
	changelog string
	other     kgo.Partitioner
}

func (c changelogPartitioner) ForTopic(t string) kgo.TopicPartitioner {
	if t == c.changelog {
		return kgo.ManualPartitioner().ForTopic(t)
	}
	return c.other.ForTopic(t)
}

// fastRetryBackoff is the session's retry backoff: 1ms, doubling per
// failure up to 1s, with ±25% jitter. A retried produce in a transaction
// (CONCURRENT_TRANSACTIONS right after the previous End) usually succeeds
// within a few milliseconds; a broker that is down is still retried at most
// once a second after ten failures.
func fastRetryBackoff(fails int) time.Duration {
	d := time.Second
	if fails < 11 {
		d = time.Millisecond << max(0, fails-1)
	}
	j := 0.75 + 0.5*rand.Float64()
	return time.Duration(float64(d) * j)
}

// kgoLogger passes franz-go's warnings and errors to slog.
type kgoLogger struct{ l *slog.Logger }

func (k kgoLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	switch level {
	case kgo.LogLevelError:
		k.l.Error("kafka: "+msg, keyvals...)
	case kgo.LogLevelWarn:
		k.l.Warn("kafka: "+msg, keyvals...)
	}
}
