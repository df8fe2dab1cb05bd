// Package promrules holds ams's Prometheus alerting rules (alerts.yml, with
// their promtool unit tests in alerts_test.yml) and the reading of the
// metric and label names a PromQL expression uses, so tests can check the
// rules and the Grafana dashboards against what the roles export.
package promrules

import (
	_ "embed"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// AlertsYAML is the rule file, as Prometheus loads it.
//
//go:embed alerts.yml
var AlertsYAML []byte

// Rule is one alerting rule of alerts.yml.
type Rule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// Rules returns every alerting rule of alerts.yml.
func Rules() ([]Rule, error) {
	var f struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []Rule `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(AlertsYAML, &f); err != nil {
		return nil, fmt.Errorf("promrules: alerts.yml: %w", err)
	}
	var out []Rule
	for _, g := range f.Groups {
		out = append(out, g.Rules...)
	}
	return out, nil
}

// Refs are the metric names an expression reads and, per metric, the label
// names it matches on or aggregates by (the labels of a `by (...)` clause
// belong to the metrics of the aggregation's argument).
type Refs map[string]map[string]bool

// Add merges o into r.
func (r Refs) Add(o Refs) {
	for m, ls := range o {
		if r[m] == nil {
			r[m] = map[string]bool{}
		}
		for l := range ls {
			r[m][l] = true
		}
	}
}

// Metrics returns the metric names, sorted.
func (r Refs) Metrics() []string {
	out := make([]string, 0, len(r))
	for m := range r {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

var (
	// a metric name, optionally followed by its {matchers}
	reSelector = regexp.MustCompile(`\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?`)
	reMatcher  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)`)
	reGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	reString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	reDuration = regexp.MustCompile(`\[[^\]]*\]`)
	// words of PromQL that are not metric names
	promqlWords = map[string]bool{}
)

func init() {
	for _, w := range strings.Fields(`sum min max avg count stddev stdvar topk bottomk quantile count_values group
		rate irate increase delta idelta deriv predict_linear histogram_quantile abs ceil floor round
		clamp clamp_min clamp_max scalar vector time timestamp absent absent_over_time changes resets
		label_replace label_join sort sort_desc sqrt exp ln log2 log10 avg_over_time min_over_time
		max_over_time sum_over_time count_over_time last_over_time quantile_over_time stddev_over_time
		and or unless by without on ignoring group_left group_right offset bool humanize inf nan
		day_of_month day_of_week days_in_month hour minute month year sgn`) {
		promqlWords[w] = true
	}
}

// ExprRefs reads the metric and label names of one PromQL expression. It is
// a lexical reading, good for the expressions of this repository's rules and
// dashboards (selectors, aggregations by label, ranges), not a full parser.
func ExprRefs(expr string) Refs {
	// Grafana template variables ($__rate_interval, $role) are not PromQL.
	expr = regexp.MustCompile(`\$\{?[a-zA-Z_]+\}?`).ReplaceAllString(expr, "5m")
	// Durations go (ranges and subqueries); grouping clauses are blanked
	// (same length, so positions hold) and their labels attributed to the
	// metrics inside the aggregation's argument that follows them.
	expr = reDuration.ReplaceAllStringFunc(expr, func(s string) string { return strings.Repeat(" ", len(s)) })
	type span struct {
		from, to int
		labels   []string
	}
	var spans []span
	for _, m := range reGrouping.FindAllStringSubmatchIndex(expr, -1) {
		var ls []string
		for _, l := range strings.Split(expr[m[2]:m[3]], ",") {
			if l = strings.TrimSpace(l); l != "" {
				ls = append(ls, l)
			}
		}
		from, to := m[0], len(expr) // without a following argument: the rest of the expression
		if open := strings.IndexByte(expr[m[1]:], '('); open >= 0 {
			depth := 0
			for i := m[1] + open; i < len(expr); i++ {
				if expr[i] == '(' {
					depth++
				} else if expr[i] == ')' {
					if depth--; depth == 0 {
						to = i
						break
					}
				}
			}
		}
		spans = append(spans, span{from, to, ls})
	}
	blank := []byte(expr)
	for _, m := range reGrouping.FindAllStringIndex(expr, -1) {
		for i := m[0]; i < m[1]; i++ {
			blank[i] = ' '
		}
	}
	expr = string(blank)
	refs := Refs{}
	for _, m := range reSelector.FindAllStringSubmatchIndex(expr, -1) {
		name := expr[m[2]:m[3]]
		if promqlWords[name] || isNumber(name) || (m[0] > 0 && expr[m[0]-1] == '"') {
			continue
		}
		// a name right before "(" is a function
		if rest := strings.TrimLeft(expr[m[3]:], " "); m[4] < 0 && strings.HasPrefix(rest, "(") {
			continue
		}
		ls := map[string]bool{}
		if m[4] >= 0 {
			sel := reString.ReplaceAllString(expr[m[4]:m[5]], `""`)
			for _, mm := range reMatcher.FindAllStringSubmatch(sel, -1) {
				ls[mm[1]] = true
			}
		}
		for _, sp := range spans {
			if m[2] >= sp.from && m[2] < sp.to {
				for _, l := range sp.labels {
					ls[l] = true
				}
			}
		}
		refs.Add(Refs{name: ls})
	}
	return refs
}

func isNumber(s string) bool {
	for _, c := range s {
		if (c < '0' || c > '9') && c != '.' && c != 'e' {
			return false
		}
	}
	return true
}

// RuleRefs returns the metric and label names every rule of alerts.yml reads.
func RuleRefs() (Refs, error) {
	rules, err := Rules()
	if err != nil {
		return nil, err
	}
	refs := Refs{}
	for _, r := range rules {
		refs.Add(ExprRefs(r.Expr))
	}
	return refs, nil
}
