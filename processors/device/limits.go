package device

import (
	"errors"
	"time"

	"github.com/ivms/ams/schemas"
)

// Trust rules of the processor (issue 11 section 5): registration and
// per-device rate limits. README.md, "Registration and rate limits".

// Reject reasons of the trust rules.
const (
	ReasonUnregistered = "unregistered" // a handshake from an sn ams.registry does not hold (Config.AllowUnregistered off)
	ReasonRateLimited  = "rate_limited" // over the device's handshake or frame rate limit
	ReasonUnbound      = "unbound"      // upload credentials (703) asked by a device that is not registered and bound
)

// Defaults of Limits.
const (
	DefaultHandshakeBurst = 5
	DefaultHandshakeEvery = time.Minute
	DefaultFrameBurst     = 120
	DefaultFrameEvery     = 100 * time.Millisecond
)

// Limits are the per-device token buckets, kept in the device's state (so
// they hold across partition moves and restarts). A bucket holds at most
// Burst tokens and gains one every Every; each admitted request takes one.
// A request that finds no token is rejected rate_limited and changes
// nothing (no RSA decryption, no state written). Zero fields take the
// defaults; a negative Burst turns that limit off.
type Limits struct {
	// HandshakeBurst and HandshakeEvery limit new handshakes (a redelivered
	// copy of the last one is answered from the state and costs nothing).
	// Default 5, then one a minute.
	HandshakeBurst int
	HandshakeEvery time.Duration
	// FrameBurst and FrameEvery limit every frame of a device that has
	// state (the handshake included). Default 120, then ten a second.
	FrameBurst int
	FrameEvery time.Duration
}

// WithDefaults returns l with zero fields set to the defaults.
func (l Limits) WithDefaults() Limits {
	if l.HandshakeBurst == 0 {
		l.HandshakeBurst = DefaultHandshakeBurst
	}
	if l.HandshakeEvery == 0 {
		l.HandshakeEvery = DefaultHandshakeEvery
	}
	if l.FrameBurst == 0 {
		l.FrameBurst = DefaultFrameBurst
	}
	if l.FrameEvery == 0 {
		l.FrameEvery = DefaultFrameEvery
	}
	return l
}

func (l Limits) validate() error {
	if l.HandshakeEvery < 0 || l.FrameEvery < 0 {
		return errors.New("device: negative rate limit interval")
	}
	return nil
}

// take takes a token from bucket b (nil: full) at now. ok is false when
// there is none; the returned bucket is then b unchanged.
func take(b *schemas.TokenBucket, now time.Time, burst int, every time.Duration) (*schemas.TokenBucket, bool) {
	if burst < 0 {
		return b, true
	}
	full := int64(burst) * 1000
	milli := full
	if b != nil {
		milli = b.MilliTokens
		if el := now.Sub(b.At); el > 0 {
			milli += int64(el) * 1000 / int64(every)
		}
		milli = min(milli, full)
	}
	if milli < 1000 {
		return b, false
	}
	return &schemas.TokenBucket{MilliTokens: milli - 1000, At: now}, true
}

// handshakeBucket is s's handshake bucket (nil for no state: full).
func (s *State) handshakeBucket() *schemas.TokenBucket {
	if s == nil {
		return nil
	}
	return s.hsBucket
}
