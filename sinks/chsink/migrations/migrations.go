// Package migrations holds ams's ClickHouse schema as numbered migrations:
// NNNN_name.sql files, applied in order by `ams migrate` (see
// sinks/chsink.Migrate) and recorded in the database's schema_migrations
// table, so each runs once.
//
// Rules for a migration file:
//   - its name is a 4-digit version, an underscore and a name: 0003_add_x.sql;
//     versions only grow, and a file is never edited once released;
//   - statements are separated by a line holding only ";";
//   - every statement is idempotent (IF NOT EXISTS), so a migration that
//     stopped half way is simply run again;
//   - {db} stands for the database name (ams by default);
//   - the DDL must run on ClickHouse 18.16 (no DateTime64, Map, JSON, TTL,
//     codecs or LowCardinality) as well as on current releases.
package migrations

import "embed"

// Files holds every NNNN_name.sql migration.
//
//go:embed *.sql
var Files embed.FS
