package ingest

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/schemas"
)

// Reasons of the rejects ingest writes to ams.rejects (Stage INGEST).
const (
	ReasonBadTopic         = "bad_topic"         // not /ivms/pub/{sn} with a valid sn, nor an event topic
	ReasonEmptyPayload     = "empty_payload"     // a frame with no bytes
	ReasonOversizePayload  = "oversize_payload"  // longer than the configured limit; the payload is truncated
	ReasonClientIDMismatch = "clientid_mismatch" // the broker reported a client id that is not the topic's
	ReasonBadEvent         = "bad_event"         // a connection event that does not parse
	ReasonTooLarge         = "too_large"         // its record would exceed the producer's max record bytes; the payload is truncated
)

// Reasons a connection event is skipped (counted, not written).
const (
	SkipOwnClient = "own_client" // the client id has one of ams's own prefixes
	SkipNotDevice = "not_device" // the client id is not a valid sn
)

// Outcome kinds of Convert.
const (
	OutFrame        = "frame"
	OutConnected    = "connected"
	OutDisconnected = "disconnected"
	OutReject       = "reject"
	OutSkip         = "skip"
)

// Outcome says what Convert made of a message.
type Outcome struct {
	Kind   string // one of the Out* kinds
	Reason string // the reject or skip reason
}

// Encoder frames a record value (schemas.Registry).
type Encoder interface {
	Encode(v any) ([]byte, error)
}

// ConverterConfig configures a Converter.
type ConverterConfig struct {
	Names    kafkatopics.Names
	IngestID string // written to UplinkRaw.Ingest
	// MaxPayload is the largest payload accepted, in bytes; larger ones are
	// rejected with ReasonOversizePayload.
	MaxPayload int
	// RejectPayloadMax truncates the payload kept in an oversize reject.
	RejectPayloadMax int
	// MaxRecordBytes is the producer's limit on one record (KafkaConfig's);
	// a message whose record would exceed it (with RecordOverhead) is
	// rejected with ReasonTooLarge instead of failing the producer.
	// 0: DefaultMaxRecordBytes.
	MaxRecordBytes int
	// Events are the connection-event filters (connected and disconnected).
	Events []EventFilter
	// OwnClientPrefixes: connection events of client ids starting with one
	// of these are ams's own clients and are skipped.
	OwnClientPrefixes []string
}

// DefaultMaxRecordBytes is franz-go's default producer limit on one record
// batch (kgo.ProducerBatchMaxBytes), below Kafka's default message.max.bytes
// (1048588).
const DefaultMaxRecordBytes = 1_000_012

// RecordOverhead bounds what Kafka adds to a record's key and value: the
// record batch header (61 bytes plus the produce request's framing) and the
// record's own varints. Generous on purpose.
const RecordOverhead = 512

// FrameFieldsOverhead bounds the bytes an UplinkRaw frame record adds to its
// payload besides the ingest id: the single-object header, the sn (key and
// field), the topic /ivms/pub/{sn}, the fixed-size fields and the varints.
const FrameFieldsOverhead = 10 + 3*protocol.MaxSNLen + len(protocol.UplinkPrefix) + 128

// CheckLimits is the start-up check of ingest's configuration: the largest
// frame accepted (maxPayload) must fit in one Kafka record the producer can
// send (maxRecordBytes), with the record's other fields and Kafka's
// overhead, or frames near the limit would fail the producer. The error
// says which setting to change.
func CheckLimits(maxPayload, maxRecordBytes int, ingestID string) error {
	if maxRecordBytes <= 0 {
		maxRecordBytes = DefaultMaxRecordBytes
	}
	if maxPayload <= 0 {
		return fmt.Errorf("max payload %d: must be positive", maxPayload)
	}
	need := maxPayload + FrameFieldsOverhead + len(ingestID) + RecordOverhead
	if need > maxRecordBytes {
		return fmt.Errorf("max payload %d bytes needs Kafka records of up to %d bytes (%d of fields and overhead), "+
			"above the producer's max record bytes %d: lower -max-payload to at most %d or raise -kafka-max-record-bytes "+
			"(and the topic's max.message.bytes) to at least %d",
			maxPayload, need, need-maxPayload, maxRecordBytes, maxRecordBytes-(need-maxPayload), need)
	}
	return nil
}

// Converter turns MQTT messages into Kafka records: a frame or a connection
// event of a device into an UplinkRaw on ams.uplink.raw keyed by sn, anything
// refused into a Reject on ams.rejects. It is pure (no I/O) and safe for
// concurrent use.
type Converter struct {
	cfg ConverterConfig
	enc Encoder
}

// NewConverter returns a Converter.
func NewConverter(cfg ConverterConfig, enc Encoder) *Converter {
	if cfg.RejectPayloadMax <= 0 {
		cfg.RejectPayloadMax = schemas.RejectPayloadMax
	}
	if cfg.MaxRecordBytes <= 0 {
		cfg.MaxRecordBytes = DefaultMaxRecordBytes
	}
	return &Converter{cfg: cfg, enc: enc}
}

// Convert returns the record to write for m, or nil with Outcome OutSkip for a
// skipped connection event. The error is an encoding failure only (a bug, or
// a schema out of step with the types): a message is never dropped for it.
func (c *Converter) Convert(m *Message) (*kgo.Record, Outcome, error) {
	for _, f := range c.cfg.Events {
		if _, _, ok := f.match(m.Topic); ok {
			return c.event(f, m)
		}
	}
	sn, ok := protocol.SNFromUplinkTopic(m.Topic)
	if !ok || !protocol.ValidSN(sn) {
		return c.reject(m, "", ReasonBadTopic, "not a device uplink topic (/ivms/pub/{sn}, sn 1-64 printable ASCII without / + #)")
	}
	switch {
	case len(m.Payload) == 0:
		return c.reject(m, sn, ReasonEmptyPayload, "empty frame")
	case len(m.Payload) > c.cfg.MaxPayload:
		return c.reject(m, sn, ReasonOversizePayload, fmt.Sprintf("frame of %d bytes, limit %d", len(m.Payload), c.cfg.MaxPayload))
	}
	u := &schemas.UplinkRaw{
		Kind:       schemas.UplinkFrame,
		SN:         sn,
		Topic:      m.Topic,
		Payload:    m.Payload,
		IngestTime: m.Received,
		Ingest:     c.cfg.IngestID,
	}
	return c.fit(m, sn)(c.record(c.cfg.Names.UplinkRaw, sn, u, Outcome{Kind: OutFrame}))
}

// fit returns a record that fits the producer: the record itself, or a
// too_large reject in its place.
func (c *Converter) fit(m *Message, sn string) func(*kgo.Record, Outcome, error) (*kgo.Record, Outcome, error) {
	return func(rec *kgo.Record, o Outcome, err error) (*kgo.Record, Outcome, error) {
		if err != nil || rec == nil {
			return rec, o, err
		}
		if n := len(rec.Key) + len(rec.Value) + RecordOverhead; n > c.cfg.MaxRecordBytes {
			return c.reject(m, sn, ReasonTooLarge, fmt.Sprintf("%s record of %d bytes (payload %d) exceeds the producer's max record bytes %d",
				o.Kind, n, len(m.Payload), c.cfg.MaxRecordBytes))
		}
		return rec, o, nil
	}
}

func (c *Converter) event(f EventFilter, m *Message) (*kgo.Record, Outcome, error) {
	switch {
	case len(m.Payload) == 0:
		return c.reject(m, "", ReasonBadEvent, "empty connection event")
	case len(m.Payload) > c.cfg.MaxPayload:
		return c.reject(m, "", ReasonOversizePayload, fmt.Sprintf("event of %d bytes, limit %d", len(m.Payload), c.cfg.MaxPayload))
	}
	ev, err := ParseEvent(f, m.Topic, m.Payload)
	if err != nil {
		if errors.Is(err, errClientIDMismatch) {
			return c.reject(m, "", ReasonClientIDMismatch, err.Error())
		}
		return c.reject(m, "", ReasonBadEvent, err.Error())
	}
	for _, p := range c.cfg.OwnClientPrefixes {
		if p != "" && strings.HasPrefix(ev.ClientID, p) {
			return nil, Outcome{Kind: OutSkip, Reason: SkipOwnClient}, nil
		}
	}
	if !protocol.ValidSN(ev.ClientID) {
		return nil, Outcome{Kind: OutSkip, Reason: SkipNotDevice}, nil
	}
	u := &schemas.UplinkRaw{
		Kind:        ev.Kind,
		SN:          ev.ClientID,
		Topic:       m.Topic,
		Payload:     m.Payload,
		ClientID:    ev.ClientID,
		Username:    ev.Username,
		Reason:      ev.Reason,
		Node:        ev.Node,
		BrokerTime:  ev.BrokerTime,
		ConnectedAt: ev.ConnectedAt,
		IngestTime:  m.Received,
		Ingest:      c.cfg.IngestID,
	}
	kind := OutConnected
	if ev.Kind == schemas.UplinkDisconnected {
		kind = OutDisconnected
	}
	return c.fit(m, ev.ClientID)(c.record(c.cfg.Names.UplinkRaw, ev.ClientID, u, Outcome{Kind: kind}))
}

func (c *Converter) reject(m *Message, sn, reason, detail string) (*kgo.Record, Outcome, error) {
	r := schemas.NewReject(schemas.Refusal{
		Stage:      schemas.StageIngest,
		By:         "ingest",
		Reason:     reason,
		Detail:     detail,
		SN:         sn,
		Topic:      m.Topic,
		Payload:    m.Payload,
		PayloadMax: min(c.cfg.RejectPayloadMax, c.cfg.MaxRecordBytes/4), // the reject must fit, with its topic and detail
		At:         m.Received,
	})
	return c.record(c.cfg.Names.Rejects, sn, r, Outcome{Kind: OutReject, Reason: reason})
}

func (c *Converter) record(topic, key string, v any, o Outcome) (*kgo.Record, Outcome, error) {
	b, err := c.enc.Encode(v)
	if err != nil {
		return nil, o, fmt.Errorf("encode %s record: %w", o.Kind, err)
	}
	rec := &kgo.Record{Topic: topic, Value: b}
	if key != "" {
		rec.Key = []byte(key)
	}
	return rec, o, nil
}

// receivedNow is time.Now in UTC at millisecond precision (what Avro keeps).
func receivedNow() time.Time { return time.Now().UTC() }
