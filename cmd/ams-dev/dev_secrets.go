package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// devSecretsFiles are the secrets of `ams-dev`, kept in its folder (mode
// 0600) so the API token and the devices' key survive restarts.
type devSecretsFiles struct {
	privateKeyFile   string // the cloud's RSA key, PKCS#1 PEM (1024 bits, as the firmware expects)
	publicKeyFile    string
	kekFile          string
	streamSecretFile string
	uploadSecretFile string
	apiTokenFile     string
	mediaHookKeyFile string // the key dev nginx passes to ams media-hook
	apiToken         string
	servicePassword  string // the roles' MQTT password, new every run (never written)
}

func devSecrets(dir string) (devSecretsFiles, error) {
	s := devSecretsFiles{
		privateKeyFile:   filepath.Join(dir, "cloud_rsa_private.pem"),
		publicKeyFile:    filepath.Join(dir, "cloud_rsa_public.pem"),
		kekFile:          filepath.Join(dir, "kek.hex"),
		streamSecretFile: filepath.Join(dir, "stream.secret"),
		uploadSecretFile: filepath.Join(dir, "upload.secret"),
		apiTokenFile:     filepath.Join(dir, "api.token"),
		mediaHookKeyFile: filepath.Join(dir, "media-hook.key"),
	}
	if !nonEmpty(s.privateKeyFile) || !nonEmpty(s.publicKeyFile) {
		key, err := rsa.GenerateKey(rand.Reader, 1024)
		if err != nil {
			return s, fmt.Errorf("generating the cloud's RSA key: %w", err)
		}
		priv := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
		pub := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&key.PublicKey)})
		if err := os.WriteFile(s.privateKeyFile, priv, 0o600); err != nil {
			return s, err
		}
		if err := os.WriteFile(s.publicKeyFile, pub, 0o644); err != nil {
			return s, err
		}
	}
	for _, f := range []struct {
		path string
		n    int
	}{{s.kekFile, 32}, {s.streamSecretFile, 32}, {s.uploadSecretFile, 32}, {s.apiTokenFile, 16}, {s.mediaHookKeyFile, 16}} {
		if nonEmpty(f.path) {
			continue
		}
		if err := os.WriteFile(f.path, []byte(randomHex(f.n)+"\n"), 0o600); err != nil {
			return s, err
		}
	}
	tok, err := os.ReadFile(s.apiTokenFile)
	if err != nil {
		return s, err
	}
	s.apiToken = strings.TrimSpace(string(tok))
	s.servicePassword = randomHex(16)
	return s, nil
}

func nonEmpty(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Size() > 0
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}
