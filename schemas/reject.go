package schemas

import (
	"errors"
	"fmt"
	"time"
)

// RejectPayloadMax is the most payload bytes a Reject built by
// RecordReject carries: the refused record itself may be as large as the
// producer's limit, and its reject (payload plus the other fields) must
// still fit.
const RejectPayloadMax = 4096

// RecordReject builds the Reject of a Kafka record a consumer refuses
// (stage SINK or PROCESSOR). Its id derives from consumer and the record's
// position ("{consumer}:{topic}:{partition}:{offset}"), so a replay of the
// same record produces the same reject; the payload is cut to
// RejectPayloadMax. The one place that builds such rejects, so every
// consumer fills them alike.
func RecordReject(stage, consumer, reason, detail, sn, topic string, partition int32, offset int64, payload []byte, at time.Time) *Reject {
	if len(payload) > RejectPayloadMax {
		payload = payload[:RejectPayloadMax]
	}
	if payload == nil {
		payload = []byte{}
	}
	return &Reject{
		RejectID:        fmt.Sprintf("%s:%s:%d:%d", consumer, topic, partition, offset),
		Stage:           stage,
		Reason:          reason,
		Detail:          detail,
		SN:              sn,
		Payload:         payload,
		SourceTopic:     topic,
		SourcePartition: partition,
		SourceOffset:    offset,
		At:              at.UTC(),
	}
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
