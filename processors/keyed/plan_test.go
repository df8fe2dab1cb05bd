package keyed

import (
	"math"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestPlanStart(t *testing.T) {
	none := int64(math.MaxInt64)
	ready := func(next int64) partView { return partView{ready: true, next: next} }
	cases := []struct {
		name string
		f    startFacts
		want startPlan
	}{
		{"nothing polled, nothing due", startFacts{parts: map[int32]partView{0: ready(none), 1: ready(none)}, clock: t0, wall: t0},
			startPlan{action: startIdle}},
		{"revoked wins over work", startFacts{revoked: true, polled: map[int32]int{0: 3},
			parts: map[int32]partView{0: ready(none)}, clock: t0, wall: t0},
			startPlan{action: startAbortPolled}},
		{"records of a restoring partition", startFacts{polled: map[int32]int{0: 1, 2: 4, 1: 2},
			parts: map[int32]partView{0: ready(none), 1: {}}, clock: t0, wall: t0},
			startPlan{action: startAbortPolled, stray: []int32{1, 2}}},
		{"records and a due timer, new transaction", startFacts{polled: map[int32]int{2: 1},
			parts: map[int32]partView{0: ready(t0.UnixNano()), 1: ready(t0.Add(time.Second).UnixNano()), 2: ready(none)},
			clock: t0, wall: t0},
			startPlan{action: startProcess, work: []int32{0, 2}, begin: true}},
		{"a restoring partition's due timer waits", startFacts{
			parts: map[int32]partView{0: {next: t0.UnixNano()}}, clock: t0, wall: t0},
			startPlan{action: startIdle}},
		{"work in the carried transaction: no Begin", startFacts{polled: map[int32]int{0: 1},
			parts: map[int32]partView{0: ready(none)}, clock: t0, inTxn: true, carriedSince: t0, wall: t0.Add(time.Hour)},
			startPlan{action: startProcess, work: []int32{0}}},
		{"idle, carried offsets young", startFacts{parts: map[int32]partView{0: ready(none)}, clock: t0,
			inTxn: true, carriedSince: t0, wall: t0.Add(carryFor - time.Millisecond)},
			startPlan{action: startIdle}},
		{"idle, carried offsets old enough", startFacts{parts: map[int32]partView{0: ready(none)}, clock: t0,
			inTxn: true, carriedSince: t0, wall: t0.Add(carryFor)},
			startPlan{action: startEndCarried}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := planStart(c.f)
			if got.action != c.want.action || got.begin != c.want.begin ||
				!slices.Equal(got.work, c.want.work) || !slices.Equal(got.stray, c.want.stray) {
				t.Fatalf("planStart = %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestPlanEnd(t *testing.T) {
	base := endFacts{polled: 5, produced: 3, maxRecords: 1000, wall: t0, lastEnd: t0.Add(-time.Second)}
	with := func(f func(*endFacts)) endFacts { e := base; f(&e); return e }
	cases := []struct {
		name string
		f    endFacts
		want endPlan
	}{
		{"produced: commit at once", base, endPlan{action: endCommit}},
		{"a worker failed", with(func(e *endFacts) { e.fatal = true }), endPlan{action: endAbort}},
		{"a produce failed", with(func(e *endFacts) { e.produceFailed = true }), endPlan{action: endAbort}},
		{"timers only: check membership first", with(func(e *endFacts) { e.polled = 0 }), endPlan{action: endCheckMember}},
		{"timers only, still a member", with(func(e *endFacts) { e.polled, e.memberChecked, e.member = 0, true, true }),
			endPlan{action: endCommit}},
		{"timers only, not a member", with(func(e *endFacts) { e.polled, e.memberChecked = 0, true }),
			endPlan{action: endAbort}},
		{"timers only, failed: no membership check", with(func(e *endFacts) { e.polled, e.fatal = 0, true }),
			endPlan{action: endAbort}},
		{"nothing produced: carry", with(func(e *endFacts) { e.produced = 0 }), endPlan{action: endCarry}},
		{"nothing produced, carried young: carry", with(func(e *endFacts) {
			e.produced, e.carried, e.carriedSince = 0, 10, t0.Add(-carryFor+time.Millisecond)
		}), endPlan{action: endCarry}},
		{"nothing produced, carried too long: commit alone", with(func(e *endFacts) {
			e.produced, e.carried, e.carriedSince = 0, 10, t0.Add(-carryFor)
		}), endPlan{action: endCommit}},
		{"nothing produced, carry full: commit", with(func(e *endFacts) { e.produced, e.carried = 0, 995 }),
			endPlan{action: endCommit}},
		{"nothing produced right after an End: wait the gap", with(func(e *endFacts) {
			e.produced, e.carried, e.lastEnd = 0, 995, t0.Add(-2*time.Millisecond)
		}), endPlan{action: endCommit, wait: emptyTxnGap - 2*time.Millisecond}},
		{"failed, nothing produced: abort after the gap", with(func(e *endFacts) {
			e.produced, e.fatal, e.lastEnd = 0, true, t0
		}), endPlan{action: endAbort, wait: emptyTxnGap}},
		{"produced right after an End: no wait", with(func(e *endFacts) { e.lastEnd = t0 }), endPlan{action: endCommit}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := planEnd(c.f); got != c.want {
				t.Fatalf("planEnd = %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestNextBackoff(t *testing.T) {
	var b time.Duration
	want := []time.Duration{5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000}
	for i, w := range want {
		if b = nextBackoff(b, false); b != w*time.Millisecond {
			t.Fatalf("abort %d: backoff %v, want %v", i+1, b, w*time.Millisecond)
		}
	}
	if b = nextBackoff(b, true); b != 0 {
		t.Fatalf("after a commit: %v, want 0", b)
	}
}
