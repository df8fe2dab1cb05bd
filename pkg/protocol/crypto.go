package protocol

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"log/slog"
	"strconv"
)

// SessionKey is a device's AES-256-CBC session key and iv, as their ASCII
// bytes: Key = s[16:48] and IV = s[0:16] of s = sha256hex(key1+iv1+key2+iv2).
// The same iv is used for every frame of the session (the firmware's choice).
// String, GoString and LogValue redact it, so it cannot leak through fmt or
// log/slog by accident; Strings returns the raw values for storage.
type SessionKey struct {
	Key [32]byte
	IV  [16]byte
}

// DeriveSession computes the session key both sides derive after a handshake.
func DeriveSession(key1, iv1, key2, iv2 string) SessionKey {
	h := sha256.New()
	h.Write([]byte(key1))
	h.Write([]byte(iv1))
	h.Write([]byte(key2))
	h.Write([]byte(iv2))
	var sum [sha256.Size]byte
	var s [2 * sha256.Size]byte
	hex.Encode(s[:], h.Sum(sum[:0]))
	var k SessionKey
	copy(k.IV[:], s[0:16])
	copy(k.Key[:], s[16:48])
	return k
}

// SessionFromStrings rebuilds a SessionKey from its key (32 chars) and iv (16
// chars) strings, e.g. as the seed stored them. It fails with bad_key if the
// lengths are wrong.
func SessionFromStrings(key, iv string) (SessionKey, error) {
	var k SessionKey
	if len(key) != len(k.Key) || len(iv) != len(k.IV) {
		return SessionKey{}, newError(ReasonBadKey, "session key must be 32 bytes and iv 16 bytes")
	}
	copy(k.Key[:], key)
	copy(k.IV[:], iv)
	return k, nil
}

// Strings returns the key and iv as strings (the inverse of
// SessionFromStrings). They are secrets: store them, never log them.
func (k SessionKey) Strings() (key, iv string) {
	return string(k.Key[:]), string(k.IV[:])
}

// IsZero reports whether k is the zero value (no session).
func (k SessionKey) IsZero() bool { return k == SessionKey{} }

// String redacts the key.
func (k SessionKey) String() string { return "SessionKey{REDACTED}" }

// GoString redacts the key.
func (k SessionKey) GoString() string { return "protocol.SessionKey{REDACTED}" }

// LogValue redacts the key in log/slog output.
func (k SessionKey) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// EncryptBody encrypts a body for the session: lowercase
// hex(AES-256-CBC(key, iv, PKCS7(plaintext))). It is deterministic: the same
// plaintext always gives the same sData (the firmware uses a fixed iv).
func EncryptBody(k SessionKey, plaintext []byte) string {
	return EncryptWith(k.Key[:], k.IV[:], plaintext)
}

// DecryptBody decrypts a body encrypted with the session key. It fails with
// bad_hex (not an even number of hex digits; either case is accepted),
// bad_block_size (empty, or not a multiple of 16 bytes) or bad_padding
// (last byte 0 or above 16, or the padding bytes differ). The plaintext is
// returned as is: it is not checked to be UTF-8 or JSON (see DecryptJSON).
func DecryptBody(k SessionKey, sData string) ([]byte, error) {
	return DecryptWith(k.Key[:], k.IV[:], sData)
}

// AppendDecryptBody is DecryptBody appending the plaintext to dst, so that a
// caller can reuse one buffer for many frames (pass buf[:0]). On error dst is
// returned unchanged.
func AppendDecryptBody(dst []byte, k SessionKey, sData string) ([]byte, error) {
	return appendDecrypt(dst, k.Key[:], k.IV[:], sData)
}

// EncryptWith is EncryptBody with an explicit AES key (16, 24 or 32 bytes)
// and iv (16 bytes); the handshake uses it with the device's key1 and iv1.
// It returns "" if the key or iv has the wrong length (never a valid sData).
func EncryptWith(key, iv []byte, plaintext []byte) string {
	if len(iv) != aes.BlockSize {
		return ""
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return ""
	}
	pad := aes.BlockSize - len(plaintext)%aes.BlockSize
	n := len(plaintext) + pad
	// One buffer: the hex text in buf[:2n], the ciphertext in buf[2n:].
	buf := make([]byte, 3*n)
	ct := buf[2*n:]
	copy(ct, plaintext)
	for i := len(plaintext); i < n; i++ {
		ct[i] = byte(pad)
	}
	cbcEncrypt(block, iv, ct)
	hex.Encode(buf[:2*n], ct)
	return string(buf[:2*n])
}

// DecryptWith is DecryptBody with an explicit AES key (16, 24 or 32 bytes)
// and iv (16 bytes). A key or iv of the wrong length fails with bad_key.
func DecryptWith(key, iv []byte, sData string) ([]byte, error) {
	return appendDecrypt(nil, key, iv, sData)
}

func appendDecrypt(dst, key, iv []byte, sData string) ([]byte, error) {
	if len(iv) != aes.BlockSize {
		return dst, newError(ReasonBadKey, "iv must be 16 bytes")
	}
	switch len(key) {
	case 16, 24, 32:
	default:
		return dst, newError(ReasonBadKey, "AES key must be 16, 24 or 32 bytes")
	}
	if len(sData) == 0 {
		return dst, newError(ReasonBadBlockSize, "sData is empty")
	}
	start := len(dst)
	out, err := appendHexDecode(dst, sData)
	if err != nil {
		return dst, err
	}
	ct := out[start:]
	if len(ct)%aes.BlockSize != 0 {
		return dst, newError(ReasonBadBlockSize, "ciphertext of "+strconv.Itoa(len(ct))+" bytes is not a multiple of 16")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return dst, wrapError(ReasonBadKey, "AES key rejected", err)
	}
	cbcDecrypt(block, iv, ct)
	n, ok := unpadLen(ct)
	if !ok {
		clear(ct) // do not leave a wrongly decrypted block behind in dst's spare capacity
		return dst, newError(ReasonBadPadding, "invalid PKCS#7 padding")
	}
	return out[:start+n], nil
}

// cbcEncrypt encrypts b (a multiple of the block size) in place in CBC mode,
// like cipher.NewCBCEncrypter(block, iv).CryptBlocks(b, b) without its
// allocations.
func cbcEncrypt(block cipher.Block, iv []byte, b []byte) {
	prev := iv
	for len(b) >= aes.BlockSize {
		blk := b[:aes.BlockSize]
		subtle.XORBytes(blk, blk, prev)
		block.Encrypt(blk, blk)
		prev = blk
		b = b[aes.BlockSize:]
	}
}

// cbcDecrypt decrypts b (a multiple of the block size) in place in CBC mode.
// It is cipher.NewCBCDecrypter(block, iv).CryptBlocks(b, b) without the
// allocations of the cipher.BlockMode.
func cbcDecrypt(block cipher.Block, iv []byte, b []byte) {
	var prev, cur [aes.BlockSize]byte
	copy(prev[:], iv)
	for len(b) >= aes.BlockSize {
		blk := b[:aes.BlockSize]
		copy(cur[:], blk)
		block.Decrypt(blk, blk)
		subtle.XORBytes(blk, blk, prev[:])
		prev = cur
		b = b[aes.BlockSize:]
	}
}

// unpadLen checks the PKCS#7 padding of b (a non-empty multiple of 16 bytes)
// and returns the length of the data before it. The check looks at all 16
// trailing bytes whatever the pad length.
func unpadLen(b []byte) (int, bool) {
	p := int(b[len(b)-1])
	tail := b[len(b)-aes.BlockSize:]
	bad := 0
	if p == 0 || p > aes.BlockSize {
		bad = 1
	}
	for i, c := range tail {
		// positions inside the padding must equal p
		if aes.BlockSize-i <= p && int(c) != p {
			bad = 1
		}
	}
	if bad != 0 {
		return 0, false
	}
	return len(b) - p, true
}

// appendHexDecode appends the bytes encoded by the hex string s to dst.
// Upper- and lowercase digits are accepted, nothing else (no spaces).
func appendHexDecode(dst []byte, s string) ([]byte, error) {
	if len(s)%2 != 0 {
		return dst, newError(ReasonBadHex, "odd number of hex digits ("+strconv.Itoa(len(s))+")")
	}
	start := len(dst)
	dst = growLen(dst, len(s)/2)
	out := dst[start:]
	s = s[:2*len(out)] // lets the compiler drop bounds checks below
	for i := range out {
		hi, lo := hexValue[s[2*i]], hexValue[s[2*i+1]]
		if hi|lo > 0xf {
			off := 2 * i
			if hi <= 0xf {
				off++
			}
			return dst[:start], newError(ReasonBadHex, "invalid hex digit at offset "+strconv.Itoa(off))
		}
		out[i] = hi<<4 | lo
	}
	return dst, nil
}

// growLen extends b by n bytes, reallocating only if its capacity is short.
func growLen(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b[:len(b)+n]
	}
	nb := make([]byte, len(b)+n)
	copy(nb, b)
	return nb
}

// fromHexChar returns the value of the hex digit c.
func fromHexChar(c byte) (byte, bool) {
	v := hexValue[c]
	return v, v <= 0xf
}

// hexValue maps a byte to its hex digit value, 0xff for a non-digit.
const hexValue = "" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\xff\xff\xff\xff\xff\xff" +
	"\xff\x0a\x0b\x0c\x0d\x0e\x0f\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\x0a\x0b\x0c\x0d\x0e\x0f\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
