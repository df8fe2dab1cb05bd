package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// The child half of TestDevSurvivesBrokenPipe runs from init, before any
// TestMain, in a copy of the test binary whose stdout and stderr are a pipe
// nobody reads any more (as when Ctrl-C kills tee in `make run | tee log`).
func init() {
	mode := os.Getenv("AMS_TEST_BROKEN_PIPE")
	if mode == "" {
		return
	}
	if mode == "ignore" {
		ignoreBrokenPipe()
	}
	line := []byte("ams-dev: a view line\n")
	for {
		if _, err := os.Stdout.Write(line); err != nil {
			break // EPIPE: the reader is gone
		}
	}
	_ = os.WriteFile(os.Getenv("AMS_TEST_MARKER"), []byte("survived the broken pipe\n"), 0o644)
	os.Exit(0)
}

// TestDevSurvivesBrokenPipe: with ignoreBrokenPipe (what `ams-dev` calls) a
// write to a closed stdout fails and the program goes on (to stop its roles
// cleanly); without it Go kills the program with SIGPIPE at once.
func TestDevSurvivesBrokenPipe(t *testing.T) {
	for _, mode := range []string{"ignore", "default"} {
		marker := filepath.Join(t.TempDir(), "marker")
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "AMS_TEST_BROKEN_PIPE="+mode, "AMS_TEST_MARKER="+marker)
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = w, w
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		w.Close()
		r.Close()
		err = cmd.Wait()
		_, statErr := os.Stat(marker)
		var exit *exec.ExitError
		switch mode {
		case "ignore":
			if err != nil || statErr != nil {
				t.Errorf("with SIGPIPE ignored: exit %v, marker %v; want a clean exit", err, statErr)
			}
		case "default":
			if !errors.As(err, &exit) || statErr == nil {
				t.Errorf("without ignoring SIGPIPE: exit %v, marker %v; want death by SIGPIPE (else this test proves nothing)", err, statErr)
			}
		}
	}
}
