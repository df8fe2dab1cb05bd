// Package hop holds what every role's per-hop latency histogram
// (ams_*_hop_seconds, label hop) shares: its buckets. `ams simulate
// -sim-metrics-urls` reads every such histogram and prints its quantiles.
package hop

// Buckets returns the buckets of a per-hop latency histogram: 0.25 ms to
// about 16 s, four per doubling up to 64 ms (the round-trip targets are tens
// of milliseconds, so the quantiles there are within 19 %), then doubling.
func Buckets() []float64 {
	var b []float64
	for v := 0.00025; v < 0.064; v *= 1.189207115 { // 2^(1/4)
		b = append(b, v)
	}
	for v := 0.064; v <= 16.4; v *= 2 {
		b = append(b, v)
	}
	return b
}
