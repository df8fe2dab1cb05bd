package deviceauth

import (
	"sync"
	"time"
)

// LoginLimiter limits failed logins per client id with a token bucket: each
// failure takes a token, tokens come back at a steady rate up to a burst,
// and a client id with no token left is refused before its password is
// checked (so a guessing client costs no hashing). Successful logins take
// nothing. It is safe for concurrent use; its memory is bounded by
// maxClients buckets (full ones are dropped first).
type LoginLimiter struct {
	burst   float64
	rate    float64 // tokens per second
	max     int
	now     func() time.Time
	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// NewLoginLimiter allows burst failures at once per client id, then one per
// every interval. now is the clock (nil: time.Now).
func NewLoginLimiter(burst int, every time.Duration, now func() time.Time) *LoginLimiter {
	if now == nil {
		now = time.Now
	}
	return &LoginLimiter{burst: float64(max(burst, 1)), rate: 1 / every.Seconds(), max: 100_000, now: now,
		buckets: map[string]*bucket{}}
}

func (l *LoginLimiter) refill(b *bucket, now time.Time) {
	b.tokens = min(l.burst, b.tokens+now.Sub(b.at).Seconds()*l.rate)
	b.at = now
}

// Allow reports whether client id may try a login now (it has a token left).
func (l *LoginLimiter) Allow(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[id]
	if !ok {
		return true
	}
	l.refill(b, l.now())
	return b.tokens >= 1
}

// Failed records a failed login of client id (takes a token).
func (l *LoginLimiter) Failed(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b, ok := l.buckets[id]
	if !ok {
		if len(l.buckets) >= l.max {
			l.sweep(now)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[id] = b
	}
	l.refill(b, now)
	b.tokens = max(0, b.tokens-1)
}

// sweep drops the buckets that have refilled; if none has, it drops all
// (a flood of distinct ids must not grow memory without bound).
func (l *LoginLimiter) sweep(now time.Time) {
	for id, b := range l.buckets {
		l.refill(b, now)
		if b.tokens >= l.burst {
			delete(l.buckets, id)
		}
	}
	if len(l.buckets) >= l.max {
		clear(l.buckets)
	}
}
