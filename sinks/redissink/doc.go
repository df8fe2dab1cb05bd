// Package redissink is `ams sink redis`: it projects the log (ams.registry,
// ams.presence, ams.device.events, ams.command.events) into Redis, one
// idempotent Lua script per record, with the key layout of pkg/devicestate
// (devicestate.Keys; the idempotence rules are in that package's doc). It is
// the only writer of that state; readers use devicestate.Store.
package redissink
