package connsec

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// testPKI is a throw-away CA with one server certificate (for 127.0.0.1 and
// "kafka.test") and one client certificate, written as PEM files.
type testPKI struct {
	dir                       string
	caFile, certFile, keyFile string // client
	serverCert                tls.Certificate
	caPool                    *x509.CertPool
	otherCAFile               string // a CA that signed nothing here
}

func newPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, caDER := selfSigned(t, "ams test ca")
	caCert, _ := x509.ParseCertificate(caDER)
	p := testPKI{dir: dir, caPool: x509.NewCertPool()}
	p.caPool.AddCert(caCert)
	p.caFile = writePEM(t, dir, "ca.pem", "CERTIFICATE", caDER)
	_, otherDER := selfSigned(t, "other ca")
	p.otherCAFile = writePEM(t, dir, "other-ca.pem", "CERTIFICATE", otherDER)

	srvKey, srvDER := leaf(t, caCert, caKey, "kafka.test", x509.ExtKeyUsageServerAuth)
	p.serverCert = tls.Certificate{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}
	cliKey, cliDER := leaf(t, caCert, caKey, "ams-client", x509.ExtKeyUsageClientAuth)
	p.certFile = writePEM(t, dir, "client.pem", "CERTIFICATE", cliDER)
	kb, err := x509.MarshalPKCS8PrivateKey(cliKey)
	if err != nil {
		t.Fatal(err)
	}
	p.keyFile = writePEM(t, dir, "client-key.pem", "PRIVATE KEY", kb)
	return p
}

func selfSigned(t *testing.T, cn string) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

func leaf(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, usage x509.ExtKeyUsage) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		DNSNames: []string{cn}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	f := filepath.Join(dir, name)
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestTLSConfig(t *testing.T) {
	p := newPKI(t)
	if c, err := (TLS{}).Config(); c != nil || err != nil {
		t.Fatalf("empty setting: got %v, %v; want no TLS", c, err)
	}
	c, err := TLS{CAFile: p.caFile, CertFile: p.certFile, KeyFile: p.keyFile, ServerName: "kafka.test"}.Config()
	if err != nil {
		t.Fatal(err)
	}
	if c.ServerName != "kafka.test" || len(c.Certificates) != 1 || c.RootCAs == nil || c.InsecureSkipVerify || c.MinVersion < tls.VersionTLS12 {
		t.Fatalf("config %+v", c)
	}
	for name, bad := range map[string]TLS{
		"missing ca":   {CAFile: filepath.Join(p.dir, "nope.pem")},
		"ca not pem":   {CAFile: writeFile(t, p.dir, "junk", "not a cert")},
		"cert w/o key": {CertFile: p.certFile},
		"key w/o cert": {KeyFile: p.keyFile},
		"key mismatch": {CertFile: p.certFile, KeyFile: p.caFile},
	} {
		if _, err := bad.Config(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	f := filepath.Join(dir, name)
	if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestTLSHandshake: the built config trusts a server signed by the CA file, presents the
// client certificate to a server that requires one, and refuses a server the CA did not sign
// or whose name does not match.
func TestTLSHandshake(t *testing.T) {
	p := newPKI(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{p.serverCert}, ClientCAs: p.caPool, ClientAuth: tls.RequireAndVerifyClientCert,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _ = c.(*tls.Conn).Handshake(); _, _ = c.Write([]byte("ok")); c.Close() }()
		}
	}()
	dial := func(s TLS) error {
		c, err := s.Config()
		if err != nil {
			return err
		}
		conn, err := tls.Dial("tcp", ln.Addr().String(), c)
		if err != nil {
			return err
		}
		defer conn.Close()
		b := make([]byte, 2)
		_, err = conn.Read(b)
		return err
	}
	if err := dial(TLS{CAFile: p.caFile, CertFile: p.certFile, KeyFile: p.keyFile}); err != nil {
		t.Fatalf("good setting (ip SAN): %v", err)
	}
	if err := dial(TLS{CAFile: p.caFile, CertFile: p.certFile, KeyFile: p.keyFile, ServerName: "kafka.test"}); err != nil {
		t.Fatalf("good setting (server name): %v", err)
	}
	if err := dial(TLS{CAFile: p.otherCAFile, CertFile: p.certFile, KeyFile: p.keyFile}); err == nil {
		t.Error("a server signed by another CA was trusted")
	}
	if err := dial(TLS{CAFile: p.caFile, CertFile: p.certFile, KeyFile: p.keyFile, ServerName: "evil.test"}); err == nil {
		t.Error("a server name not in the certificate was accepted")
	}
	if err := dial(TLS{CAFile: p.caFile}); err == nil {
		t.Error("no client certificate, yet the server that requires one answered")
	}
}

func TestSecret(t *testing.T) {
	dir := t.TempDir()
	f := writeFile(t, dir, "pw", "s3cret\n")
	if s, err := Secret("x", "", f); err != nil || s != "s3cret" {
		t.Fatalf("file: %q, %v", s, err)
	}
	if s, err := Secret("x", "inline", ""); err != nil || s != "inline" {
		t.Fatalf("value: %q, %v", s, err)
	}
	if _, err := Secret("x", "inline", f); err == nil {
		t.Error("value and file: no error")
	}
	if _, err := Secret("x", "", writeFile(t, dir, "empty", "\n")); err == nil {
		t.Error("empty file: no error")
	}
	_, err := Secret("redis password", "", filepath.Join(dir, "missing"))
	if err == nil || !strings.Contains(err.Error(), "redis password") {
		t.Errorf("missing file: %v", err)
	}
}

func TestKafkaOptsErrors(t *testing.T) {
	dir := t.TempDir()
	pw := writeFile(t, dir, "pw", "pw\n")
	for name, k := range map[string]Kafka{
		"unknown mechanism":  {Mechanism: "GSSAPI", Username: "u", Password: "p"},
		"no password":        {Mechanism: "SCRAM-SHA-512", Username: "u"},
		"no user":            {Mechanism: "PLAIN", PasswordFile: pw},
		"user w/o mechanism": {Username: "u", Password: "p"},
		"password and file":  {Mechanism: "PLAIN", Username: "u", Password: "p", PasswordFile: pw},
		"bad ca":             {TLS: TLS{CAFile: filepath.Join(dir, "missing")}},
	} {
		if _, err := k.Opts(); err == nil {
			t.Errorf("%s: no error", name)
		} else if strings.Contains(err.Error(), "pw\n") {
			t.Errorf("%s: error shows the secret: %v", name, err)
		}
	}
	if o, err := (Kafka{}).Opts(); err != nil || len(o) != 0 {
		t.Fatalf("no security: %d opts, %v", len(o), err)
	}
	for _, m := range []string{"plain", "SCRAM-SHA-256", "scram-sha-512"} {
		o, err := Kafka{Mechanism: m, Username: "u", PasswordFile: pw}.Opts()
		if err != nil || len(o) != 1 {
			t.Fatalf("%s: %d opts, %v", m, len(o), err)
		}
	}
}

// TestKafkaAgainstSecureBroker runs a kfake cluster that requires TLS and SCRAM-SHA-512 and
// checks that the built options get through, and that a wrong password, a missing SASL
// setting or a plaintext client do not.
func TestKafkaAgainstSecureBroker(t *testing.T) {
	p := newPKI(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(),
		kfake.Superuser("SCRAM-SHA-512", "ams", "right-password"),
		kfake.TLS(&tls.Config{Certificates: []tls.Certificate{p.serverCert}}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pw := writeFile(t, p.dir, "pw", "right-password\n")
	wrong := writeFile(t, p.dir, "wrong", "wrong-password\n")
	ping := func(k Kafka) error {
		opts, err := k.Opts()
		if err != nil {
			return err
		}
		cl, err := kgo.NewClient(append(opts, kgo.SeedBrokers(c.ListenAddrs()...), kgo.RequestRetries(0),
			kgo.DialTimeout(2*time.Second))...)
		if err != nil {
			return err
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return cl.Ping(ctx)
	}
	good := Kafka{TLS: TLS{CAFile: p.caFile}, Mechanism: "SCRAM-SHA-512", Username: "ams", PasswordFile: pw}
	if err := ping(good); err != nil {
		t.Fatalf("TLS + SCRAM-SHA-512: %v", err)
	}
	bad := good
	bad.PasswordFile = wrong
	if err := ping(bad); err == nil {
		t.Error("wrong password accepted")
	}
	sha256 := good
	sha256.Mechanism = "SCRAM-SHA-256"
	if err := ping(sha256); err == nil {
		t.Error("SCRAM-SHA-256 accepted for a SHA-512 user")
	}
	if err := ping(Kafka{TLS: TLS{CAFile: p.caFile}}); err == nil {
		t.Error("TLS without SASL accepted")
	}
	if err := ping(Kafka{Mechanism: "SCRAM-SHA-512", Username: "ams", PasswordFile: pw}); err == nil {
		t.Error("plaintext client accepted by a TLS listener")
	}
}

func TestKafkaFromEnv(t *testing.T) {
	env := map[string]string{
		"AMS_KAFKA_TLS": "true", "AMS_KAFKA_TLS_CA_FILE": "/ca", "AMS_KAFKA_TLS_SERVER_NAME": "k",
		"AMS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "AMS_KAFKA_SASL_USERNAME": "u", "AMS_KAFKA_SASL_PASSWORD_FILE": "/pw",
	}
	k := KafkaFromEnv(func(s string) string { return env[s] })
	want := Kafka{TLS: TLS{Enabled: true, CAFile: "/ca", ServerName: "k"}, Mechanism: "SCRAM-SHA-512", Username: "u", PasswordFile: "/pw"}
	if k != want {
		t.Fatalf("got %+v, want %+v", k, want)
	}
	if w := (Kafka{Mechanism: "PLAIN"}).Warnings(); len(w) != 2 {
		t.Errorf("PLAIN without TLS: warnings %q", w)
	}
	if w := want.Warnings(); len(w) != 0 {
		t.Errorf("TLS + SCRAM: warnings %q", w)
	}
}
