package device

import (
	"strings"
	"testing"
	"time"

	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/processors/keyed"
	"github.com/ivms/ams/schemas"
)

// FuzzProcessFrame feeds arbitrary frame payloads, as ams.uplink.raw FRAME
// records, to a device with a session: Process never fails, and every input
// yields exactly one DeviceEvent or one Reject.
func FuzzProcessFrame(f *testing.F) {
	p, _, s := withSession(f)
	for _, v := range vectors.Frames {
		b, _ := vectorFrame(f, v.Name)
		f.Add(b)
	}
	f.Add([]byte(vectors.Handshake.Request))
	f.Add([]byte(`{"iCmdType":0,"sProtocolVersion":"V1.0","sData":"00"}`))
	f.Add([]byte(`{"iCmdType":9}`))
	f.Add([]byte(`{"iCmdType":2,"sProtocolVersion":"V1.0","sData":"` + protocol.EncryptBody(vectorSession(f), []byte(`{"sDeviceSn":1}`)) + `"}`))
	f.Add([]byte("\xff"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, payload []byte) {
		value, err := testReg.Encode(rawFrame(vectors.SN, payload, testT0))
		if err != nil {
			t.Fatal(err)
		}
		checkOne(t, p, s, keyed.Input{Topic: testTopics.UplinkRaw, Partition: 1, Offset: 7, Key: vectors.SN, Value: value})
	})
}

// FuzzProcessRecord feeds arbitrary Kafka values to the uplink topic.
func FuzzProcessRecord(f *testing.F) {
	p, _, s := withSession(f)
	hb, _ := vectorFrame(f, "heartbeat")
	for _, r := range []*schemas.UplinkRaw{rawFrame(vectors.SN, hb, testT0),
		{Kind: schemas.UplinkConnected, SN: vectors.SN, ClientID: vectors.SN},
		{Kind: schemas.UplinkDisconnected, SN: vectors.SN, Reason: "normal"}} {
		b, err := testReg.Encode(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, value []byte) {
		checkOne(t, p, s, keyed.Input{Topic: testTopics.UplinkRaw, Partition: 1, Offset: 7, Key: vectors.SN, Value: value})
	})
}

func checkOne(t *testing.T, p *Processor, s *State, in keyed.Input) {
	now := testT0.Add(time.Minute)
	next, out, err := p.Process(now, in.Key, s, in)
	if err != nil {
		t.Fatalf("Process failed: %v", err)
	}
	o := decodeOutputs(t, out)
	if len(o.events)+len(o.rejects) != 1 {
		t.Fatalf("%d events and %d rejects, want exactly one of them", len(o.events), len(o.rejects))
	}
	if len(o.rejects) == 1 && (next != s || len(out) != 1) {
		t.Fatal("a reject changed the state or came with other outputs")
	}
	if len(o.events) == 1 && next == nil {
		t.Fatal("an accepted frame deleted the state")
	}
}

// BenchmarkHeartbeat is one heartbeat of a device with a session through
// Process: Avro decode of the UplinkRaw, frame decode, AES decrypt, JSON
// check, presence, the encrypted reply, and Avro encode of the Downlink and
// DeviceEvent.
func BenchmarkHeartbeat(b *testing.B) {
	p, _, s := withSession(b)
	hb, _ := vectorFrame(b, "heartbeat")
	value, err := testReg.Encode(rawFrame(vectors.SN, hb, testT0.Add(30*time.Second)))
	if err != nil {
		b.Fatal(err)
	}
	in := keyed.Input{Topic: testTopics.UplinkRaw, Partition: 1, Offset: 7, Key: vectors.SN, Value: value}
	now := testT0.Add(30 * time.Second)
	b.ReportAllocs()
	for b.Loop() {
		_, out, err := p.Process(now, vectors.SN, s, in)
		if err != nil || len(out) != 2 {
			b.Fatalf("%v %d", err, len(out))
		}
	}
}

// BenchmarkUplinkBody is one frame of each body-carrying kind of a device
// with a session through Process: the path of the decrypted body (UTF-8
// and JSON checks, the sDeviceSn check, the typed decode) and its outputs.
func BenchmarkUplinkBody(b *testing.B) {
	for _, name := range []string{"config upload", "heartbeat", "reply to get-sd-info", "stream url request"} {
		b.Run(strings.ReplaceAll(name, " ", "-"), func(b *testing.B) {
			p, _, s := withSession(b)
			fr, _ := vectorFrame(b, name)
			now := testT0.Add(30 * time.Second)
			value, err := testReg.Encode(rawFrame(vectors.SN, fr, now))
			if err != nil {
				b.Fatal(err)
			}
			in := keyed.Input{Topic: testTopics.UplinkRaw, Partition: 1, Offset: 7, Key: vectors.SN, Value: value}
			_, out, err := p.Process(now, vectors.SN, s, in)
			if err != nil {
				b.Fatal(err)
			}
			if o := decodeOutputs(b, out); len(o.rejects) != 0 || len(o.events) != 1 {
				b.Fatalf("outputs %+v", o)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := p.Process(now, vectors.SN, s, in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
