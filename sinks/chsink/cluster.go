package chsink

import (
	"fmt"
	"regexp"
	"strings"
)

// Cluster mode (`ams migrate -clickhouse-cluster NAME`) runs the same
// migrations as a single server, each statement rewritten by
// ClusterStatements:
//
//   - CREATE DATABASE and every CREATE/DROP/ALTER get ON CLUSTER NAME (run on
//     every node through the server's <distributed_ddl> queue in ZooKeeper);
//   - a table X of ENGINE = <Kind>MergeTree becomes X_local with ENGINE =
//     Replicated<Kind>MergeTree('/clickhouse/tables/{shard}/<db>/X_local',
//     '{replica}') (the macros of each server's config), plus X itself, a
//     Distributed table over X_local sharded by cityHash64(sn): the sink
//     inserts into X and every view reads X, as on one server;
//   - a materialized view reads the local table and writes the local table
//     (a view fires only on the replica that received the insert; the
//     replicated target carries its rows to the other replicas);
//   - ALTER TABLE X goes to X_local;
//   - the ledger schema_migrations is a ReplicatedMergeTree of its own (per
//     shard), so every replica reads the same list of applied migrations;
//   - INSERT ... SELECT (a backfill) runs once, through the Distributed tables.
//
// Every statement stays idempotent (IF NOT EXISTS on every node), so
// migrating again, or against another replica, applies nothing twice.

var (
	createTableStmt = regexp.MustCompile(`(?s)^CREATE TABLE IF NOT EXISTS \{db\}\.([A-Za-z0-9_]+) \((.*)\) ENGINE = ([A-Za-z]*MergeTree)(\(([^)]*)\))?\n(.*)$`)
	createMVStmt    = regexp.MustCompile(`(?s)^CREATE MATERIALIZED VIEW IF NOT EXISTS \{db\}\.([A-Za-z0-9_]+) TO \{db\}\.([A-Za-z0-9_]+) AS\n(.*)$`)
	createViewStmt  = regexp.MustCompile(`(?s)^CREATE VIEW IF NOT EXISTS \{db\}\.([A-Za-z0-9_]+) AS\n(.*)$`)
	dropTableStmt   = regexp.MustCompile(`^DROP TABLE IF EXISTS \{db\}\.([A-Za-z0-9_]+)$`)
	alterTableStmt  = regexp.MustCompile(`(?s)^ALTER TABLE \{db\}\.([A-Za-z0-9_]+) (.*)$`)
	insertStmt      = regexp.MustCompile(`(?s)^INSERT INTO \{db\}\.[A-Za-z0-9_]+\n`)
	dbTableRef      = regexp.MustCompile(`\{db\}\.([A-Za-z0-9_]+)\b`)
	snColumn        = regexp.MustCompile(`(?m)^\s*sn String,?\s*$`)
)

const clusterLedgerDDL = "CREATE TABLE IF NOT EXISTS %[1]s.schema_migrations ON CLUSTER %[2]s (version UInt32, name String, applied_at DateTime) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/%[1]s/schema_migrations', '{replica}') ORDER BY version"

// ClusterStatements rewrites the statements of all (in order, {db} still in
// them) for cluster: see the comment above. It fails on a statement it does
// not know how to run on a cluster, so a new kind of migration cannot be
// applied to one replica only.
func ClusterStatements(all []Migration, cluster string) ([][]string, error) {
	if !identifier.MatchString(cluster) {
		return nil, fmt.Errorf("clickhouse cluster %q: want letters, digits and underscores", cluster)
	}
	on := " ON CLUSTER " + cluster
	tables := map[string]bool{}
	local := func(sql string) string {
		return dbTableRef.ReplaceAllStringFunc(sql, func(ref string) string {
			if name := strings.TrimPrefix(ref, "{db}."); tables[name] {
				return ref + "_local"
			}
			return ref
		})
	}
	out := make([][]string, len(all))
	for i, m := range all {
		for j, s := range m.Statements {
			var rw []string
			switch {
			case createTableStmt.MatchString(s):
				p := createTableStmt.FindStringSubmatch(s)
				name, cols, engine, args, rest := p[1], p[2], p[3], p[5], p[6]
				if !snColumn.MatchString(cols) {
					return nil, fmt.Errorf("migration %04d_%s statement %d: table %s has no sn column to shard by", m.Version, m.Name, j+1, name)
				}
				tables[name] = true
				zk := fmt.Sprintf("'/clickhouse/tables/{shard}/{db}/%s_local', '{replica}'", name)
				if strings.TrimSpace(args) != "" {
					zk += ", " + args
				}
				rw = append(rw,
					fmt.Sprintf("CREATE TABLE IF NOT EXISTS {db}.%s_local%s (%s) ENGINE = Replicated%s(%s)\n%s", name, on, cols, engine, zk, rest),
					fmt.Sprintf("CREATE TABLE IF NOT EXISTS {db}.%[1]s%[2]s AS {db}.%[1]s_local ENGINE = Distributed(%[3]s, {db}, %[1]s_local, cityHash64(sn))", name, on, cluster))
			case createMVStmt.MatchString(s):
				p := createMVStmt.FindStringSubmatch(s)
				if !tables[p[2]] {
					return nil, fmt.Errorf("migration %04d_%s statement %d: materialized view %s writes %s, not a table of the migrations", m.Version, m.Name, j+1, p[1], p[2])
				}
				rw = append(rw, fmt.Sprintf("CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.%s%s TO {db}.%s_local AS\n%s", p[1], on, p[2], local(p[3])))
			case createViewStmt.MatchString(s):
				p := createViewStmt.FindStringSubmatch(s)
				rw = append(rw, fmt.Sprintf("CREATE VIEW IF NOT EXISTS {db}.%s%s AS\n%s", p[1], on, p[2]))
			case dropTableStmt.MatchString(s):
				p := dropTableStmt.FindStringSubmatch(s)
				if tables[p[1]] {
					return nil, fmt.Errorf("migration %04d_%s statement %d: dropping table %s is not supported on a cluster", m.Version, m.Name, j+1, p[1])
				}
				rw = append(rw, s+on)
			case alterTableStmt.MatchString(s):
				p := alterTableStmt.FindStringSubmatch(s)
				if !tables[p[1]] {
					return nil, fmt.Errorf("migration %04d_%s statement %d: ALTER of %s, not a table of the migrations", m.Version, m.Name, j+1, p[1])
				}
				rw = append(rw, fmt.Sprintf("ALTER TABLE {db}.%s_local%s %s", p[1], on, p[2]))
			case insertStmt.MatchString(s):
				rw = append(rw, s) // once, through the Distributed tables
			default:
				return nil, fmt.Errorf("migration %04d_%s statement %d: no cluster form for %q", m.Version, m.Name, j+1, firstLine(s))
			}
			out[i] = append(out[i], rw...)
		}
	}
	return out, nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
