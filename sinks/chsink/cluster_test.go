package chsink

import (
	"regexp"
	"strings"
	"testing"
)

// TestClusterStatements checks the cluster form of every migration: each
// statement runs ON CLUSTER except the backfill INSERT, every table becomes
// a Replicated*MergeTree X_local plus a Distributed X sharded by sn, and the
// materialized views read and write the local tables.
func TestClusterStatements(t *testing.T) {
	all, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ClusterStatements(all, "amsc")
	if err != nil {
		t.Fatal(err)
	}
	engine := regexp.MustCompile(`ENGINE = (\w+)`)
	distributed := 0
	for i, m := range all {
		for _, s := range got[i] {
			if strings.HasPrefix(s, "INSERT INTO") {
				continue
			}
			if !strings.Contains(firstLine(s), " ON CLUSTER amsc") {
				t.Errorf("%s: not ON CLUSTER: %s", m.Name, firstLine(s))
			}
			if e := engine.FindStringSubmatch(s); e != nil {
				switch {
				case e[1] == "Distributed":
					distributed++
					if !strings.HasSuffix(s, "_local, cityHash64(sn))") {
						t.Errorf("%s: distributed table not sharded by sn: %s", m.Name, s)
					}
				case !strings.HasPrefix(e[1], "Replicated") || !strings.Contains(s, "('/clickhouse/tables/{shard}/{db}/"):
					t.Errorf("%s: engine %s is not replicated: %s", m.Name, e[1], firstLine(s))
				}
			}
			if strings.HasPrefix(s, "CREATE MATERIALIZED VIEW") {
				if !regexp.MustCompile(`TO \{db\}\.\w+_local AS`).MatchString(s) || !regexp.MustCompile(`FROM \{db\}\.\w+_local\b`).MatchString(s) {
					t.Errorf("%s: materialized view not on local tables: %s", m.Name, s)
				}
			}
		}
	}
	if distributed != 7 { // device_events, presence, commands, rejects, uplink_raw, heartbeats_hourly, presence_latest
		t.Errorf("%d Distributed tables, want 7", distributed)
	}
	if _, err := ClusterStatements(all, "bad-name"); err == nil {
		t.Error("a cluster name with a dash was accepted")
	}
	bad := []Migration{{Version: 9, Name: "x", Statements: []string{"RENAME TABLE {db}.a TO {db}.b"}}}
	if _, err := ClusterStatements(bad, "amsc"); err == nil {
		t.Error("a statement without a cluster form was accepted")
	}
}
