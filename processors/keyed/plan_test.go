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

func TestObserve(t *testing.T) {
	sec := func(s int) int64 { return t0.Add(time.Duration(s) * time.Second).UnixNano() }
	fresh := unknownMark(t0)
	cases := []struct {
		name string
		m    inputMark
		in   *polledInput
		wall time.Time
		want inputMark
	}{
		{"first records, backlog", fresh, &polledInput{last: 10, hwm: 100, newest: sec(5)}, t0,
			inputMark{behind: true, newest: sec(5), seen: t0}},
		{"first records, caught up", fresh, &polledInput{last: 99, hwm: 100, newest: sec(5)}, t0,
			inputMark{newest: sec(5), seen: t0}},
		{"a commit marker after the last record is caught up", fresh, &polledInput{last: 98, hwm: 100, newest: sec(5)}, t0,
			inputMark{newest: sec(5), seen: t0}},
		{"two offsets short is behind", fresh, &polledInput{last: 97, hwm: 100, newest: sec(5)}, t0,
			inputMark{behind: true, newest: sec(5), seen: t0}},
		{"newest never goes back", inputMark{behind: true, newest: sec(9)}, &polledInput{last: 1, hwm: 50, newest: sec(5)}, t0,
			inputMark{behind: true, newest: sec(9), seen: t0}},
		{"absent, still held", fresh, nil, t0.Add(time.Hour), inputMark{behind: true, newest: math.MinInt64, seen: t0, absent: 1}},
		{"absent long enough but too few polls", inputMark{behind: true, seen: t0, absent: behindPolls - 2}, nil, t0.Add(behindHold),
			inputMark{behind: true, seen: t0, absent: behindPolls - 1}},
		{"absent enough polls but too short", inputMark{behind: true, seen: t0, absent: behindPolls}, nil, t0.Add(behindHold - 1),
			inputMark{behind: true, seen: t0, absent: behindPolls + 1}},
		{"absent polls and time: idle, caught up", inputMark{behind: true, seen: t0, absent: behindPolls - 1}, nil, t0.Add(behindHold),
			inputMark{seen: t0, absent: behindPolls}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := observe(c.m, c.in, c.wall); got != c.want {
				t.Fatalf("observe = %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestFireHorizon(t *testing.T) {
	at := func(s int) int64 { return t0.Add(time.Duration(s) * time.Second).UnixNano() }
	clock := t0.Add(time.Hour)
	cases := []struct {
		name  string
		marks map[string]inputMark
		want  int64
	}{
		{"no marks: the clock", nil, clock.UnixNano()},
		{"caught up: the clock", map[string]inputMark{"a": {newest: at(5)}}, clock.UnixNano()},
		{"behind: its newest record", map[string]inputMark{"a": {behind: true, newest: at(5)}}, at(5)},
		{"behind, records newer than the clock: the clock", map[string]inputMark{"a": {behind: true, newest: at(7200)}}, clock.UnixNano()},
		{"the input furthest behind", map[string]inputMark{"a": {behind: true, newest: at(50)},
			"b": {behind: true, newest: at(20)}, "c": {newest: at(1)}}, at(20)},
		{"not seen yet: nothing fires", map[string]inputMark{"a": unknownMark(t0)}, math.MinInt64},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := fireHorizon(clock, c.marks); got != c.want {
				t.Fatalf("fireHorizon = %v, want %v", got, c.want)
			}
		})
	}
}

func TestPlanStartHoldsTimersOfABehindPartition(t *testing.T) {
	due := t0.Add(-time.Minute).UnixNano()
	behind := map[string]inputMark{"in": {behind: true, newest: t0.Add(-2 * time.Minute).UnixNano()}}
	passed := map[string]inputMark{"in": {behind: true, newest: t0.Add(-30 * time.Second).UnixNano()}}
	f := startFacts{parts: map[int32]partView{
		0: {ready: true, next: due, marks: behind},
		1: {ready: true, next: due, marks: passed},
		2: {ready: true, next: due},
	}, clock: t0, wall: t0}
	if got := planStart(f); got.action != startProcess || !slices.Equal(got.work, []int32{1, 2}) {
		t.Fatalf("planStart = %+v, want partitions 1 and 2 (0's input is behind its timer)", got)
	}
	f.polled = map[int32]int{0: 3}
	if got := planStart(f); !slices.Equal(got.work, []int32{0, 1, 2}) {
		t.Fatalf("planStart = %+v, want 0 too (records)", got)
	}
}
