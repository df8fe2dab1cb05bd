// Package devicestate is the read model of ams: the current state of devices
// and commands in Redis, as sinks/redissink projects it from the log
// (ams.registry, ams.presence, ams.device.events, ams.command.events). It owns
// the key layout (Keys), the JSON form of command events (CommandEvent) and
// the read side the HTTP API, the console and the broker authentication
// endpoints use (Store). Nothing here writes; sinks/redissink is the only
// writer.
//
// Key layout (P is the key prefix, "ams:" by default; see Keys):
//
//	P dev:{sn}              hash: a device's summary (fields below)
//	P dev:{sn}:pending      set: ids of the device's commands not yet final
//	P devices:online        sorted set (all scores 0, ordered by sn): devices online
//	P devices:offline       sorted set: devices offline, or registered and never seen
//	P cmd:{id}              hash: a command's current state (fields below)
//	P cmd:{id}:history      list: every CommandEvent of the command as JSON, in seq order
//	P cmd:{id}:events       pub/sub channel: each CommandEvent JSON, after it is applied
//	                        (readers: one PSUBSCRIBE of P cmd:*:events, CommandWatcher)
//
// {sn} and {id} are escaped (see Escape): ':' and '%' become %3A and %25,
// so a name can never contain the separator and no two keys collide,
// whatever an sn or a command id holds (ValidSN and the API's ids both
// allow ':'; other Kafka writers may send anything). The usual sn and id,
// without ':' or '%', are unchanged.
//
// Device hash fields: online ("1"/"0"), since (unix ms of the last
// transition), presence_seq, presence_reason, presence_detail, epoch;
// last_seen (unix ms, the latest of every event and transition); session
// ("1" after a handshake, "0" after a disconnect), session_at; config (the
// last configuration body, JSON), config_at; registered ("1" while
// ams.registry holds the device), token_hash (or token_sha256, written
// before it), bound ("1"/"0"), name,
// stream_url, reg_updated_at, reg_updated_by.
//
// Command hash fields: id, sn, kind, code, state, seq, at, reason, msg_id,
// reply (when the device replied), accepted_at (the first event's time).
//
// Idempotence (what sinks/redissink guarantees for the state read here).
// Every record is applied by a Lua script, atomically:
//   - a presence record only when its Seq is above the stored presence_seq;
//   - a command event only when its Seq is above the command's stored seq
//     (so the history list never holds an event twice);
//   - a registration or device event overwrites its fields; the records of
//     one device are in one partition of each topic and are applied in
//     offset order, so a redelivered suffix ends in the same state;
//   - last_seen is a maximum.
//
// The fields each topic writes are disjoint (except last_seen, a maximum),
// and a device's place in devices:online / devices:offline is recomputed from
// its hash after every change, so the state after a replay does not depend
// on how records of different topics interleave: replaying the log into an
// empty prefix rebuilds exactly the same keys.
package devicestate

import "strings"

// keyEscaper escapes the separator ':' and the escape character itself.
var keyEscaper = strings.NewReplacer("%", "%25", ":", "%3A")

// Escape returns name (an sn or a command id) as it appears inside a key:
// without ':' (so it cannot reach into another key's suffix) and injective
// (different names give different results).
func Escape(name string) string {
	if !strings.ContainsAny(name, "%:") {
		return name
	}
	return keyEscaper.Replace(name)
}

// Keys builds the key names under one prefix.
type Keys struct {
	Prefix string
}

// DefaultPrefix is the key prefix of production.
const DefaultPrefix = "ams:"

// Device is the hash of a device.
func (k Keys) Device(sn string) string { return k.Prefix + "dev:" + Escape(sn) }

// Pending is the set of a device's unfinished command ids.
func (k Keys) Pending(sn string) string { return k.Prefix + "dev:" + Escape(sn) + ":pending" }

// Online is the sorted set of online devices.
func (k Keys) Online() string { return k.Prefix + "devices:online" }

// Offline is the sorted set of offline devices.
func (k Keys) Offline() string { return k.Prefix + "devices:offline" }

// Command is the hash of a command.
func (k Keys) Command(id string) string { return k.Prefix + "cmd:" + Escape(id) }

// History is the list of a command's events.
func (k Keys) History(id string) string { return k.Prefix + "cmd:" + Escape(id) + ":history" }

// Events is the pub/sub channel of a command's events.
func (k Keys) Events(id string) string { return k.Prefix + "cmd:" + Escape(id) + ":events" }
