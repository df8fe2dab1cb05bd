package uploadgw

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ivms/ams/pkg/ks3sign"
	"github.com/ivms/ams/processors/device"
)

// memStore keeps objects in memory (unit tests only; the integration test
// in cmd/ams uses a real S3 server).
type memStore struct {
	mu   sync.Mutex
	objs map[string][]byte
}

func (m *memStore) Put(_ context.Context, key string, r io.Reader, size int64, _ string) (string, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return "", err
	}
	if int64(len(b)) != size {
		return "", errors.New("short body")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.objs[key] = b
	return "etag-" + key, nil
}

func (m *memStore) Delete(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.objs, key)
	return nil
}

var (
	secret = []byte("upload-secret-0123456789")
	now    = time.Unix(1_800_000_000, 0)
)

const sn = "0505050505000001"

type fixture struct {
	gw       *Gateway
	srv      *httptest.Server
	store    *memStore
	cbBodies chan string
}

func newFixture(t *testing.T, mut func(*Config)) *fixture {
	t.Helper()
	f := &fixture{store: &memStore{objs: map[string][]byte{}}, cbBodies: make(chan string, 10)}
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f.cbBodies <- string(b)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(cb.Close)
	cfg := Config{Secret: secret, Bucket: "pictures", ObjectPath: "ai_engine_imgs", CallbackURL: cb.URL + "/cb",
		MaxObjectBytes: 1024, Burst: 3, RatePerMinute: 1, Now: func() time.Time { return now }}
	if mut != nil {
		mut(&cfg)
	}
	gw, err := New(cfg, f.store, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	f.gw = gw
	f.srv = httptest.NewServer(gw)
	t.Cleanup(f.srv.Close)
	return f
}

// grant is what the processor would send device sn at now.
func (f *fixture) grant(t *testing.T, sn string, ttl time.Duration) Grant {
	t.Helper()
	g, err := device.SignedUploadCredentials{Secret: secret, TTL: ttl}.Grant(sn, "pictures", "ai_engine_imgs/"+sn, now)
	if err != nil {
		t.Fatal(err)
	}
	return Grant{HostURL: f.srv.URL, AccessKey: g.AccessKey, SecretKey: g.SecretKey, Bucket: "pictures",
		ObjectPath: "ai_engine_imgs/" + sn, CallbackURL: f.gw.cfg.CallbackURL}
}

func (f *fixture) do(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (f *fixture) put(t *testing.T, g Grant, name string, body []byte, mut func(*http.Request)) (int, string) {
	t.Helper()
	req, err := NewPutRequest(context.Background(), g, name, "image/jpeg", body, now)
	if err != nil {
		t.Fatal(err)
	}
	if mut != nil {
		mut(req)
	}
	return f.do(t, req)
}

func reasonOf(body string) string {
	i := strings.Index(body, "<Message>")
	j := strings.Index(body, "</Message>")
	if i < 0 || j < i {
		return ""
	}
	return body[i+len("<Message>") : j]
}

func TestUploadStoredAndCallback(t *testing.T) {
	f := newFixture(t, nil)
	g := f.grant(t, sn, time.Hour)
	pic := []byte("\xff\xd8\xff\xe0 a small jpeg")
	code, body := f.put(t, g, "pic1.jpg", pic, nil)
	if code != http.StatusOK || body != `{"ok":true}` {
		t.Fatalf("upload: %d %s", code, body)
	}
	if got := f.store.objs["ai_engine_imgs/"+sn+"/pic1.jpg"]; !bytes.Equal(got, pic) {
		t.Fatalf("stored %q", got)
	}
	cb := <-f.cbBodies
	v, err := url.ParseQuery(cb)
	if err != nil || v.Get("bucket") != "pictures" || v.Get("key") != "ai_engine_imgs/"+sn+"/pic1.jpg" ||
		v.Get("objectSize") != strconv.Itoa(len(pic)) || v.Get("mimeType") != "image/jpeg" || v.Get("etag") == "" {
		t.Fatalf("callback body %q", cb)
	}
	if n := testutil.ToFloat64(f.gw.m.requests.WithLabelValues("stored", ReasonOK)); n != 1 {
		t.Errorf("stored counter %v", n)
	}
}

func TestUploadRefused(t *testing.T) {
	f := newFixture(t, nil)
	g := f.grant(t, sn, time.Hour)
	other := f.grant(t, "0505050505000002", time.Hour)
	expired := f.grant(t, sn, time.Hour)
	expired.AccessKey, expired.SecretKey = func() (string, string) {
		gr, _ := device.SignedUploadCredentials{Secret: secret, TTL: time.Hour}.Grant(sn, "pictures", "ai_engine_imgs/"+sn, now.Add(-2*time.Hour))
		return gr.AccessKey, gr.SecretKey
	}()
	forged := g
	forged.SecretKey = strings.Repeat("0", 40)
	intoOther := g
	intoOther.ObjectPath = "ai_engine_imgs/0505050505000002" // own credentials, another camera's path
	pic := []byte("jpeg")
	cases := []struct {
		name   string
		g      Grant
		file   string
		body   []byte
		mut    func(*http.Request)
		status int
		reason string
	}{
		{"forged secret", forged, "a.jpg", pic, nil, 403, ReasonBadSignature},
		{"another camera's path", intoOther, "a.jpg", pic, nil, 403, ReasonOutsidePath},
		{"another camera's key on its own path, signed", other, "a.jpg", pic, nil, 200, ""},
		{"expired key", expired, "a.jpg", pic, nil, 403, ReasonExpired},
		{"no signature", g, "a.jpg", pic, func(r *http.Request) { r.Header.Del("Authorization") }, 403, ReasonNoSignature},
		{"not an ams key", g, "a.jpg", pic, func(r *http.Request) { r.Header.Set("Authorization", "KSS AKLTLONGTERM:c2ln") }, 403, ReasonBadAccessKey},
		{"old date (replay)", g, "a.jpg", pic, func(r *http.Request) {
			r.Header.Set("Date", now.Add(-time.Hour).UTC().Format(http.TimeFormat))
		}, 403, ReasonClockSkew},
		{"too large", g, "big.jpg", bytes.Repeat([]byte("x"), 2048), nil, 413, ReasonTooLarge},
		{"wrong md5", g, "m.jpg", pic, func(r *http.Request) {
			// re-signed with the wrong digest so only the digest check can catch it
			r.Header.Set("Content-Md5", ContentMD5([]byte("other")))
			resign(r, g, "m.jpg")
		}, 400, ReasonBadDigest},
		{"foreign callback", g, "c.jpg", pic, func(r *http.Request) {
			r.Header.Set("X-Kss-Callbackurl", "http://169.254.169.254/latest")
			resign(r, g, "c.jpg")
		}, 400, ReasonBadCallback},
		{"dot-dot out of the path", g, "../0505050505000002/x.jpg", pic, nil, 403, ReasonOutsidePath},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := f.put(t, c.g, c.file, c.body, c.mut)
			if code != c.status || (c.reason != "" && reasonOf(body) != c.reason) {
				t.Fatalf("got %d %q, want %d %s", code, body, c.status, c.reason)
			}
		})
	}
	if _, ok := f.store.objs["ai_engine_imgs/"+sn+"/m.jpg"]; ok {
		t.Error("object with a wrong Content-MD5 was kept")
	}
	for k := range f.store.objs {
		if !strings.HasPrefix(k, "ai_engine_imgs/0505050505000002/a.jpg") && !strings.HasPrefix(k, "ai_engine_imgs/"+sn+"/") {
			t.Errorf("object outside the paths: %s", k)
		}
	}
}

// resign signs r again after a test changed a signed header.
func resign(r *http.Request, g Grant, name string) {
	ks3sign.Sign(r, g.Bucket, g.ObjectPath+"/"+name, g.AccessKey, g.SecretKey)
}

func TestRateLimit(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.CallbackURL = "" })
	g := f.grant(t, sn, time.Hour)
	g.CallbackURL = ""
	for i := range 3 {
		if code, body := f.put(t, g, "r.jpg", []byte("x"), nil); code != 200 {
			t.Fatalf("upload %d: %d %s", i, code, body)
		}
	}
	if code, body := f.put(t, g, "r.jpg", []byte("x"), nil); code != 503 || reasonOf(body) != ReasonRateLimited {
		t.Fatalf("4th upload in a burst of 3: %d %s", code, body)
	}
	// Another camera has its own bucket.
	if code, _ := f.put(t, f.grant(t, "0505050505000003", time.Hour), "r.jpg", []byte("x"), nil); code != 200 && code != 203 {
		t.Fatalf("another camera limited too: %d", code)
	}
}

func TestMethodAndPathChecks(t *testing.T) {
	f := newFixture(t, nil)
	g := f.grant(t, sn, time.Hour)
	req, _ := NewPutRequest(context.Background(), g, "x.jpg", "image/jpeg", []byte("x"), now)
	req.Method = http.MethodDelete
	resign(req, g, "x.jpg")
	if code, body := f.do(t, req); code != 405 || reasonOf(body) != ReasonMethod {
		t.Fatalf("DELETE: %d %s", code, body)
	}
}

func TestExpand(t *testing.T) {
	got := expand("a=${bucket}&k=${key}&u=${unknown}&open=${", map[string]string{"bucket": "b c", "key": "x/y"})
	if got != "a=b+c&k=x%2Fy&u=${unknown}&open=${" {
		t.Fatalf("got %q", got)
	}
}
