package devicestate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/ivms/ams/processors/cmdlife"
)

// Store reads the projected state (for the HTTP API and the broker
// authentication endpoints). It never writes. Close it to end the command
// subscription WatchCommand starts.
type Store struct {
	rdb  goredis.UniversalClient
	keys Keys

	mu      sync.Mutex
	closed  bool
	watcher *CommandWatcher // started by the first WatchCommand
}

// NewStore returns a store reading keys under keys.Prefix.
func NewStore(rdb goredis.UniversalClient, keys Keys) *Store { return &Store{rdb: rdb, keys: keys} }

// Ping checks that Redis answers.
func (s *Store) Ping(ctx context.Context) error { return s.rdb.Ping(ctx).Err() }

// Registration is a device's registration as projected (never the token).
type Registration struct {
	Bound     bool      `json:"bound"`
	Name      string    `json:"name"`
	StreamURL string    `json:"stream_url,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
	UpdatedBy string    `json:"updated_by,omitempty"`
}

// PendingCommand is a command of a device not yet final.
type PendingCommand struct {
	ID    string `json:"id"`
	Kind  string `json:"kind,omitempty"`
	State string `json:"state,omitempty"`
}

// Device is a device's current state.
type Device struct {
	SN             string           `json:"sn"`
	Online         bool             `json:"online"`
	Since          *time.Time       `json:"since,omitempty"`     // start of the current online/offline interval
	LastSeen       *time.Time       `json:"last_seen,omitempty"` // latest event or transition
	PresenceReason string           `json:"presence_reason,omitempty"`
	PresenceDetail string           `json:"presence_detail,omitempty"`
	Session        bool             `json:"session"` // a handshake established a session and no disconnect followed
	SessionAt      *time.Time       `json:"session_at,omitempty"`
	Config         json.RawMessage  `json:"config,omitempty"` // the last configuration the device reported
	ConfigAt       *time.Time       `json:"config_at,omitempty"`
	Registered     bool             `json:"registered"`
	Registration   *Registration    `json:"registration,omitempty"`
	Pending        []PendingCommand `json:"pending_commands,omitempty"`
}

func msTime(s string) *time.Time {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n == 0 {
		return nil
	}
	t := time.UnixMilli(n).UTC()
	return &t
}

func deviceFromHash(sn string, h map[string]string) Device {
	d := Device{SN: sn, Online: h["online"] == "1", Since: msTime(h["since"]), LastSeen: msTime(h["last_seen"]),
		PresenceReason: h["presence_reason"], PresenceDetail: h["presence_detail"],
		Session: h["session"] == "1", SessionAt: msTime(h["session_at"]), ConfigAt: msTime(h["config_at"]),
		Registered: h["registered"] == "1"}
	if c := h["config"]; c != "" {
		d.Config = replyJSON(c)
	}
	if d.Registered {
		r := &Registration{Bound: h["bound"] == "1", Name: h["name"], StreamURL: h["stream_url"], UpdatedBy: h["reg_updated_by"]}
		if t := msTime(h["reg_updated_at"]); t != nil {
			r.UpdatedAt = *t
		}
		d.Registration = r
	}
	return d
}

// Device returns a device's state with its pending commands; ok is false
// when Redis knows nothing of the device.
func (s *Store) Device(ctx context.Context, sn string) (d Device, ok bool, err error) {
	pipe := s.rdb.Pipeline()
	h := pipe.HGetAll(ctx, s.keys.Device(sn))
	pend := pipe.SMembers(ctx, s.keys.Pending(sn))
	if _, err := pipe.Exec(ctx); err != nil {
		return Device{}, false, fmt.Errorf("redis: device %s: %w", sn, err)
	}
	if len(h.Val()) == 0 && len(pend.Val()) == 0 {
		return Device{}, false, nil
	}
	d = deviceFromHash(sn, h.Val())
	ids := pend.Val()
	if len(ids) > 0 {
		pipe := s.rdb.Pipeline()
		cmds := make([]*goredis.SliceCmd, len(ids))
		for i, id := range ids {
			cmds[i] = pipe.HMGet(ctx, s.keys.Command(id), "kind", "state", "accepted_at")
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return Device{}, false, fmt.Errorf("redis: pending commands of %s: %w", sn, err)
		}
		type pc struct {
			PendingCommand
			at string
		}
		list := make([]pc, len(ids))
		for i, id := range ids {
			v := cmds[i].Val()
			list[i] = pc{PendingCommand{ID: id, Kind: str(v[0]), State: str(v[1])}, str(v[2])}
		}
		// Oldest first; ids break ties so the order is stable.
		sortFunc(list, func(a, b pc) bool {
			an, _ := strconv.ParseInt(a.at, 10, 64)
			bn, _ := strconv.ParseInt(b.at, 10, 64)
			if an != bn {
				return an < bn
			}
			return a.ID < b.ID
		})
		for _, p := range list {
			d.Pending = append(d.Pending, p.PendingCommand)
		}
	}
	return d, true, nil
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// TokenHash returns the stored token hash of a registered device
// (deviceauth.HashToken's form, or a legacy hex sha256), or "" when the
// device is not registered.
func (s *Store) TokenHash(ctx context.Context, sn string) (string, error) {
	v, err := s.rdb.HMGet(ctx, s.keys.Device(sn), "registered", "token_hash", "token_sha256").Result()
	if err != nil {
		return "", fmt.Errorf("redis: registration of %s: %w", sn, err)
	}
	if str(v[0]) != "1" {
		return "", nil
	}
	if h := str(v[1]); h != "" {
		return h, nil
	}
	return str(v[2]), nil
}

// Registered reports whether ams.registry holds the device.
func (s *Store) Registered(ctx context.Context, sn string) (bool, error) {
	v, err := s.rdb.HGet(ctx, s.keys.Device(sn), "registered").Result()
	if errors.Is(err, goredis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("redis: registration of %s: %w", sn, err)
	}
	return v == "1", nil
}

// RegistrationOf returns a device's registration with its stored token hash
// (as TokenHash), for updates that keep fields not given; ok is false when
// not registered.
func (s *Store) RegistrationOf(ctx context.Context, sn string) (r Registration, tokenHash string, ok bool, err error) {
	h, err := s.rdb.HGetAll(ctx, s.keys.Device(sn)).Result()
	if err != nil {
		return Registration{}, "", false, fmt.Errorf("redis: registration of %s: %w", sn, err)
	}
	d := deviceFromHash(sn, h)
	if !d.Registered {
		return Registration{}, "", false, nil
	}
	tokenHash = h["token_hash"]
	if tokenHash == "" {
		tokenHash = h["token_sha256"]
	}
	return *d.Registration, tokenHash, true, nil
}

// ListDevices returns up to limit devices online (or offline), in sn order,
// starting after cursor (an sn; "" from the start). next is the cursor of
// the next page, "" after the last.
func (s *Store) ListDevices(ctx context.Context, online bool, cursor string, limit int) (devs []Device, next string, err error) {
	key := s.keys.Offline()
	if online {
		key = s.keys.Online()
	}
	lo := "-"
	if cursor != "" {
		lo = "(" + cursor
	}
	sns, err := s.rdb.ZRangeByLex(ctx, key, &goredis.ZRangeBy{Min: lo, Max: "+", Count: int64(limit) + 1}).Result()
	if err != nil {
		return nil, "", fmt.Errorf("redis: list devices: %w", err)
	}
	if len(sns) > limit {
		sns = sns[:limit]
		next = sns[limit-1]
	}
	pipe := s.rdb.Pipeline()
	hs := make([]*goredis.MapStringStringCmd, len(sns))
	for i, sn := range sns {
		hs[i] = pipe.HGetAll(ctx, s.keys.Device(sn))
	}
	if len(sns) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, "", fmt.Errorf("redis: list devices: %w", err)
		}
	}
	devs = make([]Device, 0, len(sns))
	for i, sn := range sns {
		devs = append(devs, deviceFromHash(sn, hs[i].Val()))
	}
	return devs, next, nil
}

// Command is a command's current state and history.
type Command struct {
	ID         string          `json:"id"`
	SN         string          `json:"sn"`
	Kind       string          `json:"kind"`
	State      string          `json:"state"`
	Final      bool            `json:"final"`
	AcceptedAt *time.Time      `json:"accepted_at,omitempty"`
	At         *time.Time      `json:"at,omitempty"` // time of the current state
	Reason     string          `json:"reason,omitempty"`
	Reply      json.RawMessage `json:"reply,omitempty"`
	History    []CommandEvent  `json:"history"`
}

// Command returns a command's state and history; ok is false when no event
// of it was projected yet.
func (s *Store) Command(ctx context.Context, id string) (c Command, ok bool, err error) {
	pipe := s.rdb.Pipeline()
	h := pipe.HGetAll(ctx, s.keys.Command(id))
	hist := pipe.LRange(ctx, s.keys.History(id), 0, -1)
	if _, err := pipe.Exec(ctx); err != nil {
		return Command{}, false, fmt.Errorf("redis: command %s: %w", id, err)
	}
	m := h.Val()
	if len(m) == 0 {
		return Command{}, false, nil
	}
	c = Command{ID: id, SN: m["sn"], Kind: m["kind"], State: m["state"], Final: cmdlife.Final(m["state"]),
		AcceptedAt: msTime(m["accepted_at"]), At: msTime(m["at"]), Reason: m["reason"], History: []CommandEvent{}}
	if r, ok := m["reply"]; ok {
		c.Reply = replyJSON(r)
	}
	for _, js := range hist.Val() {
		var ev CommandEvent
		if err := json.Unmarshal([]byte(js), &ev); err != nil {
			return Command{}, false, fmt.Errorf("redis: command %s history: %w", id, err)
		}
		c.History = append(c.History, ev)
	}
	return c, true, nil
}

// watcherStartTimeout bounds the lazy start of the command watcher (a
// subscription's Receive has no read deadline of its own).
const watcherStartTimeout = 10 * time.Second

// WatchCommand registers a waiter of a command's events on the store's
// CommandWatcher (one pattern subscription for the store, started by the
// first call, which returns once Redis has confirmed it). An event applied
// after WatchCommand returns is never missed: read the current state after
// it, then wait on wake. wake receives a value after each applied event
// (several events may coalesce into one wake-up) and after a lost
// subscription is back; stop unregisters the waiter. Only the first call
// (or the first after a failed start) makes a Redis round trip.
func (s *Store) WatchCommand(ctx context.Context, id string) (wake <-chan struct{}, stop func(), err error) {
	w, err := s.commandWatcher(ctx)
	if err != nil {
		return nil, nil, err
	}
	return w.Watch(id)
}

// WatchCommandFinal is WatchCommand for a waiter that only wants the
// command's outcome: wake receives a value after an event with a final
// state and after a lost subscription is back, not after interim states
// (CommandWatcher.WatchFinal).
func (s *Store) WatchCommandFinal(ctx context.Context, id string) (wake <-chan struct{}, stop func(), err error) {
	w, err := s.commandWatcher(ctx)
	if err != nil {
		return nil, nil, err
	}
	return w.WatchFinal(id)
}

// commandWatcher returns the store's watcher, starting it on first use; a
// failed start is tried again by the next call.
func (s *Store) commandWatcher(ctx context.Context) (*CommandWatcher, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrWatcherClosed
	}
	if s.watcher == nil {
		ctx, cancel := context.WithTimeout(ctx, watcherStartTimeout)
		defer cancel()
		w, err := NewCommandWatcher(ctx, s.rdb, s.keys)
		if err != nil {
			return nil, err
		}
		s.watcher = w
	}
	return s.watcher, nil
}

// Close closes the store's command watcher, if started; WatchCommand fails
// afterwards. It does not close the Redis client.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.watcher == nil {
		return nil
	}
	return s.watcher.Close()
}

func sortFunc[T any](s []T, less func(a, b T) bool) {
	slices.SortFunc(s, func(a, b T) int {
		switch {
		case less(a, b):
			return -1
		case less(b, a):
			return 1
		}
		return 0
	})
}
