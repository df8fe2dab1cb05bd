package console

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Live reads of the current state the Redis sink projects (pkg/devicestate's
// key layout). Read-only.

// Counts is the fleet's presence now.
type Counts struct {
	Online  int64 `json:"online"`
	Offline int64 `json:"offline"`
}

func (s *Server) counts(ctx context.Context) (Counts, error) {
	pipe := s.rdb.Pipeline()
	on := pipe.ZCard(ctx, s.keys.Online())
	off := pipe.ZCard(ctx, s.keys.Offline())
	if _, err := pipe.Exec(ctx); err != nil {
		return Counts{}, fmt.Errorf("console: counts: %w", err)
	}
	return Counts{Online: on.Val(), Offline: off.Val()}, nil
}

// Presence is a device's presence now, as the live stream sends it.
type Presence struct {
	Online   bool      `json:"online"`
	Since    time.Time `json:"since"`
	LastSeen time.Time `json:"last_seen"`
	Session  bool      `json:"session"`
	Known    bool      `json:"known"`
}

func (s *Server) presence(ctx context.Context, sn string) (Presence, error) {
	v, err := s.rdb.HMGet(ctx, s.keys.Device(sn), "online", "since", "last_seen", "session").Result()
	if err != nil {
		return Presence{}, fmt.Errorf("console: presence of %s: %w", sn, err)
	}
	p := Presence{Online: str(v[0]) == "1", Since: msStr(str(v[1])), LastSeen: msStr(str(v[2])), Session: str(v[3]) == "1"}
	p.Known = v[0] != nil || v[2] != nil
	return p, nil
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func msStr(s string) time.Time {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n == 0 {
		return time.Time{}
	}
	return time.UnixMilli(n).UTC()
}

// CameraRow is one line of the cameras page.
type CameraRow struct {
	SN       string
	Name     string
	Online   bool
	LastSeen time.Time
	Firmware string
	Model    string
}

// CameraQuery filters and orders the cameras page.
type CameraQuery struct {
	Prefix   string // sn prefix
	Name     string // substring of the registered name, any case
	Online   string // "", "true" or "false"
	Firmware string // substring of the firmware version, any case
	Sort     string // "last_seen" (newest first, default), "last_seen_asc" or "sn"
	Page     int    // from 0
}

// PageSize is the number of cameras per page.
const PageSize = 50

// scanChunk is how many device hashes one pipeline reads.
const scanChunk = 1000

// cameras returns one page of the cameras matching q and the number matching.
// It reads the sn index of the sorted sets (by prefix) and then one HMGET per
// candidate, pipelined in chunks: cost grows with the fleet (about 10 ms per
// 10,000 cameras on loopback; see BenchmarkConsolePages).
func (s *Server) cameras(ctx context.Context, q CameraQuery) ([]CameraRow, int, error) {
	var sets []string
	switch q.Online {
	case "true":
		sets = []string{s.keys.Online()}
	case "false":
		sets = []string{s.keys.Offline()}
	default:
		sets = []string{s.keys.Online(), s.keys.Offline()}
	}
	lo, hi := "-", "+"
	if q.Prefix != "" {
		lo, hi = "["+q.Prefix, "["+q.Prefix+"\xff"
	}
	var sns []string
	for _, key := range sets {
		v, err := s.rdb.ZRangeByLex(ctx, key, &goredis.ZRangeBy{Min: lo, Max: hi}).Result()
		if err != nil {
			return nil, 0, fmt.Errorf("console: cameras: %w", err)
		}
		sns = append(sns, v...)
	}
	name, fw := strings.ToLower(q.Name), strings.ToLower(q.Firmware)
	fields := []string{"online", "last_seen", "name"}
	if fw != "" {
		fields = append(fields, "config") // the firmware filter reads every candidate's configuration
	}
	rows := make([]CameraRow, 0, len(sns))
	for start := 0; start < len(sns); start += scanChunk {
		chunk := sns[start:min(start+scanChunk, len(sns))]
		pipe := s.rdb.Pipeline()
		cmds := make([]*goredis.SliceCmd, len(chunk))
		for i, sn := range chunk {
			cmds[i] = pipe.HMGet(ctx, s.keys.Device(sn), fields...)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, 0, fmt.Errorf("console: cameras: %w", err)
		}
		for i, sn := range chunk {
			v := cmds[i].Val()
			r := CameraRow{SN: sn, Online: str(v[0]) == "1", LastSeen: msStr(str(v[1])), Name: str(v[2])}
			if name != "" && !strings.Contains(strings.ToLower(r.Name), name) {
				continue
			}
			if fw != "" && !strings.Contains(strings.ToLower(jsonString(str(v[3]), "sFwVersion")), fw) {
				continue
			}
			rows = append(rows, r)
		}
	}
	switch q.Sort {
	case "sn":
		slices.SortFunc(rows, func(a, b CameraRow) int { return strings.Compare(a.SN, b.SN) })
	case "last_seen_asc":
		slices.SortStableFunc(rows, func(a, b CameraRow) int { return a.LastSeen.Compare(b.LastSeen) })
	default:
		slices.SortStableFunc(rows, func(a, b CameraRow) int { return b.LastSeen.Compare(a.LastSeen) })
	}
	total := len(rows)
	from := min(q.Page*PageSize, total)
	to := min(from+PageSize, total)
	page := rows[from:to]
	// Firmware and model of the page's rows only.
	if len(page) > 0 {
		pipe := s.rdb.Pipeline()
		cmds := make([]*goredis.StringCmd, len(page))
		for i, r := range page {
			cmds[i] = pipe.HGet(ctx, s.keys.Device(r.SN), "config")
		}
		_, _ = pipe.Exec(ctx) // a camera without a configuration is redis.Nil: left blank
		for i := range page {
			var cfg struct {
				Fw    string `json:"sFwVersion"`
				Model string `json:"sModelName"`
			}
			if c := cmds[i].Val(); c != "" && json.Unmarshal([]byte(c), &cfg) == nil {
				page[i].Firmware, page[i].Model = cfg.Fw, cfg.Model
			}
		}
	}
	return page, total, nil
}

// jsonString returns the string member key of the JSON object doc without
// decoding the whole document ("" when absent or not a plain string). It is
// the firmware filter's fast path over thousands of configurations; a value
// with escapes is decoded properly.
func jsonString(doc, key string) string {
	pat := `"` + key + `":`
	i := strings.Index(doc, pat)
	if i < 0 {
		return ""
	}
	rest := strings.TrimLeft(doc[i+len(pat):], " ")
	if !strings.HasPrefix(rest, `"`) {
		return ""
	}
	end := strings.IndexByte(rest[1:], '"')
	if end < 0 {
		return ""
	}
	v := rest[1 : 1+end]
	if strings.IndexByte(v, '\\') >= 0 { // escapes: decode the member properly
		var out string
		var m map[string]json.RawMessage
		if json.Unmarshal([]byte(doc), &m) == nil && json.Unmarshal(m[key], &out) == nil {
			return out
		}
		return ""
	}
	return v
}
