// Package console is the fleet console of ams: web pages served by `ams api`
// under /ui/ for the people who look after the cameras. It shows the fleet
// (presence now and over the last day, firmware, rejects, commands), a
// searchable list of cameras, one camera's state and history, and sends
// commands with a form built from pkg/commandkinds.
//
// Guarantees:
//   - Every page and stream needs a signed-in session: an API token of scope
//     read (view) or command/admin (view and send), kept in an HttpOnly,
//     SameSite=Strict cookie (Secure under TLS or with Config.SecureCookie).
//     Every form carries a CSRF token bound to the session (or, for sign-in,
//     to a random pre-session cookie); a form without it changes nothing.
//   - Pages are server-rendered html/template (contextual escaping) with
//     assets embedded in the binary; the Content-Security-Policy allows only
//     this origin's scripts and styles (no inline script or style).
//   - A command is validated with the same command table as the HTTP API
//     before anything is written; a bad body is refused naming the field.
//     It is written to ams.commands (acks=all) with the signed-in token's
//     name as requested_by.
//   - History comes from ClickHouse through fixed queries with bounded time
//     ranges and row limits (History); the browser never sends SQL.
//   - Live numbers arrive by Server-Sent Events: a command's state from the
//     channel the Redis projection publishes after each command event; the
//     fleet's counts and a camera's presence are re-read from Redis every
//     Config.Tick and sent when they change (the projection publishes no
//     presence channel).
package console

import (
	"context"
	"crypto/rand"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/ivms/ams/pkg/devicestate"
	"github.com/ivms/ams/pkg/kafkatopics"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Producer writes one record and returns once Kafka acknowledged it (an
// api.KafkaProducer).
type Producer interface {
	ProduceSync(ctx context.Context, topic string, key, value []byte) error
}

// Encoder encodes a schemas type as an Avro single-object value (a *schemas.Registry).
type Encoder interface {
	Encode(v any) ([]byte, error)
}

// Config configures a Server.
type Config struct {
	// Names are the Kafka topics (commands are written to Names.Commands).
	Names kafkatopics.Names
	// Keys are the Redis key names of the projection.
	Keys devicestate.Keys
	// SecureCookie marks the cookies Secure even on plain HTTP (behind a
	// TLS-terminating proxy); under TLS they are Secure anyway.
	SecureCookie bool
	// Tick is how often a live stream re-reads counts and presence (default 1 s).
	Tick time.Duration
	// MaxStreams caps the live streams open at once (default 200).
	MaxStreams int
	// HistoryCache is how long the fleet page's ClickHouse aggregates (last
	// hour, day, week) are reused (default 15 s; negative: never). The live
	// numbers are never cached.
	HistoryCache time.Duration
	// Prefix is the path the console is served under (always "/ui/").
	Prefix string
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Deps are what a Server reads and writes.
type Deps struct {
	Auth     Authenticator
	Redis    goredis.UniversalClient
	Producer Producer
	Encoder  Encoder
	// History may be nil: the history sections then say it is not configured.
	History *History
	Log     *slog.Logger
	// Store, when set, is the read model to use (it must read Redis under
	// Config.Keys), so the console shares the API's command subscription;
	// nil: a Store of Redis of its own (never closed by the console).
	Store *devicestate.Store
}

// Server serves the console. Build it with New; it is safe for concurrent use.
type Server struct {
	cfg     Config
	auth    Authenticator
	rdb     goredis.UniversalClient
	store   *devicestate.Store
	keys    devicestate.Keys
	prod    Producer
	enc     Encoder
	hist    *History
	log     *slog.Logger
	csrfKey [32]byte
	pages   map[string]*template.Template
	streams atomic.Int64

	fleetMu    sync.Mutex // one fleet history computation at a time
	fleetCache fleetHist
}

// New returns a console server.
func New(cfg Config, d Deps) (*Server, error) {
	if d.Auth == nil || d.Redis == nil || d.Producer == nil || d.Encoder == nil {
		return nil, errors.New("console: Auth, Redis, Producer and Encoder are required")
	}
	if cfg.Tick <= 0 {
		cfg.Tick = time.Second
	}
	if cfg.HistoryCache == 0 {
		cfg.HistoryCache = 15 * time.Second
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = 200
	}
	cfg.Prefix = "/ui/"
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.Store == nil {
		d.Store = devicestate.NewStore(d.Redis, cfg.Keys)
	}
	s := &Server{cfg: cfg, auth: d.Auth, rdb: d.Redis, store: d.Store, keys: cfg.Keys,
		prod: d.Producer, enc: d.Encoder, hist: d.History, log: d.Log}
	if _, err := rand.Read(s.csrfKey[:]); err != nil {
		return nil, fmt.Errorf("console: csrf key: %w", err)
	}
	pages, err := parseTemplates()
	if err != nil {
		return nil, err
	}
	s.pages = pages
	return s, nil
}

// Register adds the console's routes under /ui/ to mux.
func (s *Server) Register(mux *http.ServeMux) {
	static, _ := fs.Sub(staticFS, "static")
	fileServer := http.StripPrefix("/ui/static/", http.FileServer(http.FS(static)))
	routes := []struct {
		pattern string
		h       http.Handler
	}{
		{"GET /ui", http.RedirectHandler("/ui/", http.StatusMovedPermanently)},
		{"GET /ui/{$}", s.authed(s.fleetPage)},
		{"GET /ui/signin", http.HandlerFunc(s.signInPage)},
		{"POST /ui/signin", http.HandlerFunc(s.signIn)},
		{"POST /ui/signout", http.HandlerFunc(s.signOut)},
		{"GET /ui/cameras", s.authed(s.camerasPage)},
		{"GET /ui/cameras/{sn}", s.authed(s.cameraPage)},
		{"GET /ui/cameras/{sn}/command", s.authed(s.commandForm)},
		{"POST /ui/cameras/{sn}/command", s.authed(s.sendCommand)},
		{"GET /ui/commands/{id}", s.authed(s.commandPage)},
		{"GET /ui/events/fleet", s.authed(s.fleetEvents)},
		{"GET /ui/events/cameras/{sn}", s.authed(s.cameraEvents)},
		{"GET /ui/events/commands/{id}", s.authed(s.commandEvents)},
		{"GET /ui/history/{sn}/{what}", s.authed(s.historyJSON)},
		{"GET /ui/static/", fileServer},
	}
	for _, r := range routes {
		mux.Handle(r.pattern, s.headers(r.h))
	}
}

// Handler returns a mux holding only the console's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	s.Register(mux)
	return mux
}

// csp is the Content-Security-Policy of every answer: scripts, styles and
// connections only from this origin, no inline code, no framing.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

func (s *Server) headers(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", csp)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("X-Frame-Options", "DENY")
		if !strings.HasPrefix(r.URL.Path, "/ui/static/") {
			hd.Set("Cache-Control", "no-store")
		}
		h.ServeHTTP(w, r)
	})
}

// maxForm is the largest form body accepted.
const maxForm = 64 << 10

// page is the data of every template.
type page struct {
	Title string
	Nav   string
	User  principal
	CSRF  string
	Error string
	Data  any
}

func (s *Server) newPage(p principal, title, nav string, data any) page {
	return page{Title: title, Nav: nav, User: p, CSRF: s.csrfToken("session:" + p.token), Data: data}
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, name string, p page) {
	t, ok := s.pages[name]
	if !ok {
		s.internal(w, r, fmt.Errorf("console: no template %q", name))
		return
	}
	var buf strings.Builder
	if err := t.ExecuteTemplate(&buf, "layout", p); err != nil {
		s.internal(w, r, fmt.Errorf("console: render %s: %w", name, err))
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(buf.String()))
}

func (s *Server) internal(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		http.Error(w, "request canceled", http.StatusServiceUnavailable)
		return
	}
	s.log.Error("console: request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	http.Error(w, "internal error", http.StatusInternalServerError)
}

var funcs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"iso": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	},
	"onoff": func(b bool) string {
		if b {
			return "online"
		}
		return "offline"
	},
	"add": func(a, b int) int { return a + b },
	"deref": func(t *time.Time) time.Time {
		if t == nil {
			return time.Time{}
		}
		return *t
	},
}

func parseTemplates() (map[string]*template.Template, error) {
	names := []string{"signin", "fleet", "cameras", "camera", "command_form", "command"}
	out := map[string]*template.Template{}
	for _, n := range names {
		t, err := template.New(n).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+n+".html")
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", n, err)
		}
		out[n] = t
	}
	return out, nil
}
