package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ivms/ams/schemas"
)

const (
	readTok   = "read-token-0123456789"
	cmdTok    = "command-token-0123456789"
	adminTok  = "admin-token-0123456789"
	brokerTok = "broker-token-0123456789"
)

func writeTokens(t *testing.T, path, body string) {
	t.Helper()
	// Replaced atomically, as the README asks operators to.
	if err := os.WriteFile(path+".tmp", []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

func sumHex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// TestScopes: each route answers 401 without a valid token and 403 to a
// token whose scope does not allow it; what a token writes carries its name.
func TestScopes(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tokens")
	writeTokens(t, file, "# name scope token\nviewer read "+readTok+"\nops-bot command sha256:"+sumHex(cmdTok)+
		"\n\nroot admin "+adminTok+"\nemqx broker-auth "+brokerTok+"\n")
	tokens, err := NewTokens(file, "")
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *Config) { c.Tokens = tokens })
	routes := []struct {
		method, path, body string
		need               Scope
	}{
		{"GET", "/v1/devices/SN1", "", ScopeRead},
		{"GET", "/v1/devices?online=true", "", ScopeRead},
		{"GET", "/v1/command-kinds", "", ScopeRead},
		{"GET", "/v1/commands/nope", "", ScopeRead},
		{"POST", "/v1/devices/SN1/commands", `{"kind":"reboot"}`, ScopeCommand},
		{"PUT", "/v1/devices/SN7", `{"token":"device-token-0007"}`, ScopeAdmin},
		{"DELETE", "/v1/devices/SN7", "", ScopeAdmin},
		{"POST", "/v1/emqx/auth", `{"clientid":"SN1","username":"SN1","password":"tok-1"}`, ScopeBrokerAuth},
		{"POST", "/v1/emqx/acl", `{"clientid":"SN1","username":"SN1","topic":"/ivms/pub/SN1","action":"publish"}`, ScopeBrokerAuth},
	}
	principals := map[string]Principal{readTok: {"viewer", ScopeRead}, cmdTok: {"ops-bot", ScopeCommand},
		adminTok: {"root", ScopeAdmin}, brokerTok: {"emqx", ScopeBrokerAuth}}
	for _, rt := range routes {
		for _, bad := range []string{api401a, api401b} {
			if code, _ := h.do(t, rt.method, rt.path, rt.body, "Authorization", bad); code != http.StatusUnauthorized {
				t.Errorf("%s %s with %q: %d, want 401", rt.method, rt.path, bad, code)
			}
		}
		for tok, p := range principals {
			code, body := h.do(t, rt.method, rt.path, rt.body, "Authorization", "Bearer "+tok)
			allowed := code != http.StatusUnauthorized && code != http.StatusForbidden
			if allowed != p.Allows(rt.need) || code == http.StatusUnauthorized {
				t.Errorf("%s %s as %s (%s): %d %v", rt.method, rt.path, p.Name, p.Scope, code, body)
			}
			if code == http.StatusForbidden && strings.Contains(body["error"].(string), tok) {
				t.Errorf("403 answer holds the token: %v", body)
			}
		}
	}
	// The old -api-token is gone when only the file is configured.
	if code, _ := h.do(t, "GET", "/v1/devices/SN1", ""); code != http.StatusUnauthorized {
		t.Fatalf("legacy token without -api-token: %d", code)
	}

	// requested_by / updated_by is the token's name.
	if code, body := h.do(t, "POST", "/v1/devices/SN1/commands", `{"kind":"reboot"}`, "Authorization", "Bearer "+cmdTok); code != http.StatusAccepted {
		t.Fatalf("%d %v", code, body)
	}
	var cmd schemas.Command
	if err := h.reg.Decode(h.prod.last(t).value, &cmd); err != nil || cmd.RequestedBy != "ops-bot" {
		t.Fatalf("requested_by %q, %v", cmd.RequestedBy, err)
	}
	if code, body := h.do(t, "PUT", "/v1/devices/SN8", `{"token":"device-token-0008"}`, "Authorization", "Bearer "+adminTok); code != http.StatusCreated {
		t.Fatalf("%d %v", code, body)
	}
	var reg schemas.Registration
	if err := h.reg.Decode(h.prod.last(t).value, &reg); err != nil || reg.UpdatedBy != "root" {
		t.Fatalf("updated_by %q, %v", reg.UpdatedBy, err)
	}
}

const (
	api401a = "Bearer wrong-token-0123456789"
	api401b = ""
)

func TestPrincipalAllows(t *testing.T) {
	want := map[Scope][]Scope{
		ScopeRead:       {ScopeRead},
		ScopeCommand:    {ScopeRead, ScopeCommand},
		ScopeAdmin:      {ScopeRead, ScopeCommand, ScopeAdmin, ScopeBrokerAuth},
		ScopeBrokerAuth: {ScopeBrokerAuth},
		"bogus":         nil,
	}
	for have, allowed := range want {
		for _, need := range []Scope{ScopeRead, ScopeCommand, ScopeAdmin, ScopeBrokerAuth} {
			exp := false
			for _, a := range allowed {
				exp = exp || a == need
			}
			if got := (Principal{Name: "x", Scope: have}).Allows(need); got != exp {
				t.Errorf("%s allows %s: %v, want %v", have, need, got, exp)
			}
		}
	}
}

// TestTokensRotation: a changed file is picked up by its mtime/size (old and
// new tokens valid together while both are listed); a bad file keeps the
// previous tokens and its error names no token; -api-token stays valid as
// the admin "default".
func TestTokensRotation(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tokens")
	writeTokens(t, file, "old read "+readTok+"\n")
	tk, err := NewTokens(file, adminTok)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := tk.Authenticate(adminTok); !ok || p != (Principal{DefaultTokenName, ScopeAdmin}) {
		t.Fatalf("legacy token: %+v %v", p, ok)
	}
	var logs syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go tk.Watch(ctx, 10*time.Millisecond, slog.New(slog.NewTextHandler(&logs, nil)))

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 5s (logs: %s)", what, logs.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// Overlap: old and new valid together.
	writeTokens(t, file, "old read "+readTok+"\nnew read "+cmdTok+"\n")
	waitFor("new token valid", func() bool { _, ok := tk.Authenticate(cmdTok); return ok })
	if p, ok := tk.Authenticate(readTok); !ok || p.Name != "old" {
		t.Fatalf("old token during overlap: %+v %v", p, ok)
	}
	// The old one retired.
	writeTokens(t, file, "new read "+cmdTok+"\n")
	waitFor("old token retired", func() bool { _, ok := tk.Authenticate(readTok); return !ok })

	// A bad file: previous tokens stay, the error names no token.
	writeTokens(t, file, "new read "+cmdTok+"\nbroken nosuchscope "+brokerTok+"\n")
	waitFor("error logged", func() bool { return strings.Contains(logs.String(), "not reloaded") })
	if _, ok := tk.Authenticate(cmdTok); !ok {
		t.Fatal("a bad file dropped the valid tokens")
	}
	if _, ok := tk.Authenticate(adminTok); !ok {
		t.Fatal("the legacy token was dropped")
	}
	for _, secret := range []string{readTok, cmdTok, adminTok, brokerTok} {
		if strings.Contains(logs.String(), secret) {
			t.Fatalf("a token was logged: %s", logs.String())
		}
	}
}

func TestParseTokensErrors(t *testing.T) {
	for _, c := range []string{
		"a read",             // two fields
		"a read short",       // below MinTokenLen
		"a root " + adminTok, // unknown scope
		"a read sha256:abcd", // short digest
		"a read " + readTok + "\na admin " + adminTok, // duplicate name
	} {
		if _, err := parseTokens(strings.NewReader(c)); err == nil {
			t.Errorf("%q: no error", c)
		} else if strings.Contains(err.Error(), readTok) || strings.Contains(err.Error(), adminTok) {
			t.Errorf("%q: error holds the token: %v", c, err)
		}
	}
	if _, err := NewTokens("", ""); err == nil {
		t.Error("no token at all: no error")
	}
	file := filepath.Join(t.TempDir(), "tokens")
	writeTokens(t, file, "default read "+readTok+"\n")
	if _, err := NewTokens(file, adminTok); err == nil {
		t.Error(`a file token named "default" beside -api-token: no error`)
	}
}

// TestBrokerLoginRateLimit: after LoginBurst failed logins of one client id,
// even the right password is denied until a token comes back; other client
// ids are not affected.
func TestBrokerLoginRateLimit(t *testing.T) {
	var now atomic.Int64
	now.Store(1_700_000_000)
	clock := func() time.Time { return time.Unix(now.Load(), 0) }
	h := newHarness(t, func(c *Config) { c.LoginBurst, c.LoginEvery, c.Now = 3, time.Minute, clock })
	login := func(sn, pw string) string {
		t.Helper()
		code, body := h.do(t, "POST", "/v1/emqx/auth", `{"clientid":"`+sn+`","username":"`+sn+`","password":"`+pw+`"}`)
		if code != http.StatusOK {
			t.Fatalf("%d %v", code, body)
		}
		return body["result"].(string)
	}
	h.state.register("SN5", "tok-5", "cam5")
	for i := 0; i < 3; i++ {
		if r := login("SN1", "wrong"); r != "deny" {
			t.Fatalf("wrong password %d: %s", i, r)
		}
	}
	if r := login("SN1", "tok-1"); r != "deny" {
		t.Fatal("the right password after the burst of failures was allowed")
	}
	if r := login("SN5", "tok-5"); r != "allow" {
		t.Fatal("another client id was limited")
	}
	now.Add(60)
	if r := login("SN1", "tok-1"); r != "allow" {
		t.Fatal("not allowed again after a token came back")
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// BenchmarkAuthenticate is the per-request cost of the token check with 10
// configured tokens: go test -run X -bench Authenticate ./ingest/api/
func BenchmarkAuthenticate(b *testing.B) {
	var lines strings.Builder
	for i := range 10 {
		fmt.Fprintf(&lines, "client%d read token-%d-0123456789abcdef\n", i, i)
	}
	file := filepath.Join(b.TempDir(), "tokens")
	if err := os.WriteFile(file, []byte(lines.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	tk, err := NewTokens(file, "")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, ok := tk.Authenticate("token-7-0123456789abcdef"); !ok {
			b.Fatal("not authenticated")
		}
	}
}
