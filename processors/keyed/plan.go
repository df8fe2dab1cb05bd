package keyed

import (
	"math"
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
	// marks: its inputs' progress, by topic (see fireHorizon); nil: none
	// behind, its timers fire by the Clock.
	marks map[string]inputMark
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
		if p.ready && (f.polled[id] > 0 || p.next <= fireHorizon(f.clock, p.marks)) {
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

// Timers of a partition whose input is behind (ORDERING.md, "Timers").

// lagSlack is the lag, in offsets, that still counts as caught up: a
// transactional producer's commit marker sits after its last record, so a
// read-committed consumer that has every record still sees the high
// watermark one offset ahead.
const lagSlack = 1

// behindHold and behindPolls end a hold when an input partition's records
// stop coming: one marked behind (or not yet seen since the partition was
// installed) counts as caught up once behindPolls polls in a row brought
// none of its records and behindHold has passed since its last ones. A
// partition with a backlog has records in (nearly) every poll; an idle one
// has none, and no fetch tells it is idle, so this is how long an idle
// partition's timers may be held after a restore or after a backlog ends.
const (
	behindHold  = 2 * time.Second
	behindPolls = 3
)

// inputMark is what the poll loop knows of one input partition's progress.
type inputMark struct {
	behind bool  // records before the high watermark are not processed yet (or not known)
	newest int64 // newest record timestamp processed, unix ns (MinInt64: none)
	// seen: wall time of the last poll with its records (the install at
	// first); absent: polls since then without its records.
	seen   time.Time
	absent int
}

// unknownMark is an input partition's mark when its partition is installed:
// behind, nothing processed. Timers are held until its first records (or
// the hold ends): a restored state's deadlines are all due after an outage,
// while the heartbeats that would move them still wait in the input.
func unknownMark(wall time.Time) inputMark {
	return inputMark{behind: true, newest: math.MinInt64, seen: wall}
}

// polledInput is one poll's records of one input partition.
type polledInput struct {
	last   int64 // offset of the last record
	hwm    int64 // the partition's high watermark in that fetch
	newest int64 // newest record timestamp, unix ns
}

// observe is m after a poll; in is nil when the poll had none of its
// records.
func observe(m inputMark, in *polledInput, wall time.Time) inputMark {
	if in == nil {
		m.absent++
		if m.behind && m.absent >= behindPolls && wall.Sub(m.seen) >= behindHold {
			m.behind = false
		}
		return m
	}
	return inputMark{behind: in.hwm-in.last-1 > lagSlack, newest: max(m.newest, in.newest), seen: wall}
}

// fireHorizon is the latest deadline a partition's timers may fire at: the
// Clock, but while one of its inputs is behind, no later than the newest
// record timestamp processed from that input. A timer is an absence of
// input ("no heartbeat for 90s"): while input is queued, the absence is
// only known up to the input's newest processed record, and firing by the
// Clock would declare absent a key whose input is still waiting.
func fireHorizon(clock time.Time, marks map[string]inputMark) int64 {
	h := clock.UnixNano()
	for _, m := range marks {
		if m.behind {
			h = min(h, m.newest)
		}
	}
	return h
}
