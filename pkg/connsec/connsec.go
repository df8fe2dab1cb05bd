// Package connsec builds the transport security of ams's client connections
// (Kafka, Redis, ClickHouse, MQTT) from plain settings: TLS from CA,
// client-certificate and key files and a server name, Kafka SASL (PLAIN,
// SCRAM-SHA-256, SCRAM-SHA-512) through franz-go's own options, and secrets
// read from files.
//
// Guarantees: a setting that names a file reads it when the options are
// built, so a missing or malformed file is an error at start-up, never at the
// first connection; a TLS config always verifies the server's certificate
// (there is no switch to turn verification off); no function here logs, and
// error messages name files and settings, never a secret's value.
package connsec

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
)

// TLS is the TLS setting of one client connection.
type TLS struct {
	// Enabled turns TLS on with the system's roots when no CAFile is given.
	// Naming any file or a server name turns TLS on as well.
	Enabled bool
	// CAFile is a PEM file of the CA certificates that sign the server's
	// certificate (empty: the system roots).
	CAFile string
	// CertFile and KeyFile are the PEM client certificate and its key, for
	// servers that authenticate clients by certificate; both or neither.
	CertFile, KeyFile string
	// ServerName is the name checked against the server's certificate
	// (empty: the host of the address dialled).
	ServerName string
}

// On reports whether the setting asks for TLS.
func (t TLS) On() bool {
	return t.Enabled || t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != ""
}

// Config returns the client TLS config (TLS 1.2 or newer, server certificate
// verified), or nil when the setting does not ask for TLS.
func (t TLS) Config() (*tls.Config, error) {
	if !t.On() {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls ca file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls ca file %s: no PEM certificate in it", t.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, errors.New("tls: a client certificate needs both its cert file and its key file")
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls client certificate %s / key %s: %w", t.CertFile, t.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Secret returns value, or, when file is set, the file's content with
// trailing newlines and blanks trimmed. Giving both is an error (which one
// wins would be a guess). what names the setting in errors.
func Secret(what, value, file string) (string, error) {
	if file == "" {
		return value, nil
	}
	if value != "" {
		return "", fmt.Errorf("%s: give the value or its file, not both", what)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s file: %w", what, err)
	}
	s := strings.TrimRight(string(b), "\r\n\t ")
	if s == "" {
		return "", fmt.Errorf("%s file %s is empty", what, file)
	}
	return s, nil
}

// TLSFromEnv reads a TLS setting from prefix+"_TLS" (true or 1), prefix+"_TLS_CA_FILE",
// "_TLS_CERT_FILE", "_TLS_KEY_FILE" and "_TLS_SERVER_NAME": the variables of ams's
// -{service}-tls* flags (prefix "AMS_REDIS" for -redis-tls-ca-file, ...).
func TLSFromEnv(getenv func(string) string, prefix string) TLS {
	on := strings.TrimSpace(getenv(prefix + "_TLS"))
	return TLS{
		Enabled:    on == "1" || strings.EqualFold(on, "true"),
		CAFile:     getenv(prefix + "_TLS_CA_FILE"),
		CertFile:   getenv(prefix + "_TLS_CERT_FILE"),
		KeyFile:    getenv(prefix + "_TLS_KEY_FILE"),
		ServerName: getenv(prefix + "_TLS_SERVER_NAME"),
	}
}
