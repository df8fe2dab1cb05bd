//go:build integration

package promrules

import (
	"os/exec"
	"testing"
)

// TestPromtool runs `promtool check rules` and `promtool test rules` (the
// unit test of every alert). promtool comes from Debian's prometheus
// package, which deploy/stack/up.sh installs (`make test` runs it first).
func TestPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not on PATH: run deploy/stack/up.sh (make up) to install Debian's prometheus package")
	}
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
}
