package devicesim

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// startTLSBroker runs an embedded broker with a plaintext listener (for the test cloud) and a
// TLS listener (for the devices), with a certificate for 127.0.0.1 signed by a fresh CA. It
// returns both URLs and a pool holding the CA.
func startTLSBroker(t *testing.T) (plainURL, tlsURL string, ca *x509.CertPool) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "broker"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca = x509.NewCertPool()
	ca.AddCert(caCert)

	srv := mochi.New(&mochi.Options{Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	plain := listeners.NewTCP(listeners.Config{ID: "plain", Address: "127.0.0.1:0"})
	secure := listeners.NewTCP(listeners.Config{ID: "tls", Address: "127.0.0.1:0",
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}})
	for _, l := range []listeners.Listener{plain, secure} {
		if err := srv.AddListener(l); err != nil {
			t.Fatal(err)
		}
	}
	go func() { _ = srv.Serve() }()
	t.Cleanup(func() { _ = srv.Close() })
	return "tcp://" + plain.Address(), "ssl://" + secure.Address(), ca
}

// TestFleetOverTLS: devices reach a broker's TLS listener with an ssl:// URL and the CA, and
// complete the handshake through it; without the CA they do not connect.
func TestFleetOverTLS(t *testing.T) {
	plainURL, tlsURL, ca := startTLSBroker(t)
	cloud := newTestCloud(t, "0505050505")
	cloud.start(plainURL)

	const n = 5
	cfg := baseConfig(t, tlsURL, n)
	cfg.TLS = &tls.Config{RootCAs: ca, MinVersion: tls.VersionTLS12}
	f, _ := startFleet(t, cfg)
	waitFor(t, 20*time.Second, "every device ready over TLS", func(s Stats) bool { return s.Ready == n }, f)

	bad := baseConfig(t, tlsURL, 1)
	bad.SNPrefix = "0606060606"
	bad.TLS = &tls.Config{RootCAs: x509.NewCertPool()} // trusts nothing
	fb, stop := startFleet(t, bad)
	// Wait for two failed attempts, then check none ever succeeded.
	s := waitFor(t, 20*time.Second, "failed TLS connects", func(s Stats) bool { return s.ConnectFailures >= 2 }, fb)
	if s.Connects != 0 || s.Ready != 0 {
		t.Errorf("a device that does not trust the broker's CA connected: connects %d ready %d", s.Connects, s.Ready)
	}
	stop()
}
