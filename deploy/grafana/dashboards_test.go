package dashboards

import (
	"testing"
)

// TestDashboards: every dashboard parses, has a unique uid and title, and
// every panel has a unique id and at least one query, each with a refId.
// The metrics the queries name are checked against the roles' /metrics by
// TestOpsMetricsExported (cmd/ams, integration).
func TestDashboards(t *testing.T) {
	ds, err := All()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"ams-fleet": false, "ams-ingest": false, "ams-process": false, "ams-egress": false,
		"ams-sink-clickhouse": false, "ams-sink-redis": false, "ams-api": false}
	uids := map[string]bool{}
	for _, d := range ds {
		if d.UID == "" || d.Title == "" || uids[d.UID] {
			t.Errorf("%s: uid %q title %q (uids must be unique)", d.File, d.UID, d.Title)
		}
		uids[d.UID] = true
		if _, ok := want[d.UID]; ok {
			want[d.UID] = true
		}
		ids := map[int]bool{}
		for _, p := range d.Panels {
			if ids[p.ID] || p.ID == 0 {
				t.Errorf("%s: panel %q: id %d missing or repeated", d.File, p.Title, p.ID)
			}
			ids[p.ID] = true
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", d.File, p.Title)
			}
			for _, q := range p.Targets {
				if q.Expr == "" || q.RefID == "" {
					t.Errorf("%s: panel %q: a query without expr or refId", d.File, p.Title)
				}
			}
		}
	}
	for uid, ok := range want {
		if !ok {
			t.Errorf("no dashboard %s", uid)
		}
	}
	refs, err := Refs()
	if err != nil {
		t.Fatal(err)
	}
	if len(refs) < 30 {
		t.Errorf("the dashboards read only %d metrics: %v", len(refs), refs.Metrics())
	}
}
