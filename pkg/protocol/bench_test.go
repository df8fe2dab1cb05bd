package protocol

import (
	"crypto/rand"
	"testing"
)

func vectorFrameBytes(b *testing.B, v vectorFile, name string) []byte {
	b.Helper()
	for _, vf := range v.Frames {
		if vf.Name == name {
			return []byte(vf.Frame)
		}
	}
	b.Fatalf("no vector %q", name)
	return nil
}

// BenchmarkDecodeUplink measures the whole uplink path for one frame:
// DecodeFrame + hex + AES-256-CBC + unpad + JSON into the typed body.
func BenchmarkDecodeUplink(b *testing.B) {
	v := loadVectors(b)
	k := vectorSession(b, v)
	b.Run("heartbeat", func(b *testing.B) {
		raw := vectorFrameBytes(b, v, "heartbeat")
		b.SetBytes(int64(len(raw)))
		b.ReportAllocs()
		for b.Loop() {
			f, err := DecodeFrame(raw)
			if err != nil {
				b.Fatal(err)
			}
			var hb Heartbeat
			if err := DecryptJSON(k, f.Data, &hb); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("config", func(b *testing.B) {
		raw := vectorFrameBytes(b, v, "config upload")
		b.SetBytes(int64(len(raw)))
		b.ReportAllocs()
		for b.Loop() {
			f, err := DecodeFrame(raw)
			if err != nil {
				b.Fatal(err)
			}
			var c Configuration
			if err := DecryptJSON(k, f.Data, &c); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The same with one reused plaintext buffer (AppendDecryptJSON).
	b.Run("config-reuse", func(b *testing.B) {
		raw := vectorFrameBytes(b, v, "config upload")
		b.SetBytes(int64(len(raw)))
		b.ReportAllocs()
		buf := make([]byte, 0, 1024)
		for b.Loop() {
			f, err := DecodeFrame(raw)
			if err != nil {
				b.Fatal(err)
			}
			var c Configuration
			if buf, err = AppendDecryptJSON(buf, k, f.Data, &c); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkDecodeFrame(b *testing.B) {
	v := loadVectors(b)
	raw := vectorFrameBytes(b, v, "config upload")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeFrame(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecryptBody(b *testing.B) {
	v := loadVectors(b)
	k := vectorSession(b, v)
	f, err := DecodeFrame(vectorFrameBytes(b, v, "config upload"))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(f.Data) / 2))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecryptBody(k, f.Data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncryptBody encrypts a heartbeat reply, as the cloud does for
// every heartbeat: MarshalASCII + EncryptBody + Frame.Encode.
func BenchmarkEncryptBody(b *testing.B) {
	v := loadVectors(b)
	k := vectorSession(b, v)
	b.Run("body", func(b *testing.B) {
		body := []byte(`{"iOnline":1}`)
		b.ReportAllocs()
		for b.Loop() {
			_ = EncryptBody(k, body)
		}
	})
	b.Run("marshal+encrypt+frame", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			body, err := MarshalASCII(HeartbeatReply{Online: 1})
			if err != nil {
				b.Fatal(err)
			}
			f := Frame{CmdType: CmdHeartbeat, ProtocolVersion: "V1.0", Data: EncryptBody(k, body)}
			_ = f.Encode()
		}
	})
}

// BenchmarkHandshake is the cloud side of a handshake: RSA decryption and
// checks, then a reply with fresh key2/iv2.
func BenchmarkHandshake(b *testing.B) {
	v := loadVectors(b)
	keys := testPrivateKeys(b)
	req, err := DecodeFrame(v.Handshake.Request)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		r, err := ParseHandshake(keys, req.Data)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := r.Reply(rand.Reader); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNewHandshake is the device side (the fleet simulator).
func BenchmarkNewHandshake(b *testing.B) {
	pub := testPublicKey(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := NewHandshake(pub, rand.Reader); err != nil {
			b.Fatal(err)
		}
	}
}
