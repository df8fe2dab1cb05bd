package chsink

import (
	"errors"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/schemas"
)

// buffers holds one table buffer per consumed topic and routes each record
// to its table. Not safe for concurrent use: the sink's loop owns it.
type buffers struct {
	tables  []*table
	byTopic map[string]route

	devEv deviceEventCols
	pres  presenceCols
	cmds  commandCols
	rej   rejectCols
	up    uplinkCols

	// Decode targets, reused (Decode overwrites all of them).
	ev schemas.DeviceEvent
	p  schemas.Presence
	ce schemas.CommandEvent
	rj schemas.Reject
	u  schemas.UplinkRaw
}

// route decodes one record of a topic into its table buffer.
type route struct {
	t   *table
	add func(reg *schemas.Registry, r *kgo.Record) error
}

func newBuffers(db string, n kafkatopics.Names) (*buffers, error) {
	b := &buffers{byTopic: map[string]route{}}
	type def struct {
		topic, table string
		cols         any
		add          func(reg *schemas.Registry, r *kgo.Record) error
	}
	defs := []def{
		{n.DeviceEvents, "device_events", &b.devEv, func(reg *schemas.Registry, r *kgo.Record) error {
			if err := reg.Decode(r.Value, &b.ev); err != nil {
				return err
			}
			b.devEv.add(&b.ev)
			return nil
		}},
		{n.Presence, "presence", &b.pres, func(reg *schemas.Registry, r *kgo.Record) error {
			if err := reg.Decode(r.Value, &b.p); err != nil {
				return err
			}
			b.pres.add(&b.p)
			return nil
		}},
		{n.CommandEvents, "commands", &b.cmds, func(reg *schemas.Registry, r *kgo.Record) error {
			if err := reg.Decode(r.Value, &b.ce); err != nil {
				return err
			}
			b.cmds.add(&b.ce)
			return nil
		}},
		{n.Rejects, "rejects", &b.rej, func(reg *schemas.Registry, r *kgo.Record) error {
			if err := reg.Decode(r.Value, &b.rj); err != nil {
				return err
			}
			b.rej.add(&b.rj)
			return nil
		}},
		{n.UplinkRaw, "uplink_raw", &b.up, func(reg *schemas.Registry, r *kgo.Record) error {
			if err := reg.Decode(r.Value, &b.u); err != nil {
				return err
			}
			b.up.add(&b.u, r.Partition, r.Offset)
			return nil
		}},
	}
	for _, d := range defs {
		t, err := newTable(db, d.table, d.cols)
		if err != nil {
			return nil, err
		}
		b.tables = append(b.tables, t)
		b.byTopic[d.topic] = route{t: t, add: d.add}
	}
	return b, nil
}

func (b *buffers) topics() []string {
	out := make([]string, 0, len(b.byTopic))
	for t := range b.byTopic {
		out = append(out, t)
	}
	return out
}

// rows is the number of buffered rows over all tables.
func (b *buffers) rows() int {
	n := 0
	for _, t := range b.tables {
		n += t.rows
	}
	return n
}

// add buffers r as a row of its topic's table. A record that does not
// decode adds nothing and returns the reject reason and the error.
func (b *buffers) add(reg *schemas.Registry, r *kgo.Record) (string, error) {
	rt, ok := b.byTopic[r.Topic]
	if !ok {
		return "unknown_topic", errors.New("record of a topic the sink does not read: " + r.Topic)
	}
	if err := rt.add(reg, r); err != nil {
		return rejectReason(err), err
	}
	rt.t.rows++
	rt.t.srcs = append(rt.t.srcs, r)
	return "", nil
}

// rejectReason names a decode failure for Reject.Reason.
func rejectReason(err error) string { return schemas.DecodeRejectReason(err) }
