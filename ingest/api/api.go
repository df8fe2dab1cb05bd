// Package api is the HTTP JSON API of ams (`ams api`): it writes command
// requests to ams.commands and registrations to ams.registry, and reads the
// current state that the Redis sink projects. It also answers the broker's
// authentication and authorization requests (EMQX 5 HTTP authn / authz).
//
// Every route requires "Authorization: Bearer <token>" of a token whose
// scope allows it (Tokens, Principal.Allows): 401 without a valid token, 403
// when its scope does not allow the route. The operational endpoints
// (/healthz, /readyz, /metrics) are not served here but on the role's
// separate ops port (pkg/opshttp).
//
// Writes are acknowledged by Kafka (acks=all) before the answer: a 202 means
// the request is in the log. Reads come from Redis, which lags the log by the
// sink's delay; a command just submitted may be unknown to GET for a moment.
//
// Errors are JSON: {"error": "what is wrong", "field": "the offending field"}.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/ivms/ams/pkg/protocol"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ivms/ams/pkg/deviceauth"
	"github.com/ivms/ams/pkg/devicestate"
	"github.com/ivms/ams/pkg/kafkatopics"
)

// State is the projected current state the API reads (a *redis.Store).
type State interface {
	Device(ctx context.Context, sn string) (devicestate.Device, bool, error)
	RegistrationOf(ctx context.Context, sn string) (r devicestate.Registration, tokenHash string, ok bool, err error)
	Registered(ctx context.Context, sn string) (bool, error)
	TokenHash(ctx context.Context, sn string) (string, error)
	ListDevices(ctx context.Context, online bool, cursor string, limit int) ([]devicestate.Device, string, error)
	Command(ctx context.Context, id string) (devicestate.Command, bool, error)
	// WatchCommandFinal registers a waiter woken when the command reaches a
	// final state (and whenever an event may have been missed); see
	// devicestate.Store.WatchCommandFinal.
	WatchCommandFinal(ctx context.Context, id string) (wake <-chan struct{}, stop func(), err error)
}

// Producer writes one record and returns once Kafka acknowledged it (all
// in-sync replicas). A nil value is a tombstone.
type Producer interface {
	ProduceSync(ctx context.Context, topic string, key, value []byte) error
}

// Encoder encodes a schemas type as an Avro single-object value (a *schemas.Registry).
type Encoder interface {
	Encode(v any) ([]byte, error)
}

// Config configures a Server.
type Config struct {
	// Tokens are the valid bearer tokens; when nil, Token is the only one
	// (an admin token named "default").
	Tokens *Tokens
	// Token is the single legacy admin token, used when Tokens is nil.
	Token string
	// Names are the Kafka topics.
	Names kafkatopics.Names
	// Accounts are the MQTT service accounts (for the EMQX endpoints).
	Accounts deviceauth.Accounts
	// MaxWait caps ?wait= (default 60 s).
	MaxWait time.Duration
	// MaxWaiting caps the requests waiting at once (each holds a waiter on
	// the State's shared command subscription and re-reads the command at
	// each wake-up); past it a ?wait= request is answered at once, as if
	// without wait (default 1000).
	MaxWaiting int
	// DefaultLimit and MaxLimit bound a page of devices (default 100, 1000).
	DefaultLimit, MaxLimit int
	// LoginBurst failed broker logins are allowed at once per client id,
	// then one per LoginEvery (defaults 5 and 1 minute).
	LoginBurst int
	LoginEvery time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Server serves the API. Build it with New; it is safe for concurrent use.
type Server struct {
	cfg     Config
	tokens  *Tokens
	state   State
	prod    Producer
	enc     Encoder
	log     *slog.Logger
	m       *metrics
	waiting chan struct{} // a slot per waiting request
	logins  *deviceauth.LoginLimiter
	mounted []func(*http.ServeMux) // handlers served beside the API's routes (Mount)
	openapi []byte                 // the OpenAPI document, served at OpenAPIPath
}

// New returns a server. reg receives its metrics (nil: none).
func New(cfg Config, state State, prod Producer, enc Encoder, log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	tokens := cfg.Tokens
	if tokens == nil {
		if cfg.Token == "" {
			return nil, errors.New("api: no API token configured (AMS_API_TOKEN or AMS_API_TOKENS_FILE)")
		}
		var err error
		if tokens, err = NewTokens("", cfg.Token); err != nil {
			return nil, err
		}
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 60 * time.Second
	}
	if cfg.MaxWaiting <= 0 {
		cfg.MaxWaiting = 1000
	}
	if cfg.DefaultLimit <= 0 {
		cfg.DefaultLimit = 100
	}
	if cfg.MaxLimit <= 0 {
		cfg.MaxLimit = 1000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.LoginBurst <= 0 {
		cfg.LoginBurst = 5
	}
	if cfg.LoginEvery <= 0 {
		cfg.LoginEvery = time.Minute
	}
	s := &Server{cfg: cfg, tokens: tokens, state: state, prod: prod, enc: enc,
		log: log, m: newMetrics(reg), waiting: make(chan struct{}, cfg.MaxWaiting),
		logins: deviceauth.NewLoginLimiter(cfg.LoginBurst, cfg.LoginEvery, cfg.Now)}
	doc, err := json.Marshal(s.OpenAPI())
	if err != nil {
		return nil, fmt.Errorf("api: openapi document: %w", err)
	}
	s.openapi = doc
	return s, nil
}

// Register adds the API's routes to mux, the OpenAPI document at
// OpenAPIPath, and a catch-all that answers unknown routes (404) and wrong
// methods (405) with the JSON error shape.
func (s *Server) Register(mux *http.ServeMux) {
	for _, r := range s.routes() {
		pattern := r.method + " " + r.path
		mux.Handle(pattern, s.instrument(pattern, s.authenticated(r.scope, r.h)))
	}
	mux.Handle("GET "+OpenAPIPath, s.instrument("GET "+OpenAPIPath, s.serveOpenAPI(s.openapi)))
	mux.Handle("/", s.instrument("unmatched", notFound(mux)))
}

// Mount adds routes served beside the API's on its listener (the console);
// call it before Serve. The mounted handlers do their own authentication.
func (s *Server) Mount(register func(*http.ServeMux)) { s.mounted = append(s.mounted, register) }

// Handler returns a mux holding the API's routes and the mounted ones.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	s.Register(mux)
	for _, m := range s.mounted {
		m(mux)
	}
	return mux
}

// Tokens returns the server's bearer tokens (for Watch or reuse by another handler).
func (s *Server) Tokens() *Tokens { return s.tokens }

type principalKey struct{}

// PrincipalOf returns the principal a request was authenticated as.
func PrincipalOf(r *http.Request) (Principal, bool) {
	p, ok := r.Context().Value(principalKey{}).(Principal)
	return p, ok
}

// requester is the name recorded as requested_by / updated_by.
func requester(r *http.Request) string {
	if p, ok := PrincipalOf(r); ok {
		return p.Name
	}
	return "api"
}

// BearerToken returns the token of an "Authorization: Bearer <token>" header, or "".
func BearerToken(r *http.Request) string {
	const prefix = "Bearer "
	auth := r.Header.Get("Authorization")
	if len(auth) > len(prefix) && equalFoldASCII(auth[:len(prefix)], prefix) {
		return auth[len(prefix):]
	}
	return ""
}

// authenticated answers 401 to a request without a valid bearer token and
// 403 to one whose token's scope does not allow need; otherwise it calls h
// with the principal in the request's context.
func (s *Server) authenticated(need Scope, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, ok := s.tokens.Authenticate(BearerToken(r))
		if !ok {
			s.m.authFailures.WithLabelValues("unauthenticated").Inc()
			w.Header().Set("WWW-Authenticate", `Bearer realm="ams"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token", "")
			return
		}
		if !p.Allows(need) {
			s.m.authFailures.WithLabelValues("forbidden").Inc()
			writeError(w, http.StatusForbidden, fmt.Sprintf("token %q has scope %s; this route needs %s", p.Name, p.Scope, need), "")
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	}
}

func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i]|0x20, b[i]|0x20
		if x != y {
			return false
		}
	}
	return true
}

// apiError is the body of every error answer.
type apiError struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg, field string) {
	writeJSON(w, status, apiError{Error: msg, Field: field})
}

// internal answers 500 (or 503 when the cause is a canceled request) and logs the cause.
func (s *Server) internal(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		writeError(w, http.StatusServiceUnavailable, "request canceled", "")
		return
	}
	s.log.Error("api: request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, "internal error", "")
}

// maxBody is the largest request body accepted.
const maxBody = 64 << 10

// decodeBody decodes a JSON object body strictly into v; on failure it has
// answered 400 and returns false.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var field string
		var ute *json.UnmarshalTypeError
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &ute):
			field = ute.Field
			err = fmt.Errorf("%s must be %s, not %s", ute.Field, jsonKind(ute.Type.Kind().String()), ute.Value)
		case errors.As(err, &mbe):
			err = fmt.Errorf("body larger than %d bytes", maxBody)
		default:
			if f, ok := unknownField(err); ok {
				field = f
				err = fmt.Errorf("unknown field %q", f)
			}
		}
		writeError(w, http.StatusBadRequest, "bad request body: "+err.Error(), field)
		return false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "bad request body: more than one JSON value", "")
		return false
	}
	return true
}

func jsonKind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "bool", "ptr":
		return "a boolean"
	case "struct", "map":
		return "an object"
	}
	return "a " + k
}

// unknownField extracts the name from encoding/json's "json: unknown field \"x\"".
func unknownField(err error) (string, bool) {
	const p = `json: unknown field "`
	msg := err.Error()
	if len(msg) > len(p)+1 && msg[:len(p)] == p && msg[len(msg)-1] == '"' {
		return msg[len(p) : len(msg)-1], true
	}
	return "", false
}

// snParam returns the path's {sn}, or answers 400.
func snParam(w http.ResponseWriter, r *http.Request) (string, bool) {
	sn := r.PathValue("sn")
	if !protocol.ValidSN(sn) {
		writeError(w, http.StatusBadRequest, "sn must be 1 to 64 printable ASCII characters without '/', '+' or '#'", "sn")
		return "", false
	}
	return sn, true
}

// parseBoolParam reads an optional boolean query parameter: set is false
// when it is absent or empty; true/1 and false/0 are accepted.
func parseBoolParam(w http.ResponseWriter, r *http.Request, name string) (v, set, ok bool) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return false, false, true
	}
	switch s {
	case "true", "1":
		return true, true, true
	case "false", "0":
		return false, true, true
	}
	writeError(w, http.StatusBadRequest, fmt.Sprintf("query parameter %s must be true, false, 1 or 0 (omit it for all devices), not %q", name, s), name)
	return false, false, false
}

// decodeLoose decodes a JSON object body into v, ignoring unknown fields
// (a broker's request templates may carry more than ams reads).
func decodeLoose(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "bad request body: "+err.Error(), "")
		return false
	}
	return true
}
