package main

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/ivms/ams/pkg/envflag"
)

const (
	devConfigBegin = "<!-- ams-dev config: begin (make docs rewrites this table) -->\n"
	devConfigEnd   = "<!-- ams-dev config: end -->\n"
)

// TestReadmeDevConfigTable keeps the README's table of ams-dev's flags in
// step with them: `AMS_UPDATE_README=1 go test -run TestReadmeDevConfigTable
// ./cmd/ams-dev` (or `make docs`) rewrites it.
func TestReadmeDevConfigTable(t *testing.T) {
	const path = "../../README.md"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	i, j := strings.Index(readme, devConfigBegin), strings.Index(readme, devConfigEnd)
	if i < 0 || j < i {
		t.Fatalf("README.md lacks the markers %q ... %q", devConfigBegin, devConfigEnd)
	}
	fs := flag.NewFlagSet("ams-dev", flag.ContinueOnError)
	c := defaultDevConfig()
	c.flags(fs)
	var want bytes.Buffer
	want.WriteString("| binary | flag | variable | default | meaning |\n| --- | --- | --- | --- | --- |\n")
	envflag.Markdown(&want, "ams-dev", fs)
	got := readme[i+len(devConfigBegin) : j]
	if got == want.String() {
		return
	}
	if os.Getenv("AMS_UPDATE_README") != "" {
		readme = readme[:i+len(devConfigBegin)] + want.String() + readme[j:]
		if err := os.WriteFile(path, []byte(readme), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("README.md's ams-dev table is out of date with its flags; run `make docs`")
}
