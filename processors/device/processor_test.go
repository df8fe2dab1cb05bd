package device

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/schemas"
)

var msgIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestHandshakeVector(t *testing.T) {
	setup(t)
	p := newTestProcessor(t, nil)
	f := &feeder{tb: t, p: p}
	in := f.frame(vectors.SN, vectors.Handshake.Request, testT0)
	s, o := run(t, p, testT0, nil, in)

	if len(o.rejects) != 0 || len(o.events) != 1 || len(o.downlinks) != 1 || len(o.presence) != 1 {
		t.Fatalf("outputs: %+v", o)
	}
	e := o.events[0]
	if e.Kind != schemas.EventHandshake || e.Body != "" || e.CmdType != 0 || e.ProtocolVersion != "V1.0" {
		t.Errorf("event = %+v", e)
	}
	if want := fmt.Sprintf("%s/%d/%d", in.Topic, in.Partition, in.Offset); e.EventID != want {
		t.Errorf("event id %q, want %q", e.EventID, want)
	}
	d := o.downlinks[0]
	if d.Purpose != PurposeHandshakeReply || d.CmdType != 0 || d.Topic != "/ivms/sub/"+vectors.SN || d.MsgID != "" {
		t.Errorf("downlink = %+v", d)
	}
	fr, err := protocol.DecodeFrame(d.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if fr.ProtocolVersion != vectors.ProtocolVersion || fr.CmdType != 0 {
		t.Errorf("reply frame = %+v", fr)
	}
	// The reply decrypts with the device's key1 / iv1.
	req := protocol.HandshakeRequest{Key1: vectors.Handshake.Key1, IV1: vectors.Handshake.IV1}
	key2, iv2, sess, err := req.VerifyReply(fr.Data)
	if err != nil {
		t.Fatalf("reply does not verify with key1/iv1: %v", err)
	}
	// With key2 / iv2 equal to the vector's, the reply is the vector's.
	if key2 != vectors.Handshake.Key2 || iv2 != vectors.Handshake.IV2 {
		t.Fatalf("key2/iv2 = %s/%s, want the vector's", key2, iv2)
	}
	if fr.Data != vectors.Handshake.Reply.Data {
		t.Errorf("reply sData differs from the vector's")
	}
	if !bytes.Equal(d.Payload, vectors.Handshake.Reply.Encode()) {
		t.Errorf("reply payload %s, want %s", d.Payload, vectors.Handshake.Reply.Encode())
	}
	if sess != vectorSession(t) || *s.session != sess {
		t.Error("session is not the vector's")
	}
	if pr := o.presence[0]; !pr.Online || pr.Reason != schemas.PresenceFirstFrame || pr.Seq != 1 {
		t.Errorf("presence = %+v", pr)
	}
	if !s.SessionEstablishedAt().Equal(testT0) {
		t.Errorf("session established at %v", s.SessionEstablishedAt())
	}
}

func TestHandshakeRedelivered(t *testing.T) {
	setup(t)
	p := newTestProcessor(t, rand.Reader) // a real random source: a second reply would differ
	f := &feeder{tb: t, p: p}
	s1, o1 := run(t, p, testT0, nil, f.frame(vectors.SN, vectors.Handshake.Request, testT0))
	s2, o2 := run(t, p, testT0.Add(time.Second), s1, f.frame(vectors.SN, vectors.Handshake.Request, testT0.Add(time.Second)))
	if len(o2.downlinks) != 1 || len(o2.events) != 1 || len(o2.rejects) != 0 {
		t.Fatalf("redelivery outputs: %+v", o2)
	}
	if !bytes.Equal(o1.downlinks[0].Payload, o2.downlinks[0].Payload) {
		t.Error("redelivered handshake got a different reply")
	}
	if o1.downlinks[0].FrameID == o2.downlinks[0].FrameID {
		t.Error("two downlinks share a frame id")
	}
	if *s1.session != *s2.session || !bytes.Equal(s1.sealedSession, s2.sealedSession) || !s1.sessionAt.Equal(s2.sessionAt) {
		t.Error("redelivered handshake changed the session")
	}
	if o2.events[0].Kind != schemas.EventHandshake {
		t.Errorf("event %+v", o2.events[0])
	}
	// After a state round trip too.
	b, err := p.EncodeState(vectors.SN, s2)
	if err != nil {
		t.Fatal(err)
	}
	s3, err := p.DecodeState(vectors.SN, b)
	if err != nil {
		t.Fatal(err)
	}
	_, o3 := run(t, p, testT0.Add(2*time.Second), s3, f.frame(vectors.SN, vectors.Handshake.Request, testT0))
	if len(o3.downlinks) != 1 || !bytes.Equal(o1.downlinks[0].Payload, o3.downlinks[0].Payload) {
		t.Error("redelivered handshake after restore got a different reply")
	}

	// A new request (another sData) gets a new session.
	req, sData, err := protocol.NewHandshake(testPub, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	newReq := protocol.Frame{CmdType: 0, ProtocolVersion: "V1.1", Data: sData}.Encode()
	s4, o4 := run(t, p, testT0.Add(3*time.Second), s2, f.frame(vectors.SN, newReq, testT0.Add(3*time.Second)))
	if len(o4.downlinks) != 1 {
		t.Fatalf("outputs %+v", o4)
	}
	fr, _ := protocol.DecodeFrame(o4.downlinks[0].Payload)
	_, _, sess, err := req.VerifyReply(fr.Data)
	if err != nil {
		t.Fatal(err)
	}
	if fr.ProtocolVersion != "V1.1" {
		t.Errorf("reply does not echo the protocol version: %q", fr.ProtocolVersion)
	}
	if *s4.session != sess || *s4.session == *s2.session {
		t.Error("a new handshake did not replace the session")
	}
}

func TestHeartbeatVector(t *testing.T) {
	p, f, s := withSession(t)
	hb, plain := vectorFrame(t, "heartbeat")
	at := testT0.Add(30 * time.Second)
	s2, o := run(t, p, at, s, f.frame(vectors.SN, hb, at))
	if len(o.rejects) != 0 || len(o.events) != 1 || len(o.downlinks) != 1 {
		t.Fatalf("outputs: %+v", o)
	}
	if e := o.events[0]; e.Kind != schemas.EventHeartbeat || e.Body != plain || e.CmdType != 2 {
		t.Errorf("event = %+v", e)
	}
	if len(o.presence) != 0 {
		t.Errorf("heartbeat of an online device made a transition: %+v", o.presence)
	}
	want, _ := vectorFrame(t, "heartbeat reply")
	d := o.downlinks[0]
	if d.Purpose != PurposeHeartbeatReply || d.CmdType != 2 {
		t.Errorf("downlink %+v", d)
	}
	var wf protocol.Frame
	if err := json.Unmarshal(want, &wf); err != nil {
		t.Fatal(err)
	}
	got, err := protocol.DecodeFrame(d.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if got != wf {
		t.Errorf("reply frame %+v, want %+v", got, wf)
	}
	if !bytes.Equal(d.Payload, want) {
		t.Errorf("reply bytes %s, want %s", d.Payload, want)
	}
	if dl, ok := p.Deadline(s2); !ok || !dl.Equal(at.Add(90*time.Second)) {
		t.Errorf("deadline %v %v, want %v", dl, ok, at.Add(90*time.Second))
	}
}

func TestConfigurationVector(t *testing.T) {
	cfg, plain := vectorFrame(t, "config upload")
	bindVector, _ := vectorFrame(t, "bind status after config")
	osdVector, _ := vectorFrame(t, "osd name (non-ASCII, escaped as the seed's ujson does)")
	var bindFrame, osdFrame protocol.Frame
	if err := json.Unmarshal(bindVector, &bindFrame); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(osdVector, &osdFrame); err != nil {
		t.Fatal(err)
	}

	t.Run("unregistered", func(t *testing.T) {
		p, f, s := withSession(t)
		_, o := run(t, p, testT0, s, f.frame(vectors.SN, cfg, testT0))
		if len(o.events) != 1 || o.events[0].Kind != schemas.EventConfiguration || o.events[0].Body != plain {
			t.Fatalf("events %+v", o.events)
		}
		if len(o.downlinks) != 1 {
			t.Fatalf("downlinks %+v", o.downlinks)
		}
		fr, body := decryptDownlink(t, o.downlinks[0])
		if body != `{"iGetconfig":1,"iBindStatus":0}` || fr.CmdType != 3 || fr.AppCmdType != 301 || !msgIDPattern.MatchString(fr.MsgID) {
			t.Errorf("301 = %+v %s", fr, body)
		}
		if o.downlinks[0].MsgID != fr.MsgID || o.downlinks[0].SubType != 301 || o.downlinks[0].Purpose != PurposeBindStatus {
			t.Errorf("downlink record %+v", o.downlinks[0])
		}
	})
	t.Run("bound", func(t *testing.T) {
		p, f, s := withSession(t)
		s = register(t, p, f, s, true, "李小龙测试", "")
		_, o := run(t, p, testT0, s, f.frame(vectors.SN, cfg, testT0))
		if len(o.downlinks) != 2 {
			t.Fatalf("downlinks %+v", o.downlinks)
		}
		osd, osdBody := decryptDownlink(t, o.downlinks[0])
		bind, bindBody := decryptDownlink(t, o.downlinks[1])
		if osd.AppCmdType != 333 || o.downlinks[0].Purpose != PurposeDeviceName || osd.Data != osdFrame.Data {
			t.Errorf("333 = %+v %s", osd, osdBody)
		}
		if bind.AppCmdType != 301 || bind.Data != bindFrame.Data || bindBody != `{"iGetconfig":1,"iBindStatus":1}` {
			t.Errorf("301 = %+v %s", bind, bindBody)
		}
		if osd.MsgID == bind.MsgID || !msgIDPattern.MatchString(osd.MsgID) {
			t.Errorf("message ids %q %q", osd.MsgID, bind.MsgID)
		}
		// Apart from the fresh sMsgId, the frames are the vector's.
		bind.MsgID, osd.MsgID = bindFrame.MsgID, osdFrame.MsgID
		if bind != bindFrame || osd != osdFrame {
			t.Errorf("frames %+v %+v, want %+v %+v", bind, osd, bindFrame, osdFrame)
		}
	})
	t.Run("bound without a name", func(t *testing.T) {
		p, f, s := withSession(t)
		s = register(t, p, f, s, true, "", "")
		_, o := run(t, p, testT0, s, f.frame(vectors.SN, cfg, testT0))
		if len(o.downlinks) != 1 || o.downlinks[0].SubType != 301 {
			t.Fatalf("downlinks %+v", o.downlinks)
		}
	})
}

func TestStreamURLVector(t *testing.T) {
	req, plain := vectorFrame(t, "stream url request")
	t.Run("bound", func(t *testing.T) {
		p, f, s := withSession(t)
		s = register(t, p, f, s, true, "cam", "")
		_, o := run(t, p, testT0, s, f.frame(vectors.SN, req, testT0))
		if len(o.events) != 1 || o.events[0].Kind != schemas.EventStreamRequest || o.events[0].Body != plain ||
			o.events[0].SubType != 702 || o.events[0].MsgID != "0a1b2c3d4e5f60718293a4b5c6d7e8f9" {
			t.Fatalf("events %+v", o.events)
		}
		if len(o.downlinks) != 1 {
			t.Fatalf("downlinks %+v", o.downlinks)
		}
		fr, body := decryptDownlink(t, o.downlinks[0])
		if fr.CmdType != 7 || fr.AmsCmdType != 702 || !msgIDPattern.MatchString(fr.MsgID) || o.downlinks[0].Purpose != PurposeStreamURL {
			t.Errorf("frame %+v", fr)
		}
		var r protocol.StreamURLReply
		if err := json.Unmarshal([]byte(body), &r); err != nil {
			t.Fatal(err)
		}
		if r.Index != 1574321234 || r.ExpiresTime != 1574321354 || r.Protocol != "rtmp" || r.IsForbidden != 0 {
			t.Errorf("reply %s", body)
		}
		if !strings.Contains(body, `"iExpiresTime":1574321354.0,`) || !strings.Contains(body, `"pushurl":"rtmp:\/\/vms.example.test\/live\/0505050505050003?exp=1574321354&sig=`) {
			t.Errorf("reply body %s", body)
		}
		if err := VerifyStreamURL(streamKey, r.PushURL, testT0); err != nil {
			t.Errorf("push URL does not verify: %v", err)
		}
		if err := VerifyStreamURL(streamKey, r.PushURL, time.Unix(1574321354, 0)); err != ErrStreamURLExpired {
			t.Errorf("push URL at expiry: %v", err)
		}
		if err := VerifyStreamURL([]byte("another secret.."), r.PushURL, testT0); err != ErrStreamURLSignature {
			t.Errorf("push URL with another secret: %v", err)
		}
		tampered := strings.Replace(r.PushURL, vectors.SN, "0505050505050004", 1)
		if err := VerifyStreamURL(streamKey, tampered, testT0); err != ErrStreamURLSignature {
			t.Errorf("push URL for another device: %v", err)
		}
	})
	t.Run("registration stream_url and default expiry", func(t *testing.T) {
		p, f, s := withSession(t)
		s = register(t, p, f, s, true, "cam", "rtmp://edge.example.test:1935/push/")
		now := testT0.Add(time.Hour) // the device's iExpiresTime is now in the past
		_, o := run(t, p, now, s, f.frame(vectors.SN, req, now))
		_, body := decryptDownlink(t, o.downlinks[0])
		var r protocol.StreamURLReply
		if err := json.Unmarshal([]byte(body), &r); err != nil {
			t.Fatal(err)
		}
		exp := now.Add(2 * time.Minute).Unix()
		if int64(r.ExpiresTime) != exp || !strings.HasPrefix(r.PushURL, fmt.Sprintf("rtmp://edge.example.test:1935/push/%s?exp=%d&sig=", vectors.SN, exp)) {
			t.Errorf("reply %s", body)
		}
		if err := VerifyStreamURL(streamKey, r.PushURL, now); err != nil {
			t.Error(err)
		}
	})
	t.Run("unbound: event, no reply", func(t *testing.T) {
		p, f, s := withSession(t)
		s = register(t, p, f, s, false, "cam", "")
		_, o := run(t, p, testT0, s, f.frame(vectors.SN, req, testT0))
		if len(o.events) != 1 || len(o.downlinks) != 0 || len(o.rejects) != 0 {
			t.Fatalf("outputs %+v", o)
		}
	})
}

func TestUploadParamsVector(t *testing.T) {
	req, plain := vectorFrame(t, "picture upload parameters request")
	p, f, s := withSession(t)
	s = register(t, p, f, s, true, "cam", "") // credentials only for registered, bound devices
	_, o := run(t, p, testT0, s, f.frame(vectors.SN, req, testT0))
	if len(o.events) != 1 || o.events[0].Kind != schemas.EventUploadRequest || o.events[0].Body != plain {
		t.Fatalf("events %+v", o.events)
	}
	if len(o.downlinks) != 1 {
		t.Fatalf("downlinks %+v", o.downlinks)
	}
	fr, body := decryptDownlink(t, o.downlinks[0])
	if fr.AmsCmdType != 703 || !msgIDPattern.MatchString(fr.MsgID) {
		t.Errorf("frame %+v", fr)
	}
	var r uploadParams
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatal(err)
	}
	h := r.HTTP
	if r.Index != 1574321234 || r.UploadMethod != "http" || h.HostURL != testUploads.HostURL || h.Bucket != "pictures" ||
		h.ObjectPath != "ai_engine_imgs/"+vectors.SN || h.CallbackURL != testUploads.CallbackURL {
		t.Errorf("reply %s", body)
	}
	sn, exp, err := ParseUploadAccessKey(h.AccessKey)
	if err != nil || sn != vectors.SN || !exp.Equal(testT0.Add(time.Hour)) {
		t.Errorf("access key %q: %v %v %v", h.AccessKey, sn, exp, err)
	}
	if h.SecretKey != DeriveUploadSecret(uploadKey, h.AccessKey, "pictures", "ai_engine_imgs/"+vectors.SN) || len(h.SecretKey) != 40 {
		t.Errorf("secret key is not the derived one")
	}
	if !strings.HasPrefix(body, `{"isForBidden":0,"uploadmethod":"http","ftp":{"ftpurl":"","ftpport":"","ftpuser":"","ftppassword":"","ftppath":""},"http":{"hosturl":"https:\/\/ks3.example.test",`) {
		t.Errorf("body layout: %s", body)
	}
}

func TestUploadLongTermKeysNeedTheFlag(t *testing.T) {
	cfg := testConfig(t, nil)
	cfg.Upload.Credentials = StaticUploadKeys{AccessKey: "AK", SecretKey: "SK"}
	if _, err := New(cfg); err == nil {
		t.Fatal("static keys accepted without AllowLongTermKeys")
	}
	cfg.Upload.AllowLongTermKeys = true
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s := fmt.Sprintf("%v %#v", cfg.Upload.Credentials, cfg.Upload.Credentials); strings.Contains(s, "SK") {
		t.Errorf("static keys print their secret: %s", s)
	}
	f := &feeder{tb: t, p: p}
	s, _ := run(t, p, testT0, nil, f.frame(vectors.SN, vectors.Handshake.Request, testT0))
	s = register(t, p, f, s, true, "cam", "")
	req, _ := vectorFrame(t, "picture upload parameters request")
	_, o := run(t, p, testT0, s, f.frame(vectors.SN, req, testT0))
	if len(o.downlinks) != 1 {
		t.Fatalf("outputs %+v", o)
	}
	_, body := decryptDownlink2(t, o.downlinks[0], s)
	if !strings.Contains(body, `"access_key":"AK","secret_key":"SK"`) {
		t.Errorf("body %s", body)
	}
}

func decryptDownlink2(t *testing.T, d schemas.Downlink, s *State) (protocol.Frame, string) {
	fr, err := protocol.DecodeFrame(d.Payload)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := protocol.DecryptBody(*s.session, fr.Data)
	if err != nil {
		t.Fatal(err)
	}
	return fr, string(pt)
}

func TestReplyAndUnknownKinds(t *testing.T) {
	p, f, s := withSession(t)
	sess := vectorSession(t)
	enc := func(body string) string { return protocol.EncryptBody(sess, []byte(body)) }
	reply, plain := vectorFrame(t, "reply to get-sd-info")

	tests := []struct {
		name    string
		frame   []byte
		kind    string
		sub     int32
		msgID   string
		body    string
		replies int
	}{
		{"reply (6)", reply, schemas.EventReply, 0, "5d0c3f6a9b2e4c7f8a1b2c3d4e5f6a7b", plain, 0},
		{"stream control answer (704)",
			protocol.Frame{CmdType: 7, ProtocolVersion: "V1.0", AmsCmdType: 704, MsgID: "m1", Data: enc(`{"iResult":0}`)}.Encode(),
			schemas.EventReply, 704, "m1", `{"iResult":0}`, 0},
		{"upload control answer (705)",
			protocol.Frame{CmdType: 7, ProtocolVersion: "V1.0", AmsCmdType: 705, Data: enc(`{"iResult":1}`)}.Encode(),
			schemas.EventReply, 705, "", `{"iResult":1}`, 0},
		{"unknown ams sub-kind (799)",
			protocol.Frame{CmdType: 7, ProtocolVersion: "V1.0", AmsCmdType: 799, Data: enc(`{"x":1}`)}.Encode(),
			schemas.EventUnknown, 799, "", `{"x":1}`, 0},
		{"unknown kind 4, decryptable",
			protocol.Frame{CmdType: 4, ProtocolVersion: "V1.0", Data: enc(`{"a":"b"}`)}.Encode(),
			schemas.EventUnknown, 0, "", `{"a":"b"}`, 0},
		{"unknown kind 16, not decryptable: raw", []byte(`{"iCmdType":16,"sData":"zz"}`),
			schemas.EventUnknown, 0, "", `{"iCmdType":16,"sData":"zz"}`, 0},
		{"unknown kind 9 without sData: raw", []byte(`{"iCmdType":9,"foo":[1,2]}`),
			schemas.EventUnknown, 0, "", `{"iCmdType":9,"foo":[1,2]}`, 0},
		{"command kind 3 sent up",
			protocol.Frame{CmdType: 3, ProtocolVersion: "V1.0", AppCmdType: 313, Data: enc(`{"iReboot":1}`)}.Encode(),
			schemas.EventUnknown, 313, "", `{"iReboot":1}`, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, o := run(t, p, testT0, s, f.frame(vectors.SN, tc.frame, testT0))
			if len(o.rejects) != 0 || len(o.events) != 1 || len(o.downlinks) != tc.replies {
				t.Fatalf("outputs %+v", o)
			}
			e := o.events[0]
			if e.Kind != tc.kind || e.SubType != tc.sub || e.MsgID != tc.msgID || e.Body != tc.body {
				t.Errorf("event %+v", e)
			}
		})
	}
	// Without a session, unknown kinds are still accepted (raw body).
	p2 := newTestProcessor(t, rand.Reader)
	f2 := &feeder{tb: t, p: p2}
	raw := protocol.Frame{CmdType: 5, ProtocolVersion: "V1.0", Data: enc(`{"a":1}`)}.Encode()
	s2, o := run(t, p2, testT0, nil, f2.frame(vectors.SN, raw, testT0))
	if len(o.events) != 1 || o.events[0].Body != string(raw) || s2 == nil {
		t.Fatalf("outputs %+v", o)
	}
}

// TestRejects covers every reject reason: exactly one Reject, nothing else,
// the state unchanged.
func TestRejects(t *testing.T) {
	p, f, s := withSession(t)
	sess := vectorSession(t)
	enc := func(body string) string { return protocol.EncryptBody(sess, []byte(body)) }
	frame := func(cmd int, data string) []byte {
		return protocol.Frame{CmdType: cmd, ProtocolVersion: "V1.0", Data: data}.Encode()
	}
	rsaBlock := func(plain string) string {
		//lint:ignore SA1019 the test plays the firmware, which speaks PKCS#1 v1.5
		ct, err := rsa.EncryptPKCS1v15(rand.Reader, testPub, []byte(plain))
		if err != nil {
			t.Fatal(err)
		}
		return hex.EncodeToString(ct)
	}
	wrongKey := protocol.SessionKey{Key: [32]byte{1}, IV: [16]byte{2}}
	badPadding := protocol.EncryptBody(wrongKey, []byte(`{"iHeartBeat":1}`))
	if _, err := protocol.DecryptBody(sess, badPadding); protocol.ReasonOf(err) != protocol.ReasonBadPadding {
		t.Fatalf("test data: wrong-key ciphertext gives %v", err)
	}
	hb, _ := vectorFrame(t, "heartbeat")
	otherKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	_, foreignHS, err := protocol.NewHandshake(&otherKey.PublicKey, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k1, iv1 := strings.Repeat("a", 32), strings.Repeat("b", 16)

	type tc struct {
		name   string
		reason string
		input  func() (*State, []byte) // state and Kafka value
		topic  string
	}
	frameIn := func(st *State, payload []byte) func() (*State, []byte) {
		return func() (*State, []byte) {
			b, err := testReg.Encode(rawFrame(vectors.SN, payload, testT0))
			if err != nil {
				t.Fatal(err)
			}
			return st, b
		}
	}
	record := func(st *State, v any) func() (*State, []byte) {
		return func() (*State, []byte) {
			b, err := testReg.Encode(v)
			if err != nil {
				t.Fatal(err)
			}
			return st, b
		}
	}
	tests := []tc{
		{"undecodable record", ReasonBadRecord, func() (*State, []byte) { return s, []byte("not avro") }, ""},
		{"record of another type", ReasonBadRecord, record(s, &schemas.Presence{SN: vectors.SN}), ""},
		{"tombstone on uplink", ReasonBadRecord, func() (*State, []byte) { return s, nil }, ""},
		{"record sn is not the key", ReasonSNMismatch, record(s, rawFrame("0505050505050099", hb, testT0)), ""},
		{"unknown uplink kind", ReasonUnknownKind, record(s, &schemas.UplinkRaw{Kind: "PING", SN: vectors.SN}), ""},
		{"connection event of another client", ReasonForeignClient, record(s, &schemas.UplinkRaw{
			Kind: schemas.UplinkConnected, SN: vectors.SN, ClientID: vectors.SN + "-ivms"}), ""},
		{"frame not UTF-8", "bad_utf8", frameIn(s, []byte("{\"iCmdType\":2,\xff}")), ""},
		{"frame not JSON", "bad_json", frameIn(s, []byte(`{"iCmdType":2,`)), ""},
		{"frame not an object", "bad_envelope", frameIn(s, []byte(`[1,2]`)), ""},
		{"sData of the wrong type", "bad_envelope", frameIn(s, []byte(`{"iCmdType":2,"sProtocolVersion":"V1.0","sData":5}`)), ""},
		{"sData missing", "bad_envelope", frameIn(s, []byte(`{"iCmdType":2,"sProtocolVersion":"V1.0"}`)), ""},
		{"iCmdType missing", "bad_cmd_type", frameIn(s, []byte(`{"sData":"00"}`)), ""},
		{"iCmdType out of range", "bad_cmd_type", frameIn(s, []byte(`{"iCmdType":17,"sData":"00"}`)), ""},
		{"no session", ReasonNoSession, frameIn(nil, hb), ""},
		{"no session (state without one)", ReasonNoSession, frameIn(&State{}, hb), ""},
		{"bad hex", "bad_hex", frameIn(s, frame(2, "0g")), ""},
		{"odd hex", "bad_hex", frameIn(s, frame(2, "abc")), ""},
		{"bad block size", "bad_block_size", frameIn(s, frame(2, "00112233")), ""},
		{"bad padding (wrong key)", "bad_padding", frameIn(s, frame(2, badPadding)), ""},
		{"body not JSON", "bad_json", frameIn(s, frame(2, enc(`hello`))), ""},
		{"body not an object", "bad_json", frameIn(s, frame(2, enc(`[1]`))), ""},
		{"body not UTF-8", "bad_utf8", frameIn(s, frame(2, enc("{\"a\":\"\xff\"}"))), ""},
		{"configuration field of the wrong type", "bad_json", frameIn(s, frame(1, enc(`{"iChnCnt":"three"}`))), ""},
		{"stream request field of the wrong type", "bad_json", frameIn(s, protocol.Frame{CmdType: 7, ProtocolVersion: "V1.0",
			AmsCmdType: 702, Data: enc(`{"iGetVMSURL":"x"}`)}.Encode()), ""},
		{"sDeviceSn of another device", ReasonSNMismatch, frameIn(s, frame(2, enc(`{"sDeviceSn":"0505050505050004"}`))), ""},
		{"sDeviceSn of another device in a configuration", ReasonSNMismatch, frameIn(s, frame(1, enc(`{"sDeviceSn":"X"}`))), ""},
		{"sDeviceSn of another device in an unknown kind", ReasonSNMismatch, frameIn(s, frame(8, enc(`{"sDeviceSn":"X"}`))), ""},
		{"sDeviceSn not a string", "bad_json", frameIn(s, frame(2, enc(`{"sDeviceSn":5}`))), ""},
		{"handshake bad hex", "bad_hex", frameIn(s, frame(0, "xyz0")), ""},
		{"handshake for another RSA key", "bad_rsa", frameIn(s, frame(0, foreignHS)), ""},
		{"handshake of the wrong size", "bad_rsa", frameIn(s, frame(0, "00112233")), ""},
		{"handshake bad md5", "bad_md5", frameIn(s, frame(0, rsaBlock(k1+":"+iv1+":"+strings.Repeat("0", 32)))), ""},
		{"handshake bad layout", "bad_handshake", frameIn(s, frame(0, rsaBlock("short:iv:md5"))), ""},
		{"registration record undecodable", ReasonBadRecord, func() (*State, []byte) { return s, []byte{0xc3, 1, 2} }, testTopics.Registry},
		{"registration of another sn", ReasonSNMismatch, record(s, &schemas.Registration{SN: "other"}), testTopics.Registry},
	}
	seen := map[string]bool{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, value := tc.input()
			topic := tc.topic
			if topic == "" {
				topic = testTopics.UplinkRaw
			}
			f.offset++
			in := f.input(topic, vectors.SN, nil)
			in.Value = value
			next, o := run(t, p, testT0, st, in)
			if next != st {
				t.Errorf("state changed on a reject")
			}
			if len(o.rejects) != 1 || len(o.events)+len(o.downlinks)+len(o.presence) != 0 {
				t.Fatalf("outputs %+v", o)
			}
			r := o.rejects[0]
			if r.Reason != tc.reason {
				t.Fatalf("reason %q (%s), want %q", r.Reason, r.Detail, tc.reason)
			}
			if r.Stage != schemas.StageProcessor || r.SourceTopic != topic || r.SourcePartition != 3 || r.SourceOffset != in.Offset ||
				r.SN != vectors.SN || r.RejectID != fmt.Sprintf("processor:%s:3:%d", topic, in.Offset) || !r.At.Equal(testT0) {
				t.Errorf("reject %+v", r)
			}
			if topic == testTopics.UplinkRaw && value != nil && tc.reason != ReasonBadRecord && tc.reason != ReasonUnknownKind &&
				tc.reason != ReasonForeignClient && len(r.Payload) == 0 {
				t.Errorf("reject without the payload")
			}
			seen[r.Reason] = true
		})
	}
	for _, reason := range []string{ReasonNoSession, "bad_hex", "bad_padding", "bad_block_size", "bad_json", "bad_envelope",
		"bad_cmd_type", ReasonSNMismatch, "bad_handshake", "bad_rsa", "bad_md5", ReasonBadRecord, "bad_utf8"} {
		if !seen[reason] {
			t.Errorf("reason %s not covered", reason)
		}
	}
}

func TestCommandTopicsBadRecord(t *testing.T) {
	p, f, s := withSession(t)
	for _, topic := range []string{testTopics.Commands, testTopics.DownlinkReceipts} {
		for _, v := range [][]byte{[]byte("whatever"), nil} {
			in := f.input(topic, vectors.SN, nil)
			in.Value = v
			next, o := run(t, p, testT0, s, in)
			if next != s || len(o.rejects) != 1 || o.rejects[0].Reason != ReasonBadRecord || len(o.commands)+len(o.downlinks) != 0 {
				t.Errorf("%s %q: %v %+v", topic, v, next == s, o)
			}
		}
	}
	if _, _, err := p.Process(testT0, vectors.SN, s, f.input("ams.other", vectors.SN, nil)); err == nil {
		t.Error("unexpected topic accepted")
	}
}

func TestConnectionEvents(t *testing.T) {
	setup(t)
	p := newTestProcessor(t, rand.Reader)
	f := &feeder{tb: t, p: p}
	sn := vectors.SN
	conn := func(kind string, connectedAt, brokerTime time.Time, reason string) *schemas.UplinkRaw {
		r := &schemas.UplinkRaw{Kind: kind, SN: sn, ClientID: sn, Username: sn, Reason: reason,
			Topic: "$SYS/brokers/n1/clients/" + sn + "/" + strings.ToLower(kind), Payload: []byte(`{}`),
			IngestTime: brokerTime.Add(time.Millisecond)}
		if !connectedAt.IsZero() {
			r.ConnectedAt = &connectedAt
		}
		if !brokerTime.IsZero() {
			r.BrokerTime = &brokerTime
		}
		return r
	}
	e1, e2 := testT0, testT0.Add(10*time.Second)

	s, o := run(t, p, e1, nil, f.input(testTopics.UplinkRaw, sn, conn(schemas.UplinkConnected, e1, e1, "")))
	if len(o.events) != 1 || o.events[0].Kind != schemas.EventConnection || !o.events[0].Connection.Connected ||
		o.events[0].Connection.ClientID != sn || !o.events[0].Connection.ConnectedAt.Equal(e1) {
		t.Fatalf("events %+v", o.events)
	}
	if len(o.presence) != 1 || !o.presence[0].Online || o.presence[0].Reason != schemas.PresenceConnected ||
		o.presence[0].Epoch != e1.UnixMilli() || o.presence[0].Seq != 1 || o.presence[0].Since != nil {
		t.Fatalf("presence %+v", o.presence)
	}
	// Reconnect (epoch 2), then the old connection's disconnect arrives.
	s, o = run(t, p, e2, s, f.input(testTopics.UplinkRaw, sn, conn(schemas.UplinkConnected, e2, e2, "")))
	if len(o.events) != 1 || len(o.presence) != 0 {
		t.Fatalf("reconnect: %+v", o)
	}
	s, o = run(t, p, e2, s, f.input(testTopics.UplinkRaw, sn, conn(schemas.UplinkDisconnected, e1, e2.Add(time.Second), "discarded")))
	if len(o.events) != 1 || o.events[0].Connection.Connected || o.events[0].Connection.Reason != "discarded" || len(o.presence) != 0 {
		t.Fatalf("stale disconnect: %+v", o)
	}
	// The current connection's disconnect.
	at := e2.Add(20 * time.Second)
	s, o = run(t, p, at, s, f.input(testTopics.UplinkRaw, sn, conn(schemas.UplinkDisconnected, e2, at, "keepalive_timeout")))
	if len(o.presence) != 1 {
		t.Fatalf("disconnect: %+v", o)
	}
	pr := o.presence[0]
	if pr.Online || pr.Reason != schemas.PresenceDisconnected || pr.Detail != "keepalive_timeout" || pr.Seq != 2 ||
		pr.IntervalMs != 30_000 || !pr.Since.Equal(e1) || !pr.At.Equal(at) {
		t.Fatalf("presence %+v", pr)
	}
	if _, ok := p.Deadline(s); ok {
		t.Error("offline device has a deadline")
	}
	// EMQX 4: no connected_at; the connect event's ts is the epoch.
	e3 := at.Add(time.Minute)
	s, o = run(t, p, e3, s, f.input(testTopics.UplinkRaw, sn, conn(schemas.UplinkConnected, time.Time{}, e3, "")))
	if len(o.presence) != 1 || o.presence[0].Epoch != e3.UnixMilli() || !o.presence[0].Online {
		t.Fatalf("emqx4 connect: %+v", o)
	}
	_, o = run(t, p, e3, s, f.input(testTopics.UplinkRaw, sn, conn(schemas.UplinkDisconnected, time.Time{}, e3.Add(5*time.Second), "normal")))
	if len(o.presence) != 1 || o.presence[0].Online || o.presence[0].Detail != "normal" {
		t.Fatalf("emqx4 disconnect: %+v", o)
	}
}

func TestHeartbeatTimeout(t *testing.T) {
	p, f, s := withSession(t)
	hb, _ := vectorFrame(t, "heartbeat")
	at := testT0.Add(10 * time.Second)
	s, _ = run(t, p, at, s, f.frame(vectors.SN, hb, at))
	dl, ok := p.Deadline(s)
	if !ok || !dl.Equal(at.Add(90*time.Second)) {
		t.Fatalf("deadline %v %v", dl, ok)
	}
	if next, out, err := p.Timer(dl.Add(-time.Millisecond), vectors.SN, s); err != nil || next != s || len(out) != 0 {
		t.Fatalf("early timer: %v %v %v", next == s, out, err)
	}
	next, out, err := p.Timer(dl.Add(time.Second), vectors.SN, s)
	if err != nil {
		t.Fatal(err)
	}
	o := decodeOutputs(t, out)
	if len(o.presence) != 1 || len(out) != 1 {
		t.Fatalf("timer outputs %+v", o)
	}
	pr := o.presence[0]
	if pr.Online || pr.Reason != schemas.PresenceHeartbeatTimeout || !pr.At.Equal(dl) || pr.Seq != 2 ||
		pr.IntervalMs != dl.Sub(testT0).Milliseconds() || pr.EventID != fmt.Sprintf("%s/heartbeat_timeout/%d", vectors.SN, dl.UnixMilli()) {
		t.Fatalf("presence %+v", pr)
	}
	if _, ok := p.Deadline(next); ok {
		t.Error("deadline still armed")
	}
	if n2, out, _ := p.Timer(dl.Add(time.Hour), vectors.SN, next); n2 != next || len(out) != 0 {
		t.Error("second timer fired again")
	}
	// A late heartbeat brings the device back.
	late := dl.Add(time.Minute)
	_, o = run(t, p, late, next, f.frame(vectors.SN, hb, late))
	if len(o.presence) != 1 || !o.presence[0].Online || o.presence[0].Reason != schemas.PresenceFirstFrame ||
		o.presence[0].IntervalMs != time.Minute.Milliseconds() {
		t.Fatalf("late heartbeat: %+v", o.presence)
	}
	// Configurable timeout.
	cfg := testConfig(t, nil)
	cfg.HeartbeatTimeout = 30 * time.Second
	p2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := run(t, p2, testT0, nil, f.frame(vectors.SN, vectors.Handshake.Request, testT0))
	if dl, _ := p2.Deadline(s2); !dl.Equal(testT0.Add(30 * time.Second)) {
		t.Errorf("deadline with a 30 s timeout: %v", dl)
	}
}

func TestRegistry(t *testing.T) {
	setup(t)
	p := newTestProcessor(t, rand.Reader)
	f := &feeder{tb: t, p: p}
	s := register(t, p, f, nil, true, "front door", "")
	if r := s.Registration(); !r.Registered || !r.Bound || r.Name != "front door" {
		t.Fatalf("registration %+v", r)
	}
	// The same registration again: unchanged state.
	same := register(t, p, f, s, true, "front door", "")
	if same != s {
		t.Error("identical registration changed the state")
	}
	// Unregister: nothing else is known, the state is deleted.
	next, out, err := p.Process(testT0, vectors.SN, s, f.input(testTopics.Registry, vectors.SN, nil))
	if err != nil || next != nil || len(out) != 0 {
		t.Fatalf("unregister: %v %v %v", next, out, err)
	}
	// A tombstone for an unknown device: unchanged (nil).
	next, out, err = p.Process(testT0, vectors.SN, nil, f.input(testTopics.Registry, vectors.SN, nil))
	if err != nil || next != nil || len(out) != 0 {
		t.Fatalf("tombstone for nothing: %v %v %v", next, out, err)
	}
	// Unregister a device with a session: the session ends, presence stays.
	p2, f2, s2 := withSession(t)
	s2 = register(t, p2, f2, s2, true, "x", "")
	next, _, err = p2.Process(testT0, vectors.SN, s2, f2.input(testTopics.Registry, vectors.SN, nil))
	if err != nil || next == nil || next.HasSession() || next.Registration().Registered || !next.Presence().Online {
		t.Fatalf("unregister with session: %v %v", next, err)
	}
}

// TestProcessDoesNotModifyItsInput checks the Handler contract: the given
// state is never changed.
func TestProcessDoesNotModifyItsInput(t *testing.T) {
	p, f, s := withSession(t)
	s = register(t, p, f, s, true, "cam", "")
	before, err := p.EncodeState(vectors.SN, s)
	if err != nil {
		t.Fatal(err)
	}
	snapshot := *s
	cfg, _ := vectorFrame(t, "config upload")
	hb, _ := vectorFrame(t, "heartbeat")
	req, _ := vectorFrame(t, "stream url request")
	for _, fr := range [][]byte{cfg, hb, req, vectors.Handshake.Request} {
		if _, _, err := p.Process(testT0.Add(time.Minute), vectors.SN, s, f.frame(vectors.SN, fr, testT0.Add(time.Minute))); err != nil {
			t.Fatal(err)
		}
	}
	_, _, _ = p.Timer(testT0.Add(time.Hour), vectors.SN, s)
	after, _ := p.EncodeState(vectors.SN, s)
	if !bytes.Equal(before, after) || snapshot.session != s.session || !snapshot.presence.Equal(s.presence) {
		t.Fatal("Process modified the state it was given")
	}
}
