package devicesim

import (
	"context"
	"sync"
	"time"
)

// limiter spaces events evenly at a fixed rate: the n-th caller of Wait
// returns no earlier than start + n/rate. It keeps no burst allowance, so a
// fleet that ramps up never connects more than rate devices in any second.
// A rate <= 0 means no limit. Safe for concurrent use.
type limiter struct {
	mu       sync.Mutex
	interval time.Duration
	next     time.Time
}

func newLimiter(perSecond float64) *limiter {
	if perSecond <= 0 {
		return &limiter{}
	}
	return &limiter{interval: time.Duration(float64(time.Second) / perSecond)}
}

// Wait blocks until the caller's slot, or until ctx is done (its error).
func (l *limiter) Wait(ctx context.Context) error {
	if l.interval <= 0 {
		return ctx.Err()
	}
	l.mu.Lock()
	now := time.Now()
	if l.next.Before(now) {
		l.next = now
	}
	at := l.next
	l.next = l.next.Add(l.interval)
	l.mu.Unlock()
	return sleepCtx(ctx, time.Until(at))
}

// sleepCtx sleeps for d or until ctx is done (its error).
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
