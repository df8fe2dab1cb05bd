// Package cmdlife is the lifecycle of the commands sent to one device: a
// pure state machine over the device's command list
// (schemas.DeviceState.PendingCommands). The device processor owns the list,
// runs one Tx per input or timer, and turns the Tx's effects into
// ams.command.events records and ams.downlink frames in the same Kafka
// transaction as the state change.
//
// States (schemas.Command*), and what moves a command (processors/device's
// README.md has the same diagram with the processor's side):
//
//	request ─ bad kind/body/timeout/policy, sn ≠ key, unknown device, queue full ─▶ REJECTED
//	   │
//	   ▼
//	ACCEPTED ─ offline, policy REJECT ─▶ REJECTED
//	   │   └── offline (policy QUEUE) or in-flight limit ─▶ QUEUED ─ expiry ─▶ EXPIRED
//	   │                                                      │
//	   ▼                       online + session + free slot   ▼
//	 SENT ◀───────────────────────────────────────────────────┘
//	   ├─ broker receipt ─▶ DELIVERED
//	   ├─ egress receipt expired_before_publish (SENT) ─▶ EXPIRED
//	   ├─ egress receipt delivery_unknown (SENT) ─▶ FAILED
//	   ├─ reply with the command's sMsgId (SENT or DELIVERED) ─▶ SUCCEEDED
//	   │    (from SENT: DELIVERED first, in the same Tx)
//	   └─ reply deadline (SENT or DELIVERED) ─▶ TIMED_OUT
//
// A final state is final: nothing sends a command again, and a late reply
// or receipt changes nothing (OutcomeLateReply, OutcomeFinished). The frame
// of a sent command carries a publish deadline (Send.PublishBy) before the
// reply deadline, so egress cannot publish it after the command went final.
//
// FAILED is reached by a pending command whose kind is no longer in
// pkg/commandkinds when it is due to be sent (a state restored by a newer
// or older build).
//
// ACCEPTED is never stored: within the Tx that accepts a command it moves on
// to SENT, QUEUED or REJECTED. A command is sent at most once: its entry
// holds the sMsgId and its state, and a restored list re-arms every timer
// (Deadline) without sending anything again.
//
// Guarantees: every state change yields exactly one Event, numbered Seq 1,
// 2, ... per command, with EventID "{command_id}/{seq}" (deterministic, so
// sinks deduplicate a replay). Queued commands are sent in acceptance order,
// never more than Config.MaxInFlight at a time (SENT or DELIVERED). A
// request whose id is pending or among the last Config.RecentFinished
// finished commands is ignored (OutcomeDuplicate), so a redelivered request
// is not executed twice. A reply or receipt that matches no pending command
// changes nothing.
//
// Finished commands are kept in the list, at its end, in their final state
// with body and timers cleared, as the memory for duplicate detection (at
// most RecentFinished of them; the oldest is dropped first).
package cmdlife

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/ivms/ams/pkg/commandkinds"
	"github.com/ivms/ams/schemas"
)

// Defaults of Config.
const (
	DefaultMaxInFlight    = 4
	DefaultReplyTimeout   = 30 * time.Second
	DefaultQueueTTL       = 10 * time.Minute
	DefaultRecentFinished = 16
	DefaultMaxQueued      = 64
	// DefaultMaxListBytes bounds a device's command list by size: franz-go's
	// default largest record (ProducerBatchMaxBytes, 1,000,012 bytes, Kafka's
	// default max.message.bytes) less 32 KiB for the rest of the device's
	// state record.
	DefaultMaxListBytes = 1_000_012 - 32<<10
	// DefaultPublishGuard is how long before a sent command's reply deadline
	// its frame stops being publishable (Send.PublishBy), at most half the
	// reply timeout: the time the broker may take to hand the frame to the
	// device, so the device cannot receive it after the command went final.
	DefaultPublishGuard = time.Second
)

// Reasons of REJECTED, TIMED_OUT, EXPIRED and FAILED events. An invalid body
// is "invalid_body: " followed by the *commandkinds.BodyError's text.
const (
	ReasonUnknownKind    = "unknown_kind" // the kind is not in pkg/commandkinds
	ReasonInvalidBody    = "invalid_body" // the body does not fit the kind
	ReasonInvalidTimeout = "invalid_timeout"
	ReasonInvalidPolicy  = "invalid_offline_policy"
	ReasonUnknownDevice  = "unknown_device" // never registered and never seen
	ReasonSNMismatch     = "sn_mismatch"    // the request's sn is not its record key
	ReasonOffline        = "offline"        // offline (or without a session) with policy REJECT
	ReasonQueueFull      = "queue_full"     // MaxQueued commands already wait
	ReasonReplyTimeout   = "reply_timeout"
	ReasonQueueExpired   = "queue_expired"
	// EXPIRED after SENT: egress found the frame's publish deadline passed
	// and did not publish it (a receipt with that status).
	ReasonExpiredBeforePublish = schemas.ReceiptExpiredBeforePublish
	// FAILED after SENT: egress stopped between recording its intent to
	// publish the frame and recording the outcome; whether the device got
	// it is unknown, and it is not published again (the kind is not
	// idempotent). The caller decides whether to retry.
	ReasonDeliveryUnknown = schemas.ReceiptDeliveryUnknown
)

// Config is the lifecycle's policy. Zero fields take the defaults.
type Config struct {
	// MaxInFlight is how many commands of one device may be SENT or
	// DELIVERED (awaiting a reply) at once; more wait QUEUED. Default 4.
	MaxInFlight int
	// ReplyTimeout is how long a sent command waits for the device's
	// reply when the request does not say (Command.TimeoutMs 0). Default 30 s.
	ReplyTimeout time.Duration
	// QueueTTL is how long a command may wait QUEUED when the request does
	// not say (Command.ExpiresAt nil). Default 10 min.
	QueueTTL time.Duration
	// RecentFinished is how many finished command ids a device remembers
	// to recognise a redelivered request. Default 16.
	RecentFinished int
	// MaxQueued is how many commands may wait QUEUED for one device; a
	// request beyond it is REJECTED queue_full. Default 64.
	MaxQueued int
	// MaxListBytes bounds the size of a device's command list (ListBytes)
	// as it is stored in the device's state record: a request that would
	// take the list past it is REJECTED queue_full, so no state record can
	// outgrow what the producer can write. Default DefaultMaxListBytes.
	MaxListBytes int
}

// WithDefaults returns c with zero fields set to the defaults.
func (c Config) WithDefaults() Config {
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.ReplyTimeout == 0 {
		c.ReplyTimeout = DefaultReplyTimeout
	}
	if c.QueueTTL == 0 {
		c.QueueTTL = DefaultQueueTTL
	}
	if c.RecentFinished == 0 {
		c.RecentFinished = DefaultRecentFinished
	}
	if c.MaxQueued == 0 {
		c.MaxQueued = DefaultMaxQueued
	}
	if c.MaxListBytes == 0 {
		c.MaxListBytes = DefaultMaxListBytes
	}
	return c
}

// Validate reports a negative field.
func (c Config) Validate() error {
	if c.MaxInFlight < 0 || c.ReplyTimeout < 0 || c.QueueTTL < 0 || c.RecentFinished < 0 || c.MaxQueued < 0 || c.MaxListBytes < 0 {
		return errors.New("commands: negative MaxInFlight, ReplyTimeout, QueueTTL, RecentFinished, MaxQueued or MaxListBytes")
	}
	return nil
}

// Final reports whether state is a final state.
func Final(state string) bool {
	switch state {
	case schemas.CommandSucceeded, schemas.CommandTimedOut, schemas.CommandExpired,
		schemas.CommandRejected, schemas.CommandFailed:
		return true
	}
	return false
}

func inFlight(state string) bool {
	return state == schemas.CommandSent || state == schemas.CommandDelivered
}

// Send asks the caller to send a command now: encrypt Command.Body for the
// device's session and emit the frame (iCmdType CmdType, sub-kind
// Command.Code, sMsgId Command.MsgID) in the same transaction.
type Send struct {
	Command schemas.PendingCommand
	CmdType int
	// PublishBy is the frame's deadline (Downlink.deadline): the command's
	// reply deadline less the publish guard (DefaultPublishGuard, at most
	// half the reply timeout). Egress does not publish the frame from then
	// on, so a frame replayed by an egress that was down, or by a new
	// egress group, cannot reach the device after the command went final.
	PublishBy time.Time
	// AtMostOnce: the kind is not idempotent (commandkinds.Kind.Idempotent),
	// so the frame must never be published twice (Downlink.at_most_once).
	AtMostOnce bool
}

// PublishBy returns the publish deadline of a command sent at sentAt with
// the reply timeout timeout (see Send.PublishBy).
func PublishBy(sentAt time.Time, timeout time.Duration) time.Time {
	return sentAt.Add(timeout - min(DefaultPublishGuard, timeout/2))
}

// Effect is one output of a Tx, in order: a command event (SN left empty
// for the caller to fill) or a frame to send.
type Effect struct {
	Event *schemas.CommandEvent
	Send  *Send
}

// Outcome says what a Tx call did with its input, for metrics.
type Outcome string

// Outcomes.
const (
	OutcomeAccepted  Outcome = "accepted"   // a new command (sent, queued, or rejected as offline)
	OutcomeRejected  Outcome = "rejected"   // refused before acceptance
	OutcomeDuplicate Outcome = "duplicate"  // a request whose id is pending or recently finished: ignored
	OutcomeApplied   Outcome = "applied"    // a receipt or reply moved a command
	OutcomeFinished  Outcome = "finished"   // a receipt or reply for a command already finished: ignored
	OutcomeUnknown   Outcome = "unknown"    // a receipt or reply matching no command: ignored
	OutcomeStale     Outcome = "stale"      // a receipt for a command already delivered, or of another msg id: ignored
	OutcomeIntent    Outcome = "intent"     // egress's intent to publish (receipt status publishing): nothing to do
	OutcomeLateReply Outcome = "late_reply" // a reply for a command already final: recorded (counted), changes nothing
)

// Lifecycle applies the policy of a Config. It holds no mutable state.
type Lifecycle struct {
	cfg Config
}

// New returns a Lifecycle for cfg (zero fields take the defaults).
func New(cfg Config) (*Lifecycle, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Lifecycle{cfg: cfg.WithDefaults()}, nil
}

// Config returns the effective configuration.
func (l *Lifecycle) Config() Config { return l.cfg }

// Tx is the work of one input or timer on one device's commands. It copies
// the list it is given, never changing the caller's.
type Tx struct {
	l       *Lifecycle
	now     time.Time
	list    []schemas.PendingCommand
	changed bool
	effects []Effect
	msgID   func() (string, error)
	err     error
}

// Begin starts a Tx at now over list (not modified). msgID returns a fresh
// sMsgId for each command sent; its error aborts the Tx (Err).
//
// Begin first applies every timer due at now (Expire), whatever the Tx is
// for: a reply or receipt that arrives after a command's deadline, before
// the runtime's timer tick, finds it TIMED_OUT, so the outcome does not
// depend on the tick.
func (l *Lifecycle) Begin(now time.Time, list []schemas.PendingCommand, msgID func() (string, error)) *Tx {
	t := &Tx{l: l, now: now, list: slices.Clone(list), msgID: msgID}
	t.Expire()
	return t
}

// List is the command list after the Tx (nil when empty).
func (t *Tx) List() []schemas.PendingCommand {
	if len(t.list) == 0 {
		return nil
	}
	return t.list
}

// Changed reports whether the list changed.
func (t *Tx) Changed() bool { return t.changed }

// Effects are the Tx's outputs, in order.
func (t *Tx) Effects() []Effect { return t.effects }

// Err is the first msgID error; the Tx's results must then be discarded.
func (t *Tx) Err() error { return t.err }

func (t *Tx) event(p *schemas.PendingCommand, state, reason string, reply *string) {
	t.eventAt(t.now, p, state, reason, reply)
}

// eventAt records a change of p dated at.
func (t *Tx) eventAt(at time.Time, p *schemas.PendingCommand, state, reason string, reply *string) {
	p.Seq++
	p.State = state
	t.effects = append(t.effects, Effect{Event: &schemas.CommandEvent{
		EventID:   p.CommandID + "/" + strconv.Itoa(int(p.Seq)),
		CommandID: p.CommandID,
		Kind:      p.Kind,
		Code:      p.Code,
		State:     state,
		At:        at,
		Reason:    reason,
		MsgID:     p.MsgID,
		Reply:     reply,
		Seq:       p.Seq,
	}})
	t.changed = true
}

// Device is what a Tx needs to know about the device.
type Device struct {
	// Known: the device is registered or has been seen.
	Known bool
	// Deliverable: online with a session, so a command can be sent now.
	Deliverable bool
}

// Submit handles one request of ams.commands for the device sn (the record
// key).
func (t *Tx) Submit(sn string, c schemas.Command, d Device) Outcome {
	if c.ID == "" { // the caller rejects the record; there is no id to report on
		return OutcomeRejected
	}
	if i := t.find(c.ID); i >= 0 {
		return OutcomeDuplicate
	}
	p := schemas.PendingCommand{CommandID: c.ID, Kind: c.Kind}
	reject := func(reason string) Outcome {
		changed := t.changed
		t.event(&p, schemas.CommandRejected, reason, nil)
		t.changed = changed // nothing is stored for a command refused at the door
		return OutcomeRejected
	}
	k, ok := commandkinds.Lookup(c.Kind)
	if ok {
		p.Code = int32(k.Code)
	}
	switch {
	case c.SN != sn:
		return reject(ReasonSNMismatch)
	case !ok:
		return reject(ReasonUnknownKind)
	}
	body, err := k.Normalize(json.RawMessage(c.Body))
	if err != nil {
		return reject(ReasonInvalidBody + ": " + err.Error())
	}
	switch {
	case c.TimeoutMs < 0:
		return reject(ReasonInvalidTimeout)
	case c.Offline != schemas.OfflineQueue && c.Offline != schemas.OfflineReject:
		return reject(ReasonInvalidPolicy)
	case !d.Known:
		return reject(ReasonUnknownDevice)
	case t.count(schemas.CommandQueued) >= t.l.cfg.MaxQueued:
		return reject(ReasonQueueFull)
	case ListBytes(t.list)+entryBytes(schemas.PendingCommand{CommandID: c.ID, Kind: c.Kind, Body: string(body)}) > t.l.cfg.MaxListBytes:
		return reject(ReasonQueueFull)
	}
	p.Body = string(body)
	p.TimeoutMs = c.TimeoutMs
	if p.TimeoutMs == 0 {
		p.TimeoutMs = t.l.cfg.ReplyTimeout.Milliseconds()
	}
	exp := t.now.Add(t.l.cfg.QueueTTL)
	if c.ExpiresAt != nil {
		exp = c.ExpiresAt.UTC().Truncate(time.Millisecond)
	}
	p.ExpiresAt = &exp
	t.event(&p, schemas.CommandAccepted, "", nil)
	if !d.Deliverable && c.Offline == schemas.OfflineReject {
		t.event(&p, schemas.CommandRejected, ReasonOffline, nil)
		t.finish(p)
		return OutcomeAccepted
	}
	t.list = t.insertActive(p)
	if d.Deliverable {
		t.Drain()
	}
	// Not sent by Drain: it waits, unless its expiry has passed already.
	if i := t.find(c.ID); i >= 0 && t.list[i].State == schemas.CommandAccepted {
		q := &t.list[i]
		if !q.ExpiresAt.After(t.now) {
			t.event(q, schemas.CommandExpired, ReasonQueueExpired, nil)
			t.finishAt(i)
		} else {
			t.event(q, schemas.CommandQueued, "", nil)
		}
	}
	return OutcomeAccepted
}

// Drain sends waiting commands (QUEUED, or just ACCEPTED), in order, while
// fewer than MaxInFlight are in flight. Call it only when the device is
// online with a session.
func (t *Tx) Drain() {
	n := 0
	for _, p := range t.list {
		if inFlight(p.State) {
			n++
		}
	}
	for i := 0; i < len(t.list) && n < t.l.cfg.MaxInFlight && t.err == nil; i++ {
		p := &t.list[i]
		if p.State != schemas.CommandQueued && p.State != schemas.CommandAccepted {
			continue
		}
		k, ok := commandkinds.Lookup(p.Kind)
		if !ok || int32(k.Code) != p.Code {
			t.event(p, schemas.CommandFailed, ReasonUnknownKind, nil)
			t.finishAt(i)
			i--
			continue
		}
		id, err := t.msgID()
		if err != nil {
			t.err = fmt.Errorf("commands: message id: %w", err)
			return
		}
		p.MsgID = id
		dl := t.now.Add(time.Duration(p.TimeoutMs) * time.Millisecond)
		p.Deadline = &dl
		p.ExpiresAt = nil
		t.event(p, schemas.CommandSent, "", nil)
		t.effects = append(t.effects, Effect{Send: &Send{Command: *p, CmdType: k.CmdType,
			PublishBy:  PublishBy(t.now, time.Duration(p.TimeoutMs)*time.Millisecond),
			AtMostOnce: !k.Idempotent}})
		n++
	}
}

// Receipt handles egress's receipt (schemas.DownlinkReceipt.Status) for the
// frame of command id with sMsgId msgID, when the command is SENT:
//
//   - published ("" in old records): the broker acknowledged it; DELIVERED.
//   - publishing: egress's intent to publish; nothing changes (OutcomeIntent).
//   - expired_before_publish: not published, its deadline passed; EXPIRED
//     (the caller learns the command never went out).
//   - delivery_unknown: egress stopped between its intent and the outcome,
//     and does not publish it again; FAILED delivery_unknown.
//
// Any other status changes nothing (OutcomeUnknown). A receipt for a
// command in a final state changes nothing (OutcomeFinished): a final state
// is final.
func (t *Tx) Receipt(id, msgID, status string) Outcome {
	i := t.find(id)
	switch {
	case i < 0:
		return OutcomeUnknown
	case Final(t.list[i].State):
		return OutcomeFinished
	case status == schemas.ReceiptPublishing:
		return OutcomeIntent
	case t.list[i].State != schemas.CommandSent || t.list[i].MsgID != msgID:
		return OutcomeStale
	}
	switch status {
	case schemas.ReceiptPublished, "":
		t.event(&t.list[i], schemas.CommandDelivered, "", nil)
	case schemas.ReceiptExpiredBeforePublish:
		t.event(&t.list[i], schemas.CommandExpired, ReasonExpiredBeforePublish, nil)
		t.finishAt(i)
	case schemas.ReceiptDeliveryUnknown:
		t.event(&t.list[i], schemas.CommandFailed, ReasonDeliveryUnknown, nil)
		t.finishAt(i)
	default:
		return OutcomeUnknown
	}
	return OutcomeApplied
}

// Reply handles the device's reply frame: iCmdType cmdType (6, or 7 with
// sub-kind code), sMsgId msgID, decrypted body. The command sent with
// msgID (SENT or DELIVERED; for iCmdType 7 also of the same code) becomes
// SUCCEEDED with the body as its reply. A reply proves the frame reached the
// device, so a command still SENT (its broker receipt not yet in: the reply
// overtook it) first becomes DELIVERED, in the same Tx: every command that
// succeeds has gone SENT, DELIVERED, SUCCEEDED, and the receipt that comes
// after changes nothing. A reply for a command already final (e.g.
// TIMED_OUT) changes nothing: OutcomeLateReply.
func (t *Tx) Reply(cmdType, code int, msgID, body string) Outcome {
	if msgID == "" {
		return OutcomeUnknown
	}
	for i := range t.list {
		p := &t.list[i]
		if p.MsgID != msgID {
			continue
		}
		if Final(p.State) {
			return OutcomeLateReply
		}
		if cmdType == 7 && int(p.Code) != code {
			return OutcomeUnknown
		}
		if p.State == schemas.CommandSent {
			t.event(p, schemas.CommandDelivered, "", nil)
		}
		reply := body
		t.event(p, schemas.CommandSucceeded, "", &reply)
		t.finishAt(i)
		return OutcomeApplied
	}
	return OutcomeUnknown
}

// Expire moves sent commands past their reply deadline to TIMED_OUT and
// queued commands past their expiry to EXPIRED, in list order. Each event is
// dated at the deadline or expiry that passed (not at now, which is when a
// timer tick noticed it), so a replay dates it the same.
func (t *Tx) Expire() {
	for i := 0; i < len(t.list); i++ {
		p := &t.list[i]
		switch {
		case inFlight(p.State) && p.Deadline != nil && !t.now.Before(*p.Deadline):
			t.eventAt(*p.Deadline, p, schemas.CommandTimedOut, ReasonReplyTimeout, nil)
		case p.State == schemas.CommandQueued && p.ExpiresAt != nil && !t.now.Before(*p.ExpiresAt):
			t.eventAt(*p.ExpiresAt, p, schemas.CommandExpired, ReasonQueueExpired, nil)
		default:
			continue
		}
		t.finishAt(i)
		i--
	}
}

// Deadline is the earliest timer of list: a sent command's reply deadline or
// a queued command's expiry.
func Deadline(list []schemas.PendingCommand) (time.Time, bool) {
	var at time.Time
	for _, p := range list {
		var d *time.Time
		switch {
		case inFlight(p.State):
			d = p.Deadline
		case p.State == schemas.CommandQueued:
			d = p.ExpiresAt
		}
		if d != nil && (at.IsZero() || d.Before(at)) {
			at = *d
		}
	}
	return at, !at.IsZero()
}

// Active counts the commands not in a final state.
func Active(list []schemas.PendingCommand) int {
	n := 0
	for _, p := range list {
		if !Final(p.State) {
			n++
		}
	}
	return n
}

// ListBytes is an upper estimate of the bytes list takes in the device's
// state record (Avro: the strings and bodies plus a fixed allowance per
// entry for lengths, numbers and timestamps; a command not yet sent is
// counted with its 32-hex sMsgId to come).
func ListBytes(list []schemas.PendingCommand) int {
	n := 0
	for _, p := range list {
		n += entryBytes(p)
	}
	return n
}

func entryBytes(p schemas.PendingCommand) int {
	const fixed = 64 // lengths, code, timeout, two timestamps, seq, union tags
	msg := max(len(p.MsgID), 32)
	return fixed + len(p.CommandID) + len(p.Kind) + msg + len(p.Body) + len(p.State)
}

func (t *Tx) count(state string) int {
	n := 0
	for _, p := range t.list {
		if p.State == state {
			n++
		}
	}
	return n
}

func (t *Tx) find(id string) int {
	return slices.IndexFunc(t.list, func(p schemas.PendingCommand) bool { return p.CommandID == id })
}

// insertActive puts p after the last command not in a final state (active
// commands come first, in acceptance order; finished ones after them).
func (t *Tx) insertActive(p schemas.PendingCommand) []schemas.PendingCommand {
	i := slices.IndexFunc(t.list, func(q schemas.PendingCommand) bool { return Final(q.State) })
	if i < 0 {
		i = len(t.list)
	}
	return slices.Insert(t.list, i, p)
}

// finishAt moves the entry at i, now in a final state, to the finished
// memory at the end of the list.
func (t *Tx) finishAt(i int) {
	p := t.list[i]
	t.list = slices.Delete(t.list, i, i+1)
	t.finish(p)
}

// finish records p, in a final state, as recently finished: body and timers
// are dropped, and the oldest finished entries beyond RecentFinished go.
func (t *Tx) finish(p schemas.PendingCommand) {
	p.Body, p.Deadline, p.ExpiresAt = "", nil, nil
	t.list = append(t.list, p)
	t.changed = true
	finished := 0
	for _, q := range t.list {
		if Final(q.State) {
			finished++
		}
	}
	for j := 0; finished > t.l.cfg.RecentFinished && j < len(t.list); {
		if Final(t.list[j].State) {
			t.list = slices.Delete(t.list, j, j+1)
			finished--
			continue
		}
		j++
	}
}
