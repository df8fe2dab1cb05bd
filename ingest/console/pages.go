package console

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ivms/ams/pkg/devicestate"
	"github.com/ivms/ams/pkg/protocol"
)

// errNoHistory is shown when no ClickHouse is configured.
var errNoHistory = errors.New("history is not configured (no ClickHouse)")

// histErr is the text shown in place of a history section that failed.
func (s *Server) histErr(err error) string {
	if err == nil {
		return ""
	}
	s.log.Warn("console: history query failed", "err", err)
	if errors.Is(err, errNoHistory) {
		return err.Error()
	}
	return "history unavailable: " + err.Error()
}

// ---- fleet ----

// HourRow is one hour of the fleet chart.
type HourRow struct {
	Hour     time.Time
	Online   int64 // online at the end of the hour, derived from now and the transitions since
	Up, Down uint64
	// Bar geometry of the SVG chart (viewBox 0 0 480 120).
	X, Y, W, H int
}

type fleetData struct {
	Counts     Counts
	Hours      []HourRow
	Firmware   []Count
	Offline    []offlineRow
	Rejects    []Count
	RejectsAll uint64
	Commands   []Count
	HistErr    string
}

type offlineRow struct {
	WentOffline
	OnlineNow bool
}

// Fleet is the data of the fleet page (exported for the benchmark).
// fleetHist is the fleet page's history: aggregates over the last hour, day
// and week, cached for Config.HistoryCache (they are not the live numbers).
type fleetHist struct {
	at       time.Time
	start    time.Time // the first hour of the chart
	hourly   []HourCount
	firmware []Count
	offline  []WentOffline
	rejects  []Count
	commands []Count
}

// fleetHistory returns the cached aggregates, or runs the queries (at once;
// one caller at a time, the others wait and share the answer). A failure is
// not cached.
func (s *Server) fleetHistory(ctx context.Context) (fleetHist, error) {
	s.fleetMu.Lock()
	defer s.fleetMu.Unlock()
	now := s.cfg.Now().UTC()
	if s.cfg.HistoryCache > 0 && !s.fleetCache.at.IsZero() && now.Sub(s.fleetCache.at) < s.cfg.HistoryCache {
		return s.fleetCache, nil
	}
	f := fleetHist{at: now, start: now.Truncate(time.Hour).Add(-23 * time.Hour)}
	var herr, ferr, oerr, rerr, cerr error
	var wg sync.WaitGroup
	wg.Go(func() { f.hourly, herr = s.hist.PresenceHourly(ctx, Range{From: f.start, To: now, Limit: 48}) })
	wg.Go(func() { f.firmware, ferr = s.hist.Firmware(ctx, Last(now, 7*24*time.Hour, 20)) })
	wg.Go(func() { f.offline, oerr = s.hist.WentOffline(ctx, Last(now, time.Hour, 100)) })
	wg.Go(func() { f.rejects, rerr = s.hist.RejectReasons(ctx, Last(now, time.Hour, 50)) })
	wg.Go(func() { f.commands, cerr = s.hist.CommandStates(ctx, Last(now, time.Hour, 20)) })
	wg.Wait()
	if err := errors.Join(herr, ferr, oerr, rerr, cerr); err != nil {
		return f, err
	}
	s.fleetCache = f
	return f, nil
}

// fleet is the data of the fleet page: the counts now (Redis) and the
// history (ClickHouse, cached briefly).
func (s *Server) fleet(ctx context.Context) (fleetData, error) {
	var d fleetData
	var err error
	if d.Counts, err = s.counts(ctx); err != nil {
		return d, err
	}
	if s.hist == nil {
		d.HistErr = s.histErr(errNoHistory)
		return d, nil
	}
	f, herr := s.fleetHistory(ctx)
	d.HistErr = s.histErr(herr)
	if herr != nil {
		return d, nil
	}
	by := map[int64]HourCount{}
	for _, h := range f.hourly {
		by[h.Hour.Unix()] = h
	}
	rows := make([]HourRow, 24)
	online := d.Counts.Online
	var peak int64 = 1
	for i := 23; i >= 0; i-- {
		hr := f.start.Add(time.Duration(i) * time.Hour)
		c := by[hr.Unix()]
		rows[i] = HourRow{Hour: hr, Online: max(online, 0), Up: c.Up, Down: c.Down}
		online -= int64(c.Up) - int64(c.Down) // online at the end of the previous hour
		peak = max(peak, rows[i].Online)
	}
	for i := range rows {
		h := int(rows[i].Online * 110 / peak)
		rows[i].X, rows[i].W, rows[i].H, rows[i].Y = i*20+2, 16, h, 115-h
	}
	d.Hours, d.Firmware, d.Rejects, d.Commands = rows, f.firmware, f.rejects, f.commands
	if len(f.offline) > 0 { // whether each is online now: read live
		pipe := s.rdb.Pipeline()
		cmds := make([]interface{ Val() string }, len(f.offline))
		for i, o := range f.offline {
			cmds[i] = pipe.HGet(ctx, s.keys.Device(o.SN), "online")
		}
		_, _ = pipe.Exec(ctx) // a missing hash is redis.Nil: shown as offline
		for i, o := range f.offline {
			d.Offline = append(d.Offline, offlineRow{WentOffline: o, OnlineNow: cmds[i].Val() == "1"})
		}
	}
	for _, r := range d.Rejects {
		d.RejectsAll += r.N
	}
	return d, nil
}

func (s *Server) fleetPage(w http.ResponseWriter, r *http.Request, p principal) {
	d, err := s.fleet(r.Context())
	if err != nil {
		s.internal(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "fleet", s.newPage(p, "Fleet", "fleet", d))
}

// ---- cameras ----

type camerasData struct {
	Q          CameraQuery
	Rows       []CameraRow
	Total      int
	Pages      int
	PrevURL    string
	NextURL    string
	SortURL    map[string]string
	QueryError string
}

func (s *Server) camerasPage(w http.ResponseWriter, r *http.Request, p principal) {
	v := r.URL.Query()
	q := CameraQuery{Prefix: strings.TrimSpace(v.Get("prefix")), Name: strings.TrimSpace(v.Get("name")),
		Online: v.Get("online"), Firmware: strings.TrimSpace(v.Get("firmware")), Sort: v.Get("sort")}
	d := camerasData{}
	if n, err := strconv.Atoi(v.Get("page")); err == nil && n > 1 {
		q.Page = n - 1
	}
	switch {
	case q.Prefix != "" && !protocol.ValidSN(q.Prefix):
		d.QueryError = "The serial number prefix has a character a serial number cannot have."
		q.Prefix = ""
	case len(q.Name) > 64 || len(q.Firmware) > 64:
		d.QueryError = "Name and firmware filters are at most 64 characters."
		q.Name, q.Firmware = "", ""
	}
	if q.Online != "true" && q.Online != "false" {
		q.Online = ""
	}
	if q.Sort != "sn" && q.Sort != "last_seen_asc" {
		q.Sort = "last_seen"
	}
	rows, total, err := s.cameras(r.Context(), q)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	d.Q, d.Rows, d.Total = q, rows, total
	d.Pages = max((total+PageSize-1)/PageSize, 1)
	link := func(page int, sort string) string {
		u := url.Values{}
		for k, val := range map[string]string{"prefix": q.Prefix, "name": q.Name, "online": q.Online, "firmware": q.Firmware} {
			if val != "" {
				u.Set(k, val)
			}
		}
		u.Set("sort", sort)
		if page > 1 {
			u.Set("page", strconv.Itoa(page))
		}
		return "/ui/cameras?" + u.Encode()
	}
	if q.Page > 0 {
		d.PrevURL = link(q.Page, q.Sort)
	}
	if q.Page+1 < d.Pages {
		d.NextURL = link(q.Page+2, q.Sort)
	}
	d.SortURL = map[string]string{"last_seen": link(1, "last_seen"), "last_seen_asc": link(1, "last_seen_asc"), "sn": link(1, "sn")}
	s.render(w, r, http.StatusOK, "cameras", s.newPage(p, "Cameras", "cameras", d))
}

// ---- one camera ----

// Segment is one online interval drawn on the 7-day timeline (viewBox 0 0 700 24).
type Segment struct {
	Interval
	X, W int
}

type cameraData struct {
	SN        string
	Known     bool
	Device    devicestate.Device
	Config    string
	Timeline  []Segment
	DayTicks  []tick
	Kinds     []Count
	Frames    []Frame
	Rejects   []Reject
	Commands  []CommandRecord
	HistErr   string
	CanSend   bool
	WeekStart time.Time
}

type tick struct {
	X     int
	Label string
}

func (s *Server) camera(ctx context.Context, sn string) (cameraData, error) {
	d := cameraData{SN: sn}
	dev, ok, err := s.store.Device(ctx, sn)
	if err != nil {
		return d, err
	}
	d.Known, d.Device = ok, dev
	if len(dev.Config) > 0 {
		var buf bytes.Buffer
		if json.Indent(&buf, dev.Config, "", "  ") == nil {
			d.Config = buf.String()
		} else {
			d.Config = string(dev.Config)
		}
	}
	if s.hist == nil {
		d.HistErr = s.histErr(errNoHistory)
		return d, nil
	}
	now := s.cfg.Now().UTC()
	week := 7 * 24 * time.Hour
	d.WeekStart = now.Add(-week)
	var ivs []Interval
	var ierr, kerr, ferr, rerr, cerr error
	var wg sync.WaitGroup
	wg.Go(func() { ivs, ierr = s.hist.Intervals(ctx, sn, Last(now, week, 1000)) })
	wg.Go(func() { d.Kinds, kerr = s.hist.FrameKinds(ctx, sn, Last(now, 24*time.Hour, 50)) })
	wg.Go(func() { d.Frames, ferr = s.hist.Frames(ctx, sn, Last(now, 24*time.Hour, 20)) })
	wg.Go(func() { d.Rejects, rerr = s.hist.Rejects(ctx, sn, Last(now, week, 50)) })
	wg.Go(func() { d.Commands, cerr = s.hist.Commands(ctx, sn, Last(now, week, 500)) })
	wg.Wait()
	for _, iv := range ivs {
		a, b := iv.Start, iv.End
		if a.Before(d.WeekStart) {
			a = d.WeekStart
		}
		if b.After(now) {
			b = now
		}
		if !a.Before(b) {
			continue
		}
		x := int(a.Sub(d.WeekStart) * 700 / week)
		w := max(int(b.Sub(a)*700/week), 1)
		d.Timeline = append(d.Timeline, Segment{Interval: iv, X: x, W: w})
	}
	for i := 0; i <= 7; i++ {
		t := d.WeekStart.Add(time.Duration(i) * 24 * time.Hour)
		d.DayTicks = append(d.DayTicks, tick{X: i * 100, Label: t.Format("Jan 2")})
	}
	d.HistErr = s.histErr(errors.Join(ierr, kerr, ferr, rerr, cerr))
	return d, nil
}

func (s *Server) cameraPage(w http.ResponseWriter, r *http.Request, p principal) {
	sn := r.PathValue("sn")
	if !protocol.ValidSN(sn) {
		http.Error(w, "not a serial number", http.StatusBadRequest)
		return
	}
	d, err := s.camera(r.Context(), sn)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	d.CanSend = p.CanSend()
	status := http.StatusOK
	if !d.Known {
		status = http.StatusNotFound
	}
	s.render(w, r, status, "camera", s.newPage(p, "Camera "+sn, "cameras", d))
}

// ---- one command ----

type commandData struct {
	ID      string
	Known   bool
	Command devicestate.Command
	Reply   string
}

func (s *Server) commandPage(w http.ResponseWriter, r *http.Request, p principal) {
	id := r.PathValue("id")
	if !validID(id) {
		http.Error(w, "not a command id", http.StatusBadRequest)
		return
	}
	c, ok, err := s.store.Command(r.Context(), id)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	d := commandData{ID: id, Known: ok, Command: c, Reply: string(c.Reply)}
	s.render(w, r, http.StatusOK, "command", s.newPage(p, "Command "+id, "cameras", d))
}

func validID(id string) bool {
	if id == "" || len(id) > 64 {
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

// ---- history as JSON ----

// historyJSON answers GET /ui/history/{sn}/{what}?from=RFC3339&to=RFC3339&limit=N
// with one bounded history query; what is presence, frames, rejects or commands.
// Without from/to the range is the last 24 hours; limit defaults to 100.
func (s *Server) historyJSON(w http.ResponseWriter, r *http.Request, _ principal) {
	sn := r.PathValue("sn")
	if !protocol.ValidSN(sn) {
		writeJSONError(w, http.StatusBadRequest, "sn is not a serial number", "sn")
		return
	}
	if s.hist == nil {
		writeJSONError(w, http.StatusServiceUnavailable, errNoHistory.Error(), "")
		return
	}
	q := r.URL.Query()
	now := s.cfg.Now().UTC()
	rg := Range{From: now.Add(-24 * time.Hour), To: now, Limit: 100}
	for _, f := range []struct {
		name string
		dst  *time.Time
	}{{"from", &rg.From}, {"to", &rg.To}} {
		if v := q.Get(f.name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				writeJSONError(w, http.StatusBadRequest, f.name+" must be an RFC 3339 time", f.name)
				return
			}
			*f.dst = t
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			writeJSONError(w, http.StatusBadRequest, "limit must be an integer", "limit")
			return
		}
		rg.Limit = n
	}
	if err := rg.Check(); err != nil {
		writeJSONError(w, http.StatusBadRequest, err.Error(), "range")
		return
	}
	var out any
	var err error
	switch r.PathValue("what") {
	case "presence":
		out, err = s.hist.Intervals(r.Context(), sn, rg)
	case "frames":
		out, err = s.hist.Frames(r.Context(), sn, rg)
	case "rejects":
		out, err = s.hist.Rejects(r.Context(), sn, rg)
	case "commands":
		out, err = s.hist.Commands(r.Context(), sn, rg)
	default:
		writeJSONError(w, http.StatusNotFound, "history is one of presence, frames, rejects, commands", "what")
		return
	}
	if err != nil {
		s.log.Warn("console: history query failed", "err", err)
		writeJSONError(w, http.StatusServiceUnavailable, "history unavailable", "")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"sn": sn, "from": rg.From, "to": rg.To, "limit": rg.Limit, "rows": out})
}

func writeJSONError(w http.ResponseWriter, status int, msg, field string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg, "field": field})
}
