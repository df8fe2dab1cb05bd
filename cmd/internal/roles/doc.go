// Package roles holds every role of the ams pipeline as an Options struct
// and a Run function: RunIngest(ctx, IngestOptions), RunProcess(ctx,
// ProcessOptions), ... One file per role.
//
// Each Options struct has its defaults in one place, its DefaultX function:
// the flags of `ams <role>` are declared by its Flags method with those
// values as their defaults (so `ams config` prints the values in force), and
// `ams-dev` and tests build the structs directly, without flags. Flags only
// fill the struct; a Run function reads no flag and no environment variable.
//
// The shared option groups (Kafka, Log, MQTT, Redis, ClickHouse) and their
// flags are in groups.go; the helpers every role uses (the ops server beside
// the role, the HTTP listener) in run.go.
package roles
