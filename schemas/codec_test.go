package schemas

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
)

func newRegistry(tb testing.TB) *Registry {
	tb.Helper()
	r, err := NewRegistry()
	if err != nil {
		tb.Fatalf("NewRegistry: %v", err)
	}
	return r
}

// ms returns a UTC time at millisecond precision, as values come back from
// a timestamp-millis field.
func ms(unixMilli int64) time.Time { return time.UnixMilli(unixMilli).UTC() }

func ptr[T any](v T) *T { return &v }

// fullValues returns a value of every record type with every field set,
// nullable ones included.
func fullValues() []any {
	t0 := ms(1_764_000_000_123)
	return []any{
		&UplinkRaw{
			Kind: UplinkFrame, SN: "SN0001", Topic: "/ivms/pub/SN0001",
			Payload:  []byte(`{"iCmdType":2,"sData":"00ff"}`),
			ClientID: "SN0001", Username: "SN0001", Reason: "keepalive_timeout", Node: "emqx@node1",
			BrokerTime: ptr(t0.Add(-time.Millisecond)), ConnectedAt: ptr(t0.Add(-time.Hour)),
			IngestTime: t0, Ingest: "ingest-0",
		},
		&Command{
			ID: "cmd-1", SN: "SN0001", Kind: "reboot", Body: `{"iReboot":1}`, TimeoutMs: 30_000,
			ExpiresAt: ptr(t0.Add(time.Hour)), Offline: OfflineQueue,
			RequestedBy: "alice", RequestedAt: t0,
		},
		&Registration{SN: "SN0001", TokenSHA256: "ab12", Bound: true, Name: "Gate", StreamURL: "rtmp://x/live", UpdatedAt: t0, UpdatedBy: "api"},
		&DeviceEvent{
			EventID: "ams.uplink.raw/3/42", SN: "SN0001", Kind: EventConnection, CmdType: 7, SubType: 702,
			MsgID: "m1", ProtocolVersion: "1.0", Body: `{"iGetVMSURL":1}`,
			Connection: &Connection{Connected: true, Reason: "", ClientID: "SN0001", ConnectedAt: ptr(t0.Add(-time.Minute))},
			BrokerTime: ptr(t0), IngestTime: t0.Add(time.Millisecond), ProcessedAt: t0.Add(2 * time.Millisecond),
		},
		&Presence{
			EventID: "p-1", SN: "SN0001", Online: true, Reason: PresenceConnected, Detail: "normal", At: t0,
			Since: ptr(t0.Add(-time.Hour)), IntervalMs: 3_600_000, Epoch: t0.UnixMilli(), Seq: 7,
		},
		&CommandEvent{
			EventID: "ce-1", CommandID: "cmd-1", SN: "SN0001", Kind: "reboot", Code: 313, State: CommandSucceeded,
			At: t0, Reason: "", MsgID: "m1", Reply: ptr(`{"iResult":0}`), Seq: 4,
		},
		&Downlink{
			FrameID: "f-1", SN: "SN0001", Topic: "/ivms/sub/SN0001", Payload: []byte(`{"iCmdType":3}`),
			CmdType: 3, SubType: 313, MsgID: "m1", CommandID: ptr("cmd-1"), Purpose: "command", CreatedAt: t0,
		},
		&DownlinkReceipt{FrameID: "f-1", SN: "SN0001", CommandID: ptr("cmd-1"), MsgID: "m1", PublishedAt: t0, Egress: "egress-1"},
		&Reject{
			RejectID: "r-1", Stage: StageProcessor, Reason: "bad_hex", Detail: "odd length", SN: "SN0001",
			Topic: "/ivms/pub/SN0001", Payload: []byte{0, 1, 2}, SourceTopic: TopicUplinkRaw,
			SourcePartition: 3, SourceOffset: 42, At: t0,
		},
		&DeviceState{
			SN: "SN0001", SealedSession: []byte{9, 8, 7}, SessionEstablishedAt: ptr(t0.Add(-time.Hour)),
			HandshakeDigest: "deadbeef", SealedHandshakeReply: []byte{1, 2},
			Presence:          PresenceState{Online: true, Since: ptr(t0), LastSeen: ptr(t0), Epoch: 5, Seq: 6},
			HeartbeatDeadline: ptr(t0.Add(90 * time.Second)),
			Registered:        true, Bound: true, Name: "Gate", StreamURL: "rtmp://x", TokenSHA256: "ab12",
			PendingCommands: []PendingCommand{
				{CommandID: "cmd-1", Kind: "reboot", Code: 313, MsgID: "m1", Body: "{}", State: CommandSent, TimeoutMs: 30_000, Deadline: ptr(t0.Add(time.Minute)), ExpiresAt: ptr(t0.Add(time.Hour)), Seq: 3},
				{CommandID: "cmd-2", Kind: "format", Code: 318, Body: "{}", State: CommandQueued, Seq: 1},
			},
			UpdatedAt: t0,
		},
	}
}

// nullValues returns a value of every record type with every nullable field
// null and everything else at its zero value (non-empty bytes aside).
func nullValues() []any {
	return []any{
		&UplinkRaw{Kind: UplinkConnected, Payload: []byte("{}"), IngestTime: ms(0)},
		&Command{},
		&Registration{},
		&DeviceEvent{Kind: EventHeartbeat},
		&Presence{},
		&CommandEvent{},
		&Downlink{Payload: []byte{1}},
		&DownlinkReceipt{},
		&Reject{Payload: []byte{0}},
		// An empty array decodes as an empty, non-nil slice.
		&DeviceState{SN: "SN0002", PendingCommands: []PendingCommand{}},
	}
}

func TestRoundTrip(t *testing.T) {
	r := newRegistry(t)
	for name, values := range map[string][]any{"full": fullValues(), "null": nullValues()} {
		seen := make(map[reflect.Type]bool)
		for _, want := range values {
			typ := reflect.TypeOf(want).Elem()
			seen[typ] = true
			t.Run(name+"/"+typ.Name(), func(t *testing.T) {
				b, err := r.Encode(want)
				if err != nil {
					t.Fatalf("Encode: %v", err)
				}
				if b[0] != 0xC3 || b[1] != 0x01 {
					t.Fatalf("header % x, want c3 01", b[:2])
				}
				if got, want := binary.LittleEndian.Uint64(b[2:10]), Fingerprint(r.Schema(want)); got != want {
					t.Fatalf("fingerprint %016x, want %016x", got, want)
				}
				got := reflect.New(typ).Interface()
				if err := r.Decode(b, got); err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
				}
				// By value encodes the same bytes.
				b2, err := r.Encode(reflect.ValueOf(want).Elem().Interface())
				if err != nil || !bytes.Equal(b, b2) {
					t.Fatalf("Encode by value: %v, equal=%v", err, bytes.Equal(b, b2))
				}
				// DecodeNew finds the type from the fingerprint.
				v2, err := r.DecodeNew(b)
				if err != nil || !reflect.DeepEqual(v2, want) {
					t.Fatalf("DecodeNew: %v\n got %+v", err, v2)
				}
			})
		}
		for _, rt := range recordTypes() {
			if !seen[rt.typ] {
				t.Errorf("%s values: no %v", name, rt.typ)
			}
		}
	}
}

func TestTimesTruncatedToMillisUTC(t *testing.T) {
	r := newRegistry(t)
	zone := time.FixedZone("UTC+8", 8*3600)
	at := time.Date(2026, 11, 25, 18, 4, 5, 123_456_789, zone)
	b, err := r.Encode(&Presence{At: at, Since: &at})
	if err != nil {
		t.Fatal(err)
	}
	var p Presence
	if err := r.Decode(b, &p); err != nil {
		t.Fatal(err)
	}
	want := at.Truncate(time.Millisecond).UTC()
	if p.At != want || p.Since == nil || *p.Since != want {
		t.Fatalf("at %v since %v, want %v", p.At, p.Since, want)
	}
	if p.At.Location() != time.UTC {
		t.Fatalf("location %v, want UTC", p.At.Location())
	}
}

// A nullable bytes field keeps nil (null) apart from empty (present, zero
// length): a sealed session of zero bytes is not "no session".
func TestNullableBytesNilVersusEmpty(t *testing.T) {
	r := newRegistry(t)
	for _, in := range [][]byte{nil, {}} {
		b, err := r.Encode(&DeviceState{SealedSession: in})
		if err != nil {
			t.Fatal(err)
		}
		var st DeviceState
		if err := r.Decode(b, &st); err != nil {
			t.Fatal(err)
		}
		if (st.SealedSession == nil) != (in == nil) || len(st.SealedSession) != 0 {
			t.Fatalf("in %#v: got %#v", in, st.SealedSession)
		}
	}
}

// Decode overwrites every field: nothing of a previous value survives, even
// where the new record has a null or an empty array.
func TestDecodeOverwrites(t *testing.T) {
	r := newRegistry(t)
	full := fullValues()[len(fullValues())-1].(*DeviceState)
	b, err := r.Encode(&DeviceState{SN: "other"})
	if err != nil {
		t.Fatal(err)
	}
	st := *full
	if err := r.Decode(b, &st); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(st, DeviceState{SN: "other", PendingCommands: []PendingCommand{}}) {
		t.Fatalf("left over: %+v", st)
	}
}

func TestDecodeErrors(t *testing.T) {
	r := newRegistry(t)
	good, err := r.Encode(fullValues()[0])
	if err != nil {
		t.Fatal(err)
	}
	unknown := bytes.Clone(good)
	unknown[2] ^= 0xFF
	confluent := append([]byte{0, 0, 0, 0, 7}, good[10:]...)
	trailing := append(bytes.Clone(good), 0)

	tests := []struct {
		name string
		in   []byte
		into any
		want error
	}{
		{"nil (tombstone)", nil, &UplinkRaw{}, ErrShort},
		{"header only in part", good[:9], &UplinkRaw{}, ErrShort},
		{"Confluent wire format", confluent, &UplinkRaw{}, ErrNotSingleObject},
		{"JSON", []byte(`{"kind":"FRAME","sn":"x"}`), &UplinkRaw{}, ErrNotSingleObject},
		{"unknown fingerprint", unknown, &UplinkRaw{}, ErrUnknownFingerprint},
		{"other record type", good, &Command{}, ErrWrongType},
		{"not a record type", good, &struct{}{}, ErrUnsupportedType},
		{"not a pointer", good, UplinkRaw{}, ErrUnsupportedType},
		{"nil pointer", good, (*UplinkRaw)(nil), ErrUnsupportedType},
		{"nil", good, nil, ErrUnsupportedType},
		{"header, no body", good[:10], &UplinkRaw{}, ErrMalformed},
		{"trailing byte", trailing, &UplinkRaw{}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := r.Decode(tt.in, tt.into)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			t.Log(err)
		})
	}
}

func TestEncodeErrors(t *testing.T) {
	r := newRegistry(t)
	for _, v := range []any{nil, (*Presence)(nil), struct{}{}, "x", &time.Time{}} {
		if _, err := r.Encode(v); !errors.Is(err, ErrUnsupportedType) {
			t.Errorf("Encode(%#v): err = %v, want ErrUnsupportedType", v, err)
		}
	}
	if r.Schema(struct{}{}) != nil {
		t.Error("Schema of an unknown type is not nil")
	}
}

// Every proper prefix of a valid value fails to decode (ErrShort for the
// header, ErrMalformed for the body), without a panic.
func TestTruncated(t *testing.T) {
	r := newRegistry(t)
	for _, v := range append(fullValues(), nullValues()...) {
		b, err := r.Encode(v)
		if err != nil {
			t.Fatal(err)
		}
		into := reflect.New(reflect.TypeOf(v).Elem()).Interface()
		for n := range len(b) {
			err := r.Decode(b[:n], into)
			if !errors.Is(err, ErrShort) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("%T cut at %d of %d: err = %v", v, n, len(b), err)
			}
			if _, err := r.DecodeNew(b[:n]); err == nil {
				t.Fatalf("%T cut at %d of %d: DecodeNew succeeded", v, n, len(b))
			}
		}
	}
}

// presenceV1 is a Go view of history/presence.v1.avsc, for writing old records.
type presenceV1 struct {
	EventID    string    `avro:"event_id"`
	SN         string    `avro:"sn"`
	Online     bool      `avro:"online"`
	Reason     string    `avro:"reason"`
	At         time.Time `avro:"at"`
	IntervalMs int64     `avro:"interval_ms"`
	Epoch      int64     `avro:"epoch"`
	Seq        int64     `avro:"seq"`
}

// A Presence written with version 1 (no detail, no since) decodes into the
// current type, with the added fields at their defaults.
func TestEvolutionPresenceV1(t *testing.T) {
	r := newRegistry(t)
	v1, err := parseFile("history/presence.v1.avsc")
	if err != nil {
		t.Fatal(err)
	}
	old := presenceV1{EventID: "p-9", SN: "SN0009", Online: false, Reason: PresenceHeartbeatTimeout, At: ms(1_700_000_000_000), IntervalMs: 90_000, Epoch: 12, Seq: 3}
	body, err := avro.Marshal(v1, old)
	if err != nil {
		t.Fatal(err)
	}
	fp := Fingerprint(v1)
	if fp == Fingerprint(r.Schema(&Presence{})) {
		t.Fatal("v1 and current presence have the same fingerprint")
	}
	b := binary.LittleEndian.AppendUint64([]byte{0xC3, 0x01}, fp)
	b = append(b, body...)

	got := Presence{Detail: "stale", Since: ptr(ms(1))} // must be overwritten by the defaults
	if err := r.Decode(b, &got); err != nil {
		t.Fatalf("Decode v1: %v", err)
	}
	want := Presence{EventID: "p-9", SN: "SN0009", Online: false, Reason: PresenceHeartbeatTimeout, Detail: "", At: old.At, Since: nil, IntervalMs: 90_000, Epoch: 12, Seq: 3}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if _, err := r.DecodeNew(b); err != nil {
		t.Fatalf("DecodeNew v1: %v", err)
	}
	// A v1 record is still a Presence: decoding it as another type fails.
	if err := r.Decode(b, &Command{}); !errors.Is(err, ErrWrongType) {
		t.Fatalf("v1 into *Command: err = %v, want ErrWrongType", err)
	}
}

// The registry can be used from many goroutines at once.
func TestConcurrent(t *testing.T) {
	r := newRegistry(t)
	values := fullValues()
	done := make(chan error)
	for g := range 8 {
		go func() {
			for i := range 200 {
				v := values[(g+i)%len(values)]
				b, err := r.Encode(v)
				if err != nil {
					done <- err
					return
				}
				got := reflect.New(reflect.TypeOf(v).Elem()).Interface()
				if err := r.Decode(b, got); err != nil {
					done <- err
					return
				}
				if !reflect.DeepEqual(got, v) {
					done <- errors.New("concurrent round trip differs")
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	r := newRegistry(f)
	for _, v := range append(fullValues(), nullValues()...) {
		b, err := r.Encode(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte{})
	f.Add([]byte{0xC3, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := r.DecodeNew(b)
		var st DeviceState
		errState := r.Decode(b, &st)
		if err != nil {
			for _, want := range []error{ErrShort, ErrNotSingleObject, ErrUnknownFingerprint, ErrMalformed} {
				if errors.Is(err, want) {
					return
				}
			}
			t.Fatalf("untyped error: %v", err)
		}
		// What decodes re-encodes and decodes to the same value.
		if _, isState := v.(*DeviceState); isState && errState != nil {
			t.Fatalf("DecodeNew gave a DeviceState but Decode failed: %v", errState)
		}
		b2, err := r.Encode(v)
		if err != nil {
			t.Fatalf("re-encode %T: %v", v, err)
		}
		v2, err := r.DecodeNew(b2)
		if err != nil {
			t.Fatalf("decode re-encoded %T: %v", v, err)
		}
		if !reflect.DeepEqual(v, v2) {
			t.Fatalf("re-encoded value differs:\n%+v\n%+v", v, v2)
		}
	})
}

func benchValues() (*UplinkRaw, *DeviceEvent) {
	t0 := ms(1_764_000_000_123)
	up := &UplinkRaw{
		Kind: UplinkFrame, SN: "SN000123456", Topic: "/ivms/pub/SN000123456",
		Payload:    bytes.Repeat([]byte("a"), 300),
		BrokerTime: ptr(t0), ConnectedAt: ptr(t0.Add(-time.Hour)), IngestTime: t0, Ingest: "ingest-0",
	}
	ev := &DeviceEvent{
		EventID: "ams.uplink.raw/3/123456789", SN: "SN000123456", Kind: EventHeartbeat, CmdType: 2,
		MsgID: "0123456789abcdef0123456789abcdef", ProtocolVersion: "1.0", Body: `{"iOnline":1,"iTemp":42}`,
		BrokerTime: ptr(t0), IngestTime: t0, ProcessedAt: t0,
	}
	return up, ev
}

func benchEncode(b *testing.B, v any) {
	r := newRegistry(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Encode(v); err != nil {
			b.Fatal(err)
		}
	}
}

func benchDecode[T any](b *testing.B, v *T) {
	r := newRegistry(b)
	buf, err := r.Encode(v)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	var out T
	for b.Loop() {
		if err := r.Decode(buf, &out); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeUplinkRaw(b *testing.B)   { up, _ := benchValues(); benchEncode(b, up) }
func BenchmarkDecodeUplinkRaw(b *testing.B)   { up, _ := benchValues(); benchDecode(b, up) }
func BenchmarkEncodeDeviceEvent(b *testing.B) { _, ev := benchValues(); benchEncode(b, ev) }
func BenchmarkDecodeDeviceEvent(b *testing.B) { _, ev := benchValues(); benchDecode(b, ev) }
