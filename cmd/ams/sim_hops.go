package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// hopSnapshot holds the cumulative histograms scraped from the roles'
// /metrics, keyed by "url name{labels}".
type hopSnapshot map[string]hopHist

// hopHist is one cumulative Prometheus histogram: bucket upper bounds
// (ascending, +Inf last) with their cumulative counts, the count and the sum.
type hopHist struct {
	url, name, labels string
	bounds            []float64
	cum               []uint64
	count             uint64
	sum               float64
}

// scrapeHops reads every histogram whose name is one of the per-hop latency
// histograms (ams_*_hop_seconds, ams_*_stage_seconds and the processors'
// batch, phase, Kafka request and egress publish histograms) from each URL. A URL that fails is
// reported on w and skipped: the breakdown is a diagnostic, not the result.
func scrapeHops(ctx context.Context, urls []string, w io.Writer) hopSnapshot {
	snap := hopSnapshot{}
	cl := &http.Client{Timeout: 5 * time.Second}
	for _, u := range urls {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			fmt.Fprintf(w, "metrics %s: %v\n", u, err)
			continue
		}
		resp, err := cl.Do(req)
		if err != nil {
			fmt.Fprintf(w, "metrics %s: %v\n", u, err)
			continue
		}
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := p.TextToMetricFamilies(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			fmt.Fprintf(w, "metrics %s: %v\n", u, err)
			continue
		}
		for name, f := range fams {
			if f.GetType() != dto.MetricType_HISTOGRAM || !isHopMetric(name) {
				continue
			}
			for _, m := range f.GetMetric() {
				h := m.GetHistogram()
				hh := hopHist{url: u, name: name, labels: labelString(m.GetLabel()), count: h.GetSampleCount(), sum: h.GetSampleSum()}
				for _, b := range h.GetBucket() {
					hh.bounds = append(hh.bounds, b.GetUpperBound())
					hh.cum = append(hh.cum, b.GetCumulativeCount())
				}
				if len(hh.bounds) == 0 || !math.IsInf(hh.bounds[len(hh.bounds)-1], 1) {
					hh.bounds = append(hh.bounds, math.Inf(1))
					hh.cum = append(hh.cum, hh.count)
				}
				snap[u+" "+name+hh.labels] = hh
			}
		}
	}
	return snap
}

func isHopMetric(name string) bool {
	return strings.HasSuffix(name, "_hop_seconds") || strings.HasSuffix(name, "_stage_seconds") ||
		name == "ams_keyed_batch_seconds" || name == "ams_egress_publish_seconds" || name == "ams_ingest_produce_seconds" ||
		name == "ams_keyed_phase_seconds" || name == "ams_keyed_kafka_request_seconds"
}

func labelString(ls []*dto.LabelPair) string {
	if len(ls) == 0 {
		return ""
	}
	parts := make([]string, 0, len(ls))
	for _, l := range ls {
		parts = append(parts, l.GetName()+"="+l.GetValue())
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, ",") + "}"
}

// writeHopBreakdown prints, for every histogram that grew between before and
// after, the count, mean and p50/p99/p999 of the observations in between.
// Quantiles are interpolated linearly inside a bucket (as PromQL's
// histogram_quantile does), so they are only as fine as the buckets.
func writeHopBreakdown(w io.Writer, before, after hopSnapshot) {
	keys := make([]string, 0, len(after))
	for k := range after {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	fmt.Fprintln(w, "per-hop latency from the roles' /metrics over the measurement (ms; bucket-interpolated):")
	fmt.Fprintf(w, "  %-72s %9s %8s %8s %8s %8s\n", "histogram", "count", "mean", "p50", "p99", "p999")
	printed := 0
	for _, k := range keys {
		a := after[k]
		b, ok := before[k]
		d := a
		if ok && len(b.cum) == len(a.cum) {
			d.cum = make([]uint64, len(a.cum))
			for i := range a.cum {
				d.cum[i] = a.cum[i] - min(a.cum[i], b.cum[i])
			}
			d.count = a.count - min(a.count, b.count)
			d.sum = a.sum - b.sum
		}
		if d.count == 0 {
			continue
		}
		printed++
		fmt.Fprintf(w, "  %-72s %9d %8.2f %8.2f %8.2f %8.2f\n", d.name+d.labels, d.count, 1000*d.sum/float64(d.count),
			1000*d.quantile(0.5), 1000*d.quantile(0.99), 1000*d.quantile(0.999))
	}
	if printed == 0 {
		fmt.Fprintln(w, "  (no per-hop histogram grew: are the URLs the roles' /metrics?)")
	}
}

// quantile estimates the q-quantile (seconds) of h's observations.
func (h hopHist) quantile(q float64) float64 {
	if h.count == 0 {
		return math.NaN()
	}
	rank := q * float64(h.count)
	var prevBound float64
	var prevCum uint64
	for i, c := range h.cum {
		if float64(c) >= rank {
			ub := h.bounds[i]
			if math.IsInf(ub, 1) {
				return prevBound // above the last finite bound: report it
			}
			inBucket := c - prevCum
			if inBucket == 0 {
				return ub
			}
			return prevBound + (ub-prevBound)*(rank-float64(prevCum))/float64(inBucket)
		}
		prevBound, prevCum = h.bounds[i], c
	}
	return prevBound
}

// startHopScrape scrapes urls once after warmup (in the background) and
// returns a function that scrapes them again and prints the difference.
// With no urls it does nothing.
func startHopScrape(ctx context.Context, urls []string, warmup time.Duration, errw io.Writer) func(io.Writer) {
	if len(urls) == 0 {
		return func(io.Writer) {}
	}
	first := make(chan hopSnapshot, 1)
	go func() {
		t := time.NewTimer(warmup)
		defer t.Stop()
		select {
		case <-t.C:
			first <- scrapeHops(ctx, urls, errw)
		case <-ctx.Done():
			first <- hopSnapshot{}
		}
	}()
	return func(w io.Writer) {
		before := <-first
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		writeHopBreakdown(w, before, scrapeHops(sctx, urls, errw))
	}
}
