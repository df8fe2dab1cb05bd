package schemas

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestNewRejectOfRecord(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.FixedZone("x", 3600))
	big := bytes.Repeat([]byte{'x'}, RejectPayloadMax+10)
	r := NewReject(Refusal{Stage: StageSink, By: "egress", Reason: "bad_sn", Detail: "d", SN: "SN1", Topic: "ivms/down/SN1",
		Payload: big, SourceTopic: "ams.downlink", SourcePartition: 3, SourceOffset: 42, At: at})
	if r.RejectID != "egress:ams.downlink:3:42" {
		t.Errorf("id %q", r.RejectID)
	}
	if r.Stage != StageSink || r.Reason != "bad_sn" || r.Detail != "d" || r.SN != "SN1" || r.Topic != "ivms/down/SN1" ||
		r.SourceTopic != "ams.downlink" || r.SourcePartition != 3 || r.SourceOffset != 42 || !r.At.Equal(at) || r.At.Location() != time.UTC {
		t.Errorf("reject %+v", r)
	}
	if len(r.Payload) != RejectPayloadMax {
		t.Errorf("payload %d bytes, want %d", len(r.Payload), RejectPayloadMax)
	}
	// The same record refused again: the same id.
	if again := RecordReject(StageSink, "egress", "x", "", "", "ams.downlink", 3, 42, nil, at); again.RejectID != r.RejectID || again.Payload == nil {
		t.Errorf("RecordReject id %q payload %v", again.RejectID, again.Payload)
	}
	if whole := NewReject(Refusal{By: "processor", SourceTopic: "t", Payload: big, PayloadMax: -1}); len(whole.Payload) != len(big) {
		t.Errorf("PayloadMax -1 kept %d bytes", len(whole.Payload))
	}
	if small := NewReject(Refusal{By: "ingest", Payload: big, PayloadMax: 10}); len(small.Payload) != 10 {
		t.Errorf("PayloadMax 10 kept %d bytes", len(small.Payload))
	}
}

func TestNewRejectBeforeKafka(t *testing.T) {
	a := NewReject(Refusal{Stage: StageIngest, By: "ingest", Reason: "bad_topic", SourcePartition: 7, SourceOffset: 9})
	b := NewReject(Refusal{Stage: StageIngest, By: "ingest", Reason: "bad_topic"})
	if !regexp.MustCompile(`^ingest:[0-9a-f]{32}$`).MatchString(a.RejectID) || a.RejectID == b.RejectID {
		t.Errorf("ids %q %q", a.RejectID, b.RejectID)
	}
	if a.SourceTopic != "" || a.SourcePartition != -1 || a.SourceOffset != -1 || a.Payload == nil {
		t.Errorf("reject %+v", a)
	}
	if strings.Count(a.RejectID, ":") != 1 {
		t.Errorf("id %q", a.RejectID)
	}
}
