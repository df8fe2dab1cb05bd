package main

import (
	"os/exec"
	"strings"
	"testing"
)

// devOnlyModules are the embedded services of ams-dev (`make run`): the
// production binary must link none of them.
var devOnlyModules = []string{
	"github.com/twmb/franz-go/pkg/kfake",
	"github.com/alicebob/miniredis",
	"github.com/yuin/gopher-lua",
	"github.com/mochi-mqtt/server",
}

// TestProductionBinaryLeavesOutDevStack: `go list -deps ./cmd/ams` names
// none of the dev stack's packages (they live in cmd/ams-dev), and the
// check itself sees them where they are (cmd/ams-dev), so it cannot pass by
// listing nothing.
func TestProductionBinaryLeavesOutDevStack(t *testing.T) {
	deps := func(pkg string) string {
		t.Helper()
		out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		return string(out)
	}
	prod, dev := deps("github.com/ivms/ams/cmd/ams"), deps("github.com/ivms/ams/cmd/ams-dev")
	for _, m := range devOnlyModules {
		if strings.Contains(prod, m) {
			t.Errorf("cmd/ams depends on %s (a dev-only package: keep it in cmd/ams-dev)", m)
		}
		if !strings.Contains(dev, m) {
			t.Errorf("cmd/ams-dev does not depend on %s: the list is stale, so this test proves nothing for it", m)
		}
	}
}
