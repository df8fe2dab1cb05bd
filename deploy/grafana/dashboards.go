// Package dashboards holds ams's Grafana dashboards (JSON, one file each,
// written by gen_dashboards.py): the fleet and one per role. It reads the
// PromQL of every panel so tests can check it against what the roles export.
package dashboards

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"sort"

	promrules "github.com/ivms/ams/deploy/prometheus"
)

//go:embed *.json
var files embed.FS

// Dashboard is the part of a Grafana dashboard these checks read.
type Dashboard struct {
	File   string
	UID    string  `json:"uid"`
	Title  string  `json:"title"`
	Panels []Panel `json:"panels"`
}

// Panel is one panel and its queries.
type Panel struct {
	ID      int    `json:"id"`
	Title   string `json:"title"`
	Type    string `json:"type"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

// All returns every dashboard, sorted by file name.
func All() ([]Dashboard, error) {
	names, err := fs.Glob(files, "*.json")
	if err != nil {
		return nil, fmt.Errorf("dashboards: %w", err)
	}
	sort.Strings(names)
	var out []Dashboard
	for _, n := range names {
		b, err := files.ReadFile(n)
		if err != nil {
			return nil, fmt.Errorf("dashboards: %s: %w", n, err)
		}
		d := Dashboard{File: n}
		if err := json.Unmarshal(b, &d); err != nil {
			return nil, fmt.Errorf("dashboards: %s: %w", n, err)
		}
		out = append(out, d)
	}
	return out, nil
}

// Refs returns the metric and label names every panel of every dashboard reads.
func Refs() (promrules.Refs, error) {
	ds, err := All()
	if err != nil {
		return nil, err
	}
	refs := promrules.Refs{}
	for _, d := range ds {
		for _, p := range d.Panels {
			for _, t := range p.Targets {
				refs.Add(promrules.ExprRefs(t.Expr))
			}
		}
	}
	return refs, nil
}
