package opshttp

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestEndpoints(t *testing.T) {
	s := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "ams_test_total", Help: "test"})
	s.Registry.MustRegister(c)
	c.Add(3)
	failing := errors.New("kafka unreachable")
	var kafkaErr error
	s.AddCheck("kafka", func(context.Context) error { return kafkaErr })
	srv := httptest.NewServer(s.Mux())
	defer srv.Close()

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("healthz = %d", code)
	}
	if code, body := get("/readyz"); code != 200 || !strings.Contains(body, "kafka: ok") {
		t.Errorf("readyz = %d %q", code, body)
	}
	kafkaErr = failing
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "kafka unreachable") {
		t.Errorf("readyz when failing = %d %q", code, body)
	}
	if _, body := get("/metrics"); !strings.Contains(body, "ams_test_total 3") || !strings.Contains(body, "go_goroutines") {
		t.Errorf("metrics missing series: %q", body[:min(len(body), 200)])
	}
}

// TestExportReady: ams_ready{role} follows the readiness checks at each
// scrape.
func TestExportReady(t *testing.T) {
	s := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := s.ExportReady("process"); err != nil {
		t.Fatal(err)
	}
	var kafkaErr error
	s.AddCheck("kafka", func(context.Context) error { return kafkaErr })
	s.AddCheck("redis", func(context.Context) error { return nil })
	srv := httptest.NewServer(s.Mux())
	defer srv.Close()
	scrape := func() string {
		t.Helper()
		resp, err := http.Get(srv.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "ams_ready{") {
				return l
			}
		}
		t.Fatal("no ams_ready series")
		return ""
	}
	if got := scrape(); got != `ams_ready{role="process"} 1` {
		t.Fatalf("ready: %q", got)
	}
	kafkaErr = errors.New("restoring partitions [0]")
	if got := scrape(); got != `ams_ready{role="process"} 0` {
		t.Fatalf("not ready: %q", got)
	}
	if err := s.ExportReady("process"); err == nil {
		t.Error("a second ams_ready registered")
	}
}
