package device

import (
	"bytes"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/processors/keyed"
	"github.com/ivms/ams/schemas"
)

// vectorFile is testdata/vectors.json (a copy of shared/protocol/vectors.json).
type vectorFile struct {
	SN              string `json:"sn"`
	ProtocolVersion string `json:"protocol_version"`
	Handshake       struct {
		Key1      string          `json:"device_key1"`
		IV1       string          `json:"device_iv1"`
		Request   json.RawMessage `json:"request"`
		Key2      string          `json:"cloud_key2"`
		IV2       string          `json:"cloud_iv2"`
		Reply     protocol.Frame  `json:"reply"`
		SessionIV string          `json:"session_iv"`
		SessionK  string          `json:"session_key"`
	} `json:"handshake"`
	Frames []struct {
		Direction string          `json:"direction"`
		Name      string          `json:"name"`
		Frame     json.RawMessage `json:"frame"`
		Plaintext string          `json:"plaintext"`
	} `json:"frames"`
}

var (
	vectorsOnce sync.Once
	vectors     vectorFile
	testKeys    []*rsa.PrivateKey
	testPub     *rsa.PublicKey
	testReg     *schemas.Registry
	setupErr    error
)

func setup(tb testing.TB) {
	tb.Helper()
	vectorsOnce.Do(func() {
		b, err := os.ReadFile(filepath.Join("testdata", "vectors.json"))
		if err != nil {
			setupErr = err
			return
		}
		if err := json.Unmarshal(b, &vectors); err != nil {
			setupErr = err
			return
		}
		priv, err := os.ReadFile(filepath.Join("testdata", "cloud_rsa_private.pem"))
		if err != nil {
			setupErr = err
			return
		}
		if testKeys, err = protocol.ParsePrivateKeys(priv); err != nil {
			setupErr = err
			return
		}
		pub, err := os.ReadFile(filepath.Join("testdata", "cloud_rsa_public.pem"))
		if err != nil {
			setupErr = err
			return
		}
		if testPub, err = protocol.ParsePublicKey(pub); err != nil {
			setupErr = err
			return
		}
		testReg, setupErr = schemas.NewRegistry()
	})
	if setupErr != nil {
		tb.Fatalf("setup: %v", setupErr)
	}
}

// vectorFrame returns the frame bytes of the named vector.
func vectorFrame(tb testing.TB, name string) (frame []byte, plaintext string) {
	tb.Helper()
	setup(tb)
	for _, f := range vectors.Frames {
		if f.Name == name {
			var c bytes.Buffer
			if err := json.Compact(&c, f.Frame); err != nil {
				tb.Fatal(err)
			}
			return c.Bytes(), f.Plaintext
		}
	}
	tb.Fatalf("no vector %q", name)
	return nil, ""
}

func vectorSession(tb testing.TB) protocol.SessionKey {
	setup(tb)
	k, err := protocol.SessionFromStrings(vectors.Handshake.SessionK, vectors.Handshake.SessionIV)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// vectorRand is a reader that first yields the bytes that make Reply pick
// the vector's key2 and iv2, then a deterministic stream.
func vectorRand(tb testing.TB) io.Reader {
	k2, err1 := hex.DecodeString(vectors.Handshake.Key2)
	iv2, err2 := hex.DecodeString(vectors.Handshake.IV2)
	if err1 != nil || err2 != nil {
		tb.Fatal("vector key2/iv2 are not hex")
	}
	return io.MultiReader(bytes.NewReader(append(k2, iv2...)), mrand.NewChaCha8([32]byte{1}))
}

var testKEK = [32]byte{'k', 'e', 'k', 1, 2, 3}

var (
	testT0      = time.Unix(1574321234, 0).UTC() // the vectors' 702 index
	testTopics  = kafkatopics.Default()
	streamBase  = "rtmp://vms.example.test/live"
	streamKey   = []byte("stream-secret-0123456789")
	uploadKey   = []byte("upload-secret-0123456789")
	testUploads = UploadConfig{
		HostURL:     "https://ks3.example.test",
		Bucket:      "pictures",
		ObjectPath:  "ai_engine_imgs",
		CallbackURL: "https://callback.example.test/upload",
		Credentials: SignedUploadCredentials{Secret: uploadKey, TTL: time.Hour},
	}
)

// testConfig is the configuration the tests use; rnd nil means a
// deterministic reader that yields the vector's key2 and iv2 first.
func testConfig(tb testing.TB, rnd io.Reader) Config {
	setup(tb)
	if rnd == nil {
		rnd = vectorRand(tb)
	}
	return Config{
		Topics:      testTopics,
		Registry:    testReg,
		PrivateKeys: testKeys,
		KEK:         testKEK,
		Stream:      StreamConfig{BaseURL: streamBase, Secret: streamKey},
		Upload:      testUploads,
		Rand:        rnd,
		// The trust rules have their own tests (trust_test.go); the others
		// handshake unregistered devices and send frames in bursts.
		AllowUnregistered: true,
		Limits:            Limits{HandshakeBurst: -1, FrameBurst: -1},
	}
}

func newTestProcessor(tb testing.TB, rnd io.Reader) *Processor {
	tb.Helper()
	p, err := New(testConfig(tb, rnd))
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// feeder builds inputs with increasing offsets.
type feeder struct {
	tb     testing.TB
	p      *Processor
	offset int64
}

func (f *feeder) input(topic, key string, v any) keyed.Input {
	f.tb.Helper()
	f.offset++
	in := keyed.Input{Topic: topic, Partition: 3, Offset: f.offset, Key: key, Timestamp: testT0}
	if v != nil {
		b, err := testReg.Encode(v)
		if err != nil {
			f.tb.Fatal(err)
		}
		in.Value = b
	}
	return in
}

func rawFrame(sn string, payload []byte, at time.Time) *schemas.UplinkRaw {
	bt := at
	return &schemas.UplinkRaw{
		Kind:       schemas.UplinkFrame,
		SN:         sn,
		Topic:      protocol.UplinkTopic(sn),
		Payload:    payload,
		BrokerTime: &bt,
		IngestTime: at.Add(5 * time.Millisecond),
		Ingest:     "test",
	}
}

func (f *feeder) frame(sn string, payload []byte, at time.Time) keyed.Input {
	return f.input(testTopics.UplinkRaw, sn, rawFrame(sn, payload, at))
}

// outputs is the decoded output of one call.
type outputs struct {
	events    []schemas.DeviceEvent
	presence  []schemas.Presence
	downlinks []schemas.Downlink
	rejects   []schemas.Reject
	commands  []schemas.CommandEvent
}

func decodeOutputs(tb testing.TB, out []keyed.Output) outputs {
	tb.Helper()
	var o outputs
	for _, r := range out {
		switch r.Topic {
		case testTopics.DeviceEvents:
			var v schemas.DeviceEvent
			mustDecode(tb, r.Value, &v)
			o.events = append(o.events, v)
		case testTopics.Presence:
			var v schemas.Presence
			mustDecode(tb, r.Value, &v)
			o.presence = append(o.presence, v)
		case testTopics.Downlink:
			var v schemas.Downlink
			mustDecode(tb, r.Value, &v)
			o.downlinks = append(o.downlinks, v)
		case testTopics.Rejects:
			var v schemas.Reject
			mustDecode(tb, r.Value, &v)
			o.rejects = append(o.rejects, v)
		case testTopics.CommandEvents:
			var v schemas.CommandEvent
			mustDecode(tb, r.Value, &v)
			o.commands = append(o.commands, v)
		default:
			tb.Fatalf("output to unexpected topic %q", r.Topic)
		}
	}
	return o
}

func mustDecode(tb testing.TB, b []byte, v any) {
	tb.Helper()
	if err := testReg.Decode(b, v); err != nil {
		tb.Fatal(err)
	}
}

// run processes one input and decodes its outputs.
func run(tb testing.TB, p *Processor, now time.Time, s *State, in keyed.Input) (*State, outputs) {
	tb.Helper()
	next, out, err := p.Process(now, in.Key, s, in)
	if err != nil {
		tb.Fatalf("Process: %v", err)
	}
	for _, o := range out {
		if o.Key != in.Key {
			tb.Fatalf("output key %q, want %q", o.Key, in.Key)
		}
	}
	return next, decodeOutputs(tb, out)
}

// withSession returns the state of the vector device after the vector
// handshake, and the processor used (its rand continues deterministically).
func withSession(tb testing.TB) (*Processor, *feeder, *State) {
	tb.Helper()
	p := newTestProcessor(tb, nil)
	f := &feeder{tb: tb, p: p}
	s, o := run(tb, p, testT0, nil, f.frame(vectors.SN, vectors.Handshake.Request, testT0))
	if len(o.downlinks) != 1 || !s.HasSession() {
		tb.Fatalf("vector handshake did not establish a session: %+v", o)
	}
	if *s.session != vectorSession(tb) {
		tb.Fatal("session is not the vector's")
	}
	return p, f, s
}

// decryptDownlink decodes a downlink frame and decrypts its body.
func decryptDownlink(tb testing.TB, d schemas.Downlink) (protocol.Frame, string) {
	tb.Helper()
	fr, err := protocol.DecodeFrame(d.Payload)
	if err != nil {
		tb.Fatalf("downlink does not decode: %v", err)
	}
	pt, err := protocol.DecryptBody(vectorSession(tb), fr.Data)
	if err != nil {
		tb.Fatalf("downlink body does not decrypt: %v", err)
	}
	return fr, string(pt)
}

func register(tb testing.TB, p *Processor, f *feeder, s *State, bound bool, name, streamURL string) *State {
	tb.Helper()
	next, o := run(tb, p, testT0, s, f.input(testTopics.Registry, vectors.SN, &schemas.Registration{
		SN: vectors.SN, Bound: bound, Name: name, StreamURL: streamURL, UpdatedAt: testT0, UpdatedBy: "test",
	}))
	if len(o.events)+len(o.rejects)+len(o.downlinks)+len(o.presence) != 0 {
		tb.Fatalf("registration produced outputs: %+v", o)
	}
	return next
}
