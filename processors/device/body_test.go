package device

import (
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/processors/keyed"
)

// referenceBodyReason is the processor's body check as it was specified
// before it moved to protocol.UnmarshalBody: UTF-8 (bad_utf8), a JSON object
// (bad_json), each target decoded with encoding/json (bad_json: the optional
// sDeviceSn; a configuration as protocol.Configuration, a 702 / 703 request
// as its type), then the sDeviceSn check (sn_mismatch). "" is accepted.
func referenceBodyReason(f protocol.Frame, pt []byte, sn string) string {
	if !utf8.Valid(pt) {
		return string(protocol.ReasonBadUTF8)
	}
	obj := false
	for _, ch := range pt {
		if ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r' {
			obj = ch == '{'
			break
		}
	}
	if !obj {
		return string(protocol.ReasonBadJSON)
	}
	var s struct {
		DeviceSn *string `json:"sDeviceSn"`
	}
	into := []any{&s}
	switch {
	case f.CmdType == protocol.CmdConfiguration:
		into = append(into, new(protocol.Configuration))
	case f.CmdType == protocol.CmdAms && f.AmsCmdType == protocol.AmsStreamURL:
		into = append(into, new(protocol.StreamURLRequest))
	case f.CmdType == protocol.CmdAms && f.AmsCmdType == protocol.AmsUploadParams:
		into = append(into, new(protocol.UploadParamsRequest))
	}
	for _, v := range into {
		if json.Unmarshal(pt, v) != nil {
			return string(protocol.ReasonBadJSON)
		}
	}
	if s.DeviceSn != nil && *s.DeviceSn != sn {
		return ReasonSNMismatch
	}
	return ""
}

// bodyKinds are the frame kinds whose body the processor reads.
var bodyKinds = []protocol.Frame{
	{CmdType: protocol.CmdConfiguration}, {CmdType: protocol.CmdHeartbeat}, {CmdType: protocol.CmdReply},
	{CmdType: protocol.CmdAms, AmsCmdType: protocol.AmsStreamURL}, {CmdType: protocol.CmdAms, AmsCmdType: protocol.AmsUploadParams},
	{CmdType: protocol.CmdAms, AmsCmdType: protocol.AmsStreamControl}, {CmdType: protocol.CmdAms, AmsCmdType: 799},
}

// FuzzBodyReasons checks the processor refuses a decrypted body of every
// kind it reads for exactly the reason of referenceBodyReason, and accepts
// (one DeviceEvent with the body) what it accepts. Unknown kinds (4) never
// refuse a body but for sn_mismatch.
func FuzzBodyReasons(f *testing.F) {
	p, _, st := withSession(f)
	sess := vectorSession(f)
	testSN := vectors.SN
	for _, s := range []string{
		`{"sDeviceSn":"` + testSN + `","iHeartBeat":1}`, `{"sDeviceSn":""}`, `{"sDeviceSn":null}`, `{"sDeviceSn":5}`,
		`{"sdevicesn":"x"}`, `{"SDEVICESN":"` + testSN + `","sDeviceSn":"y"}`, `{"sDeviceSn":"y","sDeviceSn":null}`,
		`{"iChnCnt":"2"}`, `{"iChnCnt":1e3}`, `{"iGetVMSURL":"1"}`, `{"iExpiresTime":"x"}`, `{"iGetPicUploadPara":1.5}`,
		`{"iHeartBeat":"x"}`, `[1]`, `"s"`, ``, `   `, `{`, `{"a":1}x`, "{\"a\":\"\xff\"}", `{"x":{"y":[1,{"z":null}]}}`,
	} {
		f.Add([]byte(s))
	}
	frame := func(t *testing.T, payload []byte) keyed.Input {
		value, err := testReg.Encode(rawFrame(testSN, payload, testT0))
		if err != nil {
			t.Fatal(err)
		}
		return keyed.Input{Topic: testTopics.UplinkRaw, Partition: 1, Offset: 7, Key: testSN, Value: value}
	}
	f.Fuzz(func(t *testing.T, pt []byte) {
		for _, k := range bodyKinds {
			k.ProtocolVersion, k.Data = "V1.0", protocol.EncryptBody(sess, pt)
			want := referenceBodyReason(k, pt, testSN)
			_, o := run(t, p, testT0, st, frame(t, k.Encode()))
			var got string
			if len(o.rejects) == 1 {
				got = o.rejects[0].Reason
			}
			if got != want {
				t.Fatalf("kind %d/%d body %q: reason %q, want %q", k.CmdType, k.AmsCmdType, pt, got, want)
			}
			if want == "" && (len(o.events) != 1 || o.events[0].Body != string(pt)) {
				t.Fatalf("kind %d/%d body %q accepted: outputs %+v", k.CmdType, k.AmsCmdType, pt, o)
			}
		}
		unknown := protocol.Frame{CmdType: 4, ProtocolVersion: "V1.0", Data: protocol.EncryptBody(sess, pt)}
		want := referenceBodyReason(unknown, pt, testSN)
		_, o := run(t, p, testT0, st, frame(t, unknown.Encode()))
		switch {
		case want == ReasonSNMismatch:
			if len(o.rejects) != 1 || o.rejects[0].Reason != want {
				t.Fatalf("kind 4 body %q: outputs %+v, want %s", pt, o, want)
			}
		case len(o.events) != 1 || (want == "") != (o.events[0].Body == string(pt)):
			t.Fatalf("kind 4 body %q (reference %q): outputs %+v", pt, want, o)
		}
	})
}
