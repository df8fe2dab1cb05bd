package keyed

import (
	"slices"
	"time"
)

// The poll loop's decisions, as pure functions of what a cycle saw: no I/O,
// no locks, no clock of their own. Runner.cycle gathers the facts (the
// "act" side: poll, hand jobs to the workers, flush, end the transaction)
// and asks these what to do at each of its two decision points. The order
// of the steps is ORDERING.md's; the decisions here are its steps 2, 3 and 6.

// startAction is what a cycle does with what it polled.
type startAction int

const (
	// startIdle: no work; the cycle ends (the gate opens).
	startIdle startAction = iota
	// startAbortPolled: end an empty transaction with an abort so the
	// polled records are rewound (after a revocation, or records of a
	// partition without restored state).
	startAbortPolled
	// startEndCarried: no work, but the carried offsets are old enough:
	// commit them alone.
	startEndCarried
	// startProcess: hand jobs to the partitions in plan.work.
	startProcess
)

// partView is what the planner knows of one assigned partition.
type partView struct {
	ready bool  // restored, its worker running
	next  int64 // its earliest timer, unix ns of the Clock (MaxInt64: none)
}

// startFacts are the facts a cycle gathered after polling.
type startFacts struct {
	revoked      bool          // a revocation since the last cycle
	polled       map[int32]int // records polled, by partition
	parts        map[int32]partView
	clock        time.Time // Config.Clock: the timers' now
	inTxn        bool      // a transaction is open (carried offsets)
	carriedSince time.Time // the first carried record's poll
	wall         time.Time // time.Now()
}

type startPlan struct {
	action startAction
	work   []int32 // startProcess: partitions with records or a due timer, ascending
	stray  []int32 // startAbortPolled: polled partitions without restored state
	begin  bool    // startProcess: Begin a transaction first (none is open)
}

// planStart decides ORDERING.md's steps 2 and 3.
func planStart(f startFacts) startPlan {
	if f.revoked {
		return startPlan{action: startAbortPolled}
	}
	var stray []int32
	for id, n := range f.polled {
		if p, ok := f.parts[id]; n > 0 && (!ok || !p.ready) {
			stray = append(stray, id)
		}
	}
	if len(stray) > 0 {
		slices.Sort(stray)
		return startPlan{action: startAbortPolled, stray: stray}
	}
	var work []int32
	for id, p := range f.parts {
		if p.ready && (f.polled[id] > 0 || p.next <= f.clock.UnixNano()) {
			work = append(work, id)
		}
	}
	if len(work) == 0 {
		if f.inTxn && f.wall.Sub(f.carriedSince) >= carryFor {
			return startPlan{action: startEndCarried}
		}
		return startPlan{action: startIdle}
	}
	slices.Sort(work)
	return startPlan{action: startProcess, work: work, begin: !f.inTxn}
}

// endAction is how a processed batch's transaction ends.
type endAction int

const (
	// endCommit: End(TryCommit).
	endCommit endAction = iota
	// endAbort: End(TryAbort).
	endAbort
	// endCarry: keep the transaction open; the batch's offsets commit
	// with a later one.
	endCarry
	// endCheckMember: a timers-only batch that would commit: heartbeat
	// first, then ask again with memberChecked set.
	endCheckMember
)

// endFacts are the facts after the workers finished and the produces were
// flushed.
type endFacts struct {
	fatal         bool      // a worker failed (the runner stops after ending)
	produceFailed bool      // a produce in the transaction failed
	polled        int       // input records of this batch
	produced      int64     // records produced in this batch's transaction
	carried       int       // input records carried from earlier batches
	carriedSince  time.Time // the first carried record's poll
	maxRecords    int
	memberChecked bool // the membership check ran
	member        bool // and found this runner still a member
	wall          time.Time
	lastEnd       time.Time // when the previous End returned
}

type endPlan struct {
	action endAction
	// wait before End: a transaction that produced nothing waits until
	// emptyTxnGap after the previous End (ORDERING.md step 7).
	wait time.Duration
}

// planEnd decides ORDERING.md's step 6.
func planEnd(f endFacts) endPlan {
	commit := !f.fatal && !f.produceFailed
	if commit && f.polled == 0 {
		if !f.memberChecked {
			return endPlan{action: endCheckMember}
		}
		commit = f.member
	}
	if commit && f.polled > 0 && f.produced == 0 && f.carried+f.polled < f.maxRecords &&
		(f.carried == 0 || f.wall.Sub(f.carriedSince) < carryFor) {
		return endPlan{action: endCarry}
	}
	p := endPlan{action: endAbort}
	if commit {
		p.action = endCommit
	}
	if f.produced == 0 {
		p.wait = max(0, emptyTxnGap-f.wall.Sub(f.lastEnd))
	}
	return p
}

// nextBackoff is the pause after a transaction ended: reset by a commit,
// 5ms doubling to 1s while transactions keep aborting.
func nextBackoff(prev time.Duration, committed bool) time.Duration {
	if committed {
		return 0
	}
	return min(max(2*prev, 5*time.Millisecond), time.Second)
}
