package device

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Defaults of StreamConfig.
const (
	DefaultStreamExpiry    = 2 * time.Minute
	DefaultMaxStreamExpiry = 10 * time.Minute
)

// StreamConfig is how the processor answers a device's stream URL request
// (iCmdType 7 / 702). The push URL it hands out is signed as
// STREAM_SIGNING.md describes, so a media server can check it with
// VerifyStreamURL (or the few lines of code that document shows).
type StreamConfig struct {
	// BaseURL is the push URL without the device part, e.g.
	// "rtmp://vms.example.com/live"; the device's sn is appended as the last
	// path segment. A registration's stream_url overrides it for its device.
	// Empty: stream URL requests are not answered.
	BaseURL string
	// Secret is the HMAC-SHA256 key shared with the media server. Empty:
	// stream URL requests are not answered (an unsigned URL is never sent).
	Secret []byte
	// DefaultExpiry is the URL's lifetime when the device does not ask for a
	// usable one; 0 means DefaultStreamExpiry (the seed's 2 minutes).
	DefaultExpiry time.Duration
	// MaxExpiry bounds the expiry a device may ask for (iExpiresTime): a
	// requested expiry in the past or more than MaxExpiry ahead is replaced
	// by now + DefaultExpiry. 0 means DefaultMaxStreamExpiry.
	MaxExpiry time.Duration
}

func (c StreamConfig) enabled() bool { return c.BaseURL != "" && len(c.Secret) > 0 }

func (c StreamConfig) validate() error {
	if c.BaseURL == "" && len(c.Secret) == 0 {
		return nil
	}
	if len(c.Secret) < 16 {
		return errors.New("device: stream URL secret must be at least 16 bytes")
	}
	if err := checkStreamBase(c.BaseURL); err != nil {
		return fmt.Errorf("device: stream base URL: %w", err)
	}
	if c.DefaultExpiry < 0 || c.MaxExpiry < 0 {
		return errors.New("device: stream URL expiries must not be negative")
	}
	return nil
}

// expiry returns the URL's expiry in unix seconds: the device's requested
// expiry when it lies in (now, now + MaxExpiry], else now + DefaultExpiry.
func (c StreamConfig) expiry(now time.Time, requested float64) int64 {
	def, max := c.DefaultExpiry, c.MaxExpiry
	if def <= 0 {
		def = DefaultStreamExpiry
	}
	if max <= 0 {
		max = DefaultMaxStreamExpiry
	}
	if requested > 0 && !math.IsInf(requested, 0) && !math.IsNaN(requested) {
		r := int64(requested)
		if r > now.Unix() && r <= now.Add(max).Unix() {
			return r
		}
	}
	return now.Add(def).Unix()
}

func checkStreamBase(base string) error {
	u, err := url.Parse(base)
	if err != nil {
		return errors.New("does not parse")
	}
	if u.Scheme == "" || u.Host == "" {
		return errors.New("needs a scheme and a host")
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return errors.New("must not have a query, a fragment or user info")
	}
	return nil
}

// SignStreamURL returns the signed push URL of device sn:
//
//	{base}/{sn}?exp={exp}&sig={hex(HMAC-SHA256(secret, path + "\n" + exp))}
//
// where path is the URL's path as written (e.g. "/live/0505050505050003")
// and exp the expiry in unix seconds (decimal). See STREAM_SIGNING.md.
func SignStreamURL(secret []byte, base, sn string, exp int64) (string, error) {
	if err := checkStreamBase(base); err != nil {
		return "", fmt.Errorf("device: stream base URL %q: %w", base, err)
	}
	u, _ := url.Parse(strings.TrimRight(base, "/") + "/" + url.PathEscape(sn))
	path := u.EscapedPath()
	e := strconv.FormatInt(exp, 10)
	return u.String() + "?exp=" + e + "&sig=" + StreamSignature(secret, path, e), nil
}

// StreamSignature is the signature of a push URL: lowercase
// hex(HMAC-SHA256(secret, path + "\n" + exp)).
func StreamSignature(secret []byte, path, exp string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(path))
	m.Write([]byte{'\n'})
	m.Write([]byte(exp))
	return hex.EncodeToString(m.Sum(nil))
}

// Errors of VerifyStreamURL.
var (
	ErrStreamURLMalformed = errors.New("stream URL: malformed (no path, exp or sig)")
	ErrStreamURLSignature = errors.New("stream URL: bad signature")
	ErrStreamURLExpired   = errors.New("stream URL: expired")
)

// VerifyStreamURL checks a push URL signed by SignStreamURL at time now: the
// signature over its path and exp, and that exp is still ahead of now. It is
// what a media server's publish hook runs (STREAM_SIGNING.md shows the same
// check without this package).
func VerifyStreamURL(secret []byte, pushURL string, now time.Time) error {
	u, err := url.Parse(pushURL)
	if err != nil {
		return ErrStreamURLMalformed
	}
	q := u.Query()
	exp, sig := q.Get("exp"), q.Get("sig")
	if u.EscapedPath() == "" || exp == "" || sig == "" {
		return ErrStreamURLMalformed
	}
	want := StreamSignature(secret, u.EscapedPath(), exp)
	if !hmac.Equal([]byte(want), []byte(strings.ToLower(sig))) {
		return ErrStreamURLSignature
	}
	e, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return ErrStreamURLMalformed
	}
	if now.Unix() >= e {
		return ErrStreamURLExpired
	}
	return nil
}
