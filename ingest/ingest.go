// Package ingest moves what devices and the broker publish over MQTT into
// Kafka: every frame from /ivms/pub/{sn} and every connection event of a
// device's own client becomes one schemas.UplinkRaw on ams.uplink.raw, keyed
// by sn; anything refused becomes one schemas.Reject on ams.rejects.
//
// Delivery: at-least-once. A QoS 1 message is acknowledged to the broker only
// after Kafka acknowledged (acks=all, idempotent producer) the record made of
// it, rejects included. Nothing is dropped: a message that cannot be written
// is never acknowledged, so the broker redelivers it to the next session.
//
// Ordering: messages are converted and produced in the order the broker
// delivered them, and the producer keeps that order per partition, so the
// frames of one device reach Kafka in the order this instance received them.
// Acknowledgements are sent in receive order too (MQTT 3.1.1, 4.6.0-2).
//
// Back-pressure: at most MaxInflight messages are read and not yet
// acknowledged. When Kafka is slow or down, ingest stops reading; the broker
// stops sending once its in-flight window for this client is full and queues
// the rest in the (persistent) session.
//
// The shape follows Benthos: an Input (Connect / Read / Close) feeds an
// Output (Connect / Write / Close) through a Pipeline that acknowledges a
// message only after the output succeeded.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Message is one MQTT message read from the broker and not yet acknowledged.
type Message struct {
	Topic    string
	Payload  []byte
	Received time.Time // when ingest received it (UTC)
	ack      func()
}

// NewMessage returns a message whose Ack calls ack (nil: no-op).
func NewMessage(topic string, payload []byte, received time.Time, ack func()) *Message {
	return &Message{Topic: topic, Payload: payload, Received: received, ack: ack}
}

// Ack acknowledges the message to the broker. Call it once, after the
// message's record was written.
func (m *Message) Ack() {
	if m.ack != nil {
		m.ack()
	}
}

// Input is where messages come from.
type Input interface {
	// Connect connects and subscribes; it returns once messages can flow.
	Connect(ctx context.Context) error
	// Read returns the next message in delivery order, blocking until one
	// arrives or ctx is done.
	Read(ctx context.Context) (*Message, error)
	// Close stops delivery and disconnects. Messages read and not acknowledged
	// are redelivered by the broker to the next session.
	Close(ctx context.Context) error
}

// Output is where records go.
type Output interface {
	// Connect checks that the output can take records.
	Connect(ctx context.Context) error
	// Write hands rec to the output; done is called exactly once, with nil
	// when the record is durably written. Records written one after the other
	// with the same key stay in that order.
	Write(rec *kgo.Record, done func(error))
	// Flush waits until every record written so far is done, or ctx is done.
	Flush(ctx context.Context) error
	// Close flushes what it can and releases the output.
	Close(ctx context.Context) error
}

// Config configures a Pipeline.
type Config struct {
	// MaxInflight caps the messages read and not yet acknowledged; at the
	// cap the pipeline stops reading. Keep it at least the broker's
	// in-flight window for this client (Mosquitto max_inflight_messages,
	// EMQX max_inflight) so the MQTT handler normally never blocks.
	MaxInflight int
	// DrainTimeout bounds the wait for in-flight records at shutdown.
	DrainTimeout time.Duration
}

// Pipeline reads messages from an Input, converts each into a record and
// writes it to an Output, and acknowledges messages in the order they were
// read, each only after its record and every earlier one were written.
//
// Failure: if the output fails a record (the producer retries without limit,
// so this is a fatal error such as a missing topic or an oversize record),
// Run stops with that error and acknowledges nothing from that record on;
// the broker redelivers those messages to the next session.
type Pipeline struct {
	in   Input
	out  Output
	conv *Converter
	cfg  Config
	log  *slog.Logger
	m    *Metrics
}

// NewPipeline returns a pipeline; m may be shared with the input.
func NewPipeline(in Input, out Output, conv *Converter, cfg Config, log *slog.Logger, m *Metrics) *Pipeline {
	if cfg.MaxInflight <= 0 {
		cfg.MaxInflight = 10000
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 15 * time.Second
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	return &Pipeline{in: in, out: out, conv: conv, cfg: cfg, log: log, m: m}
}

// entry is one message between Read and Ack.
type entry struct {
	msg  *Message
	done bool
	err  error
}

// ackQueue holds the messages read and not yet acknowledged, in read order.
type ackQueue struct {
	mu     sync.Mutex
	q      []*entry
	head   int
	notify chan struct{} // cap 1: something completed
}

func (a *ackQueue) push(e *entry) {
	a.mu.Lock()
	a.q = append(a.q, e)
	a.mu.Unlock()
}

func (a *ackQueue) complete(e *entry, err error) {
	a.mu.Lock()
	e.done, e.err = true, err
	a.mu.Unlock()
	select {
	case a.notify <- struct{}{}:
	default:
	}
}

// popDone removes the completed prefix and returns it; failed is the first
// failed entry's error (the prefix stops before it).
func (a *ackQueue) popDone(buf []*entry) (ready []*entry, failed error, empty bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for a.head < len(a.q) {
		e := a.q[a.head]
		if !e.done {
			break
		}
		if e.err != nil {
			failed = e.err
			break
		}
		buf = append(buf, e)
		a.q[a.head] = nil
		a.head++
	}
	if a.head == len(a.q) {
		a.q, a.head = a.q[:0], 0
	} else if a.head > 1024 && a.head*2 > len(a.q) {
		n := copy(a.q, a.q[a.head:])
		clear(a.q[n:])
		a.q, a.head = a.q[:n], 0
	}
	return buf, failed, a.head == len(a.q)
}

// Run connects the input and output and moves messages until ctx is done or
// a fatal error. On ctx done it stops reading, waits up to DrainTimeout for
// the records in flight, acknowledges those written, and closes both ends.
func (p *Pipeline) Run(ctx context.Context) error {
	if err := p.out.Connect(ctx); err != nil {
		return fmt.Errorf("output: %w", err)
	}
	if err := p.in.Connect(ctx); err != nil {
		return fmt.Errorf("input: %w", err)
	}
	p.log.Info("ingest running", "max_inflight", p.cfg.MaxInflight)

	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	q := &ackQueue{notify: make(chan struct{}, 1)}
	slots := make(chan struct{}, p.cfg.MaxInflight)

	// The acker acknowledges completed messages in read order.
	ackerStop := make(chan struct{}) // closed: stop once the queue is empty
	ackerKill := make(chan struct{}) // closed: stop now
	ackerDone := make(chan struct{})
	go func() {
		defer close(ackerDone)
		var buf []*entry
		for {
			var failed error
			var empty bool
			buf, failed, empty = q.popDone(buf[:0])
			for _, e := range buf {
				e.msg.Ack()
				<-slots
			}
			if n := len(buf); n > 0 {
				p.m.acked.Add(float64(n))
				p.m.inflight.Sub(float64(n))
			}
			if failed != nil {
				cancel(fmt.Errorf("kafka: %w", failed))
				return
			}
			select {
			case <-q.notify:
			case <-ackerStop:
				if empty {
					return
				}
				// Drain: keep acking as completions arrive.
				select {
				case <-q.notify:
				case <-ackerKill:
					return
				}
			}
		}
	}()

	readErr := p.readLoop(runCtx, q, slots)

	// Shut down: wait for what is in flight, ack it, close.
	drainCtx, drainCancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.DrainTimeout)
	defer drainCancel()
	if err := p.out.Flush(drainCtx); err != nil {
		p.log.Warn("ingest: in-flight records not all written before the drain timeout; their messages stay unacknowledged and will be redelivered", "err", err)
	}
	close(ackerStop)
	select {
	case <-ackerDone:
	case <-drainCtx.Done():
		// Some record never completed: its message and later ones stay unacked.
		close(ackerKill)
		<-ackerDone
	}
	if err := p.in.Close(drainCtx); err != nil {
		p.log.Warn("ingest: close input", "err", err)
	}
	if err := p.out.Close(drainCtx); err != nil {
		p.log.Warn("ingest: close output", "err", err)
	}
	if cause := context.Cause(runCtx); cause != nil && ctx.Err() == nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	if readErr != nil && ctx.Err() == nil {
		return readErr
	}
	p.log.Info("ingest stopped")
	return nil
}

// readLoop reads, converts and writes until ctx is done or a fatal error.
func (p *Pipeline) readLoop(ctx context.Context, q *ackQueue, slots chan struct{}) error {
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		msg, err := p.in.Read(ctx)
		if err != nil {
			<-slots
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read: %w", err)
		}
		rec, out, err := p.conv.Convert(msg)
		if err != nil {
			<-slots
			return err // never drop: the message stays unacknowledged
		}
		p.m.messages.WithLabelValues(out.Kind).Inc()
		p.m.inflight.Inc()
		e := &entry{msg: msg}
		q.push(e)
		switch out.Kind {
		case OutSkip:
			p.m.skipped.WithLabelValues(out.Reason).Inc()
			q.complete(e, nil)
			continue
		case OutReject:
			p.m.rejects.WithLabelValues(out.Reason).Inc()
		}
		start := time.Now()
		p.out.Write(rec, func(err error) {
			p.m.produceSeconds.Observe(time.Since(start).Seconds())
			if err != nil {
				p.m.produceErrors.Inc()
			} else if !msg.Received.IsZero() {
				p.m.hopSeconds.WithLabelValues("mqtt_to_kafka_ack").Observe(time.Since(msg.Received).Seconds())
			}
			q.complete(e, err)
		})
	}
}
