package protocol

import (
	"crypto/rsa"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

type vectorFile struct {
	SN              string `json:"sn"`
	ProtocolVersion string `json:"protocol_version"`
	Handshake       struct {
		DeviceKey1       string          `json:"device_key1"`
		DeviceIV1        string          `json:"device_iv1"`
		Request          json.RawMessage `json:"request"`
		RequestPlaintext string          `json:"request_plaintext"`
		CloudKey2        string          `json:"cloud_key2"`
		CloudIV2         string          `json:"cloud_iv2"`
		Reply            json.RawMessage `json:"reply"`
		ReplyPlaintext   string          `json:"reply_plaintext"`
		SessionIV        string          `json:"session_iv"`
		SessionKey       string          `json:"session_key"`
	} `json:"handshake"`
	Frames []vectorFrame `json:"frames"`
}

type vectorFrame struct {
	Direction string          `json:"direction"`
	Name      string          `json:"name"`
	Frame     json.RawMessage `json:"frame"`
	Plaintext string          `json:"plaintext"`
}

func loadVectors(tb testing.TB) vectorFile {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "vectors.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var v vectorFile
	if err := json.Unmarshal(b, &v); err != nil {
		tb.Fatal(err)
	}
	if len(v.Frames) == 0 {
		tb.Fatal("no frames in vectors.json")
	}
	return v
}

func readTestdata(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func testPrivateKeys(tb testing.TB) []*rsa.PrivateKey {
	tb.Helper()
	keys, err := ParsePrivateKeys(readTestdata(tb, "cloud_rsa_private.pem"))
	if err != nil {
		tb.Fatal(err)
	}
	return keys
}

func testPublicKey(tb testing.TB) *rsa.PublicKey {
	tb.Helper()
	pub, err := ParsePublicKey(readTestdata(tb, "cloud_rsa_public.pem"))
	if err != nil {
		tb.Fatal(err)
	}
	return pub
}

// vectorSession is the session key of the vectors' handshake.
func vectorSession(tb testing.TB, v vectorFile) SessionKey {
	tb.Helper()
	k, err := SessionFromStrings(v.Handshake.SessionKey, v.Handshake.SessionIV)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// knownReason reports whether r is a Reason this package may return for bad
// input.
func knownReason(r Reason) bool {
	switch r {
	case ReasonBadJSON, ReasonBadEnvelope, ReasonBadCmdType, ReasonBadHex,
		ReasonBadBlockSize, ReasonBadPadding, ReasonBadMD5, ReasonBadRSA,
		ReasonBadHandshake, ReasonBadUTF8, ReasonBadKey:
		return true
	}
	return false
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}
