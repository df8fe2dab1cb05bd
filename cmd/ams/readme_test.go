package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
)

const (
	configBegin = "<!-- ams config: begin (make docs rewrites this table) -->\n"
	configEnd   = "<!-- ams config: end -->\n"
)

// configTable is the README's configuration table, as `ams config` prints it.
func configTable(t *testing.T) string {
	t.Helper()
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"config"}, &out, &errb, func(string) string { return "" }); code != 0 {
		t.Fatalf("ams config exited %d: %s", code, errb.String())
	}
	return out.String()
}

// TestReadmeConfigTable keeps the README's configuration table in step with
// the flags: `AMS_UPDATE_README=1 go test -run TestReadmeConfigTable ./cmd/ams`
// (or `make docs`) rewrites it.
func TestReadmeConfigTable(t *testing.T) {
	const path = "../../README.md"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	i, j := strings.Index(readme, configBegin), strings.Index(readme, configEnd)
	if i < 0 || j < i {
		t.Fatalf("README.md lacks the markers %q ... %q", configBegin, configEnd)
	}
	want := configTable(t)
	got := readme[i+len(configBegin) : j]
	if got == want {
		return
	}
	if os.Getenv("AMS_UPDATE_README") != "" {
		readme = readme[:i+len(configBegin)] + want + readme[j:]
		if err := os.WriteFile(path, []byte(readme), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("README.md's configuration table is out of date with the flags; run `make docs`")
}

func TestUnknownCommandAndHelp(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"nope"}, &out, &errb, func(string) string { return "" }); code != 2 {
		t.Errorf("unknown command exited %d, want 2", code)
	}
	if !strings.Contains(errb.String(), `unknown command "nope"`) {
		t.Errorf("stderr = %q", errb.String())
	}
	errb.Reset()
	if code := run(context.Background(), []string{"migrate", "-h"}, &out, &errb, func(string) string { return "" }); code != 0 {
		t.Errorf("migrate -h exited %d, want 0", code)
	}
	if !strings.Contains(errb.String(), "AMS_KAFKA_BROKERS") {
		t.Errorf("migrate -h does not list AMS_KAFKA_BROKERS: %q", errb.String())
	}
	errb.Reset()
	env := map[string]string{"AMS_LOG_LEVEL": "loud"}
	if code := run(context.Background(), []string{"migrate"}, &out, &errb, func(k string) string { return env[k] }); code != 1 {
		t.Errorf("migrate with a bad AMS_LOG_LEVEL exited %d, want 1 (%s)", code, errb.String())
	}
}
