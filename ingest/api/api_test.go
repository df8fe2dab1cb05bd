package api

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ivms/ams/pkg/deviceauth"
	"github.com/ivms/ams/pkg/devicestate"
	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/schemas"
)

const token = "api-secret"

// fakeState is the projected state, in memory.
type fakeState struct {
	mu       sync.Mutex
	devices  map[string]devicestate.Device
	hashes   map[string]string
	commands map[string]devicestate.Command
	watchers map[string]chan struct{}
	watched  chan string // receives an id when WatchCommandFinal is called
}

func newFakeState() *fakeState {
	return &fakeState{devices: map[string]devicestate.Device{}, hashes: map[string]string{},
		commands: map[string]devicestate.Command{}, watchers: map[string]chan struct{}{}, watched: make(chan string, 1)}
}

func (f *fakeState) register(sn, tok, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.devices[sn] = devicestate.Device{SN: sn, Registered: true, Registration: &devicestate.Registration{Name: name}}
	f.hashes[sn] = deviceauth.TokenSHA256(tok)
}

func (f *fakeState) Device(_ context.Context, sn string) (devicestate.Device, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.devices[sn]
	return d, ok, nil
}

func (f *fakeState) RegistrationOf(_ context.Context, sn string) (devicestate.Registration, string, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.devices[sn]
	if !ok || !d.Registered {
		return devicestate.Registration{}, "", false, nil
	}
	return *d.Registration, f.hashes[sn], true, nil
}

func (f *fakeState) Registered(ctx context.Context, sn string) (bool, error) {
	_, _, ok, err := f.RegistrationOf(ctx, sn)
	return ok, err
}

func (f *fakeState) TokenHash(_ context.Context, sn string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hashes[sn], nil
}

// ListDevices pages through the devices of one presence, as the Redis store
// does: in sn order after cursor, next = the last sn when more follow.
func (f *fakeState) ListDevices(_ context.Context, online bool, cursor string, limit int) ([]devicestate.Device, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var sns []string
	for sn, d := range f.devices {
		if d.Online == online && sn > cursor {
			sns = append(sns, sn)
		}
	}
	sort.Strings(sns)
	next := ""
	if len(sns) > limit {
		sns = sns[:limit]
		next = sns[limit-1]
	}
	out := []devicestate.Device{}
	for _, sn := range sns {
		out = append(out, f.devices[sn])
	}
	return out, next, nil
}

func (f *fakeState) Command(_ context.Context, id string) (devicestate.Command, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.commands[id]
	return c, ok, nil
}

func (f *fakeState) WatchCommandFinal(_ context.Context, id string) (<-chan struct{}, func(), error) {
	f.mu.Lock()
	ch := make(chan struct{}, 1)
	f.watchers[id] = ch
	f.mu.Unlock()
	f.watched <- id
	return ch, func() {}, nil
}

// project sets a command's state and, when it is final, wakes its watcher,
// as the sink and devicestate.CommandWatcher.WatchFinal do.
func (f *fakeState) project(c devicestate.Command) {
	f.mu.Lock()
	f.commands[c.ID] = c
	ch := f.watchers[c.ID]
	f.mu.Unlock()
	if ch != nil && c.Final {
		ch <- struct{}{}
	}
}

type produced struct {
	topic      string
	key, value []byte
}

type fakeProducer struct {
	mu   sync.Mutex
	recs []produced
}

func (p *fakeProducer) ProduceSync(_ context.Context, topic string, key, value []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.recs = append(p.recs, produced{topic, key, value})
	return nil
}

func (p *fakeProducer) last(t *testing.T) produced {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.recs) == 0 {
		t.Fatal("nothing produced")
	}
	return p.recs[len(p.recs)-1]
}

type harness struct {
	srv   *httptest.Server
	state *fakeState
	prod  *fakeProducer
	reg   *schemas.Registry
}

func newHarness(t *testing.T, opts ...func(*Config)) *harness {
	t.Helper()
	reg, err := schemas.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	accounts, err := deviceauth.ParseAccounts("ingest:in-pw")
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{state: newFakeState(), prod: &fakeProducer{}, reg: reg}
	cfg := Config{Token: token, Names: kafkatopics.Default(), Accounts: accounts, MaxWait: 2 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := New(cfg, h.state, h.prod, reg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	h.srv = httptest.NewServer(ValidatingHandler(t, s.Handler(), s.OpenAPI()))
	t.Cleanup(h.srv.Close)
	h.state.register("SN1", "tok-1", "cam1")
	return h
}

func (h *harness) do(t *testing.T, method, path, body string, hdr ...string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, h.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("%s %s: answer is not a JSON object: %s", method, path, b)
		}
	}
	return resp.StatusCode, out
}

func TestAuthRequired(t *testing.T) {
	h := newHarness(t)
	routes := [][2]string{
		{"POST", "/v1/devices/SN1/commands"}, {"GET", "/v1/commands/x"}, {"GET", "/v1/devices/SN1"},
		{"GET", "/v1/devices?online=true"}, {"PUT", "/v1/devices/SN1"}, {"DELETE", "/v1/devices/SN1"},
		{"POST", "/v1/emqx/auth"}, {"POST", "/v1/emqx/acl"}, {"GET", "/v1/command-kinds"},
	}
	for _, auth := range []string{"", "Bearer wrong", "Basic " + token, "Bearer " + token + "x", "Bearer"} {
		for _, r := range routes {
			code, body := h.do(t, r[0], r[1], `{}`, "Authorization", auth)
			if code != http.StatusUnauthorized || body["error"] == nil {
				t.Errorf("%s %s with Authorization %q: %d %v", r[0], r[1], auth, code, body)
			}
		}
	}
	if len(h.prod.recs) != 0 {
		t.Fatalf("an unauthenticated request wrote %d records", len(h.prod.recs))
	}
	if code, _ := h.do(t, "GET", "/v1/devices/SN1", "", "Authorization", "bearer "+token); code != http.StatusOK {
		t.Fatalf("lower-case scheme: %d", code)
	}
}

func TestCommandBadRequest(t *testing.T) {
	h := newHarness(t)
	cases := []struct{ body, field string }{
		{`{"kind":"reboot","body":{"iReboot":2}}`, "body.iReboot"},
		{`{"kind":"reboot","body":{"iReboot":1,"x":1}}`, "body.x"},
		{`{"kind":"reboot","body":[1]}`, "body"},
		{`{"kind":"reset"}`, "body"},
		{`{"kind":"explode"}`, "kind"},
		{`{}`, "kind"},
		{`{"kind":"reboot","timeout":"soon"}`, "timeout"},
		{`{"kind":"reboot","expires":"-1m"}`, "expires"},
		{`{"kind":"reboot","offline":"drop"}`, "offline"},
		{`{"kind":"reboot","colour":"red"}`, "colour"},
		{`{"kind":7}`, "kind"},
	}
	for _, c := range cases {
		code, body := h.do(t, "POST", "/v1/devices/SN1/commands", c.body)
		if code != http.StatusBadRequest || body["field"] != c.field || body["error"] == "" {
			t.Errorf("%s: %d %v, want 400 naming %s", c.body, code, body, c.field)
		}
	}
	for _, c := range []struct{ path, body, field string }{
		{"/v1/devices/SN1/commands?wait=forever", `{"kind":"reboot"}`, "wait"},
		{"/v1/devices/S%2BN/commands", `{"kind":"reboot"}`, "sn"},
		{"/v1/devices/SN1/commands", `not json`, ""},
	} {
		code, body := h.do(t, "POST", c.path, c.body)
		if code != http.StatusBadRequest || (c.field != "" && body["field"] != c.field) {
			t.Errorf("%s %s: %d %v", c.path, c.body, code, body)
		}
	}
	if code, _ := h.do(t, "POST", "/v1/devices/SN1/commands", `{"kind":"reboot"}`, IdempotencyHeader, "bad key!"); code != http.StatusBadRequest {
		t.Errorf("bad idempotency key: %d", code)
	}
	if len(h.prod.recs) != 0 {
		t.Fatalf("a refused request wrote %d records", len(h.prod.recs))
	}
}

func TestCommandUnknownDevice(t *testing.T) {
	h := newHarness(t)
	code, body := h.do(t, "POST", "/v1/devices/SN404/commands", `{"kind":"reboot"}`)
	if code != http.StatusNotFound || body["error"] == nil {
		t.Fatalf("%d %v", code, body)
	}
}

func TestCommandAccepted(t *testing.T) {
	h := newHarness(t)
	code, body := h.do(t, "POST", "/v1/devices/SN1/commands",
		`{"kind":"reboot","timeout":"30s","expires":"10m","offline":"reject"}`)
	if code != http.StatusAccepted {
		t.Fatalf("%d %v", code, body)
	}
	id, _ := body["id"].(string)
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(id) {
		t.Fatalf("id %q", id)
	}
	rec := h.prod.last(t)
	var cmd schemas.Command
	if err := h.reg.Decode(rec.value, &cmd); err != nil {
		t.Fatal(err)
	}
	if rec.topic != "ams.commands" || string(rec.key) != "SN1" || cmd.ID != id || cmd.SN != "SN1" || cmd.Kind != "reboot" ||
		cmd.Body != `{"iReboot":1}` || cmd.TimeoutMs != 30000 || cmd.Offline != schemas.OfflineReject || cmd.ExpiresAt == nil ||
		cmd.ExpiresAt.Sub(cmd.RequestedAt) != 10*time.Minute || cmd.RequestedBy != DefaultTokenName {
		t.Fatalf("record %s %q: %+v", rec.topic, rec.key, cmd)
	}

	code, body = h.do(t, "POST", "/v1/devices/SN1/commands", `{"kind":"reboot","body":{"iReboot":1}}`, IdempotencyHeader, "order-42")
	if code != http.StatusAccepted || body["id"] != "order-42" {
		t.Fatalf("%d %v", code, body)
	}
	if err := h.reg.Decode(h.prod.last(t).value, &cmd); err != nil || cmd.ID != "order-42" || cmd.Offline != schemas.OfflineQueue {
		t.Fatalf("%+v %v", cmd, err)
	}
}

func TestCommandWait(t *testing.T) {
	h := newHarness(t)
	go func() {
		id := <-h.state.watched
		h.state.project(devicestate.Command{ID: id, SN: "SN1", State: schemas.CommandSent})
		time.Sleep(50 * time.Millisecond)
		h.state.project(devicestate.Command{ID: id, SN: "SN1", State: schemas.CommandSucceeded, Final: true,
			Reply: json.RawMessage(`{"iResult":0}`)})
	}()
	code, body := h.do(t, "POST", "/v1/devices/SN1/commands?wait=15s", `{"kind":"reboot"}`, IdempotencyHeader, "w1")
	if code != http.StatusOK || body["state"] != schemas.CommandSucceeded || body["id"] != "w1" {
		t.Fatalf("%d %v", code, body)
	}
	if r, _ := json.Marshal(body["reply"]); string(r) != `{"iResult":0}` {
		t.Fatalf("reply %s", r)
	}

	// Not final within the (capped) wait: 202 with the latest state.
	go func() {
		id := <-h.state.watched
		h.state.project(devicestate.Command{ID: id, SN: "SN1", State: schemas.CommandQueued})
	}()
	start := time.Now()
	code, body = h.do(t, "POST", "/v1/devices/SN1/commands?wait=1h", `{"kind":"reboot"}`, IdempotencyHeader, "w2")
	if code != http.StatusAccepted || body["state"] != schemas.CommandQueued || time.Since(start) > 10*time.Second {
		t.Fatalf("%d %v after %s", code, body, time.Since(start))
	}
}

func TestGetCommandAndDevice(t *testing.T) {
	h := newHarness(t)
	if code, _ := h.do(t, "GET", "/v1/commands/nope", ""); code != http.StatusNotFound {
		t.Fatalf("unknown command: %d", code)
	}
	h.state.project(devicestate.Command{ID: "c1", SN: "SN1", State: schemas.CommandAccepted,
		History: []devicestate.CommandEvent{{CommandID: "c1", State: schemas.CommandAccepted, Seq: 1}}})
	code, body := h.do(t, "GET", "/v1/commands/c1", "")
	if code != http.StatusOK || len(body["history"].([]any)) != 1 {
		t.Fatalf("%d %v", code, body)
	}
	if code, _ := h.do(t, "GET", "/v1/devices/SN404", ""); code != http.StatusNotFound {
		t.Fatalf("unknown device: %d", code)
	}
	code, body = h.do(t, "GET", "/v1/devices/SN1", "")
	if code != http.StatusOK || body["sn"] != "SN1" || body["registered"] != true {
		t.Fatalf("%d %v", code, body)
	}
	if code, body := h.do(t, "GET", "/v1/devices", ""); code != http.StatusOK || len(body["devices"].([]any)) != 1 {
		t.Fatalf("list without online: %d %v", code, body)
	}
	if code, body := h.do(t, "GET", "/v1/devices?online=true&limit=0", ""); code != http.StatusBadRequest || body["field"] != "limit" {
		t.Fatalf("limit 0: %d %v", code, body)
	}
	code, body = h.do(t, "GET", "/v1/devices?online=false&limit=10", "")
	if code != http.StatusOK || len(body["devices"].([]any)) != 1 {
		t.Fatalf("%d %v", code, body)
	}
}

func TestRegistration(t *testing.T) {
	h := newHarness(t)
	if code, body := h.do(t, "PUT", "/v1/devices/SN2", `{"name":"x"}`); code != http.StatusBadRequest || body["field"] != "token" {
		t.Fatalf("new device without token: %d %v", code, body)
	}
	if code, body := h.do(t, "PUT", "/v1/devices/SN2", `{"token":"device-token-0002","bound":"yes"}`); code != http.StatusBadRequest || body["field"] != "bound" {
		t.Fatalf("bound not a boolean: %d %v", code, body)
	}
	// A token shorter than the minimum is refused, naming the field.
	if code, body := h.do(t, "PUT", "/v1/devices/SN2", `{"token":"tok-2-too-short"}`); code != http.StatusBadRequest || body["field"] != "token" {
		t.Fatalf("short token: %d %v", code, body)
	}
	code, body := h.do(t, "PUT", "/v1/devices/SN2", `{"token":"device-token-0002","bound":true,"name":"door"}`)
	if code != http.StatusCreated || body["created"] != true || body["token"] != nil {
		t.Fatalf("%d %v", code, body)
	}
	rec := h.prod.last(t)
	if strings.Contains(string(rec.value), "device-token-0002") || strings.Contains(string(rec.value), deviceauth.TokenSHA256("device-token-0002")) {
		t.Fatal("the registration record holds the token or its plain sha256")
	}
	var reg schemas.Registration
	if err := h.reg.Decode(rec.value, &reg); err != nil {
		t.Fatal(err)
	}
	if rec.topic != "ams.registry" || string(rec.key) != "SN2" || reg.TokenSHA256 != "" || !strings.HasPrefix(reg.TokenHash, "$pbkdf2-sha256$i=") ||
		!deviceauth.VerifyToken(reg.TokenHash, "device-token-0002") || deviceauth.VerifyToken(reg.TokenHash, "device-token-0003") ||
		!reg.Bound || reg.Name != "door" || reg.UpdatedBy != DefaultTokenName {
		t.Fatalf("%s %+v", rec.topic, reg)
	}

	// Rename a registered device whose registration holds a legacy sha256
	// (SN1): the token still verifies, now through a slow hash.
	code, body = h.do(t, "PUT", "/v1/devices/SN1", `{"name":"hall"}`)
	if code != http.StatusOK || body["name"] != "hall" {
		t.Fatalf("%d %v", code, body)
	}
	if err := h.reg.Decode(h.prod.last(t).value, &reg); err != nil || reg.TokenSHA256 != "" ||
		!strings.HasPrefix(reg.TokenHash, "$pbkdf2-sha256-hex-sha256$") || !deviceauth.VerifyToken(reg.TokenHash, "tok-1") || reg.Name != "hall" {
		t.Fatalf("%+v %v", reg, err)
	}

	if code, _ := h.do(t, "DELETE", "/v1/devices/SN1", ""); code != http.StatusNoContent {
		t.Fatalf("delete: %d", code)
	}
	if rec := h.prod.last(t); rec.topic != "ams.registry" || string(rec.key) != "SN1" || rec.value != nil {
		t.Fatalf("tombstone: %+v", rec)
	}
}

func TestEMQX(t *testing.T) {
	h := newHarness(t)
	for _, c := range []struct {
		body, result string
	}{
		{`{"clientid":"SN1","username":"SN1","password":"tok-1"}`, "allow"},
		{`{"clientid":"SN1","username":"SN1","password":"tok-2"}`, "deny"},
		{`{"clientid":"SN9","username":"SN9","password":"tok-1"}`, "deny"},
		{`{"clientid":"x","username":"SN1","password":"tok-1"}`, "deny"},
		{`{"clientid":"ingest-1","username":"ingest","password":"in-pw","peerhost":"10.0.0.1"}`, "allow"},
	} {
		code, body := h.do(t, "POST", "/v1/emqx/auth", c.body)
		if code != http.StatusOK || body["result"] != c.result || body["is_superuser"] != false {
			t.Errorf("auth %s: %d %v, want %s", c.body, code, body, c.result)
		}
	}
	for _, c := range []struct {
		body, result string
	}{
		{`{"clientid":"SN1","username":"SN1","topic":"/ivms/pub/SN1","action":"publish"}`, "allow"},
		{`{"clientid":"SN1","username":"SN1","topic":"/ivms/pub/SN2","action":"publish"}`, "deny"},
		{`{"clientid":"SN1","username":"SN1","topic":"/ivms/sub/SN2","action":"subscribe"}`, "deny"},
		{`{"clientid":"SN1","username":"SN1","topic":"/ivms/sub/SN1","action":"subscribe"}`, "allow"},
		{`{"clientid":"ingest-1","username":"ingest","topic":"$share/g//ivms/pub/+","action":"subscribe"}`, "allow"},
	} {
		code, body := h.do(t, "POST", "/v1/emqx/acl", c.body)
		if code != http.StatusOK || body["result"] != c.result {
			t.Errorf("acl %s: %d %v, want %s", c.body, code, body, c.result)
		}
	}
}

// TestWaitCap: past MaxWaiting waiting requests, ?wait= is answered at once.
func TestWaitCap(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxWaiting = 1 })
	first := make(chan int, 1)
	go func() {
		code, _ := h.do(t, "POST", "/v1/devices/SN1/commands?wait=2s", `{"kind":"reboot"}`)
		first <- code
	}()
	<-h.state.watched // the first request waits
	start := time.Now()
	code, body := h.do(t, "POST", "/v1/devices/SN1/commands?wait=2s", `{"kind":"reboot"}`)
	if code != http.StatusAccepted || body["id"] == nil || time.Since(start) > time.Second {
		t.Fatalf("second request: %d %v after %s", code, body, time.Since(start))
	}
	if code := <-first; code != http.StatusAccepted {
		t.Fatalf("first request: %d", code)
	}
}
