package console

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/alicebob/miniredis/v2"
	goredis "github.com/redis/go-redis/v9"

	"github.com/ivms/ams/pkg/devicestate"
	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/schemas"
)

// recorder is a Producer that keeps what was written (the browser test in
// cmd/ams writes to real Kafka; these tests check what the handlers decide).
type recorder struct {
	mu   sync.Mutex
	recs [][]byte
}

func (r *recorder) ProduceSync(_ context.Context, _ string, _, value []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, value)
	return nil
}

func (r *recorder) n() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.recs)
}

type rig struct {
	t    *testing.T
	srv  *httptest.Server
	mr   *miniredis.Miniredis
	prod *recorder
	reg  *schemas.Registry
	keys devicestate.Keys
}

const (
	cmdSecret  = "command-secret-0123456789"
	readSecret = "read-secret-0123456789"
)

func newRig(t *testing.T, cfg Config) *rig {
	t.Helper()
	mr := miniredis.RunT(t)
	rdb := goredis.NewClient(&goredis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	reg, err := schemas.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	auth, err := NewTokens(Token{Name: "alice", Scope: ScopeCommand, Secret: cmdSecret}, Token{Name: "bob", Scope: ScopeRead, Secret: readSecret})
	if err != nil {
		t.Fatal(err)
	}
	hist, err := NewHistory("ams", func(context.Context) (driver.Conn, error) { return nil, errors.New("no clickhouse in unit tests") })
	if err != nil {
		t.Fatal(err)
	}
	cfg.Names = kafkatopics.WithPrefix("t.")
	cfg.Keys = devicestate.Keys{Prefix: "t:"}
	prod := &recorder{}
	s, err := New(cfg, Deps{Auth: auth, Redis: rdb, Producer: prod, Encoder: reg, History: hist})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return &rig{t: t, srv: srv, mr: mr, prod: prod, reg: reg, keys: cfg.Keys}
}

// client is a browser-like client with a cookie jar that does not follow redirects.
func (r *rig) client() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func (r *rig) get(c *http.Client, path string) (*http.Response, string) {
	r.t.Helper()
	resp, err := c.Get(r.srv.URL + path)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func (r *rig) post(c *http.Client, path string, form url.Values) (*http.Response, string) {
	r.t.Helper()
	resp, err := c.PostForm(r.srv.URL+path, form)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, html string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(html)
	if m == nil {
		t.Fatalf("no csrf field in:\n%s", html)
	}
	return m[1]
}

// signIn signs c in with secret and returns the session's CSRF token.
func (r *rig) signIn(c *http.Client, secret string) string {
	r.t.Helper()
	_, html := r.get(c, "/ui/signin")
	resp, _ := r.post(c, "/ui/signin", url.Values{"csrf": {csrfOf(r.t, html)}, "token": {secret}})
	if resp.StatusCode != http.StatusSeeOther {
		r.t.Fatalf("sign in: %d", resp.StatusCode)
	}
	resp, html = r.get(c, "/ui/cameras")
	if resp.StatusCode != http.StatusOK {
		r.t.Fatalf("after sign in: %d", resp.StatusCode)
	}
	return csrfOf(r.t, html)
}

func TestSignIn(t *testing.T) {
	r := newRig(t, Config{})
	c := r.client()
	resp, _ := r.get(c, "/ui/")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/signin" {
		t.Fatalf("GET /ui/ signed out: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, html := r.get(c, "/ui/signin")
	if p := resp.Header.Get("Content-Security-Policy"); !strings.Contains(p, "script-src 'self'") || strings.Contains(p, "unsafe-inline") {
		t.Fatalf("CSP %q", p)
	}
	if strings.Contains(html, "<script>") || strings.Contains(html, "style=") {
		t.Fatal("inline script or style in the page")
	}
	csrfOf(t, html) // the sign-in page carries a CSRF token

	// No or a wrong CSRF token: refused, no session.
	resp, _ = r.post(c, "/ui/signin", url.Values{"token": {cmdSecret}})
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("sign in without csrf: %d", resp.StatusCode)
	}
	_, html = r.get(c, "/ui/signin")
	csrf := csrfOf(t, html)
	resp, _ = r.post(c, "/ui/signin", url.Values{"csrf": {csrf + "x"}, "token": {cmdSecret}})
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("sign in with a wrong csrf: %d", resp.StatusCode)
	}
	// A wrong token: 401.
	_, html = r.get(c, "/ui/signin")
	resp, _ = r.post(c, "/ui/signin", url.Values{"csrf": {csrfOf(t, html)}, "token": {"nope"}})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("sign in with a wrong token: %d", resp.StatusCode)
	}
	// The right token: an HttpOnly, SameSite=Strict cookie, not Secure on plain HTTP.
	_, html = r.get(c, "/ui/signin")
	resp, _ = r.post(c, "/ui/signin", url.Values{"csrf": {csrfOf(t, html)}, "token": {cmdSecret}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign in: %d", resp.StatusCode)
	}
	var session *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == sessionCookie && ck.MaxAge > 0 {
			session = ck
		}
	}
	if session == nil || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode || session.Secure {
		t.Fatalf("session cookie %+v", session)
	}
	resp, html = r.get(c, "/ui/")
	if resp.StatusCode != http.StatusOK || !strings.Contains(html, "alice") {
		t.Fatalf("fleet page: %d", resp.StatusCode)
	}
	if !strings.Contains(html, "history unavailable") {
		t.Fatalf("fleet page does not say the history is unavailable:\n%s", html)
	}

	// Sign out needs the session's CSRF token, then the cookie is gone.
	token := csrfOf(t, html)
	resp, _ = r.post(c, "/ui/signout", url.Values{})
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("sign out without csrf: %d", resp.StatusCode)
	}
	resp, _ = r.post(c, "/ui/signout", url.Values{"csrf": {token}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign out: %d", resp.StatusCode)
	}
	resp, _ = r.get(c, "/ui/")
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("GET /ui/ after sign out: %d", resp.StatusCode)
	}
}

func TestSecureCookie(t *testing.T) {
	r := newRig(t, Config{SecureCookie: true})
	c := r.client()
	resp, _ := r.get(c, "/ui/signin")
	for _, ck := range resp.Cookies() {
		if !ck.Secure {
			t.Fatalf("cookie %s not Secure with SecureCookie", ck.Name)
		}
	}
}

func TestSendCommand(t *testing.T) {
	r := newRig(t, Config{Now: func() time.Time { return time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC) }})
	const sn = "0505050505000123"
	c := r.client()
	csrf := r.signIn(c, cmdSecret)
	path := "/ui/cameras/" + sn + "/command"

	cases := []struct {
		name  string
		form  url.Values
		code  int
		wants string
	}{
		{"no csrf", url.Values{"kind": {"reboot"}, "confirm": {"yes"}}, http.StatusForbidden, "CSRF"},
		{"bad body", url.Values{"csrf": {csrf}, "kind": {"log_upload"}, "f.iReqUploadZlog": {"-1"}}, http.StatusBadRequest, "body.iReqUploadZlog"},
		{"not an integer", url.Values{"csrf": {csrf}, "kind": {"log_upload"}, "f.iReqUploadZlog": {"abc"}}, http.StatusBadRequest, "body.iReqUploadZlog"},
		{"value not allowed", url.Values{"csrf": {csrf}, "kind": {"config"}, "f.iGetconfig": {"1"}, "f.iBindStatus": {"7"}}, http.StatusBadRequest, "body.iBindStatus"},
		{"missing field", url.Values{"csrf": {csrf}, "kind": {"config"}, "f.iGetconfig": {"1"}}, http.StatusBadRequest, "body.iBindStatus"},
		{"extra not JSON", url.Values{"csrf": {csrf}, "kind": {"osd"}, "extra": {"{nope"}}, http.StatusBadRequest, "extra"},
		{"nested field", url.Values{"csrf": {csrf}, "kind": {"osd"}, "f.sOsdName.iEnable": {"3"}}, http.StatusBadRequest, "body.sOsdName.iEnable"},
		{"unknown kind", url.Values{"csrf": {csrf}, "kind": {"selfdestruct"}}, http.StatusBadRequest, "kind"},
		{"no confirmation", url.Values{"csrf": {csrf}, "kind": {"reboot"}, "f.iReboot": {"1"}}, http.StatusBadRequest, "confirm"},
		{"bad timeout", url.Values{"csrf": {csrf}, "kind": {"sd_info"}, "timeout": {"forever"}}, http.StatusBadRequest, "timeout"},
		{"unregistered", url.Values{"csrf": {csrf}, "kind": {"reboot"}, "f.iReboot": {"1"}, "confirm": {"yes"}}, http.StatusBadRequest, "not registered"},
	}
	for _, tc := range cases {
		resp, html := r.post(c, path, tc.form)
		if resp.StatusCode != tc.code || !strings.Contains(html, tc.wants) {
			t.Errorf("%s: %d, want %d naming %q:\n%s", tc.name, resp.StatusCode, tc.code, tc.wants, html)
		}
	}
	if r.prod.n() != 0 {
		t.Fatalf("%d records written by refused requests", r.prod.n())
	}

	// Registered: written, with the signed-in name as requested_by.
	r.mr.HSet(r.keys.Device(sn), "registered", "1")
	resp, _ := r.post(c, path, url.Values{"csrf": {csrf}, "kind": {"reboot"}, "f.iReboot": {"1"}, "confirm": {"yes"}, "timeout": {"20s"}})
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/ui/commands/") {
		t.Fatalf("send: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if r.prod.n() != 1 {
		t.Fatalf("%d records written, want 1", r.prod.n())
	}
	var cmd schemas.Command
	if err := r.reg.Decode(r.prod.recs[0], &cmd); err != nil {
		t.Fatal(err)
	}
	if cmd.SN != sn || cmd.Kind != "reboot" || cmd.Body != `{"iReboot":1}` || cmd.RequestedBy != "alice" || cmd.TimeoutMs != 20000 ||
		"/ui/commands/"+cmd.ID != resp.Header.Get("Location") {
		t.Fatalf("command written: %+v", cmd)
	}

	// An open body with nested fields and extra members.
	resp, html := r.post(c, path, url.Values{"csrf": {csrf}, "kind": {"osd"}, "f.sOsdName.iEnable": {"1"},
		"f.sOsdName.strText": {"Front door"}, "extra": {`{"iTimeEnable":1}`}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("osd: %d\n%s", resp.StatusCode, html)
	}
	if err := r.reg.Decode(r.prod.recs[1], &cmd); err != nil {
		t.Fatal(err)
	}
	if cmd.Body != `{"sOsdName":{"iEnable":1,"strText":"Front door"},"iTimeEnable":1}` {
		t.Fatalf("osd body %s", cmd.Body)
	}

	// A read token is refused, with or without a CSRF token.
	rc := r.client()
	rcsrf := r.signIn(rc, readSecret)
	resp, html = r.post(rc, path, url.Values{"csrf": {rcsrf}, "kind": {"sd_info"}})
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(html, "not send") {
		t.Fatalf("read token send: %d\n%s", resp.StatusCode, html)
	}
	if r.prod.n() != 2 {
		t.Fatalf("%d records written, want 2", r.prod.n())
	}
}

func TestRange(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		r  Range
		ok bool
	}{
		{Last(now, time.Hour, 10), true},
		{Last(now, MaxRange, MaxRows), true},
		{Last(now, MaxRange+time.Second, 10), false},
		{Last(now, time.Hour, 0), false},
		{Last(now, time.Hour, MaxRows+1), false},
		{Range{From: now, To: now, Limit: 1}, false},
		{Range{From: now, To: now.Add(-time.Hour), Limit: 1}, false},
	} {
		if err := tc.r.Check(); (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrRange)) {
			t.Errorf("%+v: %v, want ok %v", tc.r, err, tc.ok)
		}
	}
}

func TestHistoryJSONBounds(t *testing.T) {
	r := newRig(t, Config{})
	c := r.client()
	r.signIn(c, readSecret)
	for _, tc := range []struct {
		path string
		code int
	}{
		{"/ui/history/0505/presence?from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z", http.StatusBadRequest},
		{"/ui/history/0505/frames?limit=100000", http.StatusBadRequest},
		{"/ui/history/0505/frames?from=yesterday", http.StatusBadRequest},
		{"/ui/history/0505/sql", http.StatusNotFound},
		{"/ui/history/0505/frames?limit=10", http.StatusServiceUnavailable}, // in bounds; no ClickHouse here
	} {
		resp, body := r.get(c, tc.path)
		if resp.StatusCode != tc.code {
			t.Errorf("%s: %d %s, want %d", tc.path, resp.StatusCode, body, tc.code)
		}
	}
	// Signed out: 401, not data.
	resp, _ := r.get(r.client(), "/ui/history/0505/frames")
	if resp.StatusCode != http.StatusSeeOther && resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("history signed out: %d", resp.StatusCode)
	}
}

func TestCameras(t *testing.T) {
	r := newRig(t, Config{})
	for i, sn := range []string{"AA01", "AA02", "AB01", "AA03"} {
		set := r.keys.Online()
		online := "1"
		if i == 3 {
			set, online = r.keys.Offline(), "0"
		}
		if _, err := r.mr.ZAdd(set, 0, sn); err != nil {
			t.Fatal(err)
		}
		r.mr.HSet(r.keys.Device(sn), "online", online, "last_seen", []string{"1000", "3000", "2000", "4000"}[i],
			"name", []string{"door", "yard", "Door 2", "gate"}[i], "config", `{"sFwVersion":"V2.`+string(rune('0'+i))+`","sModelName":"M"}`)
	}
	c := r.client()
	r.signIn(c, readSecret)
	order := func(html string) string {
		var out []string
		for _, m := range regexp.MustCompile(`<td><a href="/ui/cameras/([A-Z0-9]+)">`).FindAllStringSubmatch(html, -1) {
			out = append(out, m[1])
		}
		return strings.Join(out, ",")
	}
	for _, tc := range []struct{ q, want string }{
		{"", "AA03,AA02,AB01,AA01"},
		{"?sort=last_seen_asc", "AA01,AB01,AA02,AA03"},
		{"?sort=sn", "AA01,AA02,AA03,AB01"},
		{"?prefix=AA", "AA03,AA02,AA01"},
		{"?online=true&prefix=AA", "AA02,AA01"},
		{"?name=DOOR", "AB01,AA01"},
		{"?firmware=v2.2", "AB01"},
	} {
		_, html := r.get(c, "/ui/cameras"+tc.q)
		if got := order(html); got != tc.want {
			t.Errorf("cameras%s: %s, want %s", tc.q, got, tc.want)
		}
	}
}

func TestJSONString(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{`{"sFwVersion":"V2.3.7 build 1","x":1}`, "V2.3.7 build 1"},
		{`{"a":"b", "sFwVersion": "V1"}`, "V1"},
		{`{"sFwVersion":"V\"2\\/x"}`, `V"2\/x`},
		{`{"sFwVersion":7}`, ""},
		{`{"other":"x"}`, ""},
		{``, ""},
	} {
		if got := jsonString(tc.doc, "sFwVersion"); got != tc.want {
			t.Errorf("jsonString(%s) = %q, want %q", tc.doc, got, tc.want)
		}
	}
}
