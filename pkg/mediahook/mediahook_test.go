package mediahook

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ivms/ams/processors/device"
)

type fakeRegs map[string]bool // sn -> bound; absent: unregistered

func (f fakeRegs) Registration(_ context.Context, sn string) (bool, bool, error) {
	if sn == "0505050505000999" {
		return false, false, errors.New("redis down")
	}
	b, ok := f[sn]
	return ok, b, nil
}

var (
	secret    = []byte("0123456789abcdef0123")
	oldSecret = []byte("retired-secret-0123456")
	now       = time.Unix(1_700_000_000, 0)
)

const (
	boundSN   = "0505050505000001"
	unboundSN = "0505050505000002"
	otherSN   = "0505050505000003"
)

func newHook(t *testing.T) (*Hook, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	h, err := New(Config{Secrets: [][]byte{secret, oldSecret}, Key: "hook-key", Now: func() time.Time { return now }},
		fakeRegs{boundSN: true, unboundSN: false, otherSN: true}, slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	return h, reg
}

// signed returns the query of a push URL for sn signed with s, expiring at exp.
func signed(t *testing.T, s []byte, sn string, exp int64) url.Values {
	t.Helper()
	u, err := device.SignStreamURL(s, "rtmp://media.test/live", sn, exp)
	if err != nil {
		t.Fatal(err)
	}
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	return pu.Query()
}

func TestDecide(t *testing.T) {
	h, _ := newHook(t)
	ok := signed(t, secret, boundSN, now.Unix()+60)
	tampered := signed(t, secret, boundSN, now.Unix()+60)
	tampered.Set("sig", strings.Repeat("0", 64))
	longer := signed(t, secret, boundSN, now.Unix()+60)
	longer.Set("exp", strconv.FormatInt(now.Unix()+3600, 10)) // exp changed after signing
	cases := []struct {
		name      string
		app, path string
		args      url.Values
		want      string
	}{
		{"bound device", "live", boundSN, ok, ReasonOK},
		{"signed with the retired secret", "live", boundSN, signed(t, oldSecret, boundSN, now.Unix()+60), ReasonOK},
		{"signature uppercase", "live", boundSN, url.Values{"exp": ok["exp"], "sig": {strings.ToUpper(ok.Get("sig"))}}, ReasonOK},
		{"tampered signature", "live", boundSN, tampered, ReasonBadSignature},
		{"expiry moved", "live", boundSN, longer, ReasonBadSignature},
		{"another camera's path", "live", otherSN, ok, ReasonBadSignature},
		{"another app", "vod", boundSN, ok, ReasonBadSignature},
		{"unknown secret", "live", boundSN, signed(t, []byte("someone-elses-secret!"), boundSN, now.Unix()+60), ReasonBadSignature},
		{"expired", "live", boundSN, signed(t, secret, boundSN, now.Unix()), ReasonExpired},
		{"unbound", "live", unboundSN, signed(t, secret, unboundSN, now.Unix()+60), ReasonUnbound},
		{"unregistered", "live", "0505050505000004", signed(t, secret, "0505050505000004", now.Unix()+60), ReasonUnregistered},
		{"registry down", "live", "0505050505000999", signed(t, secret, "0505050505000999", now.Unix()+60), ReasonUnavailable},
		{"not an sn", "live", "cam+1", signed(t, secret, "cam+1", now.Unix()+60), ReasonBadSN},
		{"no sig", "live", boundSN, url.Values{"exp": ok["exp"]}, ReasonMalformed},
		{"no exp", "live", boundSN, url.Values{"sig": ok["sig"]}, ReasonMalformed},
		{"exp not a number", "live", boundSN, url.Values{"exp": {"soon"}, "sig": ok["sig"]}, ReasonMalformed},
		{"exp with a sign", "live", boundSN, url.Values{"exp": {"+" + ok.Get("exp")}, "sig": ok["sig"]}, ReasonMalformed},
		{"no app", "", boundSN, ok, ReasonMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, got := h.Decide(context.Background(), c.app, c.path, c.args); got != c.want {
				t.Errorf("Decide = %q, want %q", got, c.want)
			}
		})
	}
}

func TestNginxCallback(t *testing.T) {
	h, reg := newHook(t)
	mux := http.NewServeMux()
	h.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	form := func(sn string, q url.Values) url.Values {
		f := url.Values{"call": {"publish"}, "app": {"live"}, "name": {sn}, "type": {"live"}, "addr": {"127.0.0.1"}}
		for k, v := range q {
			f[k] = v
		}
		return f
	}
	post := func(key string, f url.Values) int {
		t.Helper()
		resp, err := http.PostForm(srv.URL+PathNginxRTMP+"?key="+url.QueryEscape(key), f)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := post("hook-key", form(boundSN, signed(t, secret, boundSN, now.Unix()+60))); got != http.StatusOK {
		t.Errorf("bound device: status %d, want 200", got)
	}
	if got := post("hook-key", form(unboundSN, signed(t, secret, unboundSN, now.Unix()+60))); got != http.StatusForbidden {
		t.Errorf("unbound device: status %d, want 403", got)
	}
	if got := post("wrong", form(boundSN, signed(t, secret, boundSN, now.Unix()+60))); got != http.StatusUnauthorized {
		t.Errorf("wrong hook key: status %d, want 401", got)
	}
	if got := post("", form(boundSN, signed(t, secret, boundSN, now.Unix()+60))); got != http.StatusUnauthorized {
		t.Errorf("no hook key: status %d, want 401", got)
	}
	// The hook key in the callback URL is not a publish argument: a forged
	// "exp" in the URL's query does not reach Decide.
	f := form(boundSN, signed(t, secret, boundSN, now.Unix()+60))
	f.Del("exp")
	resp, err := http.PostForm(srv.URL+PathNginxRTMP+"?key=hook-key&exp="+strconv.FormatInt(now.Unix()+60, 10), f)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("exp only in the callback URL: status %d, want 403", resp.StatusCode)
	}
	if got := post("hook-key", url.Values{"call": {"play"}, "app": {"live"}, "name": {boundSN}}); got != http.StatusBadRequest {
		t.Errorf("call=play: status %d, want 400", got)
	}

	if n := testutil.ToFloat64(h.decisions.WithLabelValues("nginx-rtmp", "allow", ReasonOK)); n != 1 {
		t.Errorf("allow counter = %v, want 1", n)
	}
	if n := testutil.ToFloat64(h.decisions.WithLabelValues("nginx-rtmp", "deny", ReasonUnbound)); n != 1 {
		t.Errorf("deny unbound counter = %v, want 1", n)
	}
	if n, err := testutil.GatherAndCount(reg, "ams_mediahook_decisions_total"); err != nil || n == 0 {
		t.Errorf("metric not registered: %d, %v", n, err)
	}
}

func TestSRSCallback(t *testing.T) {
	h, _ := newHook(t)
	mux := http.NewServeMux()
	h.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	post := func(auth, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", srv.URL+PathSRS, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	q := signed(t, secret, boundSN, now.Unix()+60)
	body := `{"action":"on_publish","client_id":"x1","ip":"127.0.0.1","vhost":"__defaultVhost__","app":"live","stream":"` +
		boundSN + `","param":"?` + q.Encode() + `"}`
	if code, b := post("hook-key", body); code != http.StatusOK || b != "0" {
		t.Errorf("bound device: %d %q, want 200 \"0\"", code, b)
	}
	other := strings.Replace(body, boundSN, otherSN, 1)
	if code, _ := post("hook-key", other); code != http.StatusForbidden {
		t.Errorf("another camera's path: %d, want 403", code)
	}
	if code, _ := post("", body); code != http.StatusUnauthorized {
		t.Errorf("no key: %d, want 401", code)
	}
	if code, _ := post("hook-key", `{"action":"on_publish",`); code != http.StatusBadRequest {
		t.Errorf("broken JSON: %d, want 400", code)
	}
}

func TestNewRefuses(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	regs := fakeRegs{}
	for name, cfg := range map[string]Config{
		"no secret":    {Key: "k"},
		"short secret": {Secrets: [][]byte{[]byte("short")}, Key: "k"},
		"no key":       {Secrets: [][]byte{secret}},
	} {
		if _, err := New(cfg, regs, log, nil); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}

func FuzzDecide(f *testing.F) {
	f.Add("live", boundSN, "1700000060", "abcd")
	f.Fuzz(func(t *testing.T, app, name, exp, sig string) {
		h, err := New(Config{Secrets: [][]byte{secret}, Key: "k", Now: func() time.Time { return now }}, fakeRegs{boundSN: true},
			slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
		if err != nil {
			t.Fatal(err)
		}
		_, reason := h.Decide(context.Background(), app, name, url.Values{"exp": {exp}, "sig": {sig}})
		if reason == ReasonOK && device.StreamSignature(secret, "/"+strings.Trim(app, "/")+"/"+strings.Trim(name, "/"), exp) != strings.ToLower(sig) {
			t.Fatalf("allowed a publish whose signature does not verify: %q %q %q %q", app, name, exp, sig)
		}
	})
}
