package devicesim

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// histogram is a small lock-free log-linear histogram of durations, in the
// spirit of HdrHistogram: values are kept in microseconds, in buckets of 16
// sub-buckets per power of two, so a reported percentile is within 1/16
// (6.25 %) of the true value. Values of 2^40 µs (about 12.7 days) and above
// land in the last bucket. The maximum is exact. Record is safe for
// concurrent use and never allocates.
type histogram struct {
	counts [histBuckets]atomic.Int64
	sumUS  atomic.Int64
	maxUS  atomic.Int64
}

const (
	histSubBits  = 4
	histSub      = 1 << histSubBits // sub-buckets per power of two
	histMaxExp   = 40
	histBuckets  = histSub + (histMaxExp-histSubBits)*histSub
	histLastIdx  = histBuckets - 1
	histMaxValue = uint64(1)<<histMaxExp - 1
)

// histIndex returns the bucket of v (µs).
func histIndex(v uint64) int {
	if v < histSub {
		return int(v)
	}
	if v > histMaxValue {
		return histLastIdx
	}
	exp := bits.Len64(v) - 1 // >= histSubBits
	sub := int(v>>(exp-histSubBits)) & (histSub - 1)
	return histSub + (exp-histSubBits)*histSub + sub
}

// histBounds returns the smallest and largest value (µs) of bucket i.
func histBounds(i int) (lo, hi uint64) {
	if i < histSub {
		return uint64(i), uint64(i)
	}
	exp := (i-histSub)/histSub + histSubBits
	sub := uint64((i - histSub) % histSub)
	width := uint64(1) << (exp - histSubBits)
	lo = uint64(1)<<exp + sub*width
	return lo, lo + width - 1
}

// Record adds one duration (negative durations count as 0).
func (h *histogram) Record(d time.Duration) {
	us := d.Microseconds()
	if us < 0 {
		us = 0
	}
	h.counts[histIndex(uint64(us))].Add(1)
	h.sumUS.Add(us)
	for {
		m := h.maxUS.Load()
		if us <= m || h.maxUS.CompareAndSwap(m, us) {
			break
		}
	}
}

// Latency summarises the latencies of one kind of request: how many replies
// were timed, and their percentiles in milliseconds. A percentile is the
// midpoint of its histogram bucket (within 6.25 % of the true value); Max is
// exact (to the microsecond).
type Latency struct {
	Count  int64   `json:"count"`
	MeanMS float64 `json:"mean_ms"`
	P50MS  float64 `json:"p50_ms"`
	P90MS  float64 `json:"p90_ms"`
	P99MS  float64 `json:"p99_ms"`
	P999MS float64 `json:"p999_ms"`
	MaxMS  float64 `json:"max_ms"`
}

// Snapshot returns the current percentiles. Concurrent Records may or may
// not be included.
func (h *histogram) Snapshot() Latency {
	var counts [histBuckets]int64
	var total int64
	for i := range h.counts {
		c := h.counts[i].Load()
		counts[i] = c
		total += c
	}
	if total == 0 {
		return Latency{}
	}
	maxUS := h.maxUS.Load()
	pct := func(p float64) float64 {
		rank := int64(p*float64(total) + 0.999999)
		if rank < 1 {
			rank = 1
		}
		var seen int64
		for i, c := range counts {
			seen += c
			if seen >= rank {
				lo, hi := histBounds(i)
				mid := float64(lo+hi) / 2
				if mid > float64(maxUS) {
					mid = float64(maxUS)
				}
				return mid / 1000
			}
		}
		return float64(maxUS) / 1000
	}
	return Latency{
		Count:  total,
		MeanMS: float64(h.sumUS.Load()) / float64(total) / 1000,
		P50MS:  pct(0.50),
		P90MS:  pct(0.90),
		P99MS:  pct(0.99),
		P999MS: pct(0.999),
		MaxMS:  float64(maxUS) / 1000,
	}
}
