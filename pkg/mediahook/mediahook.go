// Package mediahook answers a media server's "may this client publish?"
// callback for the push URLs the device processor hands out (702 replies,
// processors/device/STREAM_SIGNING.md). Two callback formats are served:
//
//   - nginx-rtmp's on_publish: POST application/x-www-form-urlencoded with
//     call=publish, app, name and the publish URL's query arguments (exp,
//     sig); any 2xx allows, anything else refuses.
//   - SRS's on_publish (http_hooks): POST JSON {"action":"on_publish","app",
//     "stream","param":"?exp=...&sig=..."}; the answer is HTTP 200 with body
//     "0" to allow, or a non-200 status to refuse.
//
// A publish is allowed only when all of these hold: the URL's signature
// verifies under one of the configured secrets (so a URL signed for one
// camera does not open another camera's path), its expiry is ahead, the last
// path segment is a valid serial number, and that device is registered and
// bound. Anything else is refused with a reason that is logged and counted
// (ams_mediahook_decisions_total{format,result,reason}); a failure to read
// the registration refuses too (fail closed) with reason "unavailable".
//
// The media server authenticates to the hook with a shared key, sent as the
// query argument "key" of the callback URL (nginx-rtmp cannot add headers) or
// as "Authorization: Bearer <key>". The key is compared in constant time and
// never logged.
package mediahook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/processors/device"
)

// Registrations reads a device's registration (the Redis projection in
// production).
type Registrations interface {
	// Registration reports whether sn is registered, and if so whether it
	// is bound to a user. An error means the answer is unknown.
	Registration(ctx context.Context, sn string) (registered, bound bool, err error)
}

// Config configures a Hook.
type Config struct {
	// Secrets are the stream-signing secrets shared with the device
	// processor (-stream-secret-file), current first; a URL signed with any
	// of them verifies, so a secret can be rotated with overlap. Each is at
	// least 16 bytes.
	Secrets [][]byte
	// Key is the shared key the media server presents; required.
	Key string
	// Timeout bounds the registration lookup of one callback (default 2 s).
	Timeout time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Reasons a publish is refused (the "reason" label). "ok" is an allowed one.
const (
	ReasonOK           = "ok"
	ReasonMalformed    = "malformed"     // no app, name, exp or sig; exp not a number
	ReasonBadSignature = "bad_signature" // no secret signs this path and expiry
	ReasonExpired      = "expired"
	ReasonBadSN        = "bad_sn" // the last path segment is not a serial number
	ReasonUnregistered = "unregistered"
	ReasonUnbound      = "unbound"
	ReasonUnavailable  = "unavailable" // the registration could not be read
)

// Hook serves the callbacks. It is safe for concurrent use.
type Hook struct {
	cfg       Config
	keySum    [32]byte
	regs      Registrations
	log       *slog.Logger
	decisions *prometheus.CounterVec
}

// New returns a hook; reg receives its metrics (nil: none).
func New(cfg Config, regs Registrations, log *slog.Logger, reg prometheus.Registerer) (*Hook, error) {
	if len(cfg.Secrets) == 0 {
		return nil, errors.New("mediahook: no stream-signing secret")
	}
	for i, s := range cfg.Secrets {
		if len(s) < 16 {
			return nil, fmt.Errorf("mediahook: stream-signing secret %d is shorter than 16 bytes", i+1)
		}
	}
	if cfg.Key == "" {
		return nil, errors.New("mediahook: no hook key (the media server's shared key)")
	}
	if regs == nil {
		return nil, errors.New("mediahook: no registration reader")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	h := &Hook{cfg: cfg, keySum: sha256.Sum256([]byte(cfg.Key)), regs: regs, log: log,
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ams_mediahook_decisions_total",
			Help: "Publish callbacks answered, by callback format, result (allow, deny) and reason.",
		}, []string{"format", "result", "reason"})}
	if reg != nil {
		if err := reg.Register(h.decisions); err != nil {
			return nil, fmt.Errorf("mediahook: metrics: %w", err)
		}
	}
	return h, nil
}

// Routes of the hook.
const (
	PathNginxRTMP = "/v1/media/nginx-rtmp/on_publish"
	PathSRS       = "/v1/media/srs/on_publish"
)

// Register adds the hook's routes to mux.
func (h *Hook) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST "+PathNginxRTMP, h.nginx)
	mux.HandleFunc("POST "+PathSRS, h.srs)
}

// Decide checks one publish of stream name in application app, with the
// publish URL's query arguments, and returns the device's sn (when the path
// names one) and the reason: ReasonOK allows.
func (h *Hook) Decide(ctx context.Context, app, name string, args url.Values) (sn, reason string) {
	app, name = strings.Trim(app, "/"), strings.Trim(name, "/")
	exp, sig := args.Get("exp"), args.Get("sig")
	if app == "" || name == "" || exp == "" || sig == "" {
		return "", ReasonMalformed
	}
	e, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || e <= 0 || strconv.FormatInt(e, 10) != exp {
		return "", ReasonMalformed
	}
	path := "/" + app + "/" + name
	if !h.signed(path, exp, sig) {
		return "", ReasonBadSignature
	}
	if h.cfg.Now().Unix() >= e {
		return "", ReasonExpired
	}
	sn = name[strings.LastIndexByte(name, '/')+1:]
	if !protocol.ValidSN(sn) {
		return "", ReasonBadSN
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.Timeout)
	defer cancel()
	registered, bound, err := h.regs.Registration(ctx, sn)
	switch {
	case err != nil:
		h.log.Warn("mediahook: registration lookup failed; publish refused", "sn", sn, "err", err)
		return sn, ReasonUnavailable
	case !registered:
		return sn, ReasonUnregistered
	case !bound:
		return sn, ReasonUnbound
	}
	return sn, ReasonOK
}

func (h *Hook) signed(path, exp, sig string) bool {
	got := []byte(strings.ToLower(sig))
	ok := false
	for _, s := range h.cfg.Secrets {
		// Every secret is tried, so the time taken does not say which one matched.
		if hmac.Equal([]byte(device.StreamSignature(s, path, exp)), got) {
			ok = true
		}
	}
	return ok
}

// authorized reports whether the request carries the hook key.
func (h *Hook) authorized(r *http.Request) bool {
	key := r.URL.Query().Get("key")
	if b, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && key == "" {
		key = b
	}
	sum := sha256.Sum256([]byte(key))
	return key != "" && subtle.ConstantTimeCompare(sum[:], h.keySum[:]) == 1
}

// maxBody bounds a callback's body.
const maxBody = 64 << 10

func (h *Hook) nginx(w http.ResponseWriter, r *http.Request) {
	if !h.authorized(r) {
		h.refuse(w, "nginx-rtmp", "", "unauthorized", http.StatusUnauthorized)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if err := r.ParseForm(); err != nil {
		h.refuse(w, "nginx-rtmp", "", ReasonMalformed, http.StatusBadRequest)
		return
	}
	// r.Form merges the callback URL's query (the hook key) with the
	// posted form; only the posted fields are the publish's.
	f := r.PostForm
	if c := f.Get("call"); c != "" && c != "publish" {
		h.refuse(w, "nginx-rtmp", "", ReasonMalformed, http.StatusBadRequest)
		return
	}
	sn, reason := h.Decide(r.Context(), f.Get("app"), f.Get("name"), f)
	if reason != ReasonOK {
		h.refuse(w, "nginx-rtmp", sn, reason, http.StatusForbidden)
		return
	}
	h.allow(w, "nginx-rtmp", sn, "")
}

// srsCallback is the part of SRS's on_publish body the hook reads.
type srsCallback struct {
	Action string `json:"action"`
	App    string `json:"app"`
	Stream string `json:"stream"`
	Param  string `json:"param"`
}

func (h *Hook) srs(w http.ResponseWriter, r *http.Request) {
	if !h.authorized(r) {
		h.refuse(w, "srs", "", "unauthorized", http.StatusUnauthorized)
		return
	}
	var cb srsCallback
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err == nil {
		err = json.Unmarshal(body, &cb)
	}
	if err != nil || (cb.Action != "" && cb.Action != "on_publish") {
		h.refuse(w, "srs", "", ReasonMalformed, http.StatusBadRequest)
		return
	}
	args, err := url.ParseQuery(strings.TrimPrefix(cb.Param, "?"))
	if err != nil {
		h.refuse(w, "srs", "", ReasonMalformed, http.StatusBadRequest)
		return
	}
	sn, reason := h.Decide(r.Context(), cb.App, cb.Stream, args)
	if reason != ReasonOK {
		h.refuse(w, "srs", sn, reason, http.StatusForbidden)
		return
	}
	// SRS reads the body: "0" (or {"code":0}) allows.
	h.allow(w, "srs", sn, "0")
}

func (h *Hook) allow(w http.ResponseWriter, format, sn, body string) {
	h.decisions.WithLabelValues(format, "allow", ReasonOK).Inc()
	h.log.Info("mediahook: publish allowed", "format", format, "sn", sn)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, body)
}

func (h *Hook) refuse(w http.ResponseWriter, format, sn, reason string, status int) {
	h.decisions.WithLabelValues(format, "deny", reason).Inc()
	h.log.Info("mediahook: publish refused", "format", format, "sn", sn, "reason", reason)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": "publish refused", "reason": reason})
}
