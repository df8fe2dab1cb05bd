package keyed

import (
	"context"
	"math"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/processors/keyed/internal/store"
)

// partition is one assigned partition: its state, first being restored
// (jobs == nil), then served by one worker goroutine, the only goroutine that
// touches st while it runs.
type partition[S any] struct {
	id  int32
	st  *store.Store[S, Input, Output]
	pos int64 // changelog offset st is consistent with: everything before it is applied

	// Restore: the goroutine sets restoreErr and pos, then closes restored.
	cancel     context.CancelFunc
	restored   chan struct{}
	restoreErr error

	// Worker.
	jobs    chan job
	exited  chan struct{}
	next    atomic.Int64 // next timer (unix ns of the Clock), MaxInt64 when none
	pending atomic.Int64 // highest changelog offset produced in the open transaction, -1
	// marks: progress of its inputs, by topic (plan.go's fireHorizon);
	// only the poll loop touches it.
	marks map[string]inputMark
	// staleClean: a count of stale keys (rewrap.go) found none since the
	// partition was restored.
	staleClean bool
}

type jobOp int

const (
	opBatch    jobOp = iota // process records, fire due timers, produce outputs and changes
	opCommit                // the transaction committed: keep the changes
	opRollback              // the transaction aborted: restore the touched keys
)

type job struct {
	op     jobOp
	recs   []*kgo.Record
	now    time.Time
	until  time.Time // fire timers due at or before this (fireHorizon, at most now)
	budget int       // timers to fire at most
	done   chan<- result
}

// result of one opBatch.
type result struct {
	id      int32
	records map[string]int
	outputs map[string]int
	fired   int
	changes int
	err     error // a Handler error or an undeclared output: stops the runner
}

// parked is the state of a revoked partition, kept until the next assignment
// in case the partition comes back (an eager rebalance revokes everything):
// then only the changelog after pos is read.
type parked[S any] struct {
	st  *store.Store[S, Input, Output]
	pos int64
}

// work serves p's jobs until p.jobs is closed.
func (r *Runner[S]) work(p *partition[S]) {
	defer close(p.exited)
	publish := func() { r.publish(p) }
	for j := range p.jobs {
		switch j.op {
		case opBatch:
			j.done <- r.batch(p, j)
		case opCommit:
			p.st.Commit()
			if off := p.pending.Swap(-1); off >= p.pos {
				p.pos = off + 1
			}
			publish()
		case opRollback:
			p.st.Rollback()
			p.pending.Store(-1)
			publish()
		}
	}
}

// publish makes p's next deadline and key count visible to the poll loop
// and the metrics. Only the goroutine owning p.st calls it.
func (r *Runner[S]) publish(p *partition[S]) {
	if _, at, ok := p.st.Peek(); ok {
		p.next.Store(at.UnixNano())
	} else {
		p.next.Store(math.MaxInt64)
	}
	r.m.stateKeys.WithLabelValues(strconv.Itoa(int(p.id))).Set(float64(p.st.Len()))
	r.publishStale(p)
}

// batch handles one partition's share of a transaction: its records in
// order, then its due timers, then one changelog record per changed key.
func (r *Runner[S]) batch(p *partition[S], j job) result {
	res := result{id: p.id, records: map[string]int{}, outputs: map[string]int{}}
	p.st.Begin()
	p.pending.Store(-1)
	for _, rec := range j.recs {
		in := Input{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset,
			Key: string(rec.Key), Value: rec.Value, Timestamp: rec.Timestamp}
		out, err := p.st.Process(j.now, in.Key, in)
		if err != nil {
			res.err = err
			return res
		}
		if res.err = r.emit(out, res.outputs); res.err != nil {
			return res
		}
		res.records[rec.Topic]++
	}
	fired, err := p.st.Fire(j.now, j.until, j.budget, func(_ string, out []Output) {
		if e := r.emit(out, res.outputs); e != nil && res.err == nil {
			res.err = e
		}
	})
	res.fired = fired
	if err != nil {
		res.err = err
	}
	if res.err != nil {
		return res
	}
	for _, c := range p.st.Changes() {
		var v []byte
		if c.State != nil {
			if v, err = r.h.EncodeState(c.Key, c.State); err != nil {
				res.err = err
				return res
			}
		}
		rec := &kgo.Record{Topic: r.cfg.Changelog, Partition: p.id, Key: []byte(c.Key), Value: v}
		r.produce(rec, func(rec *kgo.Record) {
			for {
				cur := p.pending.Load()
				if rec.Offset <= cur || p.pending.CompareAndSwap(cur, rec.Offset) {
					return
				}
			}
		})
		res.changes++
	}
	return res
}
