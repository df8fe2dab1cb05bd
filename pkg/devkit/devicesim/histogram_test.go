package devicesim

import (
	"math"
	"testing"
	"time"
)

func TestHistogramBuckets(t *testing.T) {
	prevHi := uint64(0)
	for i := 0; i < histBuckets; i++ {
		lo, hi := histBounds(i)
		if i > 0 && lo != prevHi+1 {
			t.Fatalf("bucket %d starts at %d, previous ended at %d", i, lo, prevHi)
		}
		if histIndex(lo) != i || histIndex(hi) != i {
			t.Fatalf("bucket %d [%d, %d]: index of bounds %d, %d", i, lo, hi, histIndex(lo), histIndex(hi))
		}
		if lo >= histSub && float64(hi-lo+1)/float64(lo) > 1.0/histSub+1e-12 {
			t.Fatalf("bucket %d [%d, %d] wider than 1/%d", i, lo, hi, histSub)
		}
		prevHi = hi
	}
	if histIndex(math.MaxUint64) != histLastIdx {
		t.Fatal("huge values must land in the last bucket")
	}
}

func TestHistogramPercentiles(t *testing.T) {
	var h histogram
	if got := h.Snapshot(); got != (Latency{}) {
		t.Fatalf("empty: %+v", got)
	}
	for i := 1; i <= 1000; i++ { // 1ms .. 1000ms
		h.Record(time.Duration(i) * time.Millisecond)
	}
	h.Record(-time.Second) // counts as 0
	l := h.Snapshot()
	near := func(name string, got, want float64) {
		if math.Abs(got-want)/want > 1.0/histSub {
			t.Errorf("%s = %.2f, want %.2f ± %.1f%%", name, got, want, 100.0/histSub)
		}
	}
	if l.Count != 1001 || l.MaxMS != 1000 {
		t.Errorf("count %d max %v", l.Count, l.MaxMS)
	}
	near("p50", l.P50MS, 500)
	near("p90", l.P90MS, 900)
	near("p99", l.P99MS, 990)
	near("mean", l.MeanMS, 500)
}
