package device

import (
	"testing"
	"time"
)

func TestStreamExpiry(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	var c StreamConfig
	tests := []struct {
		requested float64
		want      int64
	}{
		{0, 1_000_120},           // not given: now + 2 min
		{1_000_060, 1_000_060},   // within the window
		{1_000_600, 1_000_600},   // at the 10 min bound
		{1_000_601, 1_000_120},   // beyond it
		{999_999, 1_000_120},     // in the past
		{1_000_000, 1_000_120},   // now
		{1_000_059.9, 1_000_059}, // fractions are cut
		{-5, 1_000_120},          // nonsense
		{1e300, 1_000_120},       // nonsense
	}
	for _, tc := range tests {
		if got := c.expiry(now, tc.requested); got != tc.want {
			t.Errorf("expiry(%v) = %d, want %d", tc.requested, got, tc.want)
		}
	}
	c = StreamConfig{DefaultExpiry: time.Minute, MaxExpiry: time.Hour}
	if got := c.expiry(now, 1_003_000); got != 1_003_000 {
		t.Errorf("configured max: %d", got)
	}
	if got := c.expiry(now, 0); got != 1_000_060 {
		t.Errorf("configured default: %d", got)
	}
}

func TestSignStreamURL(t *testing.T) {
	secret := []byte("0123456789abcdef")
	u, err := SignStreamURL(secret, "rtmp://vms.example.test/live/", "SN1", 1700000000)
	if err != nil {
		t.Fatal(err)
	}
	// The documented example of STREAM_SIGNING.md.
	want := "rtmp://vms.example.test/live/SN1?exp=1700000000&sig=" + StreamSignature(secret, "/live/SN1", "1700000000")
	if u != want {
		t.Errorf("url %s, want %s", u, want)
	}
	if doc := "rtmp://vms.example.test/live/SN1?exp=1700000000&sig=d22dc8c391da5d19020310069d08fff33b3949fdd7db450d324765159d079be0"; u != doc {
		t.Errorf("url %s differs from STREAM_SIGNING.md's example %s", u, doc)
	}
	if err := VerifyStreamURL(secret, u, time.Unix(1699999999, 0)); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"", "live", "rtmp:///live", "rtmp://h/live?x=1", "rtmp://u:p@h/live", "://x"} {
		if _, err := SignStreamURL(secret, bad, "SN1", 1); err == nil {
			t.Errorf("base %q accepted", bad)
		}
	}
	for _, bad := range []string{"rtmp://h/live/SN1", "rtmp://h/live/SN1?exp=1", "rtmp://h/live/SN1?exp=x&sig=00", "%zz"} {
		if err := VerifyStreamURL(secret, bad, time.Unix(0, 0)); err == nil {
			t.Errorf("url %q verified", bad)
		}
	}
}

func TestStreamConfigValidation(t *testing.T) {
	if err := (StreamConfig{BaseURL: "rtmp://h/live", Secret: []byte("short")}).validate(); err == nil {
		t.Error("short secret accepted")
	}
	if err := (StreamConfig{BaseURL: "nope", Secret: make([]byte, 16)}).validate(); err == nil {
		t.Error("bad base accepted")
	}
	if err := (StreamConfig{}).validate(); err != nil {
		t.Error("disabled stream config refused")
	}
}

func TestUploadAccessKey(t *testing.T) {
	g, err := SignedUploadCredentials{Secret: []byte("0123456789abcdef")}.Grant("SN.1", "b", "p/SN.1", time.Unix(100, 0))
	if err != nil {
		t.Fatal(err)
	}
	if g.AccessKey != "ams1.43300.SN.1" || !g.Expires.Equal(time.Unix(43300, 0)) {
		t.Errorf("grant %+v", g)
	}
	sn, exp, err := ParseUploadAccessKey(g.AccessKey)
	if err != nil || sn != "SN.1" || exp.Unix() != 43300 {
		t.Errorf("parse: %q %v %v", sn, exp, err)
	}
	for _, bad := range []string{"", "AKID", "ams1.", "ams1.x.SN", "ams1.5.", "ams1.5"} {
		if _, _, err := ParseUploadAccessKey(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	// The worked example of UPLOAD_CREDENTIALS.md.
	g, _ = SignedUploadCredentials{Secret: []byte("0123456789abcdef")}.Grant("0505050505050003", "pictures",
		"ai_engine_imgs/0505050505050003", time.Unix(1700000000, 0))
	if g.AccessKey != "ams1.1700043200.0505050505050003" || g.SecretKey != "229c8a68157df02f62054484721e89f3d169fdc8" {
		t.Errorf("documented example: %+v", g)
	}
	if _, err := (SignedUploadCredentials{Secret: []byte("short")}).Grant("a", "b", "c", time.Now()); err == nil {
		t.Error("short upload secret accepted")
	}
}
