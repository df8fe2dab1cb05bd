package device

import (
	"errors"
	"fmt"
	"reflect"

	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/schemas"
)

// The processor's topology, declared once (goka's DefineGroup(Input(...),
// Output(...)) is the model): each input is its topic, its codec (the
// schemas record its values decode into, with Config.Registry) and its
// handler; each output is its topic and the record it carries. New checks
// the declaration (newTopology), Process routes by it, Inputs and Outputs
// list it for the keyed runtime, and call.emit writes a record to the
// output declared for its type.

// declare is the device processor's topology over the topic names t.
func declare(t kafkatopics.Names) ([]input, []output) {
	return []input{
			inputOf(t.UplinkRaw, (*call).uplink),
			inputOf(t.Registry, (*call).registry).withTombstone((*call).unregister),
			inputOf(t.Commands, (*call).command),
			inputOf(t.DownlinkReceipts, (*call).receipt),
		}, []output{
			outputOf[schemas.DeviceEvent](t.DeviceEvents),
			outputOf[schemas.Presence](t.Presence),
			outputOf[schemas.CommandEvent](t.CommandEvents),
			outputOf[schemas.Downlink](t.Downlink),
			outputOf[schemas.Reject](t.Rejects),
		}
}

// input is one input topic of the processor.
type input struct {
	topic string
	// record returns a new record of the topic's type: the codec (values
	// are decoded into it with Config.Registry). nil: no codec.
	record func() any
	// handle handles a decoded record. A value that does not decode is
	// rejected bad_record before it.
	handle func(c *call, s *State, rec any) *State
	// tombstone handles a tombstone (nil value); nil: a tombstone is
	// rejected bad_record.
	tombstone func(c *call, s *State) *State
}

// inputOf declares input topic carrying records R, handled by h.
func inputOf[R any](topic string, h func(c *call, s *State, rec *R) *State) input {
	in := input{topic: topic, record: func() any { return new(R) }}
	if h != nil {
		in.handle = func(c *call, s *State, rec any) *State { return h(c, s, rec.(*R)) }
	}
	return in
}

// withTombstone returns in with h handling its tombstones.
func (in input) withTombstone(h func(c *call, s *State) *State) input {
	in.tombstone = h
	return in
}

// run handles one record of the input: a tombstone, a value that does not
// decode (rejected bad_record), or the decoded record.
func (in *input) run(c *call, s *State) *State {
	if c.in.Value == nil {
		if in.tombstone != nil {
			return in.tombstone(c, s)
		}
		c.reject(ReasonBadRecord, "tombstone on "+c.in.Topic, "", nil)
		return s
	}
	rec := in.record()
	if err := c.p.reg.Decode(c.in.Value, rec); err != nil {
		c.reject(ReasonBadRecord, err.Error(), "", c.in.Value)
		return s
	}
	return in.handle(c, s, rec)
}

// output is one output topic of the processor and the record it carries.
type output struct {
	topic  string
	record reflect.Type // *R
}

// outputOf declares output topic carrying records R.
func outputOf[R any](topic string) output {
	return output{topic: topic, record: reflect.TypeFor[*R]()}
}

// newTopology checks a declaration (checkTopology) and that the records
// the handlers emit are exactly its outputs (checkOutputs).
func newTopology(reg *schemas.Registry, ins []input, outs []output, emitted []reflect.Type) (*topology, error) {
	t, err := checkTopology(reg, ins, outs)
	if err != nil {
		return nil, err
	}
	if err := t.checkOutputs(emitted); err != nil {
		return nil, err
	}
	return t, nil
}

// topology is a checked declaration.
type topology struct {
	inputs  []input
	byTopic map[string]*input
	outputs []output
	byType  map[reflect.Type]string // output topic by record type
}

// checkTopology checks a declaration against reg: every topic named, no
// topic declared twice (as inputs, as outputs, or as both), every input
// with a codec the registry knows and a handler, no two outputs of one
// record type, every output's record known to the registry. Every problem
// is reported, joined.
func checkTopology(reg *schemas.Registry, ins []input, outs []output) (*topology, error) {
	t := &topology{byTopic: map[string]*input{}, byType: map[reflect.Type]string{}}
	var problems []error
	seen := map[string]string{} // topic -> "input" or "output"
	declared := func(kind, topic string, what any) bool {
		if topic == "" {
			problems = append(problems, fmt.Errorf("device: %s of %v has no topic", kind, what))
			return false
		}
		if prev, ok := seen[topic]; ok {
			problems = append(problems, fmt.Errorf("device: topic %s declared twice (%s and %s)", topic, prev, kind))
			return false
		}
		seen[topic] = kind
		return true
	}
	t.inputs = make([]input, len(ins))
	copy(t.inputs, ins)
	for i := range t.inputs {
		in := &t.inputs[i]
		var rec any
		if in.record != nil {
			rec = in.record()
		}
		ok := declared("input", in.topic, reflect.TypeOf(rec))
		switch {
		case in.record == nil:
			problems = append(problems, fmt.Errorf("device: input %s has no codec", in.topic))
		case reg.Schema(rec) == nil:
			problems = append(problems, fmt.Errorf("device: input %s: %T is not a schemas record", in.topic, rec))
		}
		if in.handle == nil {
			problems = append(problems, fmt.Errorf("device: input %s has no handler", in.topic))
		}
		if ok {
			t.byTopic[in.topic] = in
		}
	}
	for _, o := range outs {
		if !declared("output", o.topic, o.record) {
			continue
		}
		switch {
		case o.record == nil || reg.Schema(reflect.Zero(o.record).Interface()) == nil:
			problems = append(problems, fmt.Errorf("device: output %s: %v is not a schemas record", o.topic, o.record))
		case t.byType[o.record] != "":
			problems = append(problems, fmt.Errorf("device: outputs %s and %s both carry %v", t.byType[o.record], o.topic, o.record))
		default:
			t.byType[o.record] = o.topic
			t.outputs = append(t.outputs, o)
		}
	}
	if err := errors.Join(problems...); err != nil {
		return nil, err
	}
	return t, nil
}

// emittedRecords are the records the handlers write (call.emit).
func emittedRecords() []reflect.Type {
	return []reflect.Type{
		reflect.TypeFor[*schemas.DeviceEvent](), reflect.TypeFor[*schemas.Presence](), reflect.TypeFor[*schemas.CommandEvent](),
		reflect.TypeFor[*schemas.Downlink](), reflect.TypeFor[*schemas.Reject](),
	}
}

// checkOutputs checks the handlers write only declared outputs (a record
// they emit with no output declared is an error) and every declared output
// is written (one they never emit is an error too).
func (t *topology) checkOutputs(emitted []reflect.Type) error {
	var errs []error
	written := map[reflect.Type]bool{}
	for _, typ := range emitted {
		written[typ] = true
		if _, ok := t.byType[typ]; !ok {
			errs = append(errs, fmt.Errorf("device: the processor writes %v, and no output is declared for it", typ))
		}
	}
	for _, o := range t.outputs {
		if !written[o.record] {
			errs = append(errs, fmt.Errorf("device: output %s (%v) is declared but never written", o.topic, o.record))
		}
	}
	return errors.Join(errs...)
}

// inputTopics lists the input topics, in declaration order.
func (t *topology) inputTopics() []string {
	out := make([]string, len(t.inputs))
	for i, in := range t.inputs {
		out[i] = in.topic
	}
	return out
}

// outputTopics lists the output topics, in declaration order.
func (t *topology) outputTopics() []string {
	out := make([]string, len(t.outputs))
	for i, o := range t.outputs {
		out[i] = o.topic
	}
	return out
}
