package promrules

import (
	"os"
	"reflect"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestEveryAlertTested: every rule of alerts.yml has a promtool unit test
// group in which it fires and an evaluation in which it must stay quiet.
func TestEveryAlertTested(t *testing.T) {
	rules, err := Rules()
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) == 0 {
		t.Fatal("alerts.yml has no rules")
	}
	b, err := os.ReadFile("alerts_test.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			Name  string `yaml:"name"`
			Evals []struct {
				Alert string `yaml:"alertname"`
				Exp   []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.RuleFiles, []string{"alerts.yml"}) {
		t.Errorf("alerts_test.yml tests %v, want [alerts.yml]", f.RuleFiles)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tg := range f.Tests {
		for _, e := range tg.Evals {
			if len(e.Exp) > 0 {
				fires[e.Alert] = true
			} else {
				quiet[e.Alert] = true
			}
		}
	}
	for _, r := range rules {
		if !fires[r.Alert] {
			t.Errorf("alert %s: no promtool test in which it fires", r.Alert)
		}
		if !quiet[r.Alert] {
			t.Errorf("alert %s: no promtool test in which it stays quiet", r.Alert)
		}
		if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["runbook"] == "" {
			t.Errorf("alert %s: needs a severity label and summary and runbook annotations", r.Alert)
		}
	}
}

func TestExprRefs(t *testing.T) {
	got := ExprRefs(`sum by (reason) (rate(ams_device_rejects_total{reason=~"bad_rsa|x"}[5m]))
		> 0.01 * scalar(sum(rate(ams_device_events_total[$__rate_interval])))
		and histogram_quantile(0.99, sum by (le) (rate(ams_keyed_batch_seconds_bucket[5m]))) > 1
		or up{job=~"ams-.*"} == 0
		or histogram_quantile(0.5, sum by (le, table) (rate(ams_keyed_restore_seconds_bucket[$__rate_interval])))`)
	want := Refs{
		"ams_device_rejects_total":         {"reason": true},
		"ams_device_events_total":          {},
		"ams_keyed_batch_seconds_bucket":   {"le": true},
		"ams_keyed_restore_seconds_bucket": {"le": true, "table": true},
		"up":                               {"job": true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ExprRefs = %v, want %v", got, want)
	}
}
