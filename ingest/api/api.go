// Package api is the HTTP JSON API of ams (`ams api`): it writes command
// requests to ams.commands and registrations to ams.registry, and reads the
// current state that the Redis sink projects. It also answers the broker's
// authentication and authorization requests (EMQX 5 HTTP authn / authz).
//
// Every route but the operational ones (/healthz, /readyz, /metrics, served
// by pkg/opshttp beside it) requires "Authorization: Bearer <token>".
//
// Writes are acknowledged by Kafka (acks=all) before the answer: a 202 means
// the request is in the log. Reads come from Redis, which lags the log by the
// sink's delay; a command just submitted may be unknown to GET for a moment.
//
// Errors are JSON: {"error": "what is wrong", "field": "the offending field"}.
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/ivms/ams/pkg/protocol"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ivms/ams/pkg/deviceauth"
	"github.com/ivms/ams/pkg/kafkatopics"
	amsredis "github.com/ivms/ams/sinks/redis"
)

// State is the projected current state the API reads (a *redis.Store).
type State interface {
	Device(ctx context.Context, sn string) (amsredis.Device, bool, error)
	RegistrationOf(ctx context.Context, sn string) (r amsredis.Registration, tokenSHA256 string, ok bool, err error)
	Registered(ctx context.Context, sn string) (bool, error)
	TokenSHA256(ctx context.Context, sn string) (string, error)
	ListDevices(ctx context.Context, online bool, cursor string, limit int) ([]amsredis.Device, string, error)
	Command(ctx context.Context, id string) (amsredis.Command, bool, error)
	WatchCommand(ctx context.Context, id string) (wake <-chan struct{}, stop func(), err error)
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
	// Token is the bearer token every request must carry; required.
	Token string
	// Names are the Kafka topics.
	Names kafkatopics.Names
	// Accounts are the MQTT service accounts (for the EMQX endpoints).
	Accounts deviceauth.Accounts
	// MaxWait caps ?wait= (default 60 s).
	MaxWait time.Duration
	// MaxWaiting caps the requests waiting at once (each holds a Redis
	// subscription); past it a ?wait= request is answered at once, as if
	// without wait (default 1000).
	MaxWaiting int
	// DefaultLimit and MaxLimit bound a page of devices (default 100, 1000).
	DefaultLimit, MaxLimit int
	// RequestedBy is written into commands and registrations (default "api").
	RequestedBy string
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Server serves the API. Build it with New; it is safe for concurrent use.
type Server struct {
	cfg      Config
	tokenSum [32]byte
	state    State
	prod     Producer
	enc      Encoder
	log      *slog.Logger
	m        *metrics
	waiting  chan struct{} // a slot per waiting request
	openapi  []byte        // the OpenAPI document, served at OpenAPIPath
}

// New returns a server. reg receives its metrics (nil: none).
func New(cfg Config, state State, prod Producer, enc Encoder, log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if cfg.Token == "" {
		return nil, errors.New("api: no API token configured (AMS_API_TOKEN)")
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
	if cfg.RequestedBy == "" {
		cfg.RequestedBy = "api"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, tokenSum: sha256.Sum256([]byte(cfg.Token)), state: state, prod: prod, enc: enc,
		log: log, m: newMetrics(reg), waiting: make(chan struct{}, cfg.MaxWaiting)}
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
		mux.Handle(pattern, s.instrument(pattern, s.authenticated(r.h)))
	}
	mux.Handle("GET "+OpenAPIPath, s.instrument("GET "+OpenAPIPath, s.serveOpenAPI(s.openapi)))
	mux.Handle("/", s.instrument("unmatched", notFound(mux)))
}

// Handler returns a mux holding only the API's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	s.Register(mux)
	return mux
}

// authenticated refuses a request without the configured bearer token. The
// comparison is of sha256 digests in constant time, so neither the token
// nor its length leaks through timing.
func (s *Server) authenticated(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		const prefix = "Bearer "
		auth := r.Header.Get("Authorization")
		ok := len(auth) > len(prefix) && equalFoldASCII(auth[:len(prefix)], prefix)
		if ok {
			got := sha256.Sum256([]byte(auth[len(prefix):]))
			ok = subtle.ConstantTimeCompare(got[:], s.tokenSum[:]) == 1
		}
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="ams"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token", "")
			return
		}
		h(w, r)
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
