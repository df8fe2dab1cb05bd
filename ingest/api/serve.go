package api

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/ivms/ams/pkg/opshttp"
)

// CertReloader serves a TLS certificate and key from files and re-reads
// them when either file's modification time or size changes (checked at
// most once a second, at a handshake), so a renewed certificate is used
// without a restart. A pair that fails to load keeps the previous one.
type CertReloader struct {
	certFile, keyFile string

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   [2]fileStamp
	checked time.Time
	lastErr error
}

// NewCertReloader loads the pair once; it fails when it cannot.
func NewCertReloader(certFile, keyFile string) (*CertReloader, error) {
	c := &CertReloader{certFile: certFile, keyFile: keyFile}
	if err := c.load(); err != nil {
		return nil, err
	}
	return c, nil
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{mtime: fi.ModTime(), size: fi.Size()}, nil
}

// load (re)reads the pair; c.mu is held or c is not shared yet.
func (c *CertReloader) load() error {
	var st [2]fileStamp
	var err error
	for i, p := range []string{c.certFile, c.keyFile} {
		if st[i], err = stampOf(p); err != nil {
			return fmt.Errorf("api tls: %w", err)
		}
	}
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("api tls: load %s and %s: %w", c.certFile, c.keyFile, err)
	}
	c.cert, c.stamp = &cert, st
	return nil
}

// GetCertificate is a tls.Config.GetCertificate.
func (c *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := time.Now(); now.Sub(c.checked) >= time.Second {
		c.checked = now
		a, errA := stampOf(c.certFile)
		b, errB := stampOf(c.keyFile)
		if errA == nil && errB == nil && (a != c.stamp[0] || b != c.stamp[1]) {
			c.lastErr = c.load() // on error the previous pair stays
		}
	}
	return c.cert, nil
}

// TLSConfig returns a server configuration (TLS 1.2 at least) using c.
func (c *CertReloader) TLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: c.GetCertificate}
}

// Serve serves the API's routes on ln (TLS when tlsCfg is not nil) until
// ctx is done, then shuts down gracefully, giving in-flight requests 5 s.
// It logs "api listening" with the address.
func (s *Server) Serve(ctx context.Context, ln net.Listener, tlsCfg *tls.Config) error {
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		TLSConfig: tlsCfg, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	scheme := "http"
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
		scheme = "https"
	}
	s.log.Info("api listening", "addr", ln.Addr().String(), "scheme", scheme)
	if err := opshttp.ServeUntil(ctx, srv, ln); err != nil {
		return fmt.Errorf("api http: %w", err)
	}
	return nil
}
