package egress

import (
	"context"
	"fmt"
	"slices"
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
	stNew        itemState = iota // taken, not yet published
	stPublishing                  // PUBLISH sent, waiting for the PUBACK
	stFailed                      // publish failed: to be published again
	stAcked                       // PUBACK received: receipt to write
	stFinishing                   // receipt or reject being written
	stDone                        // nothing left to do: committable
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
	mark     func(rec *kgo.Record) // the record and all before it are done
	retired  func(n int)           // n records left the worker (done or abandoned)
	fail     func(error)           // fatal: stop egress
	m        *Metrics
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
	queue    []*kgo.Record // fetched, not yet in the window
	window   []*item       // in offset order
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
	w.queue = append(w.queue, recs...)
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

func (w *partWorker) run(ctx context.Context) {
	defer close(w.done)
	defer func() {
		// Everything not done is abandoned: the next owner re-reads it from
		// the committed offset.
		w.mu.Lock()
		n := len(w.queue) + len(w.window)
		w.queue, w.window = nil, nil
		w.mu.Unlock()
		w.d.retired(n)
	}()
	const minBackoff, maxBackoff = 100 * time.Millisecond, 3 * time.Second
	backoff := minBackoff
	var retryAt time.Time // when failed frames may be published again; zero: not scheduled
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
		// Retire the done prefix.
		n := 0
		for n < len(w.window) && w.window[n].state == stDone {
			n++
		}
		var last *kgo.Record
		if n > 0 {
			last = w.window[n-1].rec
			w.window = slices.Delete(w.window, 0, n)
		}
		// Receipts for the acknowledged prefix, in offset order.
		var finish []*item
		for _, it := range w.window {
			if it.state == stAcked {
				it.state = stFinishing
				finish = append(finish, it)
				continue
			}
			if it.state != stFinishing && it.state != stDone {
				break
			}
		}
		publishing, failed := 0, 0
		var failedSN string
		for _, it := range w.window {
			switch it.state {
			case stPublishing:
				publishing++
			case stFailed:
				if failed == 0 {
					failedSN = it.dl.SN
				}
				failed++
			}
		}
		var publish []*item
		republish := false
		switch {
		case stopping:
			// Publish nothing more; failed frames are left to the next owner.
		case failed > 0:
			// Re-publish in offset order once every publish in flight has
			// resolved (all results of a lost connection are in) and the
			// backoff has passed.
			if publishing > 0 {
				break
			}
			if retryAt.IsZero() {
				retryAt = time.Now().Add(backoff)
				backoff = min(2*backoff, maxBackoff)
			}
			if time.Now().Before(retryAt) {
				break
			}
			retryAt = time.Time{}
			republish = true
			for _, it := range w.window {
				if it.state == stFailed {
					it.state = stPublishing
					it.gen = w.d.pub.Gen(it.dl.SN)
					publish = append(publish, it)
				}
			}
		default:
			for len(w.queue) > 0 && len(w.window) < w.d.window {
				rec := w.queue[0]
				w.queue[0] = nil
				w.queue = w.queue[1:]
				it := w.decode(rec)
				w.window = append(w.window, it)
				if it.reject != nil {
					it.state = stFinishing
					finish = append(finish, it)
				} else {
					it.state = stPublishing
					it.gen = w.d.pub.Gen(it.dl.SN)
					publish = append(publish, it)
				}
			}
		}
		// What will still report back: publishes and receipts in flight.
		pending := 0
		for _, it := range w.window {
			if it.state == stPublishing || it.state == stFinishing {
				pending++
			}
		}
		w.mu.Unlock()

		if last != nil {
			w.d.mark(last)
			w.d.retired(n)
			if failed == 0 {
				backoff = minBackoff
			}
		}
		if republish {
			w.d.m.republished.Add(float64(len(publish)))
		}
		for _, it := range finish {
			w.finish(it)
		}
		for _, it := range publish {
			w.publish(it)
		}
		if stopping && pending == 0 {
			return
		}
		retryC = nil
		if !retryAt.IsZero() && !stopping {
			if retryTimer == nil {
				retryTimer = time.NewTimer(time.Until(retryAt))
			} else {
				retryTimer.Reset(time.Until(retryAt))
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
			if failedSN != "" {
				waitCtx, cancel := context.WithTimeout(ctx, maxBackoff)
				_ = w.d.pub.WaitUp(waitCtx, failedSN)
				cancel()
			}
		case <-stopC:
		case <-ctx.Done():
			return
		}
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
		if len(payload) > 4096 {
			payload = payload[:4096]
		}
		it.reject = &schemas.Reject{
			RejectID:        fmt.Sprintf("egress:%s:%d:%d", rec.Topic, rec.Partition, rec.Offset),
			Stage:           schemas.StageSink,
			Reason:          reason,
			Detail:          detail,
			SN:              sn,
			Topic:           it.dl.Topic,
			Payload:         payload,
			SourceTopic:     rec.Topic,
			SourcePartition: rec.Partition,
			SourceOffset:    rec.Offset,
			At:              time.Now().UTC(),
		}
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
		v, topic = &schemas.DownlinkReceipt{
			FrameID:       it.dl.FrameID,
			SN:            it.dl.SN,
			CommandID:     it.dl.CommandID,
			MsgID:         it.dl.MsgID,
			PublishedAt:   it.ackedAt.UTC(),
			Egress:        w.d.egressID,
			PublishSentAt: new(it.sentAt.UTC()),
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
