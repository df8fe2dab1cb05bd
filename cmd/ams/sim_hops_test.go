package main

import (
	"context"
	"fmt"
	"math"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// TestHopBreakdown scrapes a real registry twice and checks that only the
// observations between the scrapes are reported, with sensible quantiles.
func TestHopBreakdown(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ams_test_hop_seconds", Buckets: []float64{0.01, 0.02, 0.05, 0.1}}, []string{"hop"})
	other := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ams_unrelated_seconds"})
	reg.MustRegister(h, other)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()

	// Before: 100 slow observations that must not count.
	for range 100 {
		h.WithLabelValues("a").Observe(0.09)
	}
	other.Observe(1)
	var errs strings.Builder
	before := scrapeHops(context.Background(), []string{srv.URL}, &errs)
	// Between: 1000 observations, 990 at 15ms (bucket 10..20ms), 10 at 40ms.
	for i := range 1000 {
		v := 0.015
		if i%100 == 0 {
			v = 0.04
		}
		h.WithLabelValues("a").Observe(v)
	}
	after := scrapeHops(context.Background(), []string{srv.URL, "http://127.0.0.1:1/metrics"}, &errs)
	if !strings.Contains(errs.String(), "127.0.0.1:1") {
		t.Errorf("an unreachable URL was not reported: %q", errs.String())
	}
	var out strings.Builder
	writeHopBreakdown(&out, before, after)
	t.Log("\n" + out.String())
	if strings.Contains(out.String(), "ams_unrelated_seconds") {
		t.Errorf("a histogram that is not a hop histogram was printed")
	}
	line := ""
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.Contains(l, "ams_test_hop_seconds{hop=a}") {
			line = l
		}
	}
	var name string
	var count int
	var mean, p50, p99, p999 float64
	if _, err := fmt.Sscan(line, &name, &count, &mean, &p50, &p99, &p999); err != nil {
		t.Fatalf("line %q: %v", line, err)
	}
	if count != 1000 {
		t.Errorf("count %d, want 1000 (the 100 before the first scrape left out)", count)
	}
	if math.Abs(mean-15.25) > 0.01 {
		t.Errorf("mean %.3f ms, want 15.25", mean)
	}
	if p50 < 10 || p50 > 20 || p99 < 10 || p99 > 20 || p999 < 20 || p999 > 50 {
		t.Errorf("p50 %.2f p99 %.2f p999 %.2f ms: want p50, p99 in the 10-20ms bucket and p999 in 20-50ms", p50, p99, p999)
	}
}

func TestHopQuantileEdges(t *testing.T) {
	h := hopHist{bounds: []float64{0.01, 0.02, math.Inf(1)}, cum: []uint64{0, 0, 5}, count: 5}
	if q := h.quantile(0.5); q != 0.02 {
		t.Errorf("quantile above the last finite bound = %v, want that bound 0.02", q)
	}
	if q := (hopHist{}).quantile(0.5); !math.IsNaN(q) {
		t.Errorf("quantile of nothing = %v, want NaN", q)
	}
}
