package protocol

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func checkReason(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if r := ReasonOf(err); !knownReason(r) {
		t.Fatalf("%s: unknown reason %q: %v", what, r, err)
	}
}

func FuzzDecodeFrame(f *testing.F) {
	v := loadVectors(f)
	f.Add([]byte(v.Handshake.Request))
	f.Add([]byte(v.Handshake.Reply))
	for _, vf := range v.Frames {
		f.Add([]byte(vf.Frame))
	}
	for _, s := range []string{
		``, `{}`, `null`, `[]`, `{"iCmdType":4}`, `{"iCmdType":99}`, `{"iCmdType":"2"}`, `{"iCmdType":1e400}`,
		`{"iCmdType":2,"sProtocolVersion":"V1.0","sData":"00","sMsgId":"\u00e9\ud83d\ude00\/"}`,
		`{"icmdtype":2,"SPROTOCOLVERSION":"x","sdata":"y"}`, "{\"iCmdType\":2,\"sData\":\"\xff\"}",
		`{"iCmdType":3,"iAppCmdType":-9223372036854775808,"sProtocolVersion":"V","sData":"0"}`,
		`{"iCmdType":16,"sData":null,"iCmdType":0}`, `{"iCmdType":0,"sProtocolVersion":"\ud800","sData":"x"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := DecodeFrame(data)
		if want, wantReason := referenceDecodeFrame(data); fr != want || ReasonOf(err) != wantReason {
			t.Fatalf("DecodeFrame(%q) = %+v, %v; reference says %+v, %q", data, fr, err, want, wantReason)
		}
		if err != nil {
			checkReason(t, "DecodeFrame", err)
			if fr != (Frame{}) {
				t.Fatalf("non-zero frame with error %v", err)
			}
			return
		}
		if fr.CmdType < 0 || fr.CmdType > MaxCmdType {
			t.Fatalf("accepted iCmdType %d", fr.CmdType)
		}
		if KnownCmdType(fr.CmdType) && (fr.Data == "" || fr.ProtocolVersion == "") {
			t.Fatalf("accepted kind %d without sData/sProtocolVersion", fr.CmdType)
		}
		enc := fr.Encode()
		if !isASCII(enc) {
			t.Fatalf("Encode is not ASCII: %q", enc)
		}
		want, err := MarshalASCII(fr)
		if err != nil || !bytes.Equal(enc, want) {
			t.Fatalf("Encode = %s, MarshalASCII = %s, %v", enc, want, err)
		}
		back, err := DecodeFrame(enc)
		if err != nil {
			t.Fatalf("re-decoding %s: %v", enc, err)
		}
		if back != fr {
			t.Fatalf("round trip: %+v != %+v", back, fr)
		}
	})
}

func FuzzDecryptBody(f *testing.F) {
	v := loadVectors(f)
	k := vectorSession(f, v)
	for _, vf := range v.Frames {
		fr, err := DecodeFrame(vf.Frame)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(fr.Data, []byte(vf.Plaintext))
	}
	f.Add("", []byte{})
	f.Add("0", []byte("{"))
	f.Add(strings.Repeat("00", 16), []byte("\xff"))
	f.Add(strings.Repeat("AB", 32), []byte(strings.Repeat("x", 16)))
	f.Fuzz(func(t *testing.T, sData string, plaintext []byte) {
		// Any sData: a known reason, or a plaintext that re-encrypts to
		// exactly the same ciphertext (CBC with a fixed iv is a bijection on
		// validly padded messages).
		pt, err := DecryptBody(k, sData)
		if err != nil {
			checkReason(t, "DecryptBody", err)
			if pt != nil {
				t.Fatal("plaintext with an error")
			}
		} else if got := EncryptBody(k, pt); got != strings.ToLower(sData) {
			t.Fatalf("EncryptBody(DecryptBody(%q)) = %q", sData, got)
		}
		// AppendDecryptBody agrees and keeps the prefix.
		pre := []byte("prefix")
		apt, aerr := AppendDecryptBody(pre, k, sData)
		if ReasonOf(aerr) != ReasonOf(err) || !bytes.HasPrefix(apt, pre) || !bytes.Equal(apt[len(pre):], pt) {
			t.Fatalf("AppendDecryptBody = %q, %v; DecryptBody = %q, %v", apt, aerr, pt, err)
		}
		// DecryptJSON never panics and reports known reasons.
		var c Configuration
		checkReason(t, "DecryptJSON", DecryptJSON(k, sData, &c))

		// Any plaintext round-trips.
		enc := EncryptBody(k, plaintext)
		if len(enc)%32 != 0 || len(enc) == 0 || strings.ToLower(enc) != enc {
			t.Fatalf("EncryptBody length %d / not lowercase", len(enc))
		}
		dec, err := DecryptBody(k, enc)
		if err != nil || !bytes.Equal(dec, plaintext) {
			t.Fatalf("DecryptBody(EncryptBody(%q)) = %q, %v", plaintext, dec, err)
		}
		var hb Heartbeat
		checkReason(t, "DecryptJSON", DecryptJSON(k, enc, &hb))
	})
}

func FuzzParseHandshake(f *testing.F) {
	v := loadVectors(f)
	keys := testPrivateKeys(f)
	pub := testPublicKey(f)
	req, err := DecodeFrame(v.Handshake.Request)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(req.Data, []byte(v.Handshake.RequestPlaintext))
	f.Add(req.Data[:len(req.Data)-2], []byte(v.Handshake.ReplyPlaintext))
	f.Add(strings.Repeat("00", 128), []byte("a:b:c"))
	f.Add("", []byte("8f14e45fceea167a5a36dedd4bea2543:c9f0f895fb98ab91:"))
	f.Add("zz", []byte("8f14e45fceea167a5a36dedd4bea2543:c9f0f895fb98ab91:f7bb2f7245fbdea898c537995408933f:"))
	f.Fuzz(func(t *testing.T, sData string, plain []byte) {
		// Arbitrary sData.
		r, err := ParseHandshake(keys, sData)
		checkHandshake(t, r, err)

		// Arbitrary RSA plaintexts, encrypted with the real key, exercise
		// the parsing behind the RSA layer.
		if len(plain) > pub.Size()-11 {
			return
		}
		//lint:ignore SA1019 the test plays the firmware, which speaks PKCS#1 v1.5
		ct, err := rsa.EncryptPKCS1v15(rand.Reader, pub, plain)
		if err != nil {
			t.Fatal(err)
		}
		r, err = ParseHandshake(keys, hex.EncodeToString(ct))
		checkHandshake(t, r, err)
		if err == nil {
			if string(keyIVMD5(r.Key1, r.IV1)) != string(plain) {
				t.Fatalf("accepted %q as %q/%q", plain, r.Key1, r.IV1)
			}
		} else if ReasonOf(err) == ReasonBadRSA || ReasonOf(err) == ReasonBadHex {
			t.Fatalf("valid RSA block rejected: %v", err)
		}
		// The same plaintext as a (device-side) handshake reply.
		dev := HandshakeRequest{Key1: "8f14e45fceea167a5a36dedd4bea2543", IV1: "c9f0f895fb98ab91"}
		key2, iv2, s, err := dev.VerifyReply(EncryptWith([]byte(dev.Key1), []byte(dev.IV1), plain))
		if err != nil {
			checkReason(t, "VerifyReply", err)
		} else if string(keyIVMD5(key2, iv2)) != string(plain) || s != DeriveSession(dev.Key1, dev.IV1, key2, iv2) {
			t.Fatalf("VerifyReply accepted %q", plain)
		}
	})
}

// checkHandshake asserts the invariants of ParseHandshake's result.
func checkHandshake(t *testing.T, r HandshakeRequest, err error) {
	t.Helper()
	if err != nil {
		checkReason(t, "ParseHandshake", err)
		if r != (HandshakeRequest{}) {
			t.Fatal("request with an error")
		}
		return
	}
	if len(r.Key1) != HandshakeKeyLen || len(r.IV1) != HandshakeIVLen {
		t.Fatalf("accepted key1/iv1 of %d/%d bytes", len(r.Key1), len(r.IV1))
	}
	reply, err := r.ReplyWith("45c48cce2e2d7fbdea1afc51c7c6ad26", "d3d9446802a44259")
	if err != nil {
		t.Fatalf("ReplyWith after a valid handshake: %v", err)
	}
	key2, iv2, s, err := r.VerifyReply(reply.SData)
	if err != nil || key2 != reply.Key2 || iv2 != reply.IV2 || s != reply.Session {
		t.Fatalf("VerifyReply(ReplyWith) = %v", err)
	}
}

// referenceDecodeFrame is DecodeFrame's specification written with
// encoding/json: the fuzzer checks that the single-pass parser agrees with
// it on every input, both on the frame and on the error reason.
func referenceDecodeFrame(b []byte) (Frame, Reason) {
	if !utf8.Valid(b) {
		return Frame{}, ReasonBadUTF8
	}
	if !json.Valid(b) {
		return Frame{}, ReasonBadJSON
	}
	var m map[string]json.RawMessage
	if c, _ := firstNonSpace(b); c != '{' || json.Unmarshal(b, &m) != nil {
		return Frame{}, ReasonBadEnvelope
	}
	raw, ok := m["iCmdType"]
	if !ok || !cmdTypeRe.Match(raw) {
		return Frame{}, ReasonBadCmdType
	}
	var f Frame
	f.CmdType, _ = strconv.Atoi(string(raw))
	for name, dst := range map[string]*string{"sProtocolVersion": &f.ProtocolVersion, "sMsgId": &f.MsgID, "sData": &f.Data} {
		if raw, ok := m[name]; ok && string(raw) != "null" {
			if json.Unmarshal(raw, dst) != nil {
				return Frame{}, ReasonBadEnvelope
			}
		}
	}
	for name, dst := range map[string]*int{"iAppCmdType": &f.AppCmdType, "iAmsCmdType": &f.AmsCmdType} {
		if raw, ok := m[name]; ok && string(raw) != "null" {
			if !intRe.Match(raw) {
				return Frame{}, ReasonBadEnvelope
			}
			v, err := strconv.Atoi(string(raw))
			if err != nil {
				return Frame{}, ReasonBadEnvelope
			}
			*dst = v
		}
	}
	if KnownCmdType(f.CmdType) && (f.Data == "" || f.ProtocolVersion == "") {
		return Frame{}, ReasonBadEnvelope
	}
	return f, ""
}

var (
	cmdTypeRe = regexp.MustCompile(`^(1[0-6]|[0-9])$`)
	intRe     = regexp.MustCompile(`^-?(0|[1-9][0-9]*)$`)
)

func TestDecodeFrameMatchesReference(t *testing.T) {
	deep := func(n int) string {
		return `{"iCmdType":4,"x":` + strings.Repeat("[", n) + strings.Repeat("]", n) + `}`
	}
	deepTop := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	inputs := []string{
		deep(9998), deep(9999), deep(10000), deepTop(9999), deepTop(10000), deepTop(10001),
		`{"iCmdType":2,"sProtocolVersion":"V\u0031.0","sData":"\u0030\u0030"}`,
		`{"iCmdType":2,"sProtocolVersion":"\ud83d\ude00\ud800\udc00\ud800x\udc00\ud800\u0041","sData":"00"}`,
		`{"iCmdType":2,"sProtocolVersion":"\ud800\ud800\udc00","sData":"00"}`,
		`{"i\u0043mdType":2,"sProtocolVersion":"a","sData":"b"}`,
		`{"iCmdType":2,"ICMDTYPE":99,"sprotocolversion":"x","sProtocolVersion":"a","sData":"b"}`,
		`{"iCmdType":2,"sProtocolVersion":"a","sData":"b","sData":null}`,
		`{"iCmdType":7,"iAmsCmdType":-9223372036854775808,"sProtocolVersion":"a","sData":"b"}`,
		`{"iCmdType":7,"iAmsCmdType":-9223372036854775809,"sProtocolVersion":"a","sData":"b"}`,
		`{"iCmdType":7,"iAmsCmdType":9223372036854775807,"sProtocolVersion":"a","sData":"b"}`,
		`{"iCmdType":7,"iAmsCmdType":9223372036854775808,"sProtocolVersion":"a","sData":"b"}`,
		`{"iCmdType":7,"iAmsCmdType":-0,"sProtocolVersion":"a","sData":"b"}`,
		`{"iCmdType":7,"iAmsCmdType":01,"sProtocolVersion":"a","sData":"b"}`,
		`{"iCmdType":7,"iAmsCmdType":1.,"sProtocolVersion":"a","sData":"b"}`,
		`{"iCmdType":7,"iAmsCmdType":1e,"sProtocolVersion":"a","sData":"b"}`,
		`{"iCmdType":2,"sProtocolVersion":"a","sData":"b\x01"}`,
		`{"iCmdType":2,"sProtocolVersion":"a","sData":"b\q"}`,
		`{"iCmdType":2,"sProtocolVersion":"a","sData":"b\u12"}`,
		`{"iCmdType":2,"sProtocolVersion":"a","sData":"b"`,
		`{"iCmdType":2,}`, `{,}`, `{"a"}`, `{"a":}`, `{"a":1 "b":2}`, `[1,]`, `[1 2]`, `tru`, `nul`, `-`, `1.5e+`,
		"\ufeff{}", `{"iCmdType":2}` + "\x00",
	}
	for _, in := range inputs {
		fr, err := DecodeFrame([]byte(in))
		want, wantReason := referenceDecodeFrame([]byte(in))
		if fr != want || ReasonOf(err) != wantReason {
			if len(in) > 80 {
				in = in[:80] + "..."
			}
			t.Errorf("DecodeFrame(%q) = %+v, %v; reference says %+v, %q", in, fr, err, want, wantReason)
		}
	}
}

// referenceUnmarshalBody is UnmarshalBody's specification with plain
// encoding/json (no fast path).
func referenceUnmarshalBody(pt []byte, v any) Reason {
	if !utf8.Valid(pt) {
		return ReasonBadUTF8
	}
	if c, ok := firstNonSpace(pt); !ok || c != '{' {
		return ReasonBadJSON
	}
	if json.Unmarshal(pt, v) != nil {
		return ReasonBadJSON
	}
	return ""
}

// FuzzDecodeBody checks that the fast path for the hot bodies decodes
// exactly as encoding/json does, errors included, from an empty and from a
// pre-filled value.
func FuzzDecodeBody(f *testing.F) {
	v := loadVectors(f)
	for _, vf := range v.Frames {
		f.Add([]byte(vf.Plaintext))
	}
	for _, s := range []string{
		`{"sDeviceSn":"a","iHeartBeat":1,"SDEVICESN":"b"}`, `{"sdevicesn":"x"}`, "{\"sDeviceſn\":\"x\"}",
		`{"iHeartBeat":null,"sDeviceSn":null}`, `{"iHeartBeat":1.0}`, `{"iHeartBeat":"1"}`, `{"iHeartBeat":-0}`,
		`{"iTFCardUseSize":9223372036854775807,"iChnCnt":-9223372036854775808}`, `{"iTFCardUseSize":9223372036854775808}`,
		`{"sDeviceSn":"\ud800\u00e9\/"}`, `{"x":{"y":[1,2,{"z":null}]},"sSSID":"w"}`, `{} `, `{"a":1}x`, `{"sIEVer":1}`,
		`{"sDeviceSn":""}`, `{"sDeviceSn":"a","sDeviceSn":null}`, `{"sDeviceSn":null,"sDeviceSn":"b"}`, `{"sDeviceSn":5}`,
		`{"sDeviceSn":"a","iChnCnt":"x"}`, `{"sDeviceSn":"a","iChnCnt":1`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		prefill := Configuration{DeviceSn: "pre", ChnCnt: 7, TFCardUseSize: -1, SSID: "s"}
		for _, start := range []Configuration{{}, prefill} {
			got, want := start, start
			err := UnmarshalBody(data, &got)
			wantReason := referenceUnmarshalBody(data, &want)
			if ReasonOf(err) != wantReason || got != want {
				t.Fatalf("Configuration from %+v: %+v, %v; encoding/json: %+v, %q", start, got, err, want, wantReason)
			}
		}
		for _, start := range []Heartbeat{{}, {DeviceSn: "pre", HeartBeat: 3}} {
			got, want := start, start
			err := UnmarshalBody(data, &got)
			wantReason := referenceUnmarshalBody(data, &want)
			if ReasonOf(err) != wantReason || got != want {
				t.Fatalf("Heartbeat from %+v: %+v, %v; encoding/json: %+v, %q", start, got, err, want, wantReason)
			}
		}
		// The sn-aware bodies, compared by value (encoding/json writes
		// through a pointer already set, the fast path replaces it).
		for _, pre := range []*string{nil, ptr("pre")} {
			got, want := SNBody{DeviceSn: clonePtr(pre)}, SNBody{DeviceSn: clonePtr(pre)}
			err := UnmarshalBody(data, &got)
			wantReason := referenceUnmarshalBody(data, &want)
			if ReasonOf(err) != wantReason || !samePtr(got.DeviceSn, want.DeviceSn) {
				t.Fatalf("SNBody from %v: %v, %v; encoding/json: %v, %q", pre, got.DeviceSn, err, want.DeviceSn, wantReason)
			}
			gotC := ConfigurationSN{Configuration: prefill, DeviceSn: clonePtr(pre)}
			wantC := ConfigurationSN{Configuration: prefill, DeviceSn: clonePtr(pre)}
			err = UnmarshalBody(data, &gotC)
			wantReason = referenceUnmarshalBody(data, &wantC)
			if ReasonOf(err) != wantReason || gotC.Configuration != wantC.Configuration || !samePtr(gotC.DeviceSn, wantC.DeviceSn) {
				t.Fatalf("ConfigurationSN from %v: %+v %v, %v; encoding/json: %+v %v, %q", pre,
					gotC.Configuration, gotC.DeviceSn, err, wantC.Configuration, wantC.DeviceSn, wantReason)
			}
		}
	})
}

func ptr(s string) *string { return &s }

func clonePtr(p *string) *string {
	if p == nil {
		return nil
	}
	return ptr(*p)
}

func samePtr(a, b *string) bool {
	return (a == nil) == (b == nil) && (a == nil || *a == *b)
}
