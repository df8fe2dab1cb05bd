package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadmeAPIExampleMatchesDev checks that the README's API example talks
// to the address `make run` (ams-dev) listens on, with the token file it writes.
func TestReadmeAPIExampleMatchesDev(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n### The HTTP API\n")
	if !ok {
		t.Fatal("README.md has no HTTP API section")
	}
	section, _, _ = strings.Cut(section, "\n### ")

	addr := defaultDevConfig().httpAddr
	if !strings.Contains(section, "curl") || !strings.Contains(section, "http://"+addr+"/v1/") {
		t.Errorf("README's API example does not use ams-dev's address http://%s/v1/", addr)
	}
	sec, err := devSecrets(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := ".stack/dev-embedded/" + filepath.Base(sec.apiTokenFile)
	if !strings.Contains(section, "$(cat "+tokenFile+")") {
		t.Errorf("README's API example does not read the dev token from %s", tokenFile)
	}
	if !strings.Contains(section, "/v1/openapi.json") {
		t.Error("README's API section does not link /v1/openapi.json")
	}
}
