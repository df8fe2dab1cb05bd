package cmdlife

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ivms/ams/schemas"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func ids() func() (string, error) {
	n := 0
	return func() (string, error) {
		n++
		return fmt.Sprintf("%032x", n), nil
	}
}

// summary lists the effects as "id:STATE" and "send:id".
func summary(effs []Effect) []string {
	var out []string
	for _, e := range effs {
		if e.Event != nil {
			out = append(out, e.Event.CommandID+":"+e.Event.State)
		} else {
			out = append(out, "send:"+e.Send.Command.CommandID)
		}
	}
	return out
}

func cmd(id, kind string) schemas.Command {
	return schemas.Command{ID: id, SN: "sn", Kind: kind, Offline: schemas.OfflineQueue}
}

// TestTransitions is one row per transition of the lifecycle: a starting
// list, one operation, the effects and the resulting states.
func TestTransitions(t *testing.T) {
	l, err := New(Config{MaxInFlight: 2})
	if err != nil {
		t.Fatal(err)
	}
	at := func(d time.Duration) *time.Time { v := t0.Add(d); return &v }
	queued := func(id string, exp time.Duration) schemas.PendingCommand {
		return schemas.PendingCommand{CommandID: id, Kind: "reboot", Code: 313, Body: `{"iReboot":1}`,
			State: schemas.CommandQueued, TimeoutMs: 1000, ExpiresAt: at(exp), Seq: 2}
	}
	sent := func(id, msg string, state string) schemas.PendingCommand {
		return schemas.PendingCommand{CommandID: id, Kind: "stream_control", Code: 704, Body: `{"icmdtype":1}`, MsgID: msg,
			State: state, TimeoutMs: 1000, Deadline: at(time.Second), Seq: 3}
	}
	online := Device{Known: true, Deliverable: true}
	offline := Device{Known: true}
	tests := []struct {
		name    string
		list    []schemas.PendingCommand
		now     time.Duration
		op      func(*Tx) Outcome
		outcome Outcome
		effects []string
		states  []string // "id:STATE" of the resulting list
	}{
		{name: "accept and send", op: func(tx *Tx) Outcome { return tx.Submit("sn", cmd("a", "reboot"), online) },
			outcome: OutcomeAccepted, effects: []string{"a:ACCEPTED", "a:SENT", "send:a"}, states: []string{"a:SENT"}},
		{name: "accept and queue", op: func(tx *Tx) Outcome { return tx.Submit("sn", cmd("a", "reboot"), offline) },
			outcome: OutcomeAccepted, effects: []string{"a:ACCEPTED", "a:QUEUED"}, states: []string{"a:QUEUED"}},
		{name: "queue behind the limit", list: []schemas.PendingCommand{sent("x", "m1", schemas.CommandSent), sent("y", "m2", schemas.CommandDelivered)},
			op: func(tx *Tx) Outcome { return tx.Submit("sn", cmd("a", "reboot"), online) }, outcome: OutcomeAccepted,
			effects: []string{"a:ACCEPTED", "a:QUEUED"}, states: []string{"x:SENT", "y:DELIVERED", "a:QUEUED"}},
		{name: "queued first go first", list: []schemas.PendingCommand{queued("q", time.Hour)},
			op: func(tx *Tx) Outcome { return tx.Submit("sn", cmd("a", "reboot"), online) }, outcome: OutcomeAccepted,
			effects: []string{"a:ACCEPTED", "q:SENT", "send:q", "a:SENT", "send:a"}, states: []string{"q:SENT", "a:SENT"}},
		{name: "reject offline", op: func(tx *Tx) Outcome {
			c := cmd("a", "reboot")
			c.Offline = schemas.OfflineReject
			return tx.Submit("sn", c, offline)
		}, outcome: OutcomeAccepted, effects: []string{"a:ACCEPTED", "a:REJECTED"}, states: []string{"a:REJECTED"}},
		{name: "reject invalid", op: func(tx *Tx) Outcome { return tx.Submit("sn", cmd("a", "osd"), online) },
			outcome: OutcomeRejected, effects: []string{"a:REJECTED"}},
		{name: "reject unknown device", op: func(tx *Tx) Outcome { return tx.Submit("sn", cmd("a", "reboot"), Device{}) },
			outcome: OutcomeRejected, effects: []string{"a:REJECTED"}},
		{name: "duplicate", list: []schemas.PendingCommand{queued("a", time.Hour)},
			op:      func(tx *Tx) Outcome { return tx.Submit("sn", cmd("a", "reboot"), online) },
			outcome: OutcomeDuplicate, states: []string{"a:QUEUED"}},
		{name: "delivered", list: []schemas.PendingCommand{sent("a", "m", schemas.CommandSent)},
			op: func(tx *Tx) Outcome { return tx.Receipt("a", "m", schemas.ReceiptPublished) }, outcome: OutcomeApplied,
			effects: []string{"a:DELIVERED"}, states: []string{"a:DELIVERED"}},
		{name: "receipt of another msg id", list: []schemas.PendingCommand{sent("a", "m", schemas.CommandSent)},
			op: func(tx *Tx) Outcome { return tx.Receipt("a", "other", "") }, outcome: OutcomeStale, states: []string{"a:SENT"}},
		{name: "succeeded (6)", list: []schemas.PendingCommand{sent("a", "m", schemas.CommandDelivered)},
			op: func(tx *Tx) Outcome { return tx.Reply(6, 0, "m", "{}") }, outcome: OutcomeApplied,
			effects: []string{"a:SUCCEEDED"}, states: []string{"a:SUCCEEDED"}},
		{name: "succeeded (7/704) before the receipt: DELIVERED first", list: []schemas.PendingCommand{sent("a", "m", schemas.CommandSent)},
			op: func(tx *Tx) Outcome { return tx.Reply(7, 704, "m", "{}") }, outcome: OutcomeApplied,
			effects: []string{"a:DELIVERED", "a:SUCCEEDED"}, states: []string{"a:SUCCEEDED"}},
		{name: "succeeded (6) before the receipt: DELIVERED first", list: []schemas.PendingCommand{sent("a", "m", schemas.CommandSent)},
			op: func(tx *Tx) Outcome { return tx.Reply(6, 0, "m", "{}") }, outcome: OutcomeApplied,
			effects: []string{"a:DELIVERED", "a:SUCCEEDED"}, states: []string{"a:SUCCEEDED"}},
		{name: "receipt after the reply", list: []schemas.PendingCommand{sent("a", "m", schemas.CommandSucceeded)},
			op: func(tx *Tx) Outcome { return tx.Receipt("a", "m", schemas.ReceiptPublished) }, outcome: OutcomeFinished,
			states: []string{"a:SUCCEEDED"}},
		{name: "intent receipt", list: []schemas.PendingCommand{sent("a", "m", schemas.CommandSent)},
			op: func(tx *Tx) Outcome { return tx.Receipt("a", "m", schemas.ReceiptPublishing) }, outcome: OutcomeIntent,
			states: []string{"a:SENT"}},
		{name: "expired before publish", list: []schemas.PendingCommand{sent("a", "m", schemas.CommandSent)},
			op: func(tx *Tx) Outcome { return tx.Receipt("a", "m", schemas.ReceiptExpiredBeforePublish) }, outcome: OutcomeApplied,
			effects: []string{"a:EXPIRED"}, states: []string{"a:EXPIRED"}},
		{name: "delivery unknown", list: []schemas.PendingCommand{sent("a", "m", schemas.CommandSent)},
			op: func(tx *Tx) Outcome { return tx.Receipt("a", "m", schemas.ReceiptDeliveryUnknown) }, outcome: OutcomeApplied,
			effects: []string{"a:FAILED"}, states: []string{"a:FAILED"}},
		{name: "unknown receipt status", list: []schemas.PendingCommand{sent("a", "m", schemas.CommandSent)},
			op: func(tx *Tx) Outcome { return tx.Receipt("a", "m", "teleported") }, outcome: OutcomeUnknown,
			states: []string{"a:SENT"}},
		{name: "late reply", list: []schemas.PendingCommand{sent("a", "m", schemas.CommandTimedOut)},
			op: func(tx *Tx) Outcome { return tx.Reply(6, 0, "m", "{}") }, outcome: OutcomeLateReply,
			states: []string{"a:TIMED_OUT"}},
		{name: "7 of another code", list: []schemas.PendingCommand{sent("a", "m", schemas.CommandSent)},
			op: func(tx *Tx) Outcome { return tx.Reply(7, 705, "m", "{}") }, outcome: OutcomeUnknown, states: []string{"a:SENT"}},
		{name: "unknown reply", list: []schemas.PendingCommand{sent("a", "m", schemas.CommandSent)},
			op: func(tx *Tx) Outcome { return tx.Reply(6, 0, "zz", "{}") }, outcome: OutcomeUnknown, states: []string{"a:SENT"}},
		{name: "timed out", list: []schemas.PendingCommand{sent("a", "m", schemas.CommandDelivered), queued("q", time.Hour)},
			now: time.Second, op: func(tx *Tx) Outcome { tx.Expire(); return "" },
			effects: []string{"a:TIMED_OUT"}, states: []string{"q:QUEUED", "a:TIMED_OUT"}},
		{name: "expired", list: []schemas.PendingCommand{queued("q", time.Minute), queued("r", time.Hour)},
			now: time.Minute, op: func(tx *Tx) Outcome { tx.Expire(); return "" },
			effects: []string{"q:EXPIRED"}, states: []string{"r:QUEUED", "q:EXPIRED"}},
		{name: "failed", list: []schemas.PendingCommand{{CommandID: "z", Kind: "gone", State: schemas.CommandQueued, ExpiresAt: at(time.Hour)}},
			op: func(tx *Tx) Outcome { tx.Drain(); return "" }, effects: []string{"z:FAILED"}, states: []string{"z:FAILED"}},
		{name: "drain up to the limit", list: []schemas.PendingCommand{queued("a", time.Hour), queued("b", time.Hour), queued("c", time.Hour)},
			op:      func(tx *Tx) Outcome { tx.Drain(); return "" },
			effects: []string{"a:SENT", "send:a", "b:SENT", "send:b"}, states: []string{"a:SENT", "b:SENT", "c:QUEUED"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			orig := slices.Clone(tc.list)
			tx := l.Begin(t0.Add(tc.now), tc.list, ids())
			if got := tc.op(tx); got != tc.outcome {
				t.Errorf("outcome %q, want %q", got, tc.outcome)
			}
			if got := summary(tx.Effects()); !slices.Equal(got, tc.effects) {
				t.Errorf("effects %v, want %v", got, tc.effects)
			}
			var got []string
			for _, p := range tx.List() {
				got = append(got, p.CommandID+":"+p.State)
			}
			if !slices.Equal(got, tc.states) {
				t.Errorf("list %v, want %v", got, tc.states)
			}
			if tx.Changed() != !slices.Equal(got, statesOf(orig)) {
				t.Errorf("Changed() = %v", tx.Changed())
			}
			if !slices.EqualFunc(orig, tc.list, func(a, b schemas.PendingCommand) bool { return a.State == b.State && a.Seq == b.Seq }) {
				t.Error("the caller's list was modified")
			}
			for _, e := range tx.Effects() {
				if e.Event != nil && e.Event.EventID != fmt.Sprintf("%s/%d", e.Event.CommandID, e.Event.Seq) {
					t.Errorf("event id %q", e.Event.EventID)
				}
			}
		})
	}
}

func statesOf(list []schemas.PendingCommand) []string {
	var out []string
	for _, p := range list {
		out = append(out, p.CommandID+":"+p.State)
	}
	return out
}

// TestLateTick: a timer noticed late dates its event at the deadline, and
// any Tx applies due timers before its input.
func TestLateTick(t *testing.T) {
	l, _ := New(Config{})
	dl, exp := t0.Add(time.Second), t0.Add(2*time.Second)
	list := []schemas.PendingCommand{
		{CommandID: "a", Kind: "reboot", Code: 313, MsgID: "m", State: schemas.CommandSent, Deadline: &dl, Seq: 2},
		{CommandID: "b", Kind: "reboot", Code: 313, State: schemas.CommandQueued, ExpiresAt: &exp, Seq: 2},
	}
	tx := l.Begin(t0.Add(time.Minute), list, ids())
	if got := tx.Reply(6, 0, "m", "{}"); got != OutcomeLateReply {
		t.Fatalf("reply after the deadline: %q", got)
	}
	effs := tx.Effects()
	if got := summary(effs); !slices.Equal(got, []string{"a:TIMED_OUT", "b:EXPIRED"}) {
		t.Fatalf("effects %v", got)
	}
	if !effs[0].Event.At.Equal(dl) || !effs[1].Event.At.Equal(exp) {
		t.Fatalf("dated %v, %v", effs[0].Event.At, effs[1].Event.At)
	}
}

func TestQueueFull(t *testing.T) {
	l, _ := New(Config{MaxQueued: 2})
	tx := l.Begin(t0, nil, ids())
	for _, id := range []string{"a", "b", "c"} {
		tx.Submit("sn", cmd(id, "reboot"), Device{Known: true})
	}
	got := summary(tx.Effects())
	if want := []string{"a:ACCEPTED", "a:QUEUED", "b:ACCEPTED", "b:QUEUED", "c:REJECTED"}; !slices.Equal(got, want) {
		t.Fatalf("effects %v, want %v", got, want)
	}
	if r := tx.Effects()[4].Event.Reason; r != ReasonQueueFull {
		t.Fatalf("reason %q", r)
	}
}

// TestQueueBytes: the case, 62 queued commands of 16 KiB, would
// make the device's state record larger than the producer's record limit
// (which used to abort the partition's transaction forever): the requests
// beyond the byte bound are REJECTED queue_full, and the list stays below it.
func TestQueueBytes(t *testing.T) {
	l, _ := New(Config{MaxQueued: 100})
	if got := l.Config().MaxListBytes; got != DefaultMaxListBytes {
		t.Fatalf("MaxListBytes default %d", got)
	}
	big := `{"x":"` + strings.Repeat("a", 16<<10-8) + `"}`
	var list []schemas.PendingCommand
	rejected := 0
	for i := range 62 {
		tx := l.Begin(t0, list, ids())
		c := cmd(fmt.Sprint("c", i), "face_snapshot")
		c.Body = big
		tx.Submit("sn", c, Device{Known: true})
		for _, e := range tx.Effects() {
			if e.Event.State == schemas.CommandRejected {
				if e.Event.Reason != ReasonQueueFull {
					t.Fatalf("command %d: reason %q", i, e.Event.Reason)
				}
				rejected++
			}
		}
		list = tx.List()
	}
	if rejected == 0 {
		t.Fatal("62 commands of 16 KiB all accepted")
	}
	if n := ListBytes(list); n > DefaultMaxListBytes {
		t.Fatalf("list of %d bytes, bound %d", n, DefaultMaxListBytes)
	}
	t.Logf("%d of 62 rejected, list %d bytes", rejected, ListBytes(list))
}

func TestDeadline(t *testing.T) {
	a, b := t0.Add(time.Minute), t0.Add(time.Second)
	list := []schemas.PendingCommand{
		{State: schemas.CommandQueued, ExpiresAt: &a},
		{State: schemas.CommandDelivered, Deadline: &b},
		{State: schemas.CommandSucceeded},
	}
	if d, ok := Deadline(list); !ok || !d.Equal(b) {
		t.Fatalf("Deadline = %v %v", d, ok)
	}
	if _, ok := Deadline(list[2:]); ok {
		t.Fatal("a finished command has a deadline")
	}
}

func TestMsgIDError(t *testing.T) {
	l, _ := New(Config{})
	tx := l.Begin(t0, nil, func() (string, error) { return "", errors.New("no entropy") })
	tx.Submit("sn", cmd("a", "reboot"), Device{Known: true, Deliverable: true})
	if tx.Err() == nil {
		t.Fatal("no error")
	}
}

func TestConfig(t *testing.T) {
	if _, err := New(Config{MaxInFlight: -1}); err == nil {
		t.Fatal("negative limit accepted")
	}
	c := Config{}.WithDefaults()
	if c.MaxInFlight != 4 || c.ReplyTimeout != 30*time.Second || c.QueueTTL != 10*time.Minute || c.RecentFinished != 16 {
		t.Fatalf("defaults %+v", c)
	}
}

func TestFinal(t *testing.T) {
	for state, final := range map[string]bool{
		schemas.CommandAccepted: false, schemas.CommandQueued: false, schemas.CommandSent: false, schemas.CommandDelivered: false,
		schemas.CommandSucceeded: true, schemas.CommandTimedOut: true, schemas.CommandExpired: true,
		schemas.CommandRejected: true, schemas.CommandFailed: true, "LATER_STATE": false,
	} {
		if Final(state) != final {
			t.Errorf("Final(%s) = %v", state, !final)
		}
	}
}
