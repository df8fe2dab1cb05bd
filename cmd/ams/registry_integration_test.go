//go:build integration

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ivms/ams/pkg/registryimport"
)

// TestRegistryImport: `ams registry import` registers every good row of an
// export through the running API (and so ams.registry and the projection),
// reports each bad row with its line and reason, exits non-zero because of
// them, and a second run leaves the same registrations (all updated, none
// created).
func TestRegistryImport(t *testing.T) {
	s := startStack(t, stackOptions{})
	p := e2eSNPrefix(t)
	sn := func(i string) string { return p + "000000000" + i }
	csv := "sn,token,bound,name\n" +
		sn("1") + ",token-of-device-1,1,Gate\n" +
		sn("2") + ",token-of-device-2,0,\"Lobby, east\"\n" +
		"bad/sn,token-of-device-3,1,Bad\n" +
		sn("4") + ",,1,No token\n" +
		sn("5") + ",token-of-device-5,true," + strings.Repeat("n", 65) + "\n" +
		sn("6") + ",token-of-device-6,yes,Yard\n"
	file := filepath.Join(t.TempDir(), "devices.csv")
	e2eWriteFile(t, file, csv)
	tokenFile := filepath.Join(t.TempDir(), "api.token")
	e2eWriteFile(t, tokenFile, s.token+"\n")

	run := func() registryimport.Report {
		t.Helper()
		cmd := exec.Command(amsBinary, "registry", "import", "-import-file", file, "-api-url", s.apiURL, "-api-tls-ca-file", s.apiCAFile, "-api-token-file", tokenFile)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("ams registry import: %v (want exit 1: rows were refused)\n%s", err, stderr.String())
		}
		if !strings.Contains(stderr.String(), "3 of 6 rows refused") {
			t.Errorf("stderr %q does not say how many rows were refused", stderr.String())
		}
		if strings.Contains(stdout.String()+stderr.String(), "tok-") || strings.Contains(stdout.String()+stderr.String(), s.token) {
			t.Errorf("the output shows a token:\n%s\n%s", stdout.String(), stderr.String())
		}
		var rep registryimport.Report
		if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
			t.Fatalf("report: %v\n%s", err, stdout.String())
		}
		if !rep.Complete || rep.Rows != 6 || len(rep.Refused) != 3 {
			t.Errorf("report %+v: want 6 rows, complete, 3 refused", rep)
		}
		want := map[int]string{4: "not a valid serial number", 5: "token must be", 6: "name must be"}
		for _, r := range rep.Refused {
			if want[r.Line] == "" || !strings.Contains(r.Reason, want[r.Line]) {
				t.Errorf("refused line %d (%s): %q, want %q", r.Line, r.SN, r.Reason, want[r.Line])
			}
		}
		return rep
	}

	first := run()
	if first.Created != 3 || first.Updated != 0 {
		t.Errorf("first import: created %d updated %d, want 3 and 0", first.Created, first.Updated)
	}
	s.waitRegistered(sn("1"), sn("2"), sn("6"))
	check := func() {
		t.Helper()
		for s2, want := range map[string][2]any{sn("1"): {true, "Gate"}, sn("2"): {false, "Lobby, east"}, sn("6"): {true, "Yard"}} {
			d, ok := s.device(s2)
			if !ok || d.Registration == nil || d.Registration.Bound != want[0] || d.Registration.Name != want[1] {
				t.Errorf("device %s: %+v, want bound %v name %q", s2, d.Registration, want[0], want[1])
			}
		}
		for _, bad := range []string{sn("4"), sn("5")} {
			if d, ok := s.device(bad); ok && d.Registered {
				t.Errorf("refused device %s is registered", bad)
			}
		}
	}
	check()

	second := run()
	if second.Created != 0 || second.Updated != 3 {
		t.Errorf("second import: created %d updated %d, want 0 and 3", second.Created, second.Updated)
	}
	check()
}
