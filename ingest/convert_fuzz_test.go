package ingest

import (
	"bytes"
	"testing"
	"time"

	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/schemas"
)

// FuzzConvert feeds arbitrary topics and payloads through the Converter, as
// a broker could deliver them. Whatever arrives, it must become exactly one
// record (an UplinkRaw on ams.uplink.raw or a Reject with a reason on
// ams.rejects, both decodable) or a deliberate skip of a non-device
// connection event; never an error, never a panic.
func FuzzConvert(f *testing.F) {
	f.Add("/ivms/pub/0505050505050003", []byte(`{"iCmdType":2,"sProtocolVersion":"V1.0","sData":"00"}`))
	f.Add("/ivms/pub/", []byte("x"))
	f.Add("/ivms/pub/a/b", []byte("x"))
	f.Add("/ivms/pub/0505050505050003", []byte{})
	f.Add("$SYS/brokers/n1/clients/0505050505050003/disconnected", []byte(`{"clientid":"0505050505050003","username":"0505050505050003","reason":"keepalive_timeout","ts":1570633147}`))
	f.Add("$SYS/brokers/n1/clients/0505050505050003/connected", []byte(`{"clientid":"0505050505050003","connected_at":1700000000123}`))
	f.Add("$SYS/brokers/n1/clients/other/connected", []byte(`{"clientid":"0505050505050003"}`))
	f.Add("$SYS/brokers/n1/clients/ams-ingest-1/connected", []byte(`{"clientid":"ams-ingest-1","ts":1}`))
	f.Add("$SYS/brokers/n1/clients/x/disconnected", []byte(`{"clientid":"x","ts":1e400}`))
	reg, err := schemas.NewRegistry()
	if err != nil {
		f.Fatal(err)
	}
	names := kafkatopics.Default()
	conn, err := NewEventFilter(DefaultConnectedFilter, schemas.UplinkConnected)
	if err != nil {
		f.Fatal(err)
	}
	disc, err := NewEventFilter(DefaultDisconnectedFilter, schemas.UplinkDisconnected)
	if err != nil {
		f.Fatal(err)
	}
	c := NewConverter(ConverterConfig{
		Names: names, IngestID: "fuzz", MaxPayload: 1024, RejectPayloadMax: 64,
		Events: []EventFilter{conn, disc}, OwnClientPrefixes: []string{"ams-"},
	}, reg)
	now := time.UnixMilli(1_700_000_000_000).UTC()
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		rec, out, err := c.Convert(NewMessage(topic, payload, now, nil))
		if err != nil {
			t.Fatalf("Convert(%q) error: %v", topic, err)
		}
		switch out.Kind {
		case OutSkip:
			if rec != nil || out.Reason == "" {
				t.Fatalf("skip with record %v or no reason %q", rec, out.Reason)
			}
		case OutReject:
			if rec == nil || rec.Topic != names.Rejects || out.Reason == "" {
				t.Fatalf("reject %+v to %v", out, rec)
			}
			var r schemas.Reject
			if err := reg.Decode(rec.Value, &r); err != nil {
				t.Fatalf("reject does not decode: %v", err)
			}
			if r.Reason != out.Reason || r.Stage != schemas.StageIngest || len(r.Payload) > 64 {
				t.Fatalf("reject record %+v for outcome %+v", r, out)
			}
		case OutFrame, OutConnected, OutDisconnected:
			if rec == nil || rec.Topic != names.UplinkRaw {
				t.Fatalf("%s to %v", out.Kind, rec)
			}
			var u schemas.UplinkRaw
			if err := reg.Decode(rec.Value, &u); err != nil {
				t.Fatalf("uplink does not decode: %v", err)
			}
			if string(rec.Key) != u.SN || u.SN == "" || !bytes.Equal(u.Payload, payload) {
				t.Fatalf("key %q, sn %q, payload kept %v", rec.Key, u.SN, bytes.Equal(u.Payload, payload))
			}
			if out.Kind == OutFrame && (len(payload) == 0 || len(payload) > 1024 || u.Topic != topic) {
				t.Fatalf("frame accepted: %d bytes on %q", len(payload), topic)
			}
		default:
			t.Fatalf("unknown outcome %+v", out)
		}
	})
}
