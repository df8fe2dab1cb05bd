package egress

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/schemas"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// it is an item at off for device sn, in state st, changed by mods.
func it(off int64, sn string, st itemState, mods ...func(*item)) *item {
	x := &item{rec: &kgo.Record{Offset: off}, dl: schemas.Downlink{FrameID: fmt.Sprintf("f%d", off), SN: sn}, state: st}
	for _, m := range mods {
		m(x)
	}
	return x
}

func amo(x *item)       { x.dl.AtMostOnce = true }
func uncertain(x *item) { x.uncertain = true }
func past(x *item)      { d := t0.Add(-time.Second); x.dl.Deadline = &d }
func future(x *item)    { d := t0.Add(time.Minute); x.dl.Deadline = &d }
func bad(reason string) func(*item) {
	return func(x *item) { x.reject = &schemas.Reject{Reason: reason} }
}

var stateNames = map[itemState]string{stNew: "new", stPublishing: "publishing", stFailed: "failed", stAcked: "acked",
	stFinishing: "finishing", stDone: "done", stIntent: "intent", stIntentAcked: "intent_acked"}

// summary renders a plan and the state after it, omitting what is empty.
func summary(p plan, s *windowState) string {
	var b []string
	offs := func(name string, its []*item, kind func(*item) string) {
		if len(its) == 0 {
			return
		}
		var o []string
		for _, x := range its {
			o = append(o, fmt.Sprint(x.rec.Offset)+kind(x))
		}
		b = append(b, name+"=["+strings.Join(o, " ")+"]")
	}
	if p.last != nil {
		b = append(b, fmt.Sprintf("last=%d retired=%d", p.last.Offset, p.retired))
	}
	offs("finish", p.finish, func(x *item) string {
		switch {
		case x.reject != nil:
			return ":reject:" + x.reject.Reason
		case x.status != "":
			return ":" + x.status
		}
		return ":published"
	})
	none := func(*item) string { return "" }
	offs("intents", p.intents, none)
	offs("publish", p.publish, none)
	if p.republish {
		b = append(b, "republish")
	}
	if p.needScan {
		b = append(b, "scan")
	}
	if p.settled > 0 {
		b = append(b, fmt.Sprintf("settled=%d", p.settled))
	}
	if p.pending > 0 {
		b = append(b, fmt.Sprintf("pending=%d", p.pending))
	}
	if !p.retryAt.IsZero() {
		b = append(b, "retry_in="+p.retryAt.Sub(t0).String())
	}
	if len(s.queue) > 0 {
		b = append(b, fmt.Sprintf("queued=%d", len(s.queue)))
	}
	var st []string
	for _, x := range s.window {
		st = append(st, stateNames[x.state])
	}
	b = append(b, "window=["+strings.Join(st, " ")+"]")
	return strings.Join(b, " ")
}

// TestPlanRound: what one round of a partition worker decides, given its
// window, its queue and what the earlier owners recorded. These are the
// at-least-once order and at-most-once rules of partWorker, without I/O.
func TestPlanRound(t *testing.T) {
	cases := []struct {
		name     string
		window   []*item
		queue    []*item // what the queued records decode to
		scanned  bool
		prior    map[string]string
		stopping bool
		cap      int           // window size (default 10)
		retryIn  time.Duration // retryAt relative to the round; 0: not scheduled
		backoff  time.Duration
		want     string
	}{
		{name: "fresh frames are published in offset order",
			queue: []*item{it(0, "A", stNew), it(1, "B", stNew), it(2, "A", stNew, future)},
			want:  "publish=[0 1 2] pending=3 window=[publishing publishing publishing]"},
		{name: "the window caps what is taken",
			queue: []*item{it(0, "A", stNew), it(1, "B", stNew), it(2, "A", stNew)}, cap: 2,
			want: "publish=[0 1] pending=2 queued=1 window=[publishing publishing]"},
		{name: "a full window takes nothing",
			window: []*item{it(0, "A", stPublishing)}, queue: []*item{it(1, "A", stNew)}, cap: 1,
			want: "pending=1 queued=1 window=[publishing]"},
		{name: "a refused record gets its reject; the others go on",
			queue: []*item{it(0, "A", stNew, bad(ReasonBadSN)), it(1, "A", stNew)},
			want:  "finish=[0:reject:bad_sn] publish=[1] pending=2 window=[finishing publishing]"},
		{name: "a frame past its deadline is never published",
			queue: []*item{it(0, "A", stNew, past), it(1, "A", stNew, past, amo), it(2, "A", stNew)}, scanned: true,
			want: "finish=[0:expired_before_publish 1:expired_before_publish] publish=[2] pending=3 window=[finishing finishing publishing]"},
		{name: "at_most_once waits for the earlier owners' receipts; what is before it goes",
			queue: []*item{it(0, "A", stNew), it(1, "A", stNew, amo), it(2, "B", stNew)},
			want:  "publish=[0] scan pending=1 queued=2 window=[publishing]"},
		{name: "a refused at_most_once record needs no scan",
			queue: []*item{it(0, "A", stNew, amo, bad(ReasonEmptyPayload))},
			want:  "finish=[0:reject:empty_payload] pending=1 window=[finishing]"},
		{name: "at_most_once first attempt: intent first, nothing after it is taken",
			queue: []*item{it(0, "A", stNew, amo), it(1, "B", stNew)}, scanned: true, prior: map[string]string{},
			want: "intents=[0] pending=1 queued=1 window=[intent]"},
		{name: "an intent in flight holds the queue",
			window: []*item{it(0, "A", stIntent, amo)}, queue: []*item{it(1, "B", stNew)}, scanned: true,
			want: "pending=1 queued=1 window=[intent]"},
		{name: "intent written: published now, then the queue moves",
			window: []*item{it(0, "A", stIntentAcked, amo, future)}, queue: []*item{it(1, "A", stNew)}, scanned: true,
			want: "publish=[0 1] pending=2 window=[publishing publishing]"},
		{name: "intent written but the deadline passed meanwhile",
			window: []*item{it(0, "A", stIntentAcked, amo, past)}, scanned: true,
			want: "finish=[0:expired_before_publish] pending=1 window=[finishing]"},
		{name: "an earlier owner wrote the intent and no outcome: delivery_unknown",
			queue: []*item{it(0, "A", stNew, amo)}, scanned: true, prior: map[string]string{"f0": schemas.ReceiptPublishing},
			want: "finish=[0:delivery_unknown] pending=1 window=[finishing]"},
		{name: "an earlier owner settled it: done without a publish",
			queue: []*item{it(0, "A", stNew, amo), it(1, "A", stNew)}, scanned: true, prior: map[string]string{"f0": schemas.ReceiptPublished},
			want: "publish=[1] settled=1 pending=1 window=[done publishing]"},
		{name: "the done prefix retires; receipts for the acknowledged prefix only, in order",
			window: []*item{it(0, "A", stDone), it(1, "A", stDone), it(2, "A", stAcked), it(3, "B", stFinishing),
				it(4, "A", stAcked), it(5, "B", stPublishing), it(6, "A", stAcked)},
			want: "last=1 retired=2 finish=[2:published 4:published] pending=4 window=[finishing finishing finishing publishing acked]"},
		{name: "a failed frame waits for every publish in flight; nothing new is taken",
			window: []*item{it(0, "A", stFailed), it(1, "B", stPublishing)}, queue: []*item{it(2, "C", stNew)},
			want: "pending=1 queued=1 window=[failed publishing]"},
		{name: "failed frames: the first round schedules the backoff",
			window: []*item{it(0, "A", stFailed), it(1, "B", stFailed)},
			want:   "retry_in=100ms window=[failed failed]"},
		{name: "the backoff doubles up to its cap",
			window: []*item{it(0, "A", stFailed)}, backoff: 2 * time.Second,
			want: "retry_in=2s window=[failed]"},
		{name: "failed frames before their retry time stay",
			window: []*item{it(0, "A", stFailed)}, retryIn: time.Second,
			want: "retry_in=1s window=[failed]"},
		{name: "after the backoff the failed frames go again, in offset order",
			window: []*item{it(0, "A", stFailed), it(1, "B", stAcked), it(2, "A", stFailed)}, retryIn: -time.Millisecond,
			want: "publish=[0 2] republish pending=2 window=[publishing acked publishing]"},
		{name: "an at_most_once frame that may have reached the broker is never published again",
			window: []*item{it(0, "A", stFailed, amo, future, uncertain), it(1, "A", stFailed)}, retryIn: -time.Millisecond,
			want: "finish=[0:delivery_unknown] publish=[1] republish pending=2 window=[finishing publishing]"},
		{name: "an at_most_once frame refused before it left is published again",
			window: []*item{it(0, "A", stFailed, amo, future)}, retryIn: -time.Millisecond,
			want: "publish=[0] republish pending=1 window=[publishing]"},
		{name: "a failed frame past its deadline expires instead",
			window: []*item{it(0, "A", stFailed, past)}, retryIn: -time.Millisecond,
			want: "finish=[0:expired_before_publish] republish pending=1 window=[finishing]"},
		{name: "stopping: receipts for what is acknowledged, nothing published",
			window: []*item{it(0, "A", stAcked), it(1, "A", stFailed), it(2, "A", stIntentAcked, amo)}, queue: []*item{it(3, "B", stNew)},
			stopping: true, retryIn: -time.Millisecond,
			want: "finish=[0:published] pending=1 retry_in=-1ms queued=1 window=[finishing failed intent_acked]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := &windowState{window: c.window, scanned: c.scanned, prior: c.prior, backoff: c.backoff}
			if c.retryIn != 0 {
				s.retryAt = t0.Add(c.retryIn)
			}
			decoded := map[*kgo.Record]*item{}
			for _, x := range c.queue {
				s.queue = append(s.queue, x.rec)
				decoded[x.rec] = x
			}
			if c.cap == 0 {
				c.cap = 10
			}
			p := planRound(s, planInput{now: t0, wall: t0, stopping: c.stopping, window: c.cap,
				gen:    func(string) uint64 { return 7 },
				decode: func(r *kgo.Record) *item { return decoded[r] }})
			if got := summary(p, s); got != c.want {
				t.Errorf("\n got %s\nwant %s", got, c.want)
			}
			for _, x := range p.publish {
				if x.gen != 7 {
					t.Errorf("frame %d published without the connection's generation", x.rec.Offset)
				}
			}
		})
	}
}
