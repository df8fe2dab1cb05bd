package ingest

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/schemas"
)

func mustFilter(t *testing.T, f, kind string) EventFilter {
	t.Helper()
	ef, err := NewEventFilter(f, kind)
	if err != nil {
		t.Fatal(err)
	}
	return ef
}

func TestNewEventFilter(t *testing.T) {
	for _, bad := range []string{"$SYS/brokers/+/clients/connected", "a/#", "a/+/b/+/c/+", "a/x+/b/+"} {
		if _, err := NewEventFilter(bad, schemas.UplinkConnected); err == nil {
			t.Errorf("NewEventFilter(%q) accepted", bad)
		}
	}
	if _, err := NewEventFilter(DefaultConnectedFilter, "BOGUS"); err == nil {
		t.Error("bad kind accepted")
	}
}

func ptime(ms int64) *time.Time { t := time.UnixMilli(ms).UTC(); return &t }

func TestParseEvent(t *testing.T) {
	conn := mustFilter(t, DefaultConnectedFilter, schemas.UplinkConnected)
	disc := mustFilter(t, DefaultDisconnectedFilter, schemas.UplinkDisconnected)
	for _, tc := range []struct {
		name    string
		f       EventFilter
		topic   string
		payload string
		want    ConnEvent
		wantErr error
	}{
		{
			name:    "emqx4 disconnected (PROTOCOL.md), ts seconds",
			f:       disc,
			topic:   "$SYS/brokers/emqx@10.0.0.1/clients/02931117C6ED8D30/disconnected",
			payload: `{"clientid":"02931117C6ED8D30","username":"02931117C6ED8D30","reason":"keepalive_timeout","ts":1570633147}`,
			want: ConnEvent{Kind: schemas.UplinkDisconnected, Node: "emqx@10.0.0.1", ClientID: "02931117C6ED8D30",
				Username: "02931117C6ED8D30", Reason: "keepalive_timeout", BrokerTime: ptime(1570633147000)},
		},
		{
			name:    "emqx4 connected",
			f:       conn,
			topic:   "$SYS/brokers/n1/clients/SN1/connected",
			payload: `{"clientid":"SN1","username":"SN1","ipaddress":"10.1.2.3","keepalive":60,"proto_ver":4,"connack":0,"ts":1570633100}`,
			want: ConnEvent{Kind: schemas.UplinkConnected, Node: "n1", ClientID: "SN1", Username: "SN1",
				BrokerTime: ptime(1570633100000), ConnectedAt: ptime(1570633100000)},
		},
		{
			name:    "emqx5 connected, ms",
			f:       conn,
			topic:   "$SYS/brokers/emqx@127.0.0.1/clients/SN1/connected",
			payload: `{"username":"SN1","ts":1625572213873,"sockport":1883,"proto_ver":4,"proto_name":"MQTT","keepalive":60,"ipaddress":"127.0.0.1","expiry_interval":0,"connected_at":1625572213870,"connack":0,"clientid":"SN1","clean_start":true}`,
			want: ConnEvent{Kind: schemas.UplinkConnected, Node: "emqx@127.0.0.1", ClientID: "SN1", Username: "SN1",
				BrokerTime: ptime(1625572213870), ConnectedAt: ptime(1625572213870)},
		},
		{
			name:    "emqx5 disconnected",
			f:       disc,
			topic:   "$SYS/brokers/n1/clients/SN1/disconnected",
			payload: `{"username":"SN1","ts":1625572213999,"sockport":1883,"reason":"tcp_closed","proto_ver":4,"proto_name":"MQTT","ipaddress":"127.0.0.1","disconnected_at":1625572213990,"clientid":"SN1"}`,
			want: ConnEvent{Kind: schemas.UplinkDisconnected, Node: "n1", ClientID: "SN1", Username: "SN1",
				Reason: "tcp_closed", BrokerTime: ptime(1625572213990)},
		},
		{
			name:    "disconnected with connected_at keeps the epoch",
			f:       disc,
			topic:   "$SYS/brokers/n1/clients/SN1/disconnected",
			payload: `{"clientid":"SN1","reason":{"kind":"takenover"},"connected_at":1625572213870,"disconnected_at":1625572213990}`,
			want: ConnEvent{Kind: schemas.UplinkDisconnected, Node: "n1", ClientID: "SN1", Reason: `{"kind":"takenover"}`,
				BrokerTime: ptime(1625572213990), ConnectedAt: ptime(1625572213870)},
		},
		{name: "client id mismatch", f: conn, topic: "$SYS/brokers/n1/clients/SN1/connected",
			payload: `{"clientid":"SN2","ts":1}`, wantErr: errClientIDMismatch},
		{name: "no client id", f: conn, topic: "$SYS/brokers/n1/clients/SN1/connected",
			payload: `{"ts":1625572213873}`, wantErr: errBadEvent},
		{name: "not json", f: conn, topic: "$SYS/brokers/n1/clients/SN1/connected", payload: `hello`, wantErr: errBadEvent},
		{name: "trailing", f: conn, topic: "$SYS/brokers/n1/clients/SN1/connected", payload: `{"clientid":"SN1"} {}`, wantErr: errBadEvent},
		{name: "bad ts", f: conn, topic: "$SYS/brokers/n1/clients/SN1/connected", payload: `{"clientid":"SN1","ts":-5}`, wantErr: errBadEvent},
		{name: "ts string", f: conn, topic: "$SYS/brokers/n1/clients/SN1/connected", payload: `{"clientid":"SN1","ts":"x"}`, wantErr: errBadEvent},
		{name: "topic mismatch", f: conn, topic: "$SYS/brokers/n1/clients/SN1/disconnected", payload: `{"clientid":"SN1"}`, wantErr: errBadEvent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseEvent(tc.f, tc.topic, []byte(tc.payload))
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !eqEvent(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func eqTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

func eqEvent(a, b ConnEvent) bool {
	return a.Kind == b.Kind && a.Node == b.Node && a.ClientID == b.ClientID && a.Username == b.Username &&
		a.Reason == b.Reason && eqTime(a.BrokerTime, b.BrokerTime) && eqTime(a.ConnectedAt, b.ConnectedAt)
}

func newTestConverter(t *testing.T) (*Converter, *schemas.Registry) {
	t.Helper()
	reg, err := schemas.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	c := NewConverter(ConverterConfig{
		Names:             kafkatopics.WithPrefix("t."),
		IngestID:          "ing-1",
		MaxPayload:        100,
		RejectPayloadMax:  10,
		Events:            []EventFilter{mustFilter(t, "test/sys/+/c/+/connected", schemas.UplinkConnected), mustFilter(t, "test/sys/+/c/+/disconnected", schemas.UplinkDisconnected)},
		OwnClientPrefixes: []string{"ams-"},
	}, reg)
	return c, reg
}

func TestConvert(t *testing.T) {
	c, reg := newTestConverter(t)
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	msg := func(topic, payload string) *Message { return NewMessage(topic, []byte(payload), now, nil) }

	type want struct {
		kind, reason string
		topic, key   string
	}
	for _, tc := range []struct {
		name string
		m    *Message
		want want
	}{
		{"frame", msg("/ivms/pub/SN1", `{"iCmdType":2}`), want{OutFrame, "", "t.ams.uplink.raw", "SN1"}},
		{"bad topic", msg("/ivms/pub/", `x`), want{OutReject, ReasonBadTopic, "t.ams.rejects", ""}},
		{"bad topic level", msg("/ivms/pub/a/b", `x`), want{OutReject, ReasonBadTopic, "t.ams.rejects", ""}},
		{"bad sn chars", msg("/ivms/pub/a b", `x`), want{OutReject, ReasonBadTopic, "t.ams.rejects", ""}},
		{"other topic", msg("/elsewhere", `x`), want{OutReject, ReasonBadTopic, "t.ams.rejects", ""}},
		{"empty", msg("/ivms/pub/SN1", ``), want{OutReject, ReasonEmptyPayload, "t.ams.rejects", "SN1"}},
		{"oversize", msg("/ivms/pub/SN1", strings.Repeat("x", 101)), want{OutReject, ReasonOversizePayload, "t.ams.rejects", "SN1"}},
		{"connected", msg("test/sys/n1/c/SN1/connected", `{"clientid":"SN1","ts":1700000000}`), want{OutConnected, "", "t.ams.uplink.raw", "SN1"}},
		{"disconnected", msg("test/sys/n1/c/SN1/disconnected", `{"clientid":"SN1","reason":"normal","ts":1700000000}`), want{OutDisconnected, "", "t.ams.uplink.raw", "SN1"}},
		{"own client", msg("test/sys/n1/c/ams-egress-0/connected", `{"clientid":"ams-egress-0"}`), want{OutSkip, SkipOwnClient, "", ""}},
		{"not a device", msg("test/sys/n1/c/"+strings.Repeat("x", 65)+"/connected", `{"clientid":"`+strings.Repeat("x", 65)+`"}`), want{OutSkip, SkipNotDevice, "", ""}},
		{"mismatch", msg("test/sys/n1/c/SN1/connected", `{"clientid":"SN2"}`), want{OutReject, ReasonClientIDMismatch, "t.ams.rejects", ""}},
		{"bad event", msg("test/sys/n1/c/SN1/connected", `{`), want{OutReject, ReasonBadEvent, "t.ams.rejects", ""}},
		{"empty event", msg("test/sys/n1/c/SN1/connected", ``), want{OutReject, ReasonBadEvent, "t.ams.rejects", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, out, err := c.Convert(tc.m)
			if err != nil {
				t.Fatal(err)
			}
			if out.Kind != tc.want.kind || out.Reason != tc.want.reason {
				t.Fatalf("outcome %+v, want %s/%s", out, tc.want.kind, tc.want.reason)
			}
			if tc.want.kind == OutSkip {
				if rec != nil {
					t.Fatal("skip with a record")
				}
				return
			}
			if rec.Topic != tc.want.topic || string(rec.Key) != tc.want.key {
				t.Fatalf("record topic %q key %q, want %q %q", rec.Topic, rec.Key, tc.want.topic, tc.want.key)
			}
			if tc.want.kind == OutReject {
				var r schemas.Reject
				if err := reg.Decode(rec.Value, &r); err != nil {
					t.Fatal(err)
				}
				if r.Reason != tc.want.reason || r.Stage != schemas.StageIngest || r.Topic != tc.m.Topic || r.RejectID == "" || !r.At.Equal(now) {
					t.Fatalf("reject %+v", r)
				}
				if len(r.Payload) > 10 {
					t.Fatalf("reject payload not truncated: %d bytes", len(r.Payload))
				}
				return
			}
			var u schemas.UplinkRaw
			if err := reg.Decode(rec.Value, &u); err != nil {
				t.Fatal(err)
			}
			if u.SN != tc.want.key || u.Topic != tc.m.Topic || string(u.Payload) != string(tc.m.Payload) ||
				!u.IngestTime.Equal(now) || u.Ingest != "ing-1" {
				t.Fatalf("uplink %+v", u)
			}
			switch tc.want.kind {
			case OutFrame:
				if u.Kind != schemas.UplinkFrame || u.BrokerTime != nil || u.ConnectedAt != nil {
					t.Fatalf("frame %+v", u)
				}
			case OutConnected:
				if u.Kind != schemas.UplinkConnected || u.ClientID != "SN1" || u.Node != "n1" ||
					u.ConnectedAt == nil || !u.ConnectedAt.Equal(time.Unix(1700000000, 0)) {
					t.Fatalf("connected %+v", u)
				}
			case OutDisconnected:
				if u.Kind != schemas.UplinkDisconnected || u.Reason != "normal" || u.BrokerTime == nil || u.ConnectedAt != nil {
					t.Fatalf("disconnected %+v", u)
				}
			}
		})
	}
}

// TestPartitionerIsJavaDefault checks that the producer's partitioner puts a
// key where Kafka's Java DefaultPartitioner does: murmur2 (Kafka's
// Utils.murmur2 test vectors), high bit masked, modulo the partition count.
func TestPartitionerIsJavaDefault(t *testing.T) {
	// From Kafka's UtilsTest.testMurmur2.
	vectors := map[string]int32{
		"21":                         -973932308,
		"foobar":                     -790332482,
		"a-little-bit-long-string":   -985981536,
		"a-little-bit-longer-string": -1486304829,
		"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
	}
	tp := kgo.StickyKeyPartitioner(nil).ForTopic("x")
	for key, h := range vectors {
		for _, n := range []int{1, 7, 12, 100} {
			want := int(uint32(h)&0x7fffffff) % n
			if got := tp.Partition(&kgo.Record{Key: []byte(key)}, n); got != want {
				t.Errorf("key %q, %d partitions: partition %d, want %d", key, n, got, want)
			}
		}
	}
}

func TestCheckLimits(t *testing.T) {
	if err := CheckLimits(256<<10, 0, "ingest-1"); err != nil {
		t.Fatalf("the defaults: %v", err)
	}
	err := CheckLimits(1<<20, 0, "ingest-1")
	if err == nil || !strings.Contains(err.Error(), "-max-payload") || !strings.Contains(err.Error(), "-kafka-max-record-bytes") {
		t.Fatalf("1 MiB frames with the default producer limit: %v", err)
	}
	max := DefaultMaxRecordBytes - FrameFieldsOverhead - len("ingest-1") - RecordOverhead
	if err := CheckLimits(max, 0, "ingest-1"); err != nil {
		t.Fatalf("largest payload that fits: %v", err)
	}
	if err := CheckLimits(max+1, 0, "ingest-1"); err == nil {
		t.Fatal("one byte more accepted")
	}
}

// TestConvertTooLarge: every frame that CheckLimits admits fits the
// producer; a record that would not becomes a too_large reject that does.
func TestConvertTooLarge(t *testing.T) {
	reg, err := schemas.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	names := kafkatopics.WithPrefix("t.")
	const limit = 16 << 10
	max := limit - FrameFieldsOverhead - len("ingest-1") - RecordOverhead
	c := NewConverter(ConverterConfig{Names: names, IngestID: "ingest-1", MaxPayload: max, MaxRecordBytes: limit}, reg)
	sn := strings.Repeat("S", 64)
	rec, o, err := c.Convert(NewMessage("/ivms/pub/"+sn, bytes.Repeat([]byte("x"), max), time.Now(), nil))
	if err != nil || o.Kind != OutFrame || len(rec.Key)+len(rec.Value)+RecordOverhead > limit {
		t.Fatalf("largest admitted frame: %v %v, %d bytes", o, err, len(rec.Key)+len(rec.Value))
	}
	c = NewConverter(ConverterConfig{Names: names, IngestID: "ingest-1", MaxPayload: 1 << 20, MaxRecordBytes: limit}, reg)
	rec, o, err = c.Convert(NewMessage("/ivms/pub/"+sn, bytes.Repeat([]byte("x"), limit), time.Now(), nil))
	if err != nil || o.Kind != OutReject || o.Reason != ReasonTooLarge || rec.Topic != names.Rejects || len(rec.Value)+RecordOverhead > limit {
		t.Fatalf("too large frame: %v %v, reject of %d bytes", o, err, len(rec.Value))
	}
}
