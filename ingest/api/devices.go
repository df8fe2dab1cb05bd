package api

import (
	"fmt"
	"github.com/ivms/ams/pkg/protocol"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/ivms/ams/pkg/deviceauth"
	"github.com/ivms/ams/pkg/devicestate"
	"github.com/ivms/ams/schemas"
)

// DeviceRequest is the body of PUT /v1/devices/{sn}. Omitted fields keep
// their registered value; a new device needs a token.
type DeviceRequest struct {
	Token     *string `json:"token"`      // the device's MQTT password, at least 16 bytes; stored only as a salted slow hash
	Bound     *bool   `json:"bound"`      // bound to a user
	Name      *string `json:"name"`       // name shown in the OSD
	StreamURL *string `json:"stream_url"` // base push URL; "" = the configured default
}

// DeviceRegistered is the answer to PUT: the registration written (never the token).
type DeviceRegistered struct {
	SN        string `json:"sn"`
	Created   bool   `json:"created"`
	Bound     bool   `json:"bound"`
	Name      string `json:"name"`
	StreamURL string `json:"stream_url,omitempty"`
}

// Limits of a registration.
const (
	maxTokenLen     = 256
	maxNameLen      = 64
	maxStreamURLLen = 1024
)

func (s *Server) getDevice(w http.ResponseWriter, r *http.Request) {
	sn, ok := snParam(w, r)
	if !ok {
		return
	}
	d, ok, err := s.state.Device(r.Context(), sn)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("device %s is unknown", sn), "sn")
		return
	}
	writeJSON(w, http.StatusOK, d)
}

func (s *Server) listDevices(w http.ResponseWriter, r *http.Request) {
	online, filtered, ok := parseBoolParam(w, r, "online")
	if !ok {
		return
	}
	q := r.URL.Query()
	limit := s.cfg.DefaultLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > s.cfg.MaxLimit {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit must be an integer from 1 to %d", s.cfg.MaxLimit), "limit")
			return
		}
		limit = n
	}
	cursor := q.Get("cursor")
	if cursor != "" && !protocol.ValidSN(cursor) {
		writeError(w, http.StatusBadRequest, "bad cursor", "cursor")
		return
	}
	var devs []devicestate.Device
	var next string
	var err error
	if filtered {
		devs, next, err = s.state.ListDevices(r.Context(), online, cursor, limit)
	} else {
		devs, next, err = s.listAll(r, cursor, limit)
	}
	if err != nil {
		s.internal(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"devices": devs, "next_cursor": next})
}

func (s *Server) putDevice(w http.ResponseWriter, r *http.Request) {
	sn, ok := snParam(w, r)
	if !ok {
		return
	}
	var req DeviceRequest
	if !decodeBody(w, r, &req) {
		return
	}
	old, oldHash, exists, err := s.state.RegistrationOf(r.Context(), sn)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	reg := schemas.Registration{SN: sn, UpdatedAt: s.cfg.Now().UTC(), UpdatedBy: requester(r)}
	if exists {
		reg.Bound, reg.Name, reg.StreamURL = old.Bound, old.Name, old.StreamURL
		// A legacy sha256 is wrapped in PBKDF2 on this write (no plain token needed).
		if reg.TokenHash, err = deviceauth.UpgradeHash(oldHash); err != nil {
			s.internal(w, r, err)
			return
		}
	}
	switch {
	case req.Token != nil:
		if len(*req.Token) < deviceauth.MinDeviceTokenLen || len(*req.Token) > maxTokenLen {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("token must be %d to %d bytes", deviceauth.MinDeviceTokenLen, maxTokenLen), "token")
			return
		}
		if reg.TokenHash, err = deviceauth.HashToken(*req.Token); err != nil {
			s.internal(w, r, err)
			return
		}
	case !exists:
		writeError(w, http.StatusBadRequest, "token is required to register a new device", "token")
		return
	}
	if req.Bound != nil {
		reg.Bound = *req.Bound
	}
	if req.Name != nil {
		if !utf8.ValidString(*req.Name) || utf8.RuneCountInString(*req.Name) > maxNameLen {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("name must be valid UTF-8 of at most %d characters", maxNameLen), "name")
			return
		}
		reg.Name = *req.Name
	}
	if req.StreamURL != nil {
		if len(*req.StreamURL) > maxStreamURLLen {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("stream_url must be at most %d bytes", maxStreamURLLen), "stream_url")
			return
		}
		reg.StreamURL = *req.StreamURL
	}
	value, err := s.enc.Encode(&reg)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if err := s.prod.ProduceSync(r.Context(), s.cfg.Names.Registry, []byte(sn), value); err != nil {
		s.internal(w, r, fmt.Errorf("write registration of %s: %w", sn, err))
		return
	}
	status := http.StatusOK
	if !exists {
		status = http.StatusCreated
	}
	writeJSON(w, status, DeviceRegistered{SN: sn, Created: !exists, Bound: reg.Bound, Name: reg.Name, StreamURL: reg.StreamURL})
}

func (s *Server) deleteDevice(w http.ResponseWriter, r *http.Request) {
	sn, ok := snParam(w, r)
	if !ok {
		return
	}
	if err := s.prod.ProduceSync(r.Context(), s.cfg.Names.Registry, []byte(sn), nil); err != nil {
		s.internal(w, r, fmt.Errorf("write tombstone of %s: %w", sn, err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// listAll returns a page of every device with a known presence, online or
// offline, in sn order: the next limit of each set after cursor, merged. A
// device that changes presence between the two reads may appear in both
// sets or neither for this page; it is read once on the next.
func (s *Server) listAll(r *http.Request, cursor string, limit int) ([]devicestate.Device, string, error) {
	on, nextOn, err := s.state.ListDevices(r.Context(), true, cursor, limit)
	if err != nil {
		return nil, "", err
	}
	off, nextOff, err := s.state.ListDevices(r.Context(), false, cursor, limit)
	if err != nil {
		return nil, "", err
	}
	all := make([]devicestate.Device, 0, min(limit, len(on)+len(off)))
	i, j := 0, 0
	for len(all) < limit && (i < len(on) || j < len(off)) {
		switch {
		case j >= len(off) || i < len(on) && on[i].SN < off[j].SN:
			all = append(all, on[i])
			i++
		case i >= len(on) || off[j].SN < on[i].SN:
			all = append(all, off[j])
			j++
		default: // in both sets (it changed presence between the reads): once
			all = append(all, on[i])
			i, j = i+1, j+1
		}
	}
	more := i < len(on) || j < len(off) || nextOn != "" || nextOff != ""
	if more && len(all) > 0 {
		return all, all[len(all)-1].SN, nil
	}
	return all, "", nil
}
