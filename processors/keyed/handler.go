// Package keyed is the runtime of ams's keyed, exactly-once processors.
//
// A processor is a Handler over per-key state S. The runtime consumes its
// input topics in one Kafka consumer group (range-assigned, so it owns the
// same partition numbers of every co-partitioned topic), runs one goroutine
// per assigned partition (so a key's state needs no locks), restores each
// partition's state from its compacted changelog before taking any input of
// that partition, and commits every batch's outputs, state changes and input
// offsets in one Kafka transaction.
//
// Guarantees, given the Handler's contract below:
//   - Ordering: the inputs of one key are handled in log order of each input
//     topic; inputs of different topics for the same key are interleaved in
//     the order they are polled.
//   - Exactly-once: an input's outputs and state change are committed
//     together with its offset, or not at all. An aborted batch rolls the
//     in-memory state back and the batch is consumed again.
//   - Timers: a key's next timer is derived from its state (Handler.Deadline),
//     so a partition's next owner re-arms every timer after restoring the
//     changelog. A fired timer's outputs and state change commit in a
//     transaction like any input.
//
// Runner is the runtime (Config declares the topics; CheckTopology is its
// start-up check); ORDERING.md beside this file gives the order of its steps.
// Package keyedtest runs a Handler the same way without a broker.
package keyed

import "time"

// Input is one consumed record.
type Input struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       string
	Value     []byte // nil for a tombstone
	Timestamp time.Time
}

// Output is one record to produce. Key is normally the device sn, so the
// output lands in the same partition number as its input.
type Output struct {
	Topic string
	Key   string
	Value []byte // nil produces a tombstone
}

// Handler is the per-key logic of a processor. Implementations must be pure
// with respect to S: they never mutate the state they are given, and return
// a new value instead (the runtime keeps the old one to roll back an aborted
// transaction). They must not block or do I/O; now is the runtime's clock.
//
// An error from Process or Timer is not retried: the handler is expected to
// turn bad input into outputs (a reject record) itself. An error stops the
// partition and the process (a bug, not a bad record).
type Handler[S any] interface {
	// Process handles one input for key. state is nil when the key has none.
	// It returns the key's next state and the outputs. Returning the very
	// pointer it was given means "unchanged" (nothing goes to the changelog);
	// returning nil deletes the state (a tombstone goes to the changelog).
	Process(now time.Time, key string, state *S, in Input) (next *S, out []Output, err error)
	// Timer is called once the key's deadline (from Deadline) has passed
	// (at the runtime's first timer tick at or after it; now is never
	// before the deadline), and not before the partition's input has been
	// processed up to the deadline (a backlog holds it; see Runner). The
	// key's timer is then re-armed from the
	// returned state's Deadline only if that is after now: a Timer that
	// leaves the deadline where it was disarms the key until its state
	// next changes, rather than firing in a loop.
	Timer(now time.Time, key string, state *S) (next *S, out []Output, err error)
	// Deadline returns the key's next timer, if it has one.
	Deadline(state *S) (at time.Time, ok bool)
	// EncodeState / DecodeState convert the state to and from its changelog
	// value (schemas.DeviceState for the device processor; secrets sealed).
	EncodeState(key string, state *S) ([]byte, error)
	DecodeState(key string, value []byte) (*S, error)
}
