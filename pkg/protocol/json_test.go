package protocol

import (
	"encoding/json"
	"math"
	"testing"
)

// The expected outputs below were produced by ujson 6.1 (ujson.dumps).
func TestFloatLikeUjson(t *testing.T) {
	cases := []struct {
		f    float64
		want string
	}{
		{1e16, "1e+16"},
		{1.5e-5, "1.5e-5"},
		{0.0001, "0.0001"},
		{0.00001, "1e-5"},
		{1574321354.0, "1574321354.0"},
		{1e15, "1000000000000000.0"},
		{123456789012345680.0, "1.2345678901234568e+17"},
		{0.30000000000000004, "0.30000000000000004"}, // 0.1+0.2 in float64
		{math.Copysign(0, -1), "-0.0"},
		{5e-324, "5e-324"},
		{1.7976931348623157e308, "1.7976931348623157e+308"},
		{1e22, "1e+22"},
		{1e21, "1e+21"},
		{0, "0.0"},
		{1, "1.0"},
		{-1.5, "-1.5"},
		{1574321354.123, "1574321354.123"},
		{9999999999999998.0, "9999999999999998.0"},
		{2.5e-300, "2.5e-300"},
		{-1e-7, "-1e-7"},
		{1234.5678, "1234.5678"},
		{0.00012, "0.00012"},
	}
	for _, c := range cases {
		b, err := MarshalASCII(Float(c.f))
		if err != nil {
			t.Fatalf("MarshalASCII(%v): %v", c.f, err)
		}
		if string(b) != c.want {
			t.Errorf("Float(%v) = %s, want %s", c.f, b, c.want)
		}
		var back Float
		if err := json.Unmarshal(b, &back); err != nil || float64(back) != c.f {
			t.Errorf("Float(%v) reads back as %v, %v", c.f, back, err)
		}
	}
	for _, f := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		if _, err := MarshalASCII(Float(f)); err == nil {
			t.Errorf("MarshalASCII(Float(%v)) succeeded", f)
		}
	}
}

func TestMarshalASCIILikeUjson(t *testing.T) {
	s := "a/é😀\x7f\u2028\b\f\x01\x1f\"\\<>&\t\n\r\x00\uffff"
	want := `"a\/\u00e9\ud83d\ude00` + "\x7f" + `\u2028\b\f\u0001\u001f\"\\<>&\t\n\r\u0000\uffff"`
	b, err := MarshalASCII(s)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != want {
		t.Fatalf("MarshalASCII = %s\nwant %s", b, want)
	}
	if got := appendJSONString(nil, s); string(got) != want {
		t.Fatalf("appendJSONString = %s\nwant %s", got, want)
	}
	// Invalid UTF-8 becomes \ufffd in both.
	bad := "x\xffy\xe4\xb8"
	b, _ = MarshalASCII(bad)
	if string(b) != `"x\ufffdy\ufffd\ufffd"` && string(b) != `"x\ufffdy\ufffd"` {
		t.Fatalf("MarshalASCII(invalid) = %s", b)
	}
	if got := appendJSONString(nil, bad); string(got) != string(b) {
		t.Fatalf("appendJSONString(invalid) = %s, MarshalASCII = %s", got, b)
	}
	// Maps are compact, sorted, ASCII.
	b, err = MarshalASCII(map[string]any{"z": []int{1, 2}, "a": "李", "m": nil})
	if err != nil || string(b) != `{"a":"\u674e","m":null,"z":[1,2]}` {
		t.Fatalf("MarshalASCII(map) = %s, %v", b, err)
	}
	if _, err := MarshalASCII(make(chan int)); err == nil || ReasonOf(err) != ReasonInternal {
		t.Fatalf("MarshalASCII(chan): %v", err)
	}
}

func TestFrameEncode(t *testing.T) {
	frames := []Frame{
		{CmdType: 2, ProtocolVersion: "V1.0", Data: "92c71d4d96a7c3b679e35182256897ca"},
		{CmdType: 3, ProtocolVersion: "V1.0", MsgID: "aa000000000000000000000000000001", AppCmdType: 301, Data: "ff"},
		{CmdType: 7, ProtocolVersion: "V1.0", MsgID: "m", AmsCmdType: 702, Data: "00"},
		{CmdType: 4, ProtocolVersion: "版本/\"\\\n", MsgID: "😀", Data: ""},
		{CmdType: -5, AppCmdType: -1, AmsCmdType: math.MaxInt},
	}
	for _, f := range frames {
		b := f.Encode()
		want, err := MarshalASCII(f)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != string(want) {
			t.Errorf("Encode = %s\nMarshalASCII = %s", b, want)
		}
		if !isASCII(b) {
			t.Errorf("Encode is not ASCII: %s", b)
		}
		var back Frame
		if err := json.Unmarshal(b, &back); err != nil || back != f {
			t.Errorf("Encode does not read back: %+v, %v", back, err)
		}
	}
	if got := string(frames[0].Encode()); got != `{"iCmdType":2,"sProtocolVersion":"V1.0","sData":"92c71d4d96a7c3b679e35182256897ca"}` {
		t.Errorf("Encode = %s", got)
	}
}

func TestTopics(t *testing.T) {
	const sn = "0505050505050003"
	if got := UplinkTopic(sn); got != "/ivms/pub/"+sn {
		t.Fatal(got)
	}
	if got := DownlinkTopic(sn); got != "/ivms/sub/"+sn {
		t.Fatal(got)
	}
	if got, ok := SNFromUplinkTopic(UplinkTopic(sn)); !ok || got != sn {
		t.Fatalf("SNFromUplinkTopic = %q, %v", got, ok)
	}
	for _, topic := range []string{
		"", "/ivms/pub/", "/ivms/pub", "ivms/pub/" + sn, "/ivms/sub/" + sn, "/ivms/pub/" + sn + "/x",
		"/ivms/pub/+", "/ivms/pub/#", "/ivms/pub/a+b", "/ivms/pub//", "/ivms/pub/a\x00", "/ivms/pub/\xff",
		"/IVMS/pub/" + sn, " /ivms/pub/" + sn, "/ivms/push",
	} {
		if got, ok := SNFromUplinkTopic(topic); ok || got != "" {
			t.Errorf("SNFromUplinkTopic(%q) = %q, %v", topic, got, ok)
		}
	}
}
