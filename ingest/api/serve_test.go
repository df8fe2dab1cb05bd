package api

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/testkit/testenv"
)

// TestServeTLS: with a certificate the API speaks only TLS, a client that
// verifies the certificate gets answers, and a renewed certificate is
// served without a restart.
func TestServeTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := testenv.SelfSignedServerCert(t, dir, "api")
	cr, err := NewCertReloader(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{Token: token, Names: kafkatopics.Default()}, newFakeState(), &fakeProducer{}, nil,
		slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, cr.TLSConfig()) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	base := "https://" + ln.Addr().String()

	get := func(cl *http.Client) (*http.Response, error) {
		req, _ := http.NewRequest(http.MethodGet, base+"/v1/command-kinds", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := cl.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return resp, err
	}
	client := func(cfg *tls.Config) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 5 * time.Second}
	}
	resp, err := get(client(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("verified TLS request: %v %v", resp, err)
	}
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 {
		t.Fatal("answer not over TLS")
	}
	first := resp.TLS.PeerCertificates[0].SerialNumber

	// The operational endpoints are not on the public listener (they are on -ops-addr).
	for _, path := range []string{"/metrics", "/readyz", "/healthz"} {
		resp, err := client(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}).Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s on the API port: %d, want 404", path, resp.StatusCode)
		}
	}

	// A client that does not trust the certificate is refused by its own check.
	if _, err := get(client(&tls.Config{MinVersion: tls.VersionTLS12})); err == nil {
		t.Fatal("unverified certificate accepted")
	}
	// Plain HTTP on the TLS port gets no API answer.
	if resp, err := http.Get("http://" + ln.Addr().String() + "/v1/command-kinds"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP answered 200")
		}
	}

	// Renewal: new files in place are served (checked at most once a second).
	time.Sleep(1100 * time.Millisecond)
	newCert, newKey, newPool := testenv.SelfSignedServerCert(t, t.TempDir(), "api")
	for _, f := range [][2]string{{newCert, certFile}, {newKey, keyFile}} {
		b, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f[1], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		cl := client(&tls.Config{RootCAs: newPool, MinVersion: tls.VersionTLS12})
		resp, err := get(cl)
		if err == nil && resp.TLS.PeerCertificates[0].SerialNumber.Cmp(first) != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("renewed certificate not served within 10s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
