package egress

import (
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/schemas"
)

// The backoff between re-publishing rounds of a partition's failed frames.
const minRetryBackoff, maxRetryBackoff = 100 * time.Millisecond, 3 * time.Second

// windowState is a worker's records and what it knows of the partition's
// earlier owners: what planRound reads and advances. Guarded by
// partWorker.mu.
type windowState struct {
	queue   []*kgo.Record // fetched, not yet in the window
	window  []*item       // in offset order
	scanned bool          // prior holds the earlier owners' receipts
	prior   map[string]string
	// retryAt is when the failed frames may be published again; zero: not
	// scheduled.
	retryAt time.Time
	backoff time.Duration // of the next retry round (0: minRetryBackoff)
}

// planInput is what planRound decides on besides the state.
type planInput struct {
	now      time.Time // deadline clock (workerDeps.now)
	wall     time.Time // retry clock (time.Now)
	stopping bool      // publish nothing new; let what is in flight finish
	window   int       // most frames in the window
	// gen is the connection generation a publish is decided under
	// (Pool.Gen); read while the plan is made, under partWorker.mu.
	gen func(sn string) uint64
	// decode turns a queued record into an item (a reject when it must not
	// be published).
	decode func(*kgo.Record) *item
}

// plan is what one round of a worker does, as planRound decided it.
type plan struct {
	retired   int         // items of the done prefix that left the window
	last      *kgo.Record // the last of them: mark it committable; nil: none
	finish    []*item     // receipts or rejects to write, in offset order
	intents   []*item     // at_most_once intent receipts to write
	publish   []*item     // frames to publish, in offset order
	republish bool        // publish holds failed frames published again
	needScan  bool        // an at_most_once frame waits for the earlier owners' receipts
	settled   int         // frames an earlier owner already settled (now done)
	failedSN  string      // device of the first failed frame ("" if none)
	pending   int         // publishes, receipts and intents that will still report back
	retryAt   time.Time   // when to run a round for the failed frames; zero: none
}

// planRound decides one round of a partition worker and advances s to the
// states the plan puts the items in. It does no I/O: the plan's side effects
// are act's.
//
// The at-most-once rules it enforces: a frame past its deadline is never
// published (expired_before_publish); an at_most_once frame is published
// only after its intent receipt is written, only once the earlier owners'
// receipts are read (needScan), never when an earlier owner recorded an
// intent without an outcome (delivery_unknown) or settled it
// (already_settled), and never again after a publish that may have reached
// the broker (delivery_unknown). Failed frames are published again, in
// offset order, only once nothing of the partition is in flight and the
// backoff has passed. Receipts are written in offset order for the
// acknowledged prefix only.
func planRound(s *windowState, in planInput) plan {
	var p plan
	// Retire the done prefix.
	n := 0
	for n < len(s.window) && s.window[n].state == stDone {
		n++
	}
	if n > 0 {
		p.last, p.retired = s.window[n-1].rec, n
		s.window = slices.Delete(s.window, 0, n)
	}
	// Receipts for the acknowledged prefix, in offset order.
	for _, it := range s.window {
		if it.state == stAcked {
			it.state = stFinishing
			p.finish = append(p.finish, it)
			continue
		}
		if it.state != stFinishing && it.state != stDone {
			break
		}
	}
	publishing, failed := 0, 0
	for _, it := range s.window {
		switch it.state {
		case stPublishing:
			publishing++
		case stFailed:
			if failed == 0 {
				p.failedSN = it.dl.SN
			}
			failed++
		}
	}
	if n > 0 && failed == 0 {
		s.backoff = minRetryBackoff
	}
	switch {
	case in.stopping:
		// Publish nothing more; failed frames are left to the next owner.
	case failed > 0:
		planRetry(s, in, &p, publishing)
	default:
		planNew(s, in, &p)
	}
	// What will still report back: publishes and receipts in flight.
	for _, it := range s.window {
		if it.state == stPublishing || it.state == stFinishing || it.state == stIntent {
			p.pending++
		}
	}
	p.retryAt = s.retryAt
	return p
}

// planRetry publishes the failed frames again in offset order once every
// publish in flight has resolved (all results of a lost connection are in)
// and the backoff has passed.
func planRetry(s *windowState, in planInput, p *plan, publishing int) {
	if publishing > 0 {
		return
	}
	if s.retryAt.IsZero() {
		s.backoff = max(s.backoff, minRetryBackoff)
		s.retryAt = in.wall.Add(s.backoff)
		s.backoff = min(2*s.backoff, maxRetryBackoff)
	}
	if in.wall.Before(s.retryAt) {
		return
	}
	s.retryAt = time.Time{}
	p.republish = true
	for _, it := range s.window {
		if it.state != stFailed {
			continue
		}
		switch {
		case expired(it, in.now):
			it.status, it.state = schemas.ReceiptExpiredBeforePublish, stFinishing
			p.finish = append(p.finish, it)
		case it.dl.AtMostOnce && it.uncertain:
			// The broker may have it: never publish it again.
			it.status, it.state = schemas.ReceiptDeliveryUnknown, stFinishing
			p.finish = append(p.finish, it)
		default:
			it.state = stPublishing
			it.gen = in.gen(it.dl.SN)
			p.publish = append(p.publish, it)
		}
	}
}

// planNew publishes the frames whose intent is written, then takes queued
// records into the window (up to in.window) and decides each.
func planNew(s *windowState, in planInput, p *plan) {
	// A frame whose intent is written goes out now; nothing after it was
	// taken, so the device's order holds.
	blocked := false
	for _, it := range s.window {
		switch it.state {
		case stIntent:
			blocked = true
		case stIntentAcked:
			if expired(it, in.now) {
				it.status, it.state = schemas.ReceiptExpiredBeforePublish, stFinishing
				p.finish = append(p.finish, it)
				continue
			}
			it.state = stPublishing
			it.gen = in.gen(it.dl.SN)
			p.publish = append(p.publish, it)
		}
	}
	for !blocked && len(s.queue) > 0 && len(s.window) < in.window {
		it := in.decode(s.queue[0])
		if it.reject == nil && it.dl.AtMostOnce && !s.scanned {
			p.needScan = true // left in the queue until the receipts are read
			break
		}
		s.queue[0] = nil
		s.queue = s.queue[1:]
		s.window = append(s.window, it)
		switch {
		case it.reject != nil:
			it.state = stFinishing
			p.finish = append(p.finish, it)
		case expired(it, in.now):
			it.status, it.state = schemas.ReceiptExpiredBeforePublish, stFinishing
			p.finish = append(p.finish, it)
		case it.dl.AtMostOnce:
			switch s.prior[it.dl.FrameID] {
			case "":
				// First attempt: record the intent, publish once it is written.
				it.state = stIntent
				p.intents = append(p.intents, it)
				blocked = true
			case schemas.ReceiptPublishing:
				// An earlier owner stopped between its intent and the
				// outcome: the device may have it.
				it.status, it.state = schemas.ReceiptDeliveryUnknown, stFinishing
				p.finish = append(p.finish, it)
			default:
				// Already published (or settled) by an earlier owner.
				it.state = stDone
				p.settled++
			}
		default:
			it.state = stPublishing
			it.gen = in.gen(it.dl.SN)
			p.publish = append(p.publish, it)
		}
	}
}
