// Package uploadgw is the picture upload gateway (`ams upload-gateway`): it
// speaks the object store API the camera firmware uses (Kingsoft KS3's PUT
// Object, signed "KSS {access key}:{signature}", see pkg/ks3sign), accepts
// only the short-lived, path-scoped credentials the device processor hands
// out in 703 replies (processors/device/UPLOAD_CREDENTIALS.md), and forwards
// each object to an S3-compatible store with the gateway's own credentials.
//
// For every request the gateway, in this order:
//
//  1. parses the access key (ams1.{exp}.{sn}) and refuses it at or after exp;
//  2. refuses a Date (or x-kss-date) more than MaxClockSkew away from now, so
//     a captured request cannot be replayed later;
//  3. derives the device's secret key from the shared secret and verifies
//     the request signature with it (constant time);
//  4. allows only PUT of a key under {ObjectPath}/{sn}/ in Bucket, with a
//     Content-Length no larger than MaxObjectBytes;
//  5. applies the device's rate limit;
//  6. streams the body to the store (memory stays bounded: nothing is
//     buffered whole), checks Content-MD5 when sent, and
//  7. when the request names the configured callback URL (x-kss-callbackurl),
//     POSTs the callback body the way KS3's upload callback does and answers
//     with the callback's response.
//
// Every refusal answers a KS3/S3-style XML error and is counted by reason
// (ams_upload_gateway_requests_total{result,reason}); no key, signature or
// secret is ever logged.
package uploadgw

import (
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ivms/ams/pkg/ks3sign"
	"github.com/ivms/ams/processors/device"
)

// Store is where objects go (an S3-compatible store in production).
type Store interface {
	// Put stores size bytes read from r under key in the store's bucket and
	// returns the object's ETag. It must not buffer the whole object.
	Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) (etag string, err error)
	// Delete removes key (used when a sent Content-MD5 does not match).
	Delete(ctx context.Context, key string) error
}

// Config configures a Gateway.
type Config struct {
	// Secret is the upload-signing secret shared with the device processor
	// (-upload-signing-secret-file); at least 16 bytes.
	Secret []byte
	// Bucket and ObjectPath are what the processor sends devices in 703
	// (-upload-bucket, -upload-object-path); each device may write only
	// under ObjectPath/{sn}/ in Bucket.
	Bucket, ObjectPath string
	// CallbackURL is the one callback URL the gateway calls (the
	// processor's -upload-callback-url); a request naming another is
	// refused. Empty: callbacks are refused.
	CallbackURL string
	// MaxObjectBytes bounds one object (default 10 MiB).
	MaxObjectBytes int64
	// MaxClockSkew bounds |Date - now| (default 15 minutes, as S3).
	MaxClockSkew time.Duration
	// RatePerMinute and Burst are each device's upload rate limit (default
	// 30 a minute, burst 10).
	RatePerMinute float64
	Burst         int
	// CallbackTimeout bounds the callback request (default 10 s).
	CallbackTimeout time.Duration
	// HTTPClient makes the callback requests (default: a client with
	// CallbackTimeout).
	HTTPClient *http.Client
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Refusal reasons (the "reason" label), and "ok".
const (
	ReasonOK             = "ok"
	ReasonNoSignature    = "no_signature"    // no or malformed Authorization
	ReasonBadAccessKey   = "bad_access_key"  // not an ams1 key
	ReasonExpired        = "expired"         // the key's exp has passed
	ReasonClockSkew      = "clock_skew"      // Date missing or too far from now
	ReasonBadSignature   = "bad_signature"   // the signature does not verify
	ReasonOutsidePath    = "outside_path"    // bucket or key outside the device's path
	ReasonMethod         = "method"          // not PUT
	ReasonNoLength       = "no_length"       // no Content-Length
	ReasonTooLarge       = "too_large"       // Content-Length over MaxObjectBytes
	ReasonRateLimited    = "rate_limited"    // the device's bucket is empty
	ReasonBadCallback    = "bad_callback"    // a callback URL other than the configured one
	ReasonBadDigest      = "bad_digest"      // Content-MD5 does not match the body
	ReasonIncomplete     = "incomplete"      // the body ended before Content-Length
	ReasonStoreFailed    = "store_failed"    // the store refused or failed
	ReasonCallbackFailed = "callback_failed" // stored, but the callback failed
)

// Gateway serves the upload API. It is safe for concurrent use.
type Gateway struct {
	cfg   Config
	store Store
	log   *slog.Logger
	m     metrics

	mu      sync.Mutex
	buckets map[string]*tokenBucket // per device sn
}

type metrics struct {
	requests *prometheus.CounterVec
	bytes    prometheus.Counter
	duration prometheus.Histogram
}

// New returns a gateway; reg receives its metrics (nil: none).
func New(cfg Config, store Store, log *slog.Logger, reg prometheus.Registerer) (*Gateway, error) {
	if len(cfg.Secret) < 16 {
		return nil, errors.New("uploadgw: the upload-signing secret must be at least 16 bytes")
	}
	if cfg.Bucket == "" || strings.Trim(cfg.ObjectPath, "/") == "" {
		return nil, errors.New("uploadgw: bucket and object path are required")
	}
	if store == nil {
		return nil, errors.New("uploadgw: no store")
	}
	if cfg.CallbackURL != "" {
		if u, err := url.Parse(cfg.CallbackURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("uploadgw: callback URL %q is not an http(s) URL", cfg.CallbackURL)
		}
	}
	if cfg.MaxObjectBytes <= 0 {
		cfg.MaxObjectBytes = 10 << 20
	}
	if cfg.MaxClockSkew <= 0 {
		cfg.MaxClockSkew = 15 * time.Minute
	}
	if cfg.RatePerMinute <= 0 {
		cfg.RatePerMinute = 30
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 10
	}
	if cfg.CallbackTimeout <= 0 {
		cfg.CallbackTimeout = 10 * time.Second
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: cfg.CallbackTimeout}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.ObjectPath = strings.Trim(cfg.ObjectPath, "/")
	g := &Gateway{cfg: cfg, store: store, log: log, buckets: map[string]*tokenBucket{}, m: metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ams_upload_gateway_requests_total",
			Help: "Upload requests answered, by result (stored, refused, failed) and reason.",
		}, []string{"result", "reason"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ams_upload_gateway_bytes_total",
			Help: "Bytes of objects stored.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ams_upload_gateway_upload_seconds",
			Help:    "Time from request to answer of stored uploads, callback included.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
	}}
	if reg != nil {
		for _, c := range []prometheus.Collector{g.m.requests, g.m.bytes, g.m.duration} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("uploadgw: metrics: %w", err)
			}
		}
	}
	return g, nil
}

// ServeHTTP answers one upload request. Path-style (/{bucket}/{key}) and
// virtual-hosted-style (Host: {bucket}.{gateway host}, /{key}) requests are
// both understood.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := g.cfg.Now()
	bucket, key := g.bucketKey(r)
	sn, status, code, reason := g.authorize(r, bucket, key)
	if reason != ReasonOK {
		g.refuse(w, r, sn, status, code, reason)
		return
	}
	if !g.allow(sn) {
		g.refuse(w, r, sn, http.StatusServiceUnavailable, "SlowDown", ReasonRateLimited)
		return
	}
	etag, reason, err := g.put(r, key)
	if err != nil {
		status, code := http.StatusBadGateway, "InternalError"
		switch reason {
		case ReasonBadDigest:
			status, code = http.StatusBadRequest, "BadDigest"
		case ReasonIncomplete:
			status, code = http.StatusBadRequest, "IncompleteBody"
		}
		g.log.Warn("upload gateway: upload failed", "sn", sn, "key", key, "reason", reason, "err", err)
		g.m.requests.WithLabelValues("failed", reason).Inc()
		writeError(w, status, code, reason, r.URL.Path)
		return
	}
	g.m.bytes.Add(float64(r.ContentLength))
	if cb := r.Header.Get("X-Kss-Callbackurl"); cb != "" {
		g.callback(w, r, sn, bucket, key, etag, start)
		return
	}
	g.m.requests.WithLabelValues("stored", ReasonOK).Inc()
	g.m.duration.Observe(g.cfg.Now().Sub(start).Seconds())
	g.log.Info("upload gateway: stored", "sn", sn, "key", key, "bytes", r.ContentLength)
	w.Header().Set("ETag", `"`+etag+`"`)
	w.WriteHeader(http.StatusOK)
}

// bucketKey splits the request into bucket and object key.
func (g *Gateway) bucketKey(r *http.Request) (bucket, key string) {
	p := strings.TrimPrefix(r.URL.Path, "/")
	host := r.Host
	if h, _, ok := strings.Cut(host, ":"); ok {
		host = h
	}
	if strings.HasPrefix(host, g.cfg.Bucket+".") {
		return g.cfg.Bucket, p
	}
	bucket, key, _ = strings.Cut(p, "/")
	return bucket, key
}

// authorize runs checks 1 to 4 of the package comment.
func (g *Gateway) authorize(r *http.Request, bucket, key string) (sn string, status int, code, reason string) {
	forbidden := func(reason string) (string, int, string, string) {
		return sn, http.StatusForbidden, "AccessDenied", reason
	}
	ak, sig, err := ks3sign.ParseAuthorization(r.Header.Get("Authorization"))
	if err != nil {
		return forbidden(ReasonNoSignature)
	}
	sn, exp, err := device.ParseUploadAccessKey(ak)
	if err != nil {
		return "", http.StatusForbidden, "InvalidAccessKeyId", ReasonBadAccessKey
	}
	now := g.cfg.Now()
	if !now.Before(exp) {
		return forbidden(ReasonExpired)
	}
	date := r.Header.Get("X-Kss-Date")
	if date == "" {
		date = r.Header.Get("Date")
	}
	t, err := http.ParseTime(date)
	if err != nil || t.Sub(now) > g.cfg.MaxClockSkew || now.Sub(t) > g.cfg.MaxClockSkew {
		return sn, http.StatusForbidden, "RequestTimeTooSkewed", ReasonClockSkew
	}
	objectPath := path.Join(g.cfg.ObjectPath, sn)
	secret := device.DeriveUploadSecret(g.cfg.Secret, ak, g.cfg.Bucket, objectPath)
	if !ks3sign.Verify(secret, ks3sign.StringToSign(r.Method, r.Header, bucket, key, r.URL.Query()), sig) {
		return sn, http.StatusForbidden, "SignatureDoesNotMatch", ReasonBadSignature
	}
	if bucket != g.cfg.Bucket || !strings.HasPrefix(key, objectPath+"/") || len(key) == len(objectPath)+1 ||
		path.Clean("/"+key) != "/"+key {
		return forbidden(ReasonOutsidePath)
	}
	if r.Method != http.MethodPut || r.URL.RawQuery != "" {
		return sn, http.StatusMethodNotAllowed, "MethodNotAllowed", ReasonMethod
	}
	if r.ContentLength < 0 {
		return sn, http.StatusLengthRequired, "MissingContentLength", ReasonNoLength
	}
	if r.ContentLength > g.cfg.MaxObjectBytes {
		return sn, http.StatusRequestEntityTooLarge, "EntityTooLarge", ReasonTooLarge
	}
	if cb := r.Header.Get("X-Kss-Callbackurl"); cb != "" && cb != g.cfg.CallbackURL {
		return sn, http.StatusBadRequest, "InvalidArgument", ReasonBadCallback
	}
	return sn, 0, "", ReasonOK
}

// put streams the body to the store, checking Content-MD5 when sent.
func (g *Gateway) put(r *http.Request, key string) (etag, reason string, err error) {
	var sum hash.Hash
	body := io.Reader(io.LimitReader(r.Body, r.ContentLength))
	wantMD5 := r.Header.Get("Content-Md5")
	if wantMD5 != "" {
		sum = md5.New()
		body = io.TeeReader(body, sum)
	}
	counted := &countingReader{r: body}
	ctype := r.Header.Get("Content-Type")
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	etag, err = g.store.Put(r.Context(), key, counted, r.ContentLength, ctype)
	if err != nil {
		if counted.n < r.ContentLength {
			return "", ReasonIncomplete, fmt.Errorf("body ended after %d of %d bytes: %w", counted.n, r.ContentLength, err)
		}
		return "", ReasonStoreFailed, err
	}
	if sum != nil && base64.StdEncoding.EncodeToString(sum.Sum(nil)) != wantMD5 {
		if derr := g.store.Delete(context.WithoutCancel(r.Context()), key); derr != nil {
			err = derr
		}
		return "", ReasonBadDigest, errors.Join(errors.New("Content-MD5 does not match the body; object removed"), err)
	}
	return strings.Trim(etag, `"`), ReasonOK, nil
}

// callback POSTs the request's x-kss-callbackbody, its ${...} variables
// replaced as KS3 does, to the configured callback URL and answers with the
// callback's status and body.
func (g *Gateway) callback(w http.ResponseWriter, r *http.Request, sn, bucket, key, etag string, start time.Time) {
	body := r.Header.Get("X-Kss-Callbackbody")
	if body == "" {
		body = "bucket=${bucket}&key=${key}&etag=${etag}&objectSize=${objectSize}&mimeType=${mimeType}&createTime=${createTime}"
	}
	ctype := r.Header.Get("Content-Type")
	vars := map[string]string{
		"bucket": bucket, "key": key, "etag": etag, "objectSize": strconv.FormatInt(r.ContentLength, 10),
		"mimeType": ctype, "createTime": strconv.FormatInt(g.cfg.Now().Unix(), 10), "sn": sn,
	}
	body = expand(body, vars)
	ctx, cancel := context.WithTimeout(r.Context(), g.cfg.CallbackTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, g.cfg.CallbackURL, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := g.cfg.HTTPClient.Do(req)
	if err == nil && resp.StatusCode/100 != 2 {
		resp.Body.Close()
		err = fmt.Errorf("callback answered %s", resp.Status)
	}
	if err != nil {
		// KS3 keeps the object and tells the client the callback failed.
		g.log.Warn("upload gateway: callback failed", "sn", sn, "key", key, "err", err)
		g.m.requests.WithLabelValues("stored", ReasonCallbackFailed).Inc()
		w.Header().Set("ETag", `"`+etag+`"`)
		writeError(w, http.StatusNonAuthoritativeInfo, "CallbackFailed", ReasonCallbackFailed, r.URL.Path)
		return
	}
	defer resp.Body.Close()
	g.m.requests.WithLabelValues("stored", ReasonOK).Inc()
	g.m.duration.Observe(g.cfg.Now().Sub(start).Seconds())
	g.log.Info("upload gateway: stored, callback called", "sn", sn, "key", key, "bytes", r.ContentLength)
	w.Header().Set("ETag", `"`+etag+`"`)
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, io.LimitReader(resp.Body, 64<<10))
}

// expand replaces ${name} in s by url-escaped vars[name]; unknown names stay.
func expand(s string, vars map[string]string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			b.WriteString(s)
			return b.String()
		}
		name := s[i+2 : i+j]
		b.WriteString(s[:i])
		if v, ok := vars[name]; ok {
			b.WriteString(url.QueryEscape(v))
		} else {
			b.WriteString(s[i : i+j+1])
		}
		s = s[i+j+1:]
	}
}

func (g *Gateway) refuse(w http.ResponseWriter, r *http.Request, sn string, status int, code, reason string) {
	g.m.requests.WithLabelValues("refused", reason).Inc()
	g.log.Info("upload gateway: refused", "sn", sn, "reason", reason, "path", r.URL.Path)
	writeError(w, status, code, reason, r.URL.Path)
}

// s3Error is the XML error body of KS3 and S3.
type s3Error struct {
	XMLName  xml.Name `xml:"Error"`
	Code     string   `xml:"Code"`
	Message  string   `xml:"Message"`
	Resource string   `xml:"Resource"`
}

func writeError(w http.ResponseWriter, status int, code, reason, resource string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, xml.Header)
	_ = xml.NewEncoder(w).Encode(s3Error{Code: code, Message: reason, Resource: resource})
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// tokenBucket is one device's rate limit.
type tokenBucket struct {
	tokens float64
	last   time.Time
}

// maxTracked bounds the rate limiter's map; past it, full buckets are dropped.
const maxTracked = 100_000

func (g *Gateway) allow(sn string) bool {
	now := g.cfg.Now()
	rate := g.cfg.RatePerMinute / 60
	g.mu.Lock()
	defer g.mu.Unlock()
	b, ok := g.buckets[sn]
	if !ok {
		if len(g.buckets) >= maxTracked {
			for k, v := range g.buckets {
				if v.tokens+now.Sub(v.last).Seconds()*rate >= float64(g.cfg.Burst) {
					delete(g.buckets, k)
				}
			}
		}
		b = &tokenBucket{tokens: float64(g.cfg.Burst), last: now}
		g.buckets[sn] = b
	}
	b.tokens = min(float64(g.cfg.Burst), b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// ContentMD5 returns the base64 MD5 of b, the Content-MD5 header value.
func ContentMD5(b []byte) string {
	s := md5.Sum(b)
	return base64.StdEncoding.EncodeToString(s[:])
}
