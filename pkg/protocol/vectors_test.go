package protocol

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"reflect"
	"testing"
)

func TestVectorHandshake(t *testing.T) {
	v := loadVectors(t)
	keys := testPrivateKeys(t)
	hs := v.Handshake

	req, err := DecodeFrame(hs.Request)
	if err != nil {
		t.Fatalf("DecodeFrame(request): %v", err)
	}
	if req.CmdType != CmdHandshake || req.ProtocolVersion != v.ProtocolVersion {
		t.Fatalf("request frame = %+v", req)
	}

	// The raw RSA block decrypts to request_plaintext.
	ct, err := hex.DecodeString(req.Data)
	if err != nil {
		t.Fatal(err)
	}
	//lint:ignore SA1019 the test plays the firmware, which speaks PKCS#1 v1.5
	pt, err := rsa.DecryptPKCS1v15(nil, keys[0], ct)
	if err != nil {
		t.Fatalf("RSA decrypt: %v", err)
	}
	if string(pt) != hs.RequestPlaintext {
		t.Fatalf("RSA plaintext = %q, want %q", pt, hs.RequestPlaintext)
	}
	if got := string(keyIVMD5(hs.DeviceKey1, hs.DeviceIV1)); got != hs.RequestPlaintext {
		t.Fatalf("keyIVMD5 = %q, want %q", got, hs.RequestPlaintext)
	}

	hr, err := ParseHandshake(keys, req.Data)
	if err != nil {
		t.Fatalf("ParseHandshake: %v", err)
	}
	if hr.Key1 != hs.DeviceKey1 || hr.IV1 != hs.DeviceIV1 {
		t.Fatalf("ParseHandshake: wrong key1/iv1")
	}

	reply, err := hr.ReplyWith(hs.CloudKey2, hs.CloudIV2)
	if err != nil {
		t.Fatalf("ReplyWith: %v", err)
	}
	wantReply, err := DecodeFrame(hs.Reply)
	if err != nil {
		t.Fatalf("DecodeFrame(reply): %v", err)
	}
	if reply.SData != wantReply.Data {
		t.Fatalf("reply sData =\n%s\nwant\n%s", reply.SData, wantReply.Data)
	}
	if reply.Key2 != hs.CloudKey2 || reply.IV2 != hs.CloudIV2 {
		t.Fatalf("reply key2/iv2 differ")
	}
	// The reply frame as the cloud sends it decodes back to the vector's.
	out := Frame{CmdType: CmdHandshake, ProtocolVersion: req.ProtocolVersion, Data: reply.SData}
	if got, err := DecodeFrame(out.Encode()); err != nil || got != wantReply {
		t.Fatalf("reply frame round trip: %+v, %v; want %+v", got, err, wantReply)
	}

	rp, err := DecryptWith([]byte(hs.DeviceKey1), []byte(hs.DeviceIV1), reply.SData)
	if err != nil || string(rp) != hs.ReplyPlaintext {
		t.Fatalf("reply plaintext = %q, %v; want %q", rp, err, hs.ReplyPlaintext)
	}

	wantSession := vectorSession(t, v)
	if reply.Session != wantSession {
		key, iv := reply.Session.Strings()
		t.Fatalf("session = %q/%q, want %q/%q", key, iv, hs.SessionKey, hs.SessionIV)
	}
	if got := DeriveSession(hs.DeviceKey1, hs.DeviceIV1, hs.CloudKey2, hs.CloudIV2); got != wantSession {
		t.Fatal("DeriveSession differs from the vector")
	}

	// Device side.
	key2, iv2, s, err := hr.VerifyReply(wantReply.Data)
	if err != nil {
		t.Fatalf("VerifyReply: %v", err)
	}
	if key2 != hs.CloudKey2 || iv2 != hs.CloudIV2 || s != wantSession {
		t.Fatal("VerifyReply: wrong key2/iv2/session")
	}
}

// downBody is the Go value whose MarshalASCII must reproduce a down frame's
// plaintext byte for byte.
func downBody(name string) any {
	switch name {
	case "heartbeat reply":
		return HeartbeatReply{Online: 1}
	case "bind status after config":
		return BindStatus{GetConfig: 1, BindStatus: 1}
	case "reboot":
		return Reboot{Reboot: 1}
	case "osd name (non-ASCII, escaped as the seed's ujson does)":
		return OSDName{OsdName: OSDText{Enable: 1, Text: "李小龙测试"}}
	case "stream url":
		return StreamURLReply{
			IsForbidden: 0,
			PushURL:     "rtmp://vms.example.test/live/0505050505050003?sign=abc&t=1574321354",
			Index:       1574321234,
			ExpiresTime: 1574321354.0,
			Protocol:    "rtmp",
		}
	}
	return nil
}

// upBody is a pointer to the typed body an up frame decodes into.
func upBody(name string) any {
	switch name {
	case "config upload":
		return &Configuration{}
	case "heartbeat":
		return &Heartbeat{}
	case "reply to get-sd-info":
		return &SDCardInfo{}
	case "stream url request":
		return &StreamURLRequest{}
	case "picture upload parameters request":
		return &UploadParamsRequest{}
	}
	return nil
}

func TestVectorFrames(t *testing.T) {
	v := loadVectors(t)
	k := vectorSession(t, v)
	remarshalled := 0
	for _, vf := range v.Frames {
		t.Run(vf.Name, func(t *testing.T) {
			f, err := DecodeFrame(vf.Frame)
			if err != nil {
				t.Fatalf("DecodeFrame: %v", err)
			}
			// The decoded envelope equals a plain encoding/json decode.
			var plain Frame
			if err := json.Unmarshal(vf.Frame, &plain); err != nil {
				t.Fatal(err)
			}
			if f != plain {
				t.Fatalf("DecodeFrame = %+v, want %+v", f, plain)
			}
			if f2, err := DecodeFrame(f.Encode()); err != nil || f2 != f {
				t.Fatalf("Encode round trip: %+v, %v", f2, err)
			}

			pt, err := DecryptBody(k, f.Data)
			if err != nil {
				t.Fatalf("DecryptBody: %v", err)
			}
			if string(pt) != vf.Plaintext {
				t.Fatalf("plaintext = %q, want %q", pt, vf.Plaintext)
			}
			if got := EncryptBody(k, []byte(vf.Plaintext)); got != f.Data {
				t.Fatalf("EncryptBody =\n%s\nwant\n%s", got, f.Data)
			}
			buf := make([]byte, 3, 8)
			if got, err := AppendDecryptBody(buf, k, f.Data); err != nil || string(got[3:]) != vf.Plaintext {
				t.Fatalf("AppendDecryptBody = %q, %v", got, err)
			}

			switch vf.Direction {
			case "down":
				body := downBody(vf.Name)
				if body == nil {
					t.Fatalf("no Go value for down frame %q", vf.Name)
				}
				b, err := MarshalASCII(body)
				if err != nil {
					t.Fatal(err)
				}
				if string(b) != vf.Plaintext {
					t.Fatalf("MarshalASCII =\n%s\nwant\n%s", b, vf.Plaintext)
				}
				// And the typed value decodes back from the frame.
				ptr := reflect.New(reflect.TypeOf(body))
				if err := DecryptJSON(k, f.Data, ptr.Interface()); err != nil {
					t.Fatalf("DecryptJSON: %v", err)
				}
				if !reflect.DeepEqual(ptr.Elem().Interface(), body) {
					t.Fatalf("DecryptJSON = %+v, want %+v", ptr.Elem().Interface(), body)
				}
				remarshalled++
			case "up":
				body := upBody(vf.Name)
				if body == nil {
					t.Fatalf("no typed body for up frame %q", vf.Name)
				}
				if err := DecryptJSON(k, f.Data, body); err != nil {
					t.Fatalf("DecryptJSON: %v", err)
				}
				// The simulator re-creates the uplinks from the typed bodies.
				b, err := MarshalASCII(body)
				if err != nil {
					t.Fatal(err)
				}
				if string(b) != vf.Plaintext {
					t.Fatalf("MarshalASCII(typed) =\n%s\nwant\n%s", b, vf.Plaintext)
				}
			default:
				t.Fatalf("direction %q", vf.Direction)
			}
		})
	}
	if remarshalled < 5 {
		t.Fatalf("re-marshalled %d down frames, want all 5", remarshalled)
	}
}

func TestVectorTypedUplinks(t *testing.T) {
	v := loadVectors(t)
	k := vectorSession(t, v)
	byName := map[string]Frame{}
	for _, vf := range v.Frames {
		f, err := DecodeFrame(vf.Frame)
		if err != nil {
			t.Fatal(err)
		}
		byName[vf.Name] = f
	}
	var c Configuration
	if err := DecryptJSON(k, byName["config upload"].Data, &c); err != nil {
		t.Fatal(err)
	}
	want := Configuration{
		DeviceSn: v.SN, HwVersion: "V100", ModelName: "S2111-SEP-W2", IPAddr: "192.168.1.243",
		MacAddr: "8e:79:a1:37:7f:65", VPNIPAddr: "192.168.1.243", FwVersion: "V1.0.0_20190903",
		AlphaVer: "V1.0.0", AiModelVer: "V1.0.0", IEVer: "V1.0.0", ChnCnt: 3, AlarmIn: 2, AlarmOut: 1,
		NetMethod: 0, TFCardState: 6, TFCardCapacitySize: 33554432, TFCardUseSize: 33554432,
	}
	if c != want {
		t.Fatalf("config = %+v\nwant %+v", c, want)
	}
	var hb Heartbeat
	if err := DecryptJSON(k, byName["heartbeat"].Data, &hb); err != nil || hb != (Heartbeat{DeviceSn: v.SN, HeartBeat: 1}) {
		t.Fatalf("heartbeat = %+v, %v", hb, err)
	}
	var su StreamURLRequest
	if err := DecryptJSON(k, byName["stream url request"].Data, &su); err != nil || su != (StreamURLRequest{Index: 1574321234, ExpiresTime: 1574321354}) {
		t.Fatalf("stream url request = %+v, %v", su, err)
	}
	if f := byName["stream url request"]; f.CmdType != CmdAms || f.AmsCmdType != AmsStreamURL || f.MsgID == "" {
		t.Fatalf("stream url request frame = %+v", f)
	}
	var up UploadParamsRequest
	if err := DecryptJSON(k, byName["picture upload parameters request"].Data, &up); err != nil || up.Index != 1574321234 {
		t.Fatalf("upload params request = %+v, %v", up, err)
	}
	if f := byName["picture upload parameters request"]; f.AmsCmdType != AmsUploadParams {
		t.Fatalf("upload params frame = %+v", f)
	}
}

func TestPKCS8PrivateKey(t *testing.T) {
	v := loadVectors(t)
	keys := testPrivateKeys(t)
	der, err := x509.MarshalPKCS8PrivateKey(keys[0])
	if err != nil {
		t.Fatal(err)
	}
	p8 := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	k8, err := ParsePrivateKeys(p8)
	if err != nil {
		t.Fatalf("ParsePrivateKeys(PKCS#8): %v", err)
	}
	req, err := DecodeFrame(v.Handshake.Request)
	if err != nil {
		t.Fatal(err)
	}
	hr, err := ParseHandshake(k8, req.Data)
	if err != nil || hr.Key1 != v.Handshake.DeviceKey1 || hr.IV1 != v.Handshake.DeviceIV1 {
		t.Fatalf("ParseHandshake with PKCS#8 key: %v", err)
	}
}

func TestKeyRotation(t *testing.T) {
	v := loadVectors(t)
	good := testPrivateKeys(t)[0]
	other1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	other2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	req, err := DecodeFrame(v.Handshake.Request)
	if err != nil {
		t.Fatal(err)
	}

	// Several PEM blocks in one argument, the right key last.
	var bundle bytes.Buffer
	for _, k := range []*rsa.PrivateKey{other2048, other1024} {
		if err := pem.Encode(&bundle, &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := ParsePrivateKeys(bundle.Bytes(), readTestdata(t, "cloud_rsa_private.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 3 {
		t.Fatalf("got %d keys, want 3", len(keys))
	}
	hr, err := ParseHandshake(keys, req.Data)
	if err != nil || hr.Key1 != v.Handshake.DeviceKey1 {
		t.Fatalf("rotation: %v", err)
	}
	// nil entries are skipped.
	if _, err := ParseHandshake([]*rsa.PrivateKey{nil, other1024, good}, req.Data); err != nil {
		t.Fatalf("rotation with nil key: %v", err)
	}
	// Only wrong keys: bad_rsa.
	_, err = ParseHandshake([]*rsa.PrivateKey{other1024, other2048}, req.Data)
	if ReasonOf(err) != ReasonBadRSA {
		t.Fatalf("wrong keys: %v", err)
	}
	_, err = ParseHandshake(nil, req.Data)
	if ReasonOf(err) != ReasonBadRSA {
		t.Fatalf("no keys: %v", err)
	}
}

func TestDeviceSideHandshake(t *testing.T) {
	keys := testPrivateKeys(t)
	pubs := []*rsa.PublicKey{testPublicKey(t)}
	der, err := x509.MarshalPKIXPublicKey(&keys[0].PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pkix, err := ParsePublicKey(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	if err != nil {
		t.Fatalf("ParsePublicKey(PKIX): %v", err)
	}
	pubs = append(pubs, pkix)
	for _, pub := range pubs {
		if !pub.Equal(&keys[0].PublicKey) {
			t.Fatal("public key differs from the private key's")
		}
		dev, sData, err := NewHandshake(pub, rand.Reader)
		if err != nil {
			t.Fatalf("NewHandshake: %v", err)
		}
		if len(dev.Key1) != 32 || len(dev.IV1) != 16 {
			t.Fatalf("key1/iv1 lengths %d/%d", len(dev.Key1), len(dev.IV1))
		}
		cloud, err := ParseHandshake(keys, sData)
		if err != nil {
			t.Fatalf("ParseHandshake: %v", err)
		}
		if cloud != dev {
			t.Fatal("cloud saw another key1/iv1 than the device sent")
		}
		reply, err := cloud.Reply(rand.Reader)
		if err != nil {
			t.Fatalf("Reply: %v", err)
		}
		if len(reply.Key2) != 32 || len(reply.IV2) != 16 || !isLowerHex(reply.Key2) || !isLowerHex(reply.IV2) {
			t.Fatalf("key2/iv2 not lowercase hex of 32/16 chars")
		}
		key2, iv2, s, err := dev.VerifyReply(reply.SData)
		if err != nil {
			t.Fatalf("VerifyReply: %v", err)
		}
		if key2 != reply.Key2 || iv2 != reply.IV2 || s != reply.Session {
			t.Fatal("device and cloud disagree on the session")
		}
		// And the session works both ways.
		body := []byte(`{"iOnline":1}`)
		if got, err := DecryptBody(s, EncryptBody(reply.Session, body)); err != nil || !bytes.Equal(got, body) {
			t.Fatalf("session round trip: %q, %v", got, err)
		}
	}
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
