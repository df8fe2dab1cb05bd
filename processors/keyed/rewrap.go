package keyed

import "strconv"

// StaleState is implemented by a Handler whose restored states can need a
// rewrite, such as a state sealed under a previous key-encryption key. The
// Handler rewrites them itself (typically from a Timer due at once, so the
// rewrite commits in the partition's own transaction, in order with every
// other change of the key); the runner exports how many keys of each owned
// partition are still stale (ams_keyed_state_stale_keys), counted after
// each restore and after every transaction until it reaches 0. States that
// a Handler writes are never stale, so once 0 a partition is not counted
// again until its next restore.
type StaleState[S any] interface {
	Stale(state *S) bool
}

// publishStale counts p's stale keys. Only the goroutine owning p.st calls
// it (through publish).
func (r *Runner[S]) publishStale(p *partition[S]) {
	sh, ok := r.h.(StaleState[S])
	if !ok || p.staleClean {
		return
	}
	n := 0
	p.st.Keys(func(_ string, s *S) {
		if sh.Stale(s) {
			n++
		}
	})
	p.staleClean = n == 0
	r.m.staleKeys.WithLabelValues(strconv.Itoa(int(p.id))).Set(float64(n))
}
