package protocol

import (
	"crypto/md5"
	"crypto/rsa"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"strconv"
	"strings"
)

// Lengths of the handshake strings, in bytes (ASCII characters).
const (
	HandshakeKeyLen = 32 // key1, key2
	HandshakeIVLen  = 16 // iv1, iv2
)

// ParsePrivateKeys parses the cloud's RSA private keys. Each argument may hold
// several PEM blocks, each "RSA PRIVATE KEY" (PKCS#1) or "PRIVATE KEY"
// (PKCS#8, RSA only). Keys are returned in order; ParseHandshake tries them in
// that order, so list the current key first and older ones after it during a
// rotation. Any other block type, an encrypted block, a non-RSA key or an
// argument without a PEM block fails with bad_key. Errors never include key
// material.
func ParsePrivateKeys(pemData ...[]byte) ([]*rsa.PrivateKey, error) {
	var keys []*rsa.PrivateKey
	for i, data := range pemData {
		found := 0
		rest := data
		for {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			found++
			where := "argument " + strconv.Itoa(i) + " block " + strconv.Itoa(found)
			if len(block.Headers) != 0 {
				return nil, newError(ReasonBadKey, where+": PEM headers (encrypted keys) are not supported")
			}
			switch block.Type {
			case "RSA PRIVATE KEY":
				k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
				if err != nil {
					return nil, wrapError(ReasonBadKey, where+": PKCS#1 private key does not parse", err)
				}
				keys = append(keys, k)
			case "PRIVATE KEY":
				k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
				if err != nil {
					return nil, wrapError(ReasonBadKey, where+": PKCS#8 private key does not parse", err)
				}
				rk, ok := k.(*rsa.PrivateKey)
				if !ok {
					return nil, newError(ReasonBadKey, where+": PKCS#8 key is not an RSA key")
				}
				keys = append(keys, rk)
			default:
				return nil, newError(ReasonBadKey, where+": unsupported PEM block type "+strconv.Quote(block.Type))
			}
		}
		if found == 0 {
			return nil, newError(ReasonBadKey, "argument "+strconv.Itoa(i)+": no PEM block")
		}
	}
	if len(keys) == 0 {
		return nil, newError(ReasonBadKey, "no private key given")
	}
	return keys, nil
}

// ParsePublicKey parses the cloud's RSA public key from the first PEM block
// of pemData: "RSA PUBLIC KEY" (PKCS#1) or "PUBLIC KEY" (PKIX, RSA only).
// Anything else fails with bad_key.
func ParsePublicKey(pemData []byte) (*rsa.PublicKey, error) {
	block, _ := pem.Decode(pemData)
	if block == nil {
		return nil, newError(ReasonBadKey, "no PEM block")
	}
	switch block.Type {
	case "RSA PUBLIC KEY":
		k, err := x509.ParsePKCS1PublicKey(block.Bytes)
		if err != nil {
			return nil, wrapError(ReasonBadKey, "PKCS#1 public key does not parse", err)
		}
		return k, nil
	case "PUBLIC KEY":
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, wrapError(ReasonBadKey, "PKIX public key does not parse", err)
		}
		rk, ok := k.(*rsa.PublicKey)
		if !ok {
			return nil, newError(ReasonBadKey, "PKIX key is not an RSA key")
		}
		return rk, nil
	}
	return nil, newError(ReasonBadKey, "unsupported PEM block type "+strconv.Quote(block.Type))
}

// HandshakeRequest is what a device sends in a handshake: its AES key1 (32
// ASCII chars) and iv1 (16 ASCII chars). String redacts both.
type HandshakeRequest struct {
	Key1, IV1 string
}

// String redacts the key material.
func (r HandshakeRequest) String() string { return "HandshakeRequest{REDACTED}" }

// GoString redacts the key material.
func (r HandshakeRequest) GoString() string { return "protocol.HandshakeRequest{REDACTED}" }

// HandshakeReply is the cloud's answer to a handshake: key2, iv2, the sData
// of the reply frame (iCmdType 0) and the session both sides now share.
// String redacts the key material.
type HandshakeReply struct {
	Key2, IV2 string
	SData     string
	Session   SessionKey
}

// String redacts the key material.
func (r HandshakeReply) String() string { return "HandshakeReply{REDACTED}" }

// GoString redacts the key material.
func (r HandshakeReply) GoString() string { return "protocol.HandshakeReply{REDACTED}" }

// ParseHandshake decodes the sData of a device's handshake request:
// hex -> RSA PKCS#1 v1.5 decryption -> "key1:iv1:md5hex(key1:iv1)". The keys
// are tried in turn (key rotation); nil keys are skipped. It fails with
// bad_hex, bad_rsa (no key decrypts the block, or no key given),
// bad_handshake (not exactly three ':'-separated parts, key1 not 32 or iv1 not
// 16 printable ASCII characters) or bad_md5 (the md5 is not the lowercase hex
// md5 of "key1:iv1", as the seed required).
//
// PKCS#1 v1.5 encryption is what the firmware speaks; its decryption is an
// oracle for an attacker who can observe whether it succeeded (the cloud
// answers a valid handshake), a weakness of the firmware protocol that this
// package cannot remove.
func ParseHandshake(keys []*rsa.PrivateKey, sData string) (HandshakeRequest, error) {
	if len(sData) == 0 {
		return HandshakeRequest{}, newError(ReasonBadHex, "sData is empty")
	}
	ct, err := appendHexDecode(nil, sData)
	if err != nil {
		return HandshakeRequest{}, err
	}
	var firstErr error
	tried := 0
	for _, k := range keys {
		if k == nil || k.N == nil || k.Size() != len(ct) {
			continue
		}
		tried++
		// Deprecated in Go, but PKCS#1 v1.5 is what the firmware speaks.
		//lint:ignore SA1019 the firmware's key exchange is RSA PKCS#1 v1.5 (cannot be changed on the device)
		pt, err := rsa.DecryptPKCS1v15(nil, k, ct)
		if err != nil {
			continue
		}
		key1, iv1, err := parseKeyIVMD5(pt)
		clear(pt)
		if err != nil {
			// A wrong key decrypts to valid padding with a small probability;
			// keep trying the other keys, and report this if none fits.
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		return HandshakeRequest{Key1: key1, IV1: iv1}, nil
	}
	if firstErr != nil {
		return HandshakeRequest{}, firstErr
	}
	if tried == 0 {
		return HandshakeRequest{}, newError(ReasonBadRSA, "no private key of the block's size ("+strconv.Itoa(len(ct))+" bytes)")
	}
	return HandshakeRequest{}, newError(ReasonBadRSA, "no private key decrypts the block")
}

// parseKeyIVMD5 parses "key:iv:md5hex(key:iv)" with a 32-char key and 16-char
// iv of printable ASCII. Errors never include the content.
func parseKeyIVMD5(b []byte) (key, iv string, err error) {
	s := string(b)
	k, rest, ok1 := strings.Cut(s, ":")
	v, sum, ok2 := strings.Cut(rest, ":")
	if !ok1 || !ok2 || strings.IndexByte(sum, ':') >= 0 {
		return "", "", newError(ReasonBadHandshake, "not three ':'-separated parts")
	}
	if err := checkKeyIV(k, v); err != nil {
		return "", "", err
	}
	want := md5Hex(k, v)
	if subtle.ConstantTimeCompare([]byte(sum), want[:]) != 1 {
		return "", "", newError(ReasonBadMD5, "md5 does not match key and iv")
	}
	return k, v, nil
}

func checkKeyIV(key, iv string) error {
	if len(key) != HandshakeKeyLen {
		return newError(ReasonBadHandshake, "key is "+strconv.Itoa(len(key))+" bytes, want 32")
	}
	if len(iv) != HandshakeIVLen {
		return newError(ReasonBadHandshake, "iv is "+strconv.Itoa(len(iv))+" bytes, want 16")
	}
	if !printableNoColon(key) || !printableNoColon(iv) {
		return newError(ReasonBadHandshake, "key or iv has characters other than printable ASCII")
	}
	return nil
}

// printableNoColon reports whether s holds only '!'..'~' other than ':'.
func printableNoColon(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c > '~' || c == ':' {
			return false
		}
	}
	return true
}

func md5Hex(key, iv string) [32]byte {
	h := md5.New()
	h.Write([]byte(key))
	h.Write([]byte{':'})
	h.Write([]byte(iv))
	var sum [md5.Size]byte
	var out [32]byte
	hex.Encode(out[:], h.Sum(sum[:0]))
	return out
}

func keyIVMD5(key, iv string) []byte {
	sum := md5Hex(key, iv)
	b := make([]byte, 0, len(key)+len(iv)+2+len(sum))
	b = append(b, key...)
	b = append(b, ':')
	b = append(b, iv...)
	b = append(b, ':')
	return append(b, sum[:]...)
}

// randomHex returns 2*n lowercase hex characters from n bytes of rand.
func randomHex(rand io.Reader, n int) (string, error) {
	if rand == nil {
		return "", errors.New("protocol: nil random source")
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(rand, b); err != nil {
		return "", errors.Join(errors.New("protocol: reading random bytes"), err)
	}
	return hex.EncodeToString(b), nil
}

// Reply answers the handshake with a fresh key2 (32 lowercase hex chars) and
// iv2 (16) read from rand (crypto/rand.Reader in production). A failing
// random source is returned as is (ReasonOf reports "internal").
func (r HandshakeRequest) Reply(rand io.Reader) (HandshakeReply, error) {
	key2, err := randomHex(rand, HandshakeKeyLen/2)
	if err != nil {
		return HandshakeReply{}, err
	}
	iv2, err := randomHex(rand, HandshakeIVLen/2)
	if err != nil {
		return HandshakeReply{}, err
	}
	return r.ReplyWith(key2, iv2)
}

// ReplyWith is Reply with a given key2 and iv2: it is deterministic, so it
// reproduces a reply byte for byte (tests, re-sending the same reply). r's
// and the given key and iv must have the lengths and characters
// ParseHandshake accepts, else bad_handshake.
func (r HandshakeRequest) ReplyWith(key2, iv2 string) (HandshakeReply, error) {
	if err := checkKeyIV(r.Key1, r.IV1); err != nil {
		return HandshakeReply{}, err
	}
	if err := checkKeyIV(key2, iv2); err != nil {
		return HandshakeReply{}, err
	}
	pt := keyIVMD5(key2, iv2)
	sData := EncryptWith([]byte(r.Key1), []byte(r.IV1), pt)
	clear(pt)
	return HandshakeReply{
		Key2:    key2,
		IV2:     iv2,
		SData:   sData,
		Session: DeriveSession(r.Key1, r.IV1, key2, iv2),
	}, nil
}

// NewHandshake is the device side of the handshake: it picks key1 (32
// lowercase hex chars) and iv1 (16) from rand and returns the request and
// the sData of the handshake frame, RSA PKCS#1 v1.5 encrypted to pub. (Since
// Go 1.26 the RSA padding itself always uses crypto/rand.) A nil or unusable
// public key fails with bad_key.
func NewHandshake(pub *rsa.PublicKey, rand io.Reader) (req HandshakeRequest, sData string, err error) {
	if pub == nil || pub.N == nil {
		return HandshakeRequest{}, "", newError(ReasonBadKey, "no public key")
	}
	key1, err := randomHex(rand, HandshakeKeyLen/2)
	if err != nil {
		return HandshakeRequest{}, "", err
	}
	iv1, err := randomHex(rand, HandshakeIVLen/2)
	if err != nil {
		return HandshakeRequest{}, "", err
	}
	pt := keyIVMD5(key1, iv1)
	// Deprecated in Go, but PKCS#1 v1.5 is what the firmware speaks.
	//lint:ignore SA1019 the firmware's key exchange is RSA PKCS#1 v1.5 (cannot be changed on the device)
	ct, err := rsa.EncryptPKCS1v15(rand, pub, pt)
	clear(pt)
	if err != nil {
		return HandshakeRequest{}, "", wrapError(ReasonBadKey, "RSA encryption failed", err)
	}
	return HandshakeRequest{Key1: key1, IV1: iv1}, hex.EncodeToString(ct), nil
}

// VerifyReply is the device side of the handshake reply: it decrypts sData
// with key1/iv1, checks "key2:iv2:md5hex(key2:iv2)" like ParseHandshake does
// (bad_hex, bad_block_size, bad_padding, bad_handshake, bad_md5) and returns
// key2, iv2 and the session key.
func (r HandshakeRequest) VerifyReply(sData string) (key2, iv2 string, s SessionKey, err error) {
	if err := checkKeyIV(r.Key1, r.IV1); err != nil {
		return "", "", SessionKey{}, err
	}
	pt, err := DecryptWith([]byte(r.Key1), []byte(r.IV1), sData)
	if err != nil {
		return "", "", SessionKey{}, err
	}
	key2, iv2, err = parseKeyIVMD5(pt)
	clear(pt)
	if err != nil {
		return "", "", SessionKey{}, err
	}
	return key2, iv2, DeriveSession(r.Key1, r.IV1, key2, iv2), nil
}
