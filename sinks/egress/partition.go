package egress

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/schemas"
)

// Reasons of the rejects egress writes to ams.rejects (Stage SINK).
const (
	ReasonBadRecord     = "bad_record"     // the value is not a Downlink
	ReasonBadSN         = "bad_sn"         // Downlink.SN is not a valid sn
	ReasonTopicMismatch = "topic_mismatch" // Downlink.Topic is not /ivms/sub/{sn}
	ReasonKeyMismatch   = "key_mismatch"   // the record key is not the sn (its order with the device's other frames is unknown)
	ReasonEmptyPayload  = "empty_payload"
)

// publisher is the MQTT side of a worker (Pool).
type publisher interface {
	Gen(sn string) uint64
	Publish(sn, topic string, payload []byte, gen uint64, done func(error))
	WaitUp(ctx context.Context, sn string) error
}

// producer is the Kafka side of a worker (receipts and rejects).
type producer interface {
	Produce(rec *kgo.Record, done func(error))
}

// codec frames records (schemas.Registry).
type codec interface {
	Encode(v any) ([]byte, error)
	Decode(b []byte, v any) error
}

type itemState int

const (
	stNew         itemState = iota // taken, not yet published
	stPublishing                   // PUBLISH sent, waiting for the PUBACK
	stFailed                       // publish failed: to be published again
	stAcked                        // PUBACK received: receipt to write
	stFinishing                    // receipt or reject being written
	stDone                         // nothing left to do: committable
	stIntent                       // at_most_once: intent receipt being written
	stIntentAcked                  // at_most_once: intent written, to be published
)

// item is one downlink record in a worker's window.
type item struct {
	rec     *kgo.Record
	dl      schemas.Downlink
	reject  *schemas.Reject // set: refused, write this instead of publishing
	state   itemState
	gen     uint64    // connection generation the publish was decided under
	sentAt  time.Time // last PUBLISH
	ackedAt time.Time
	// status of the receipt finish writes: "" (published, after a PUBACK),
	// or a frame not published: expired_before_publish, delivery_unknown.
	status string
	// uncertain: the last publish failed after the PUBLISH may have left
	// (connection lost, PUBACK timeout): the broker may have the frame.
	uncertain bool
}

// workerDeps are what a partition worker needs from the egress.
type workerDeps struct {
	pub      publisher
	prod     producer
	codec    codec
	receipts string // topic
	rejects  string // topic
	egressID string
	window   int
	// scan returns what the receipts of the partition's earlier owners say
	// about at_most_once frames (frame_id -> receipt status), reading the
	// receipts written since the given time (the first record's timestamp
	// less a clock-skew allowance). nil: no earlier owner (tests).
	scan    func(ctx context.Context, partition int32, since time.Time) (map[string]string, error)
	now     func() time.Time      // nil: time.Now
	mark    func(rec *kgo.Record) // the record and all before it are done
	retired func(n int)           // n records left the worker (done or abandoned)
	fail    func(error)           // fatal: stop egress
	m       *Metrics
}

// partWorker publishes the records of one partition in offset order with at
// most window frames in flight, and marks an offset committable only when
// every record up to it is done: published with a PUBACK and its receipt
// written, or refused and its reject written.
//
// On a publish failure it stops taking new records, waits until every
// publish in flight has resolved, then publishes the failed records again in
// offset order. A device's frames all go through the same connection, and a
// connection writes in order, so a device never sees a frame for the first
// time before an earlier frame of its own (duplicates are possible).
//
// What to publish is decided under w.mu, reading the connection's
// generation there, and publish results are recorded under w.mu. The pool
// starts a connection's next generation only after every result of the
// previous one was recorded, and refuses a publish decided under an older
// generation; so no frame is decided while an earlier frame of its device
// is unresolved on a connection that has already been replaced.
type partWorker struct {
	topic     string
	partition int32
	d         workerDeps

	mu       sync.Mutex
	firstTS  time.Time     // timestamp of the first record fetched since the assignment
	st       windowState   // what planRound reads and advances
	notify   chan struct{} // cap 1
	stopping chan struct{} // closed by stop
	stopOnce sync.Once
	done     chan struct{} // closed when run returns
}

func newPartWorker(topic string, partition int32, d workerDeps) *partWorker {
	return &partWorker{
		topic: topic, partition: partition, d: d,
		notify:   make(chan struct{}, 1),
		stopping: make(chan struct{}),
		done:     make(chan struct{}),
	}
}

func (w *partWorker) wake() {
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// enqueue adds fetched records (in offset order).
func (w *partWorker) enqueue(recs []*kgo.Record) {
	w.mu.Lock()
	if w.firstTS.IsZero() && len(recs) > 0 {
		w.firstTS = recs[0].Timestamp
	}
	w.st.queue = append(w.st.queue, recs...)
	w.mu.Unlock()
	w.wake()
}

// stop asks the worker to finish: take nothing new, publish nothing new,
// wait for the publishes and receipts in flight, mark what is done, return.
func (w *partWorker) stop() { w.stopOnce.Do(func() { close(w.stopping) }) }

func (w *partWorker) isStopping() bool {
	select {
	case <-w.stopping:
		return true
	default:
		return false
	}
}

// run is the worker's loop: each round plans under w.mu (planRound, pure),
// then acts on the plan outside it (act: marks, receipts, intents,
// publishes), then waits for a result, a fetch, the retry time or stop.
func (w *partWorker) run(ctx context.Context) {
	defer close(w.done)
	defer func() {
		// Everything not done is abandoned: the next owner re-reads it from
		// the committed offset.
		w.mu.Lock()
		n := len(w.st.queue) + len(w.st.window)
		w.st.queue, w.st.window = nil, nil
		w.mu.Unlock()
		w.d.retired(n)
	}()
	var retryTimer *time.Timer
	defer func() {
		if retryTimer != nil {
			retryTimer.Stop()
		}
	}()
	var retryC <-chan time.Time
	for {
		stopping := w.isStopping()
		w.mu.Lock()
		p := planRound(&w.st, planInput{
			now:      w.now(),
			wall:     time.Now(),
			stopping: stopping,
			window:   w.d.window,
			gen:      w.d.pub.Gen,
			decode:   w.decode,
		})
		scanSince := w.firstTS
		w.mu.Unlock()

		w.act(p)
		if p.needScan {
			if err := w.scanPrior(ctx, scanSince); err != nil {
				w.d.m.frames.WithLabelValues("scan_failed").Inc()
				// Retry after a pause; the at_most_once frame waits.
				select {
				case <-time.After(time.Second):
				case <-w.stopping:
				case <-ctx.Done():
					return
				}
			}
			continue
		}
		if stopping && p.pending == 0 {
			return
		}
		retryC = nil
		if !p.retryAt.IsZero() && !stopping {
			if retryTimer == nil {
				retryTimer = time.NewTimer(time.Until(p.retryAt))
			} else {
				retryTimer.Reset(time.Until(p.retryAt))
			}
			retryC = retryTimer.C
		}
		stopC := w.stopping
		if stopping {
			stopC = nil
		}
		select {
		case <-w.notify:
		case <-retryC:
			// Wait for the device's connection rather than spin on it.
			if p.failedSN != "" {
				waitCtx, cancel := context.WithTimeout(ctx, maxRetryBackoff)
				_ = w.d.pub.WaitUp(waitCtx, p.failedSN)
				cancel()
			}
		case <-stopC:
		case <-ctx.Done():
			return
		}
	}
}

// act carries out a plan: it marks the done prefix, writes the receipts,
// rejects and intents, and publishes, in that order.
func (w *partWorker) act(p plan) {
	if p.last != nil {
		w.d.mark(p.last)
		w.d.retired(p.retired)
	}
	if p.republish {
		w.d.m.republished.Add(float64(len(p.publish)))
	}
	for _, it := range p.finish {
		w.finish(it)
	}
	for _, it := range p.intents {
		w.intent(it)
	}
	for _, it := range p.publish {
		w.publish(it)
	}
	if p.settled > 0 {
		w.d.m.frames.WithLabelValues("already_settled").Add(float64(p.settled))
		w.wake() // retire them
	}
}

// decode turns a record into an item; a record that must not be published
// gets a reject.
func (w *partWorker) decode(rec *kgo.Record) *item {
	it := &item{rec: rec}
	bad := func(reason, detail string) *item {
		sn := it.dl.SN
		if !protocol.ValidSN(sn) {
			sn = ""
		}
		payload := it.dl.Payload
		if payload == nil {
			payload = rec.Value
		}
		it.reject = schemas.NewReject(schemas.Refusal{
			Stage:           schemas.StageSink,
			By:              "egress",
			Reason:          reason,
			Detail:          detail,
			SN:              sn,
			Topic:           it.dl.Topic,
			Payload:         payload,
			SourceTopic:     rec.Topic,
			SourcePartition: rec.Partition,
			SourceOffset:    rec.Offset,
			At:              time.Now(),
		})
		return it
	}
	if err := w.d.codec.Decode(rec.Value, &it.dl); err != nil {
		it.dl = schemas.Downlink{}
		return bad(ReasonBadRecord, err.Error())
	}
	switch {
	case !protocol.ValidSN(it.dl.SN):
		return bad(ReasonBadSN, fmt.Sprintf("sn %q is not a valid device sn", it.dl.SN))
	case it.dl.Topic != protocol.DownlinkTopic(it.dl.SN):
		return bad(ReasonTopicMismatch, fmt.Sprintf("topic %q, want %q", it.dl.Topic, protocol.DownlinkTopic(it.dl.SN)))
	case string(rec.Key) != it.dl.SN:
		return bad(ReasonKeyMismatch, fmt.Sprintf("record key %q, sn %q", rec.Key, it.dl.SN))
	case len(it.dl.Payload) == 0:
		return bad(ReasonEmptyPayload, "empty downlink payload")
	}
	return it
}

// expired reports whether it has a deadline that has passed at now: it
// must not be published any more.
func expired(it *item, now time.Time) bool {
	return it.dl.Deadline != nil && !now.Before(*it.dl.Deadline)
}

func (w *partWorker) now() time.Time {
	if w.d.now != nil {
		return w.d.now()
	}
	return time.Now()
}

// scanSkew is subtracted from the first record's timestamp (the
// processor's clock) to find the receipts (egress's clocks) of the frames
// from it on.
const scanSkew = 5 * time.Minute

// scanPrior reads what earlier owners of the partition recorded about
// at_most_once frames, once per assignment, before the first of them is
// published.
func (w *partWorker) scanPrior(ctx context.Context, first time.Time) error {
	prior := map[string]string{}
	if w.d.scan != nil {
		var err error
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		prior, err = w.d.scan(sctx, w.partition, first.Add(-scanSkew))
		cancel()
		if err != nil {
			return fmt.Errorf("egress: reading the receipts of partition %d: %w", w.partition, err)
		}
	}
	w.mu.Lock()
	w.st.prior, w.st.scanned = prior, true
	w.mu.Unlock()
	return nil
}

// intent records that it is about to be published (a receipt with status
// publishing); once Kafka has it, the frame may be published.
func (w *partWorker) intent(it *item) {
	b, err := w.d.codec.Encode(&schemas.DownlinkReceipt{
		FrameID:     it.dl.FrameID,
		SN:          it.dl.SN,
		CommandID:   it.dl.CommandID,
		MsgID:       it.dl.MsgID,
		PublishedAt: w.now().UTC(),
		Egress:      w.d.egressID,
		Status:      schemas.ReceiptPublishing,
	})
	if err != nil {
		w.d.fail(fmt.Errorf("encode %s: %w", w.d.receipts, err))
		return
	}
	w.d.prod.Produce(&kgo.Record{Topic: w.d.receipts, Key: []byte(it.dl.SN), Value: b}, func(err error) {
		if err != nil {
			w.d.fail(fmt.Errorf("produce to %s: %w", w.d.receipts, err))
			return
		}
		w.mu.Lock()
		it.state = stIntentAcked
		w.mu.Unlock()
		w.wake()
	})
}

// publish sends it; the result comes back through the callback.
func (w *partWorker) publish(it *item) {
	w.d.m.inflight.Inc()
	it.sentAt = time.Now()
	if !it.rec.Timestamp.IsZero() {
		w.d.m.hopToPublish.Observe(it.sentAt.Sub(it.rec.Timestamp).Seconds())
	}
	w.d.pub.Publish(it.dl.SN, it.dl.Topic, it.dl.Payload, it.gen, func(err error) {
		w.d.m.inflight.Dec()
		w.mu.Lock()
		if err != nil {
			it.state = stFailed
			// Refused before the PUBLISH left: certainly not delivered.
			it.uncertain = !errors.Is(err, ErrNotConnected) && !errors.Is(err, ErrStaleGeneration)
		} else {
			it.state = stAcked
			it.ackedAt = time.Now()
			w.d.m.hopPuback.Observe(it.ackedAt.Sub(it.sentAt).Seconds())
		}
		w.mu.Unlock()
		w.wake()
	})
}

// finish writes the receipt (after a PUBACK) or the reject of it.
func (w *partWorker) finish(it *item) {
	var v any
	var topic string
	key := it.dl.SN
	if it.reject != nil {
		v, topic, key = it.reject, w.d.rejects, it.reject.SN
		if key == "" {
			key = string(it.rec.Key)
		}
	} else {
		status, at := it.status, it.ackedAt
		var sentAt *time.Time // nil for a frame never published (an intent, an expired frame)
		if !it.sentAt.IsZero() {
			sentAt = new(it.sentAt.UTC())
		}
		if status == "" {
			status = schemas.ReceiptPublished
		} else {
			at = w.now().UTC()
		}
		v, topic = &schemas.DownlinkReceipt{
			FrameID:       it.dl.FrameID,
			SN:            it.dl.SN,
			CommandID:     it.dl.CommandID,
			MsgID:         it.dl.MsgID,
			PublishedAt:   at.UTC(),
			Egress:        w.d.egressID,
			Status:        status,
			PublishSentAt: sentAt,
		}, w.d.receipts
	}
	b, err := w.d.codec.Encode(v)
	if err != nil {
		w.d.fail(fmt.Errorf("encode %s: %w", topic, err))
		return
	}
	rec := &kgo.Record{Topic: topic, Value: b}
	if key != "" {
		rec.Key = []byte(key)
	}
	w.d.prod.Produce(rec, func(err error) {
		if err != nil {
			w.d.fail(fmt.Errorf("produce to %s: %w", topic, err))
			return
		}
		if it.reject != nil {
			w.d.m.frames.WithLabelValues("rejected").Inc()
			w.d.m.rejects.WithLabelValues(it.reject.Reason).Inc()
		} else if it.status != "" {
			w.d.m.frames.WithLabelValues(it.status).Inc()
			w.d.m.receipts.Inc()
		} else {
			w.d.m.frames.WithLabelValues("published").Inc()
			w.d.m.receipts.Inc()
			w.d.m.hopReceipt.Observe(time.Since(it.ackedAt).Seconds())
		}
		w.mu.Lock()
		it.state = stDone
		w.mu.Unlock()
		w.wake()
	})
}
