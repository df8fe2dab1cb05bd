package api

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/ivms/ams/pkg/commandkinds"
	"github.com/ivms/ams/pkg/devicestate"
	"github.com/ivms/ams/schemas"
)

// CommandRequest is the body of POST /v1/devices/{sn}/commands.
type CommandRequest struct {
	Kind    string          `json:"kind"`    // a name of pkg/commandkinds, e.g. "reboot"
	Body    json.RawMessage `json:"body"`    // the command's JSON object; may be omitted when the kind has a default
	Timeout string          `json:"timeout"` // reply timeout once sent, a Go duration ("30s"); empty = the processors' default
	Expires string          `json:"expires"` // a queued command not sent within this expires ("10m"); empty = the default
	Offline string          `json:"offline"` // "queue" (default) or "reject" when the device is offline
}

// CommandAccepted is the 202 answer: the request is in ams.commands.
type CommandAccepted struct {
	ID    string `json:"id"`
	SN    string `json:"sn"`
	Kind  string `json:"kind"`
	State string `json:"state,omitempty"` // the latest projected state, when waiting timed out
	URL   string `json:"url"`             // where its history is
}

// IdempotencyHeader names the header whose value, when given, is the command
// id: a retried request with the same key writes the same id, and the
// processors handle a command id once.
const IdempotencyHeader = "Idempotency-Key"

// Limits of a command request.
const (
	maxTimeout = 24 * time.Hour
	maxExpires = 30 * 24 * time.Hour
	maxIDLen   = 64
)

func validID(id string) bool {
	if id == "" || len(id) > maxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

func newID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("command id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// fieldError is a 400 naming a field.
type fieldError struct{ field, msg string }

func (e *fieldError) Error() string { return e.msg }

// BuildCommand validates a request and returns the record to write. Every
// failure is a *fieldError (a 400). It does not check that the device exists.
func BuildCommand(req CommandRequest, sn, id, requestedBy string, now time.Time) (*schemas.Command, error) {
	if req.Kind == "" {
		return nil, &fieldError{"kind", "kind is required (one of: " + strings.Join(commandkinds.Names(), ", ") + ")"}
	}
	kind, ok := commandkinds.Lookup(req.Kind)
	if !ok {
		return nil, &fieldError{"kind", fmt.Sprintf("unknown command kind %q (one of: %s)", req.Kind, strings.Join(commandkinds.Names(), ", "))}
	}
	body, err := kind.Normalize(req.Body)
	if err != nil {
		var be *commandkinds.BodyError
		if errors.As(err, &be) {
			field := "body"
			if be.Field != "" {
				field = "body." + be.Field
			}
			return nil, &fieldError{field, be.Error()}
		}
		return nil, &fieldError{"body", err.Error()}
	}
	cmd := &schemas.Command{ID: id, SN: sn, Kind: kind.Name, Body: string(body), Offline: schemas.OfflineQueue,
		RequestedBy: requestedBy, RequestedAt: now.UTC()}
	if req.Timeout != "" {
		d, err := time.ParseDuration(req.Timeout)
		if err != nil || d <= 0 || d > maxTimeout {
			return nil, &fieldError{"timeout", fmt.Sprintf("timeout must be a duration between 1ms and %s, like \"30s\"", maxTimeout)}
		}
		cmd.TimeoutMs = max(d.Milliseconds(), 1)
	}
	if req.Expires != "" {
		d, err := time.ParseDuration(req.Expires)
		if err != nil || d <= 0 || d > maxExpires {
			return nil, &fieldError{"expires", fmt.Sprintf("expires must be a duration between 1ms and %s, like \"10m\"", maxExpires)}
		}
		at := now.Add(d).UTC()
		cmd.ExpiresAt = &at
	}
	switch strings.ToLower(req.Offline) {
	case "", "queue":
	case "reject":
		cmd.Offline = schemas.OfflineReject
	default:
		return nil, &fieldError{"offline", `offline must be "queue" or "reject"`}
	}
	return cmd, nil
}

func (s *Server) postCommand(w http.ResponseWriter, r *http.Request) {
	posted := time.Now()
	sn, ok := snParam(w, r)
	if !ok {
		return
	}
	var wait time.Duration
	if v := r.URL.Query().Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			writeError(w, http.StatusBadRequest, "wait must be a duration like \"15s\"", "wait")
			return
		}
		wait = min(d, s.cfg.MaxWait)
	}
	id := r.Header.Get(IdempotencyHeader)
	if id != "" && !validID(id) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%s must be 1 to %d characters of [A-Za-z0-9._:-]", IdempotencyHeader, maxIDLen), IdempotencyHeader)
		return
	}
	var req CommandRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if id == "" {
		var err error
		if id, err = newID(); err != nil {
			s.internal(w, r, err)
			return
		}
	}
	cmd, err := BuildCommand(req, sn, id, requester(r), s.cfg.Now())
	if err != nil {
		var fe *fieldError
		if errors.As(err, &fe) {
			writeError(w, http.StatusBadRequest, fe.msg, fe.field)
			return
		}
		s.internal(w, r, err)
		return
	}
	registered, err := s.state.Registered(r.Context(), sn)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if !registered {
		writeError(w, http.StatusNotFound, fmt.Sprintf("device %s is not registered", sn), "sn")
		return
	}

	// Register the waiter before writing, so the projection of the
	// command's final state cannot slip between the write and the watch.
	// WatchCommandFinal registers on the process's one pattern subscription
	// (devicestate.CommandWatcher, already confirmed by Redis): no Redis
	// round trip, no connection per request. It wakes only on a final
	// state, so the interim ones (ACCEPTED, SENT, DELIVERED) cost no read.
	var wake <-chan struct{}
	if wait > 0 {
		select {
		case s.waiting <- struct{}{}:
			defer func() { <-s.waiting }()
		default:
			wait = 0 // too many waiting: answer at once
			s.m.waitRefused.Inc()
		}
	}
	if wait > 0 {
		s.m.waiting.Inc()
		defer s.m.waiting.Dec()
		var stop func()
		wake, stop, err = s.state.WatchCommandFinal(r.Context(), id)
		if err != nil {
			s.internal(w, r, err)
			return
		}
		defer stop()
	}
	value, err := s.enc.Encode(cmd)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if err := s.prod.ProduceSync(r.Context(), s.cfg.Names.Commands, []byte(sn), value); err != nil {
		s.internal(w, r, fmt.Errorf("write command %s: %w", id, err))
		return
	}
	accepted := CommandAccepted{ID: id, SN: sn, Kind: cmd.Kind, URL: "/v1/commands/" + id}
	if wait == 0 {
		writeJSON(w, http.StatusAccepted, accepted)
		return
	}
	c, final, err := s.waitFinal(r, id, wake, wait)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if final {
		s.m.observeStages(posted, time.Now(), c.History)
		writeJSON(w, http.StatusOK, c)
		return
	}
	accepted.State = c.State
	writeJSON(w, http.StatusAccepted, accepted)
}

// waitFinal reads the command's state now and after every wake-up until it
// is final or wait has passed. No polling: only the projection of a final
// state (or a resubscription of the watcher) wakes it.
func (s *Server) waitFinal(r *http.Request, id string, wake <-chan struct{}, wait time.Duration) (devicestate.Command, bool, error) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		c, ok, err := s.state.Command(r.Context(), id)
		if err != nil {
			return devicestate.Command{}, false, err
		}
		if ok && c.Final {
			return c, true, nil
		}
		select {
		case <-wake:
		case <-timer.C:
			// Interim states do not wake the waiter: read the latest
			// once more for the answer.
			c, ok, err := s.state.Command(r.Context(), id)
			if err != nil {
				return devicestate.Command{}, false, err
			}
			return c, ok && c.Final, nil
		case <-r.Context().Done():
			return c, false, r.Context().Err()
		}
	}
}

func (s *Server) getCommand(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !validID(id) {
		writeError(w, http.StatusBadRequest, "bad command id", "id")
		return
	}
	c, ok, err := s.state.Command(r.Context(), id)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("command %s is unknown (or not yet accepted by the processors)", id), "id")
		return
	}
	writeJSON(w, http.StatusOK, c)
}

// kindInfo is one row of GET /v1/command-kinds.
type kindInfo struct {
	Name     string   `json:"name"`
	CmdType  int      `json:"cmd_type"`
	Code     int      `json:"code"`
	Doc      string   `json:"doc"`
	Default  string   `json:"default_body,omitempty"`
	Required []string `json:"required_fields,omitempty"`
	// BodySchema is the body's JSON Schema (also in the OpenAPI document
	// as CommandBody_<name>), Example a valid body.
	BodySchema map[string]any  `json:"body_schema"`
	Example    json.RawMessage `json:"example"`
}

func (s *Server) listKinds(w http.ResponseWriter, _ *http.Request) {
	var out []kindInfo
	for _, k := range commandkinds.All() {
		ki := kindInfo{Name: k.Name, CmdType: k.CmdType, Code: k.Code, Doc: k.Doc, Default: k.Default,
			BodySchema: k.JSONSchema(), Example: json.RawMessage(k.Example)}
		for _, f := range k.Body.Fields {
			if f.Required {
				ki.Required = append(ki.Required, f.Name)
			}
		}
		out = append(out, ki)
	}
	writeJSON(w, http.StatusOK, kindList{Kinds: out})
}
