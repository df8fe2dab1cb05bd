package protocol

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// rawEncrypt encrypts b (a multiple of 16 bytes) with the session key and no
// padding, to make ciphertexts with chosen (bad) padding.
func rawEncrypt(t *testing.T, k SessionKey, b []byte) string {
	t.Helper()
	block, err := aes.NewCipher(k.Key[:])
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, len(b))
	cipher.NewCBCEncrypter(block, k.IV[:]).CryptBlocks(out, b)
	return hex.EncodeToString(out)
}

func TestDecryptBodyRejects(t *testing.T) {
	v := loadVectors(t)
	k := vectorSession(t, v)
	block := func(tail ...byte) []byte {
		b := []byte("0123456789abcdef")
		copy(b[16-len(tail):], tail)
		return b
	}
	cases := []struct {
		name  string
		sData string
		want  Reason
	}{
		{"empty", "", ReasonBadBlockSize},
		{"odd length", "abc", ReasonBadHex},
		{"odd length 33", strings.Repeat("0", 33), ReasonBadHex},
		{"not hex", strings.Repeat("zz", 16), ReasonBadHex},
		{"hex with space", strings.Repeat("00", 15) + " 0", ReasonBadHex},
		{"non-ASCII", strings.Repeat("00", 15) + "é", ReasonBadHex},
		{"15 bytes", strings.Repeat("00", 15), ReasonBadBlockSize},
		{"17 bytes", strings.Repeat("00", 17), ReasonBadBlockSize},
		{"pad byte 0", rawEncrypt(t, k, block(0)), ReasonBadPadding},
		{"pad byte 17", rawEncrypt(t, k, block(17)), ReasonBadPadding},
		{"pad byte 255", rawEncrypt(t, k, block(255)), ReasonBadPadding},
		{"inconsistent padding", rawEncrypt(t, k, block(1, 3, 3)), ReasonBadPadding},
		{"inconsistent full block", rawEncrypt(t, k, append(block(), block(15, 16)...)), ReasonBadPadding},
		{"wrong key", EncryptBody(DeriveSession("a", "b", "c", "d"), []byte(strings.Repeat("x", 40))), ReasonBadPadding},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pt, err := DecryptBody(k, c.sData)
			if got := ReasonOf(err); got != c.want {
				t.Fatalf("DecryptBody reason = %q (%v), want %q", got, err, c.want)
			}
			if pt != nil {
				t.Fatalf("plaintext returned with an error: %q", pt)
			}
			if !errors.Is(err, &Error{Reason: c.want}) {
				t.Fatalf("errors.Is(%v, %s) = false", err, c.want)
			}
			// DecryptJSON reports the same reason.
			var hb Heartbeat
			if got := ReasonOf(DecryptJSON(k, c.sData, &hb)); got != c.want {
				t.Fatalf("DecryptJSON reason = %q, want %q", got, c.want)
			}
			// AppendDecryptBody leaves dst as it was.
			dst := []byte("keep")
			out, err := AppendDecryptBody(dst, k, c.sData)
			if ReasonOf(err) != c.want || string(out) != "keep" {
				t.Fatalf("AppendDecryptBody = %q, %v", out, err)
			}
		})
	}
	// Valid padding of every length is accepted, including a full block.
	for p := 1; p <= 16; p++ {
		b := block()
		for i := 16 - p; i < 16; i++ {
			b[i] = byte(p)
		}
		pt, err := DecryptBody(k, rawEncrypt(t, k, b))
		if err != nil || string(pt) != "0123456789abcdef"[:16-p] {
			t.Fatalf("pad %d: %q, %v", p, pt, err)
		}
	}
	// Uppercase hex is accepted.
	sData := EncryptBody(k, []byte(`{"iOnline":1}`))
	if pt, err := DecryptBody(k, strings.ToUpper(sData)); err != nil || string(pt) != `{"iOnline":1}` {
		t.Fatalf("uppercase hex: %q, %v", pt, err)
	}
	// Bad key/iv lengths for the low-level functions.
	if _, err := DecryptWith(make([]byte, 31), make([]byte, 16), sData); ReasonOf(err) != ReasonBadKey {
		t.Fatalf("DecryptWith(31-byte key): %v", err)
	}
	if _, err := DecryptWith(make([]byte, 32), make([]byte, 15), sData); ReasonOf(err) != ReasonBadKey {
		t.Fatalf("DecryptWith(15-byte iv): %v", err)
	}
	if s := EncryptWith(make([]byte, 31), make([]byte, 16), nil); s != "" {
		t.Fatalf("EncryptWith(31-byte key) = %q", s)
	}
	if s := EncryptWith(make([]byte, 16), nil, nil); s != "" {
		t.Fatalf("EncryptWith(nil iv) = %q", s)
	}
	if _, err := SessionFromStrings("short", "iv"); ReasonOf(err) != ReasonBadKey {
		t.Fatalf("SessionFromStrings: %v", err)
	}
}

func TestDecryptJSONRejects(t *testing.T) {
	v := loadVectors(t)
	k := vectorSession(t, v)
	cases := []struct {
		name string
		body string
		want Reason
	}{
		{"invalid UTF-8", "{\"sDeviceSn\":\"\xff\"}", ReasonBadUTF8},
		{"truncated", `{"sDeviceSn":`, ReasonBadJSON},
		{"empty", ``, ReasonBadJSON},
		{"array", `[1,2]`, ReasonBadJSON},
		{"null", `null`, ReasonBadJSON},
		{"number", `1`, ReasonBadJSON},
		{"string", `"x"`, ReasonBadJSON},
		{"trailing garbage", `{"iHeartBeat":1}x`, ReasonBadJSON},
		{"wrong type", `{"iHeartBeat":"1"}`, ReasonBadJSON},
		{"float for int", `{"iHeartBeat":1.5}`, ReasonBadJSON},
		{"huge int", `{"iHeartBeat":99999999999999999999999}`, ReasonBadJSON},
		{"huge exponent", `{"iHeartBeat":1e400}`, ReasonBadJSON},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var hb Heartbeat
			err := DecryptJSON(k, EncryptBody(k, []byte(c.body)), &hb)
			if got := ReasonOf(err); got != c.want {
				t.Fatalf("reason = %q (%v), want %q", got, err, c.want)
			}
			var hb2 Heartbeat
			buf := make([]byte, 0, 64)
			out, err := AppendDecryptJSON(buf, k, EncryptBody(k, []byte(c.body)), &hb2)
			if got := ReasonOf(err); got != c.want {
				t.Fatalf("AppendDecryptJSON reason = %q (%v), want %q", got, err, c.want)
			}
			if len(out) != 0 {
				t.Fatalf("AppendDecryptJSON returned a non-empty buffer")
			}
		})
	}
	// Unknown fields are ignored; a huge float fits a float64 field.
	var sr StreamURLRequest
	if err := DecryptJSON(k, EncryptBody(k, []byte(` {"x":[1,{"y":null}],"iGetVMSURL":7,"iExpiresTime":1e300}`)), &sr); err != nil || sr.Index != 7 || sr.ExpiresTime != 1e300 {
		t.Fatalf("DecryptJSON = %+v, %v", sr, err)
	}
	// A non-pointer target is the caller's bug, not bad input.
	if got := ReasonOf(DecryptJSON(k, EncryptBody(k, []byte(`{}`)), Heartbeat{})); got != ReasonInternal {
		t.Fatalf("non-pointer target: reason %q", got)
	}
}

func TestDecodeFrameRejects(t *testing.T) {
	cases := []struct {
		name  string
		frame string
		want  Reason
	}{
		{"empty", ``, ReasonBadJSON},
		{"spaces", `   `, ReasonBadJSON},
		{"truncated", `{"iCmdType":2,"sData":"00"`, ReasonBadJSON},
		{"trailing garbage", `{"iCmdType":2,"sProtocolVersion":"V1.0","sData":"00"}x`, ReasonBadJSON},
		{"two objects", `{"iCmdType":2} {"iCmdType":2}`, ReasonBadJSON},
		{"single quotes", `{'iCmdType':2}`, ReasonBadJSON},
		{"invalid UTF-8", "{\"iCmdType\":2,\"sProtocolVersion\":\"\xff\",\"sData\":\"00\"}", ReasonBadUTF8},
		{"array", `[{"iCmdType":2}]`, ReasonBadEnvelope},
		{"null", `null`, ReasonBadEnvelope},
		{"number", `2`, ReasonBadEnvelope},
		{"string", `"{}"`, ReasonBadEnvelope},
		{"missing iCmdType", `{"sProtocolVersion":"V1.0","sData":"00"}`, ReasonBadCmdType},
		{"empty object", `{}`, ReasonBadCmdType},
		{"iCmdType 99", `{"iCmdType":99,"sProtocolVersion":"V1.0","sData":"00"}`, ReasonBadCmdType},
		{"iCmdType 17", `{"iCmdType":17,"sProtocolVersion":"V1.0","sData":"00"}`, ReasonBadCmdType},
		{"iCmdType -1", `{"iCmdType":-1,"sProtocolVersion":"V1.0","sData":"00"}`, ReasonBadCmdType},
		{"iCmdType -0", `{"iCmdType":-0,"sProtocolVersion":"V1.0","sData":"00"}`, ReasonBadCmdType},
		{"iCmdType string", `{"iCmdType":"2","sProtocolVersion":"V1.0","sData":"00"}`, ReasonBadCmdType},
		{"iCmdType float", `{"iCmdType":2.0,"sProtocolVersion":"V1.0","sData":"00"}`, ReasonBadCmdType},
		{"iCmdType exponent", `{"iCmdType":2e0,"sProtocolVersion":"V1.0","sData":"00"}`, ReasonBadCmdType},
		{"iCmdType null", `{"iCmdType":null,"sProtocolVersion":"V1.0","sData":"00"}`, ReasonBadCmdType},
		{"iCmdType bool", `{"iCmdType":true,"sProtocolVersion":"V1.0","sData":"00"}`, ReasonBadCmdType},
		{"iCmdType object", `{"iCmdType":{},"sProtocolVersion":"V1.0","sData":"00"}`, ReasonBadCmdType},
		{"iCmdType huge", `{"iCmdType":99999999999999999999999999,"sProtocolVersion":"V1.0","sData":"00"}`, ReasonBadCmdType},
		{"iCmdType huge exponent", `{"iCmdType":1e400,"sProtocolVersion":"V1.0","sData":"00"}`, ReasonBadCmdType},
		{"iAmsCmdType huge", `{"iCmdType":7,"iAmsCmdType":99999999999999999999999,"sProtocolVersion":"V1.0","sData":"00"}`, ReasonBadEnvelope},
		{"iAmsCmdType float", `{"iCmdType":7,"iAmsCmdType":702.5,"sProtocolVersion":"V1.0","sData":"00"}`, ReasonBadEnvelope},
		{"iAppCmdType string", `{"iCmdType":3,"iAppCmdType":"301","sProtocolVersion":"V1.0","sData":"00"}`, ReasonBadEnvelope},
		{"sData number", `{"iCmdType":2,"sProtocolVersion":"V1.0","sData":12}`, ReasonBadEnvelope},
		{"sMsgId object", `{"iCmdType":6,"sMsgId":{},"sProtocolVersion":"V1.0","sData":"00"}`, ReasonBadEnvelope},
		{"sData missing", `{"iCmdType":2,"sProtocolVersion":"V1.0"}`, ReasonBadEnvelope},
		{"sData empty", `{"iCmdType":1,"sProtocolVersion":"V1.0","sData":""}`, ReasonBadEnvelope},
		{"sData null", `{"iCmdType":0,"sProtocolVersion":"V1.0","sData":null}`, ReasonBadEnvelope},
		{"sProtocolVersion missing", `{"iCmdType":2,"sData":"00"}`, ReasonBadEnvelope},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := DecodeFrame([]byte(c.frame))
			if got := ReasonOf(err); got != c.want {
				t.Fatalf("reason = %q (%v), want %q", got, err, c.want)
			}
			if f != (Frame{}) {
				t.Fatalf("frame returned with an error: %+v", f)
			}
		})
	}
	// Accepted: unknown kinds without a body, whitespace, unknown fields,
	// 0 and 16.
	ok := []string{
		`{"iCmdType":4}`,
		`{"iCmdType":16,"sData":null}`,
		` { "iCmdType" : 0 , "sProtocolVersion" : "V1.0" , "sData" : "00" , "extra" : [1, {"a": null}] } `,
		`{"iCmdType":6,"sProtocolVersion":"V1.0","sMsgId":"ab","sData":"00","iAppCmdType":null}`,
	}
	for _, s := range ok {
		if _, err := DecodeFrame([]byte(s)); err != nil {
			t.Errorf("DecodeFrame(%s): %v", s, err)
		}
	}
}

func TestParseHandshakeRejects(t *testing.T) {
	keys := testPrivateKeys(t)
	pub := testPublicKey(t)
	const key1, iv1 = "8f14e45fceea167a5a36dedd4bea2543", "c9f0f895fb98ab91"
	enc := func(plain string) string {
		//lint:ignore SA1019 the test plays the firmware, which speaks PKCS#1 v1.5
		ct, err := rsa.EncryptPKCS1v15(rand.Reader, pub, []byte(plain))
		if err != nil {
			t.Fatal(err)
		}
		return hex.EncodeToString(ct)
	}
	sum := func(k, iv string) string { s := md5Hex(k, iv); return string(s[:]) }
	other, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	//lint:ignore SA1019 the test plays the firmware, which speaks PKCS#1 v1.5
	otherCT, err := rsa.EncryptPKCS1v15(rand.Reader, &other.PublicKey, keyIVMD5(key1, iv1))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		sData string
		want  Reason
	}{
		{"empty", "", ReasonBadHex},
		{"odd", "abc", ReasonBadHex},
		{"not hex", strings.Repeat("xy", 128), ReasonBadHex},
		{"too short for the key", strings.Repeat("00", 64), ReasonBadRSA},
		{"too long for the key", strings.Repeat("00", 256), ReasonBadRSA},
		{"right size, random", strings.Repeat("5a", 128), ReasonBadRSA},
		{"all ff", strings.Repeat("ff", 128), ReasonBadRSA},
		{"wrong key", hex.EncodeToString(otherCT), ReasonBadRSA},
		{"bad md5", enc(key1 + ":" + iv1 + ":" + strings.Repeat("0", 32)), ReasonBadMD5},
		{"uppercase md5", enc(key1 + ":" + iv1 + ":" + strings.ToUpper(sum(key1, iv1))), ReasonBadMD5},
		{"md5 missing", enc(key1 + ":" + iv1 + ":"), ReasonBadMD5},
		{"short key1", enc(key1[:31] + ":" + iv1 + ":" + sum(key1[:31], iv1)), ReasonBadHandshake},
		{"long key1", enc(key1 + "0:" + iv1 + ":" + sum(key1+"0", iv1)), ReasonBadHandshake},
		{"short iv1", enc(key1 + ":" + iv1[:15] + ":" + sum(key1, iv1[:15])), ReasonBadHandshake},
		{"two parts", enc(key1 + ":" + iv1), ReasonBadHandshake},
		{"four parts", enc(key1 + ":" + iv1 + ":" + sum(key1, iv1) + ":x"), ReasonBadHandshake},
		{"empty plaintext", enc(""), ReasonBadHandshake},
		{"space in key1", enc(" " + key1[1:] + ":" + iv1 + ":" + sum(" "+key1[1:], iv1)), ReasonBadHandshake},
		{"non-ASCII key1", enc("\xff" + key1[1:] + ":" + iv1 + ":" + sum("\xff"+key1[1:], iv1)), ReasonBadHandshake},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, err := ParseHandshake(keys, c.sData)
			if got := ReasonOf(err); got != c.want {
				t.Fatalf("reason = %q (%v), want %q", got, err, c.want)
			}
			if req != (HandshakeRequest{}) {
				t.Fatal("request returned with an error")
			}
			if msg := err.Error(); strings.Contains(msg, key1) || strings.Contains(msg, iv1) {
				t.Fatalf("error message leaks key material: %s", msg)
			}
		})
	}
	// The valid form is accepted (control for the cases above).
	if req, err := ParseHandshake(keys, enc(key1+":"+iv1+":"+sum(key1, iv1))); err != nil || req.Key1 != key1 || req.IV1 != iv1 {
		t.Fatalf("valid handshake: %v", err)
	}
}

func TestReplyRejects(t *testing.T) {
	good := HandshakeRequest{Key1: "8f14e45fceea167a5a36dedd4bea2543", IV1: "c9f0f895fb98ab91"}
	for _, c := range []struct {
		req       HandshakeRequest
		key2, iv2 string
	}{
		{HandshakeRequest{}, "45c48cce2e2d7fbdea1afc51c7c6ad26", "d3d9446802a44259"},
		{good, "45c48cce2e2d7fbdea1afc51c7c6ad2", "d3d9446802a44259"},
		{good, "45c48cce2e2d7fbdea1afc51c7c6ad26", "d3d9446802a4425"},
		{good, "45c48cce2e2d7fbdea1afc51c7c6ad2:", "d3d9446802a44259"},
	} {
		if _, err := c.req.ReplyWith(c.key2, c.iv2); ReasonOf(err) != ReasonBadHandshake {
			t.Errorf("ReplyWith(%q, %q): %v", c.key2, c.iv2, err)
		}
	}
	// A failing random source.
	if _, err := good.Reply(strings.NewReader("short")); err == nil || ReasonOf(err) != ReasonInternal {
		t.Errorf("Reply(short reader): %v", err)
	}
	if _, err := good.Reply(nil); err == nil {
		t.Error("Reply(nil) succeeded")
	}
	if _, _, err := NewHandshake(nil, rand.Reader); ReasonOf(err) != ReasonBadKey {
		t.Errorf("NewHandshake(nil): %v", err)
	}
	if _, _, err := NewHandshake(&rsa.PublicKey{}, rand.Reader); ReasonOf(err) != ReasonBadKey {
		t.Errorf("NewHandshake(empty key): %v", err)
	}

	// VerifyReply checks what the device receives.
	reply, err := good.ReplyWith("45c48cce2e2d7fbdea1afc51c7c6ad26", "d3d9446802a44259")
	if err != nil {
		t.Fatal(err)
	}
	k1, i1 := []byte(good.Key1), []byte(good.IV1)
	badMD5 := EncryptWith(k1, i1, []byte("45c48cce2e2d7fbdea1afc51c7c6ad26:d3d9446802a44259:"+strings.Repeat("1", 32)))
	short := EncryptWith(k1, i1, []byte("45c48cce:d3d9446802a44259:"+func() string { s := md5Hex("45c48cce", "d3d9446802a44259"); return string(s[:]) }()))
	for _, c := range []struct {
		sData string
		want  Reason
	}{
		{"", ReasonBadBlockSize},
		{"0", ReasonBadHex},
		{badMD5, ReasonBadMD5},
		{short, ReasonBadHandshake},
		{reply.SData[:len(reply.SData)-32], ReasonBadPadding},
	} {
		if _, _, _, err := good.VerifyReply(c.sData); ReasonOf(err) != c.want {
			t.Errorf("VerifyReply: %v, want %s", err, c.want)
		}
	}
	if _, _, _, err := (HandshakeRequest{}).VerifyReply(reply.SData); ReasonOf(err) != ReasonBadHandshake {
		t.Errorf("VerifyReply on an empty request: %v", err)
	}
}

func TestParseKeysRejects(t *testing.T) {
	priv := readTestdata(t, "cloud_rsa_private.pem")
	pubPEM := readTestdata(t, "cloud_rsa_public.pem")
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	ecPubDER, err := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	encrypted := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: []byte{1, 2, 3}})
	for name, in := range map[string][][]byte{
		"nothing":           nil,
		"empty":             {nil},
		"garbage":           {[]byte("not a key")},
		"public key":        {pubPEM},
		"good then garbage": {priv, []byte("x")},
		"corrupt PKCS#1":    {pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: []byte{0x30, 0x01}})},
		"corrupt PKCS#8":    {pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{0x30}})},
		"EC PKCS#8":         {pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER})},
		"encrypted":         {encrypted},
	} {
		keys, err := ParsePrivateKeys(in...)
		if ReasonOf(err) != ReasonBadKey || keys != nil {
			t.Errorf("ParsePrivateKeys(%s) = %d keys, %v", name, len(keys), err)
		}
	}
	for name, in := range map[string][]byte{
		"empty":          nil,
		"garbage":        []byte("-----BEGIN X-----"),
		"private key":    priv,
		"corrupt PKCS#1": pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: []byte{0x30}}),
		"corrupt PKIX":   pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{0x30}}),
		"EC PKIX":        pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecPubDER}),
	} {
		k, err := ParsePublicKey(in)
		if ReasonOf(err) != ReasonBadKey || k != nil {
			t.Errorf("ParsePublicKey(%s): %v", name, err)
		}
	}
}

func TestErrors(t *testing.T) {
	if ReasonOf(nil) != "" {
		t.Fatal("ReasonOf(nil) != \"\"")
	}
	if ReasonOf(errors.New("x")) != ReasonInternal {
		t.Fatal("plain error is not internal")
	}
	base := errors.New("cause")
	e := wrapError(ReasonBadRSA, "detail", base)
	wrapped := fmt.Errorf("ingest: device %s: %w", "sn", e)
	if ReasonOf(wrapped) != ReasonBadRSA {
		t.Fatal("ReasonOf does not look through wrapping")
	}
	if !errors.Is(wrapped, base) {
		t.Fatal("Unwrap does not reach the cause")
	}
	if !errors.Is(wrapped, &Error{Reason: ReasonBadRSA}) || errors.Is(wrapped, &Error{Reason: ReasonBadMD5}) {
		t.Fatal("errors.Is by reason")
	}
	var pe *Error
	if !errors.As(wrapped, &pe) || pe.Detail != "detail" {
		t.Fatal("errors.As")
	}
	if got, want := e.Error(), "protocol: bad_rsa: detail: cause"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	if got := newError(ReasonBadHex, "").Error(); got != "protocol: bad_hex" {
		t.Fatalf("Error() = %q", got)
	}
}

func TestRedaction(t *testing.T) {
	k := DeriveSession("8f14e45fceea167a5a36dedd4bea2543", "c9f0f895fb98ab91", "45c48cce2e2d7fbdea1afc51c7c6ad26", "d3d9446802a44259")
	key, iv := k.Strings()
	r := HandshakeReply{Key2: "45c48cce2e2d7fbdea1afc51c7c6ad26", IV2: "d3d9446802a44259", Session: k}
	q := HandshakeRequest{Key1: "8f14e45fceea167a5a36dedd4bea2543", IV1: "c9f0f895fb98ab91"}
	for _, s := range []string{
		fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s", k, k, k, k),
		fmt.Sprintf("%v %+v %#v", r, r, r), fmt.Sprintf("%v %+v %#v", q, q, q),
	} {
		for _, secret := range []string{key, iv, r.Key2, r.IV2, q.Key1, q.IV1} {
			if strings.Contains(s, secret) {
				t.Fatalf("%q leaks a secret", s)
			}
		}
	}
	if k.IsZero() || !(SessionKey{}).IsZero() {
		t.Fatal("IsZero")
	}
}

// The hand-written CBC loops agree with crypto/cipher's.
func TestCBCMatchesStdlib(t *testing.T) {
	key := []byte("f5bd4ad2cc7566b27cf2b1f9af725226")
	iv := []byte("88a7a0e980d4314b")
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n <= 8; n++ {
		pt := make([]byte, 16*n)
		for i := range pt {
			pt[i] = byte(i*7 + n)
		}
		want := make([]byte, len(pt))
		cipher.NewCBCEncrypter(block, iv).CryptBlocks(want, pt)
		got := append([]byte(nil), pt...)
		cbcEncrypt(block, iv, got)
		if hex.EncodeToString(got) != hex.EncodeToString(want) {
			t.Fatalf("cbcEncrypt(%d blocks) differs", n)
		}
		cbcDecrypt(block, iv, got)
		if hex.EncodeToString(got) != hex.EncodeToString(pt) {
			t.Fatalf("cbcDecrypt(%d blocks) differs", n)
		}
	}
}
