package schemas

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strconv"
	"time"
)

// RejectPayloadMax is the most payload bytes a Reject carries unless the
// Refusal says otherwise: the refused input itself may be as large as the
// producer's limit, and its reject (payload plus the other fields) must
// still fit.
const RejectPayloadMax = 4096

// Refusal is what a stage knows of an input it refuses. NewReject turns it
// into the ams.rejects record.
type Refusal struct {
	// Stage is StageIngest, StageProcessor or StageSink.
	Stage string
	// By names the component that refused the input (ingest, processor,
	// egress, redis-sink, clickhouse-sink): the first part of the id.
	By     string
	Reason string // machine-readable
	Detail string // human-readable, never key material
	// SN is the device's serial number, "" when unknown.
	SN string
	// Topic is the MQTT topic of the refused message, "" when none.
	Topic string
	// Payload is the refused bytes, cut to PayloadMax.
	Payload []byte
	// PayloadMax caps Payload: 0 means RejectPayloadMax, a negative value
	// keeps it whole.
	PayloadMax int
	// SourceTopic, SourcePartition and SourceOffset are the position of
	// the refused Kafka record; SourceTopic is "" for an input refused
	// before Kafka (at ingest).
	SourceTopic     string
	SourcePartition int32
	SourceOffset    int64
	// At is when it was refused (stored in UTC, millisecond precision).
	At time.Time
}

// NewReject builds the Reject of a refusal: the one place a Reject is
// built, so every stage fills it alike. Its id has one format:
// "{by}:{source_topic}:{source_partition}:{source_offset}" for a Kafka
// record, so a replay of the same record produces the same reject (sinks
// deduplicate on it); an input refused before Kafka has no position, and
// gets "{by}:{32 random hex digits}" (a redelivered MQTT message is a new
// refusal). A nil payload becomes empty.
func NewReject(f Refusal) *Reject {
	payload := f.Payload
	limit := f.PayloadMax
	if limit == 0 {
		limit = RejectPayloadMax
	}
	if limit > 0 && len(payload) > limit {
		payload = payload[:limit]
	}
	if payload == nil {
		payload = []byte{}
	}
	r := &Reject{
		Stage:   f.Stage,
		Reason:  f.Reason,
		Detail:  f.Detail,
		SN:      f.SN,
		Topic:   f.Topic,
		Payload: payload,
		At:      f.At.UTC(),
	}
	if f.SourceTopic == "" {
		var b [16]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
		r.RejectID = f.By + ":" + hex.EncodeToString(b[:])
		r.SourcePartition, r.SourceOffset = -1, -1
		return r
	}
	r.RejectID = f.By + ":" + f.SourceTopic + ":" + strconv.FormatInt(int64(f.SourcePartition), 10) + ":" + strconv.FormatInt(f.SourceOffset, 10)
	r.SourceTopic, r.SourcePartition, r.SourceOffset = f.SourceTopic, f.SourcePartition, f.SourceOffset
	return r
}

// RecordReject is NewReject for a Kafka record refused by a consumer: its
// id is "{consumer}:{topic}:{partition}:{offset}" and its payload is cut
// to RejectPayloadMax.
func RecordReject(stage, consumer, reason, detail, sn, topic string, partition int32, offset int64, payload []byte, at time.Time) *Reject {
	return NewReject(Refusal{Stage: stage, By: consumer, Reason: reason, Detail: detail, SN: sn, Payload: payload,
		SourceTopic: topic, SourcePartition: partition, SourceOffset: offset, At: at})
}

// DecodeRejectReason names a Decode failure for Reject.Reason.
func DecodeRejectReason(err error) string {
	switch {
	case errors.Is(err, ErrShort):
		return "short_value"
	case errors.Is(err, ErrNotSingleObject):
		return "not_single_object"
	case errors.Is(err, ErrUnknownFingerprint):
		return "unknown_schema"
	case errors.Is(err, ErrWrongType):
		return "wrong_record_type"
	case errors.Is(err, ErrMalformed):
		return "malformed_avro"
	default:
		return "undecodable"
	}
}
