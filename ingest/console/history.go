package console

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// History reads the event history the ClickHouse sink writes (see
// sinks/chsink/migrations). It is read-only: every query is a fixed statement of
// this file with bound parameters, every time range is at most MaxRange and
// every answer at most MaxRows rows. Nothing from a request becomes SQL text.
//
// The connection is opened on first use and again after a failure, so the
// API starts (and serves everything but history) while ClickHouse is down.
type History struct {
	open func(context.Context) (driver.Conn, error)
	db   string

	mu   sync.Mutex
	conn driver.Conn
}

// Bounds of a history query.
const (
	MaxRange = 31 * 24 * time.Hour
	MaxRows  = 1000
)

var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// NewHistory returns a History over the tables of database db; open
// connects (e.g. sinks/chsink.Open).
func NewHistory(db string, open func(context.Context) (driver.Conn, error)) (*History, error) {
	if !identifier.MatchString(db) {
		return nil, fmt.Errorf("console: clickhouse database %q: want letters, digits and underscores", db)
	}
	return &History{open: open, db: db}, nil
}

// Close closes the connection, if open.
func (h *History) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conn == nil {
		return nil
	}
	err := h.conn.Close()
	h.conn = nil
	return err
}

func (h *History) get(ctx context.Context) (driver.Conn, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conn != nil {
		return h.conn, nil
	}
	c, err := h.open(ctx)
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	h.conn = c
	return c, nil
}

// query runs a fixed statement ({db} replaced by the database) and calls
// scan for each row.
func (h *History) query(ctx context.Context, stmt string, scan func(driver.Rows) error, args ...any) error {
	c, err := h.get(ctx)
	if err != nil {
		return err
	}
	rows, err := c.Query(ctx, expand(stmt, h.db), args...)
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return fmt.Errorf("history: scan: %w", err)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("history: %w", err)
	}
	return nil
}

func expand(stmt, db string) string {
	out := make([]byte, 0, len(stmt)+8*len(db))
	for i := 0; i < len(stmt); i++ {
		if stmt[i] == '{' && len(stmt) >= i+4 && stmt[i:i+4] == "{db}" {
			out = append(out, db...)
			i += 3
			continue
		}
		out = append(out, stmt[i])
	}
	return string(out)
}

// ErrRange is returned (wrapped) for a time range or limit out of bounds.
var ErrRange = errors.New("history: range out of bounds")

// Range is a bounded query window: From < To, To-From <= MaxRange,
// 1 <= Limit <= MaxRows.
type Range struct {
	From, To time.Time
	Limit    int
}

// Check returns an error wrapping ErrRange when r is out of bounds.
func (r Range) Check() error {
	switch {
	case !r.From.Before(r.To):
		return fmt.Errorf("%w: from must be before to", ErrRange)
	case r.To.Sub(r.From) > MaxRange:
		return fmt.Errorf("%w: at most %s between from and to", ErrRange, MaxRange)
	case r.Limit < 1 || r.Limit > MaxRows:
		return fmt.Errorf("%w: limit must be 1 to %d", ErrRange, MaxRows)
	}
	return nil
}

// Last returns the range of the last d before now, with limit rows.
func Last(now time.Time, d time.Duration, limit int) Range {
	return Range{From: now.Add(-d), To: now, Limit: limit}
}

func ms(t time.Time) uint64 { return uint64(max(t.UnixMilli(), 0)) }

func fromMs(v uint64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(int64(v)).UTC()
}

// Interval is one online interval of a device; End is now for an open one.
type Interval struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	Open  bool      `json:"open"`
}

// Intervals returns the device's online intervals overlapping r, oldest
// first. They are the rows of the presence_intervals view for this sn, read
// with the sn filter first (the view's FINAL and GROUP BY over every device
// come before any outer WHERE on ClickHouse 18.16, which costs ~90 ms at
// 10,000 cameras; the table's sort key starts with sn).
func (h *History) Intervals(ctx context.Context, sn string, r Range) ([]Interval, error) {
	if err := r.Check(); err != nil {
		return nil, err
	}
	out := []Interval{}
	err := h.query(ctx, `SELECT since_ms, at_ms FROM {db}.presence FINAL
		WHERE sn = ? AND online = 0 AND since_ms > 0 AND at_ms >= ? AND since_ms <= ? ORDER BY since_ms LIMIT ?`,
		func(rows driver.Rows) error {
			var s, e uint64
			if err := rows.Scan(&s, &e); err != nil {
				return err
			}
			out = append(out, Interval{Start: fromMs(s), End: fromMs(e)})
			return nil
		}, sn, ms(r.From), ms(r.To), r.Limit)
	if err != nil {
		return nil, err
	}
	err = h.query(ctx, `SELECT argMax(online, seq) AS last_online, argMax(at_ms, seq) AS start_ms FROM {db}.presence
		WHERE sn = ? GROUP BY sn HAVING last_online = 1`,
		func(rows driver.Rows) error {
			var online uint8
			var s uint64
			if err := rows.Scan(&online, &s); err != nil {
				return err
			}
			if start := fromMs(s); start.Before(r.To) && len(out) < r.Limit {
				out = append(out, Interval{Start: start, End: r.To, Open: true})
			}
			return nil
		}, sn)
	return out, err
}

// Frame is one uplink frame of a device, as the processors recorded it.
type Frame struct {
	At      time.Time `json:"at"`
	Kind    string    `json:"kind"`
	CmdType int32     `json:"cmd_type"`
	SubType int32     `json:"sub_type"`
	MsgID   string    `json:"msg_id,omitempty"`
}

// Frames returns the device's latest frames in r, newest first.
func (h *History) Frames(ctx context.Context, sn string, r Range) ([]Frame, error) {
	if err := r.Check(); err != nil {
		return nil, err
	}
	out := []Frame{}
	err := h.query(ctx, `SELECT ingest_time_ms, kind, cmd_type, sub_type, msg_id FROM {db}.device_events
		WHERE sn = ? AND ingest_time >= toDateTime(?) AND ingest_time <= toDateTime(?)
		GROUP BY event_id, ingest_time_ms, kind, cmd_type, sub_type, msg_id
		ORDER BY ingest_time_ms DESC LIMIT ?`,
		func(rows driver.Rows) error {
			var f Frame
			var at uint64
			if err := rows.Scan(&at, &f.Kind, &f.CmdType, &f.SubType, &f.MsgID); err != nil {
				return err
			}
			f.At = fromMs(at)
			out = append(out, f)
			return nil
		}, sn, r.From.Unix(), r.To.Unix(), r.Limit)
	return out, err
}

// Count is a number of things of one label (a kind, a reason, a state).
type Count struct {
	Label string    `json:"label"`
	Sub   string    `json:"sub,omitempty"` // a second label (a stage, a model)
	N     uint64    `json:"n"`
	Last  time.Time `json:"last,omitempty"`
}

// FrameKinds counts the device's frames in r by kind.
func (h *History) FrameKinds(ctx context.Context, sn string, r Range) ([]Count, error) {
	if err := r.Check(); err != nil {
		return nil, err
	}
	out := []Count{}
	err := h.query(ctx, `SELECT kind, uniqExact(event_id) AS n, max(ingest_time_ms) FROM {db}.device_events
		WHERE sn = ? AND ingest_time >= toDateTime(?) AND ingest_time <= toDateTime(?) GROUP BY kind ORDER BY n DESC LIMIT ?`,
		func(rows driver.Rows) error {
			var c Count
			var last uint64
			if err := rows.Scan(&c.Label, &c.N, &last); err != nil {
				return err
			}
			c.Last = fromMs(last)
			out = append(out, c)
			return nil
		}, sn, r.From.Unix(), r.To.Unix(), r.Limit)
	return out, err
}

// Reject is one record rejected to ams.rejects.
type Reject struct {
	At     time.Time `json:"at"`
	SN     string    `json:"sn,omitempty"`
	Stage  string    `json:"stage"`
	Reason string    `json:"reason"`
	Detail string    `json:"detail,omitempty"`
}

// Rejects returns the device's rejects in r, newest first.
func (h *History) Rejects(ctx context.Context, sn string, r Range) ([]Reject, error) {
	if err := r.Check(); err != nil {
		return nil, err
	}
	out := []Reject{}
	err := h.query(ctx, `SELECT at_ms, stage, reason, detail FROM {db}.rejects
		WHERE sn = ? AND at >= toDateTime(?) AND at <= toDateTime(?)
		GROUP BY reject_id, at_ms, stage, reason, detail ORDER BY at_ms DESC LIMIT ?`,
		func(rows driver.Rows) error {
			var x Reject
			var at uint64
			if err := rows.Scan(&at, &x.Stage, &x.Reason, &x.Detail); err != nil {
				return err
			}
			x.At, x.SN = fromMs(at), sn
			out = append(out, x)
			return nil
		}, sn, r.From.Unix(), r.To.Unix(), r.Limit)
	return out, err
}

// StateChange is one event of a command's lifecycle.
type StateChange struct {
	State  string    `json:"state"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason,omitempty"`
	Reply  string    `json:"reply,omitempty"`
	Seq    int32     `json:"seq"`
}

// CommandRecord is one command with every state change in r.
type CommandRecord struct {
	ID      string        `json:"id"`
	Kind    string        `json:"kind"`
	State   string        `json:"state"` // the latest
	Reply   string        `json:"reply,omitempty"`
	Changes []StateChange `json:"changes"`
}

// Commands returns the device's commands with a state change in r, newest
// first; r.Limit bounds the state changes read.
func (h *History) Commands(ctx context.Context, sn string, r Range) ([]CommandRecord, error) {
	if err := r.Check(); err != nil {
		return nil, err
	}
	byID := map[string]*CommandRecord{}
	var order []string
	err := h.query(ctx, `SELECT command_id, kind, state, at_ms, reason, has_reply, reply, seq FROM {db}.commands
		WHERE sn = ? AND at >= toDateTime(?) AND at <= toDateTime(?)
		GROUP BY event_id, command_id, kind, state, at_ms, reason, has_reply, reply, seq
		ORDER BY at_ms DESC, seq DESC LIMIT ?`,
		func(rows driver.Rows) error {
			var id, kind string
			var c StateChange
			var at uint64
			var hasReply uint8
			if err := rows.Scan(&id, &kind, &c.State, &at, &c.Reason, &hasReply, &c.Reply, &c.Seq); err != nil {
				return err
			}
			c.At = fromMs(at)
			if hasReply == 0 {
				c.Reply = ""
			}
			rec := byID[id]
			if rec == nil {
				rec = &CommandRecord{ID: id}
				byID[id] = rec
				order = append(order, id)
			}
			if kind != "" {
				rec.Kind = kind
			}
			rec.Changes = append(rec.Changes, c)
			return nil
		}, sn, r.From.Unix(), r.To.Unix(), r.Limit)
	if err != nil {
		return nil, err
	}
	out := make([]CommandRecord, 0, len(order))
	for _, id := range order {
		rec := byID[id]
		sort.Slice(rec.Changes, func(i, j int) bool { return rec.Changes[i].Seq < rec.Changes[j].Seq })
		last := rec.Changes[len(rec.Changes)-1]
		rec.State = last.State
		for _, c := range rec.Changes {
			if c.Reply != "" {
				rec.Reply = c.Reply
			}
		}
		out = append(out, *rec)
	}
	return out, nil
}

// HourCount is the presence transitions of the fleet in one hour.
type HourCount struct {
	Hour time.Time `json:"hour"`
	Up   uint64    `json:"up"`   // transitions to online
	Down uint64    `json:"down"` // transitions to offline
}

// PresenceHourly counts the fleet's presence transitions per hour in r, oldest first.
func (h *History) PresenceHourly(ctx context.Context, r Range) ([]HourCount, error) {
	if err := r.Check(); err != nil {
		return nil, err
	}
	out := []HourCount{}
	err := h.query(ctx, `SELECT toStartOfHour(at) AS hour, uniqExactIf(event_id, online = 1), uniqExactIf(event_id, online = 0)
		FROM {db}.presence WHERE at >= toDateTime(?) AND at <= toDateTime(?) GROUP BY hour ORDER BY hour LIMIT ?`,
		func(rows driver.Rows) error {
			var c HourCount
			if err := rows.Scan(&c.Hour, &c.Up, &c.Down); err != nil {
				return err
			}
			c.Hour = c.Hour.UTC()
			out = append(out, c)
			return nil
		}, r.From.Unix(), r.To.Unix(), r.Limit)
	return out, err
}

// Firmware counts the devices that reported a configuration in r by the
// firmware and model of their latest one in r (the device_config_latest
// view, bounded in time).
func (h *History) Firmware(ctx context.Context, r Range) ([]Count, error) {
	if err := r.Check(); err != nil {
		return nil, err
	}
	out := []Count{}
	err := h.query(ctx, `SELECT fw, model, count() AS n FROM (
			SELECT sn, argMax(fw_version, ingest_time_ms) AS fw, argMax(model_name, ingest_time_ms) AS model
			FROM {db}.device_events
			WHERE kind = 'CONFIGURATION' AND config_ok = 1 AND ingest_time >= toDateTime(?) AND ingest_time <= toDateTime(?)
			GROUP BY sn)
		GROUP BY fw, model ORDER BY n DESC, fw LIMIT ?`,
		func(rows driver.Rows) error {
			var c Count
			if err := rows.Scan(&c.Label, &c.Sub, &c.N); err != nil {
				return err
			}
			out = append(out, c)
			return nil
		}, r.From.Unix(), r.To.Unix(), r.Limit)
	return out, err
}

// WentOffline is a device whose latest transition in a window was to offline.
type WentOffline struct {
	SN     string    `json:"sn"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason"`
}

// WentOffline returns the devices whose latest transition in r is to
// offline, most recent first.
func (h *History) WentOffline(ctx context.Context, r Range) ([]WentOffline, error) {
	if err := r.Check(); err != nil {
		return nil, err
	}
	out := []WentOffline{}
	err := h.query(ctx, `SELECT sn, argMax(online, seq) AS last_online, argMax(at_ms, seq) AS last_at, argMax(reason, seq)
		FROM {db}.presence WHERE at >= toDateTime(?) AND at <= toDateTime(?) GROUP BY sn HAVING last_online = 0 ORDER BY last_at DESC LIMIT ?`,
		func(rows driver.Rows) error {
			var w WentOffline
			var online uint8
			var at uint64
			if err := rows.Scan(&w.SN, &online, &at, &w.Reason); err != nil {
				return err
			}
			w.At = fromMs(at)
			out = append(out, w)
			return nil
		}, r.From.Unix(), r.To.Unix(), r.Limit)
	return out, err
}

// RejectReasons counts the rejects in r by stage and reason.
func (h *History) RejectReasons(ctx context.Context, r Range) ([]Count, error) {
	if err := r.Check(); err != nil {
		return nil, err
	}
	out := []Count{}
	err := h.query(ctx, `SELECT reason, stage, uniqExact(reject_id) AS n, max(at_ms) FROM {db}.rejects
		WHERE at >= toDateTime(?) AND at <= toDateTime(?) GROUP BY stage, reason ORDER BY n DESC LIMIT ?`,
		func(rows driver.Rows) error {
			var c Count
			var last uint64
			if err := rows.Scan(&c.Label, &c.Sub, &c.N, &last); err != nil {
				return err
			}
			c.Last = fromMs(last)
			out = append(out, c)
			return nil
		}, r.From.Unix(), r.To.Unix(), r.Limit)
	return out, err
}

// CommandStates counts the commands with a state change in r by their latest state.
func (h *History) CommandStates(ctx context.Context, r Range) ([]Count, error) {
	if err := r.Check(); err != nil {
		return nil, err
	}
	out := []Count{}
	err := h.query(ctx, `SELECT last_state, count() AS n FROM (
			SELECT command_id, argMax(state, seq) AS last_state FROM {db}.commands
			WHERE at >= toDateTime(?) AND at <= toDateTime(?) GROUP BY command_id)
		GROUP BY last_state ORDER BY n DESC LIMIT ?`,
		func(rows driver.Rows) error {
			var c Count
			if err := rows.Scan(&c.Label, &c.N); err != nil {
				return err
			}
			out = append(out, c)
			return nil
		}, r.From.Unix(), r.To.Unix(), r.Limit)
	return out, err
}
