package redissink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/devicestate"
	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/processors/cmdlife"
	"github.com/ivms/ams/schemas"
)

// Codec decodes Avro single-object values and encodes the sink's rejects
// (a *schemas.Registry).
type Codec interface {
	Decode(b []byte, v any) error
	Encode(v any) ([]byte, error)
}

// luaLib is prepended to every script.
const luaLib = `
local function bump(dev, t)
  local cur = tonumber(redis.call('HGET', dev, 'last_seen') or '0')
  if tonumber(t) > cur then redis.call('HSET', dev, 'last_seen', t) end
end
local function place(dev, on, off, sn)
  local o = redis.call('HGET', dev, 'online')
  local reg = redis.call('HGET', dev, 'registered')
  if o == '1' then
    redis.call('ZADD', on, 0, sn); redis.call('ZREM', off, sn)
  elseif o == '0' or reg == '1' then
    redis.call('ZADD', off, 0, sn); redis.call('ZREM', on, sn)
  else
    redis.call('ZREM', on, sn); redis.call('ZREM', off, sn)
  end
end
`

// KEYS: dev, online, offline. ARGV: sn, seq, online, at, reason, detail, epoch.
const luaPresence = luaLib + `
local cur = tonumber(redis.call('HGET', KEYS[1], 'presence_seq') or '0')
if tonumber(ARGV[2]) <= cur then return 0 end
redis.call('HSET', KEYS[1], 'presence_seq', ARGV[2], 'online', ARGV[3], 'since', ARGV[4],
  'presence_reason', ARGV[5], 'presence_detail', ARGV[6], 'epoch', ARGV[7])
bump(KEYS[1], ARGV[4])
place(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
return 1
`

// KEYS: dev, online, offline. ARGV: sn, present, token_hash, bound, name,
// stream_url, updated_at, updated_by. The legacy token_sha256 field (written
// before token_hash) is removed on every write.
const luaRegistration = luaLib + `
if ARGV[2] == '1' then
  redis.call('HDEL', KEYS[1], 'token_sha256')
  redis.call('HSET', KEYS[1], 'registered', '1', 'token_hash', ARGV[3], 'bound', ARGV[4], 'name', ARGV[5],
    'stream_url', ARGV[6], 'reg_updated_at', ARGV[7], 'reg_updated_by', ARGV[8])
else
  redis.call('HDEL', KEYS[1], 'registered', 'token_hash', 'token_sha256', 'bound', 'name', 'stream_url', 'reg_updated_at', 'reg_updated_by')
end
place(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
return 1
`

// KEYS: dev. ARGV: kind, at, body, connected ("1", "0" or "").
const luaDeviceEvent = luaLib + `
bump(KEYS[1], ARGV[2])
if ARGV[1] == 'HANDSHAKE' then
  redis.call('HSET', KEYS[1], 'session', '1', 'session_at', ARGV[2])
elseif ARGV[1] == 'CONFIGURATION' then
  redis.call('HSET', KEYS[1], 'config', ARGV[3], 'config_at', ARGV[2])
elseif ARGV[1] == 'CONNECTION' and ARGV[4] == '0' then
  redis.call('HSET', KEYS[1], 'session', '0', 'session_at', ARGV[2])
end
return 1
`

// KEYS: cmd, history, pending. ARGV: id, seq, state, final, json, sn, kind,
// code, at, reason, msg_id, reply, has_reply, channel.
const luaCommand = `
local cur = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
if tonumber(ARGV[2]) <= cur then return 0 end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'sn', ARGV[6], 'state', ARGV[3], 'seq', ARGV[2], 'at', ARGV[9], 'reason', ARGV[10])
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'kind', ARGV[7]) end
if ARGV[8] ~= '0' then redis.call('HSET', KEYS[1], 'code', ARGV[8]) end
if ARGV[11] ~= '' then redis.call('HSET', KEYS[1], 'msg_id', ARGV[11]) end
if ARGV[13] == '1' then redis.call('HSET', KEYS[1], 'reply', ARGV[12]) end
redis.call('HSETNX', KEYS[1], 'accepted_at', ARGV[9])
redis.call('RPUSH', KEYS[2], ARGV[5])
if ARGV[4] == '1' then redis.call('SREM', KEYS[3], ARGV[1]) else redis.call('SADD', KEYS[3], ARGV[1]) end
redis.call('PUBLISH', ARGV[14], ARGV[5])
return 1
`

// Projector applies decoded log records to Redis. It is safe for concurrent
// use; records of one device must be applied in offset order.
type Projector struct {
	rdb     goredis.UniversalClient
	keys    devicestate.Keys
	names   kafkatopics.Names
	codec   Codec
	scripts map[string]*goredis.Script // by topic
}

// NewProjector returns a projector writing under keys, reading the topics
// named by names.
func NewProjector(rdb goredis.UniversalClient, keys devicestate.Keys, names kafkatopics.Names, codec Codec) *Projector {
	return &Projector{rdb: rdb, keys: keys, names: names, codec: codec, scripts: map[string]*goredis.Script{
		names.Presence:      goredis.NewScript(luaPresence),
		names.Registry:      goredis.NewScript(luaRegistration),
		names.DeviceEvents:  goredis.NewScript(luaDeviceEvent),
		names.CommandEvents: goredis.NewScript(luaCommand),
	}}
}

// Topics returns the topics the projector reads.
func (p *Projector) Topics() []string {
	return []string{p.names.Registry, p.names.Presence, p.names.DeviceEvents, p.names.CommandEvents}
}

// Load loads every script into Redis's script cache.
func (p *Projector) Load(ctx context.Context) error {
	for t, s := range p.scripts {
		if err := s.Load(ctx, p.rdb).Err(); err != nil {
			return fmt.Errorf("redis: load script of %s: %w", t, err)
		}
	}
	return nil
}

// op is one script run.
type op struct {
	script *goredis.Script
	keys   []string
	args   []any
}

func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

func b01(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// SkipError says why a record was not applied: it cannot be decoded, it
// does not belong to a projected topic, or Redis refused it for its data
// (WRONGTYPE, a script error). It is not an outage: the record is not
// retried; the sink sends it to ams.rejects with Reason and moves on.
type SkipError struct {
	Topic  string
	Offset int64
	Reason string      // Reject.Reason
	Record *kgo.Record // the refused record
	Err    error
}

func (e *SkipError) Error() string {
	return fmt.Sprintf("skip %s@%d (%s): %v", e.Topic, e.Offset, e.Reason, e.Err)
}

func (e *SkipError) Unwrap() error { return e.Err }

// plan turns one record into a script run.
func (p *Projector) plan(r *kgo.Record) (op, error) {
	skip := func(err error) (op, error) {
		return op{}, &SkipError{Topic: r.Topic, Offset: r.Offset, Reason: schemas.DecodeRejectReason(err), Record: r, Err: err}
	}
	sn := string(r.Key)
	switch r.Topic {
	case p.names.Registry:
		if sn == "" {
			return skip(fmt.Errorf("registration without a key"))
		}
		o := op{script: p.scripts[r.Topic], keys: []string{p.keys.Device(sn), p.keys.Online(), p.keys.Offline()}}
		if r.Value == nil {
			o.args = []any{sn, "0", "", "", "", "", "", ""}
			return o, nil
		}
		var reg schemas.Registration
		if err := p.codec.Decode(r.Value, &reg); err != nil {
			return skip(err)
		}
		hash := reg.TokenHash
		if hash == "" { // a registration written before token_hash
			hash = strings.ToLower(reg.TokenSHA256)
		}
		o.args = []any{sn, "1", hash, b01(reg.Bound), reg.Name, reg.StreamURL, ms(reg.UpdatedAt), reg.UpdatedBy}
		return o, nil
	case p.names.Presence:
		var pr schemas.Presence
		if err := p.codec.Decode(r.Value, &pr); err != nil {
			return skip(err)
		}
		if pr.SN == "" {
			pr.SN = sn
		}
		return op{script: p.scripts[r.Topic], keys: []string{p.keys.Device(pr.SN), p.keys.Online(), p.keys.Offline()},
			args: []any{pr.SN, strconv.FormatInt(pr.Seq, 10), b01(pr.Online), ms(pr.At), pr.Reason, pr.Detail, strconv.FormatInt(pr.Epoch, 10)}}, nil
	case p.names.DeviceEvents:
		var ev schemas.DeviceEvent
		if err := p.codec.Decode(r.Value, &ev); err != nil {
			return skip(err)
		}
		if ev.SN == "" {
			ev.SN = sn
		}
		connected := ""
		if ev.Connection != nil {
			connected = b01(ev.Connection.Connected)
		}
		at := ev.IngestTime
		if at.IsZero() {
			at = ev.ProcessedAt
		}
		return op{script: p.scripts[r.Topic], keys: []string{p.keys.Device(ev.SN)},
			args: []any{ev.Kind, ms(at), ev.Body, connected}}, nil
	case p.names.CommandEvents:
		var ev schemas.CommandEvent
		if err := p.codec.Decode(r.Value, &ev); err != nil {
			return skip(err)
		}
		if ev.CommandID == "" {
			return skip(fmt.Errorf("command event without a command id"))
		}
		if ev.SN == "" {
			ev.SN = sn
		}
		js, err := json.Marshal(devicestate.CommandEventJSON(&ev))
		if err != nil {
			return skip(err)
		}
		reply, hasReply := "", "0"
		if ev.Reply != nil {
			reply, hasReply = *ev.Reply, "1"
		}
		return op{script: p.scripts[r.Topic],
			keys: []string{p.keys.Command(ev.CommandID), p.keys.History(ev.CommandID), p.keys.Pending(ev.SN)},
			args: []any{ev.CommandID, strconv.FormatInt(int64(ev.Seq), 10), ev.State, b01(cmdlife.Final(ev.State)), string(js),
				ev.SN, ev.Kind, strconv.FormatInt(int64(ev.Code), 10), ms(ev.At), ev.Reason, ev.MsgID, reply, hasReply,
				p.keys.Events(ev.CommandID)}}, nil
	}
	_, err := skip(fmt.Errorf("topic %q is not projected", r.Topic))
	err.(*SkipError).Reason = "unknown_topic"
	return op{}, err
}

// Apply applies records in order, in one pipeline. Records that cannot be
// decoded, and records Redis refuses for their data (DataError), are
// returned as SkipErrors and are not applied; err is an outage (a network
// failure, LOADING, ...), after which the whole batch may be applied again
// (every script is idempotent under in-order re-application).
func (p *Projector) Apply(ctx context.Context, recs []*kgo.Record) (applied int, skipped []*SkipError, err error) {
	ops := make([]op, 0, len(recs))
	srcs := make([]*kgo.Record, 0, len(recs))
	for _, r := range recs {
		o, err := p.plan(r)
		if err != nil {
			se, _ := err.(*SkipError)
			skipped = append(skipped, se)
			continue
		}
		ops = append(ops, o)
		srcs = append(srcs, r)
	}
	if len(ops) == 0 {
		return 0, skipped, nil
	}
	run := func() ([]goredis.Cmder, error) {
		pipe := p.rdb.Pipeline()
		for _, o := range ops {
			o.script.EvalSha(ctx, pipe, o.keys, o.args...)
		}
		return pipe.Exec(ctx)
	}
	cmds, err := run()
	if err != nil && hasNoScript(cmds) {
		// The script cache was flushed (a Redis restart): load and apply the
		// batch again; re-application is harmless.
		if lerr := p.Load(ctx); lerr != nil {
			return 0, skipped, lerr
		}
		cmds, err = run()
	}
	if err != nil {
		// A pipeline error is the first command's error: an outage if any
		// command failed for other than its data.
		for _, c := range cmds {
			if cerr := c.Err(); cerr != nil && DataError(cerr) == "" {
				return 0, skipped, fmt.Errorf("redis: apply %d records: %w", len(ops), cerr)
			}
		}
		if len(cmds) != len(ops) {
			return 0, skipped, fmt.Errorf("redis: apply %d records: %w", len(ops), err)
		}
	}
	for i, c := range cmds {
		if cerr := c.Err(); cerr != nil {
			r := srcs[i]
			skipped = append(skipped, &SkipError{Topic: r.Topic, Offset: r.Offset, Reason: DataError(cerr), Record: r, Err: cerr})
			continue
		}
		if n, _ := c.(*goredis.Cmd).Int64(); n == 1 {
			applied++
		}
	}
	return applied, skipped, nil
}

func hasNoScript(cmds []goredis.Cmder) bool {
	for _, c := range cmds {
		if err := c.Err(); err != nil && goredis.HasErrorPrefix(err, "NOSCRIPT") {
			return true
		}
	}
	return false
}

// DataError classifies a Redis error of one script run: it returns the
// reject reason when the error comes from the record's data (retrying it
// would fail the same way forever), or "" when it is an outage to retry.
//
// Data errors: WRONGTYPE (a key of the record holds another type) and
// script runtime errors ("ERR user_script:..." / "ERR Error running
// script"). Everything else is retried: connection errors and timeouts
// (not Redis replies at all), LOADING, BUSY, NOSCRIPT, READONLY,
// MASTERDOWN, TRYAGAIN, CLUSTERDOWN, OOM, NOAUTH/WRONGPASS/NOPERM (an
// operator fixes those; nothing is skipped meanwhile) and any other ERR.
func DataError(err error) string {
	var rerr goredis.Error
	if !errors.As(err, &rerr) {
		return "" // not a reply from Redis: network, timeout, closed client
	}
	msg := err.Error()
	switch {
	case strings.HasPrefix(msg, "WRONGTYPE"):
		return "redis_wrongtype"
	case strings.HasPrefix(msg, "ERR") && (strings.Contains(msg, "user_script") || strings.Contains(msg, "Error running script")):
		return "redis_script_error"
	}
	return ""
}
