package commandkinds

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestTableIsConsistent(t *testing.T) {
	names, codes := map[string]bool{}, map[[2]int]bool{}
	for _, k := range All() {
		if names[k.Name] {
			t.Errorf("name %q twice", k.Name)
		}
		names[k.Name] = true
		c := [2]int{k.CmdType, k.Code}
		if codes[c] {
			t.Errorf("code %v twice", c)
		}
		codes[c] = true
		if k.CmdType != 3 && k.CmdType != 7 {
			t.Errorf("%s: CmdType %d", k.Name, k.CmdType)
		}
		if k.Default != "" {
			if _, err := k.Normalize(json.RawMessage(k.Default)); err != nil {
				t.Errorf("%s: default body invalid: %v", k.Name, err)
			}
		}
		if got, ok := ByCode(k.CmdType, k.Code); !ok || got.Name != k.Name {
			t.Errorf("ByCode(%d,%d) = %v, %v", k.CmdType, k.Code, got.Name, ok)
		}
		if got, ok := Lookup(k.Name); !ok || got.Code != k.Code {
			t.Errorf("Lookup(%q) = %v, %v", k.Name, got.Code, ok)
		}
	}
	want := map[string]int{"config": 301, "reboot": 313, "reset": 314, "log_upload": 317, "sd_format": 318,
		"face_snapshot": 328, "vehicle_snapshot": 329, "other_settings": 330, "audio_video": 331,
		"sd_info": 332, "osd": 333, "stream_control": 704, "upload_control": 705}
	if len(want) != len(All()) {
		t.Errorf("table has %d kinds, want %d", len(All()), len(want))
	}
	for n, code := range want {
		k, ok := Lookup(n)
		if !ok || k.Code != code {
			t.Errorf("Lookup(%q) = %d, %v; want %d", n, k.Code, ok, code)
		}
		if wantType := map[bool]int{true: 7, false: 3}[code >= 700]; k.CmdType != wantType {
			t.Errorf("%s: CmdType %d, want %d", n, k.CmdType, wantType)
		}
	}
	if _, ok := Lookup("nope"); ok {
		t.Error("Lookup(nope) found")
	}
	if _, ok := ByCode(3, 704); ok {
		t.Error("ByCode(3, 704) found")
	}
	if _, err := Find("nope"); !errors.Is(err, ErrUnknownKind) {
		t.Errorf("Find(nope) = %v", err)
	}
}

func TestTableCannotBeMutated(t *testing.T) {
	a := All()
	a[0].Name = "x"
	a[0].Body.Fields[0].OneOf[0] = 99
	k, _ := Lookup("config")
	if k.Name != "config" || k.Body.Fields[0].OneOf[0] != 1 {
		t.Fatal("All() shares memory with the table")
	}
}

func TestNormalize(t *testing.T) {
	long := strings.Repeat("é", 65)
	ok64 := strings.Repeat("é", 64)
	tests := []struct {
		kind  string
		body  string
		want  string // normalized body when the error is empty
		field string // BodyError.Field when invalid
		err   string // substring of BodyError.Reason; "" = valid
	}{
		// 301 config
		{kind: "config", body: `{"iGetconfig":1,"iBindStatus":0}`, want: `{"iGetconfig":1,"iBindStatus":0}`},
		{kind: "config", body: ` { "iBindStatus" : 1 , "iGetconfig" : 1 } `, want: `{"iBindStatus":1,"iGetconfig":1}`},
		{kind: "config", body: `{"iGetconfig":1,"iBindStatus":2}`, field: "iBindStatus", err: "one of 0, 1"},
		{kind: "config", body: `{"iGetconfig":1}`, field: "iBindStatus", err: "required"},
		{kind: "config", body: ``, err: "body is required"},
		{kind: "config", body: `{"iGetconfig":1,"iBindStatus":"1"}`, field: "iBindStatus", err: "integer, not a string"},
		// 313 reboot
		{kind: "reboot", body: ``, want: `{"iReboot":1}`},
		{kind: "reboot", body: `null`, want: `{"iReboot":1}`},
		{kind: "reboot", body: `{"iReboot":1}`, want: `{"iReboot":1}`},
		{kind: "reboot", body: `{"iReboot":0}`, field: "iReboot", err: "one of 1"},
		{kind: "reboot", body: `{"iReboot":1.0}`, field: "iReboot", err: "integer, not 1.0"},
		{kind: "reboot", body: `{"iReboot":1e0}`, field: "iReboot", err: "integer"},
		{kind: "reboot", body: `{"iReboot":1,"x":2}`, field: "x", err: "unknown field"},
		{kind: "reboot", body: `{"iReboot":1,"iReboot":1}`, err: "appears twice"},
		{kind: "reboot", body: `[1]`, err: "JSON object, not an array"},
		{kind: "reboot", body: `{"iReboot":1} {}`, err: "exactly one JSON value"},
		{kind: "reboot", body: `{"iReboot":1`, err: "not valid JSON"},
		// 314 reset
		{kind: "reset", body: `{"iReset":0}`, want: `{"iReset":0}`},
		{kind: "reset", body: `{"iReset":1}`, want: `{"iReset":1}`},
		{kind: "reset", body: `{"iReset":333}`, want: `{"iReset":333}`},
		{kind: "reset", body: `{"iReset":332}`, field: "iReset", err: "one of 0, 1, 328, 329, 330, 331, 333"},
		{kind: "reset", body: `{}`, field: "iReset", err: "required"},
		{kind: "reset", body: ``, err: "body is required"},
		{kind: "reset", body: `{"iReset":null}`, field: "iReset", err: "required"},
		// 317 log upload
		{kind: "log_upload", body: `{"iReqUploadZlog":0}`, want: `{"iReqUploadZlog":0}`},
		{kind: "log_upload", body: `{"iReqUploadZlog":7}`, want: `{"iReqUploadZlog":7}`},
		{kind: "log_upload", body: `{"iReqUploadZlog":-1}`, field: "iReqUploadZlog", err: "at least 0"},
		{kind: "log_upload", body: `{"iReqUploadZlog":99999999999999999999}`, field: "iReqUploadZlog", err: "integer"},
		{kind: "log_upload", body: `{"iReqUploadZlog":true}`, field: "iReqUploadZlog", err: "not a boolean"},
		// 318 SD format
		{kind: "sd_format", body: `{"iFormat":1}`, want: `{"iFormat":1}`},
		{kind: "sd_format", body: ``, err: "body is required"},
		{kind: "sd_format", body: `{"iFormat":2}`, field: "iFormat", err: "one of 1"},
		// 328..331 free objects
		{kind: "face_snapshot", body: `{"a":{"b":[1,2]},"url":"x/y"}`, want: `{"a":{"b":[1,2]},"url":"x\/y"}`},
		{kind: "face_snapshot", body: `{}`, err: "non-empty object"},
		{kind: "vehicle_snapshot", body: `{"iEnable":1}`, want: `{"iEnable":1}`},
		{kind: "vehicle_snapshot", body: `"x"`, err: "JSON object, not a string"},
		{kind: "other_settings", body: `{"sTimeZone":"Asia/上海"}`, want: `{"sTimeZone":"Asia\/\u4e0a\u6d77"}`},
		{kind: "other_settings", body: ``, err: "body is required"},
		{kind: "audio_video", body: `{"v":{"w":1}}`, want: `{"v":{"w":1}}`},
		{kind: "audio_video", body: `{"v":{"w":1,"w":2}}`, err: "appears twice"},
		// 332 SD info
		{kind: "sd_info", body: ``, want: `{"iGetSDInfo":1}`},
		{kind: "sd_info", body: `{"iGetSDInfo":0}`, field: "iGetSDInfo", err: "one of 1"},
		// 333 OSD
		{kind: "osd", body: `{"sOsdName":{"iEnable":1,"strText":"李小龙测试"}}`, want: `{"sOsdName":{"iEnable":1,"strText":"\u674e\u5c0f\u9f99\u6d4b\u8bd5"}}`},
		{kind: "osd", body: `{"sOsdName":{"iEnable":0,"strText":"` + ok64 + `"}}`, want: `{"sOsdName":{"iEnable":0,"strText":"` + strings.Repeat(`\u00e9`, 64) + `"}}`},
		{kind: "osd", body: `{"sOsdTime":{"iEnable":1}}`, want: `{"sOsdTime":{"iEnable":1}}`},
		{kind: "osd", body: `{"sOsdName":{"iEnable":1,"strText":"` + long + `"}}`, field: "sOsdName.strText", err: "at most 64 characters, not 65"},
		{kind: "osd", body: `{"sOsdName":{"iEnable":2,"strText":"a"}}`, field: "sOsdName.iEnable", err: "one of 0, 1"},
		{kind: "osd", body: `{"sOsdName":{"strText":"a"}}`, field: "sOsdName.iEnable", err: "required"},
		{kind: "osd", body: `{"sOsdName":{"iEnable":1,"strText":5}}`, field: "sOsdName.strText", err: "string, not a number"},
		{kind: "osd", body: `{"sOsdName":{"iEnable":1,"strText":null}}`, field: "sOsdName.strText", err: "not null"},
		{kind: "osd", body: `{"sOsdName":"x"}`, field: "sOsdName", err: "object, not a string"},
		{kind: "osd", body: `{}`, err: "non-empty object"},
		// 704 stream control
		{kind: "stream_control", body: `{"icmdtype":0}`, want: `{"icmdtype":0}`},
		{kind: "stream_control", body: `{"icmdtype":2}`, want: `{"icmdtype":2}`},
		{kind: "stream_control", body: `{"icmdtype":3}`, field: "icmdtype", err: "one of 0, 1, 2"},
		{kind: "stream_control", body: ``, err: "body is required"},
		// 705 upload control
		{kind: "upload_control", body: `{"icmdtype":1}`, want: `{"icmdtype":1}`},
		{kind: "upload_control", body: `{"icmdtype":2}`, field: "icmdtype", err: "one of 0, 1"},
		{kind: "upload_control", body: `{"iCmdType":1}`, field: "iCmdType", err: "unknown field"},
		// size and encoding
		{kind: "face_snapshot", body: `{"a":"` + strings.Repeat("x", MaxBodyBytes) + `"}`, err: "more than"},
		{kind: "face_snapshot", body: "{\"a\":\"\xff\"}", err: "UTF-8"},
		{kind: "face_snapshot", body: strings.Repeat(`{"a":`, 40) + "1" + strings.Repeat("}", 40), err: "deeper"},
	}
	seen := map[string][2]bool{}
	for _, tc := range tests {
		t.Run(tc.kind+"/"+tc.body[:min(len(tc.body), 40)], func(t *testing.T) {
			k, ok := Lookup(tc.kind)
			if !ok {
				t.Fatalf("no kind %q", tc.kind)
			}
			got, err := k.Normalize(json.RawMessage(tc.body))
			s := seen[tc.kind]
			if tc.err == "" {
				s[0] = true
				if err != nil {
					t.Fatalf("Normalize: %v", err)
				}
				if string(got) != tc.want {
					t.Fatalf("Normalize = %s, want %s", got, tc.want)
				}
			} else {
				s[1] = true
				var be *BodyError
				if !errors.As(err, &be) {
					t.Fatalf("Normalize = %s, %v; want a *BodyError", got, err)
				}
				if be.Kind != tc.kind || be.Field != tc.field || !strings.Contains(be.Reason, tc.err) {
					t.Fatalf("error = %+v, want field %q reason ~%q", be, tc.field, tc.err)
				}
				if !strings.Contains(err.Error(), tc.kind) {
					t.Fatalf("Error() = %q does not name the kind", err)
				}
			}
			seen[tc.kind] = s
		})
	}
	for _, k := range All() {
		if s := seen[k.Name]; !s[0] || !s[1] {
			t.Errorf("kind %s: valid case tested %v, invalid case tested %v", k.Name, s[0], s[1])
		}
	}
}

func FuzzNormalize(f *testing.F) {
	f.Add("osd", `{"sOsdName":{"iEnable":1,"strText":"a"}}`)
	f.Add("reboot", ``)
	f.Add("face_snapshot", `{"a":[1,{"b":null}]}`)
	f.Fuzz(func(t *testing.T, name, body string) {
		k, ok := Lookup(name)
		if !ok {
			return
		}
		out, err := k.Normalize(json.RawMessage(body))
		if err != nil {
			var be *BodyError
			if !errors.As(err, &be) {
				t.Fatalf("error is not a *BodyError: %v", err)
			}
			return
		}
		// A normalized body is valid, ASCII, and a fixed point.
		for _, c := range out {
			if c >= 0x80 {
				t.Fatalf("non-ASCII output %q", out)
			}
		}
		again, err := k.Normalize(out)
		if err != nil || string(again) != string(out) {
			t.Fatalf("not a fixed point: %s -> %s, %v", out, again, err)
		}
	})
}

// TestIdempotent: the commands that change the device irreversibly or
// do something each time (reboot, reset, format, log upload, snapshots,
// streaming and upload control) are not idempotent, so egress never
// publishes them twice; queries and set-to-value settings are.
func TestIdempotent(t *testing.T) {
	want := map[string]bool{"config": true, "sd_info": true, "osd": true, "other_settings": true, "audio_video": true}
	for _, k := range All() {
		if k.Idempotent != want[k.Name] {
			t.Errorf("%s: Idempotent %v, want %v", k.Name, k.Idempotent, want[k.Name])
		}
	}
}
