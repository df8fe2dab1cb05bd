package deviceauth

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Device token hashes.
//
// A registration stores a device token as a salted, slow hash, written
// with its parameters so they can change without a migration:
//
//	$pbkdf2-sha256$i=<iterations>$<salt, base64 raw std>$<key, base64 raw std>
//
// PBKDF2-HMAC-SHA256 (crypto/pbkdf2), 16-byte random salt, 32-byte key.
// Registrations written before it hold the bare lower-case hex sha256 of
// the token (schemas.Registration.TokenSHA256); such a value still
// verifies. When a registration is rewritten without a new token, the old
// sha256 is wrapped instead of kept:
//
//	$pbkdf2-sha256-hex-sha256$i=<iterations>$<salt>$<key>
//
// is PBKDF2 of the hex sha256 of the token, so every stored value becomes
// slow to attack without anyone knowing the plain token.
const (
	hashScheme        = "pbkdf2-sha256"
	hashSchemeWrapped = "pbkdf2-sha256-hex-sha256"
	// HashIterations is the PBKDF2 iteration count of new hashes. Device
	// tokens are at least MinDeviceTokenLen bytes and meant to be random,
	// and the broker verifies one at every login of every camera, so the
	// count trades brute-force cost against a fleet's reconnect storm
	// (BenchmarkVerifyToken: the cost of one login).
	HashIterations = 10000
	hashSaltLen    = 16
	hashKeyLen     = 32
	// maxIterations bounds the count a stored hash may ask for (a forged
	// registration could otherwise make every login burn CPU).
	maxIterations = 1_000_000
)

// MinDeviceTokenLen is the shortest device token a registration accepts.
const MinDeviceTokenLen = 16

// ErrHash is returned (wrapped) for a malformed stored hash.
var ErrHash = errors.New("deviceauth: token hash")

// HashToken returns the salted slow hash of a device token to store in a
// registration (schemas.Registration.TokenHash).
func HashToken(token string) (string, error) {
	return hashWith(hashScheme, token, HashIterations)
}

// UpgradeHash returns stored as a slow hash: a legacy hex sha256 becomes a
// wrapped PBKDF2 of it; a slow hash or "" is returned as is.
func UpgradeHash(stored string) (string, error) {
	if !isLegacy(stored) {
		return stored, nil
	}
	return hashWith(hashSchemeWrapped, strings.ToLower(stored), HashIterations)
}

// IsSlowHash reports whether stored is one of the PBKDF2 forms (not a legacy sha256).
func IsSlowHash(stored string) bool {
	_, _, _, _, err := parseHash(stored)
	return err == nil
}

func hashWith(scheme, secret string, iter int) (string, error) {
	salt := make([]byte, hashSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("deviceauth: salt: %w", err)
	}
	key, err := pbkdf2.Key(sha256.New, secret, salt, iter, hashKeyLen)
	if err != nil {
		return "", fmt.Errorf("deviceauth: pbkdf2: %w", err)
	}
	enc := base64.RawStdEncoding
	return fmt.Sprintf("$%s$i=%d$%s$%s", scheme, iter, enc.EncodeToString(salt), enc.EncodeToString(key)), nil
}

func isLegacy(stored string) bool {
	if len(stored) != 2*sha256.Size {
		return false
	}
	_, err := hex.DecodeString(stored)
	return err == nil
}

func parseHash(stored string) (scheme string, iter int, salt, key []byte, err error) {
	parts := strings.Split(stored, "$")
	// "", scheme, "i=N", salt, key
	if len(parts) != 5 || parts[0] != "" || (parts[1] != hashScheme && parts[1] != hashSchemeWrapped) {
		return "", 0, nil, nil, fmt.Errorf("%w: unknown format", ErrHash)
	}
	n, ok := strings.CutPrefix(parts[2], "i=")
	if iter, err = strconv.Atoi(n); !ok || err != nil || iter < 1 || iter > maxIterations {
		return "", 0, nil, nil, fmt.Errorf("%w: bad iteration count", ErrHash)
	}
	enc := base64.RawStdEncoding
	if salt, err = enc.DecodeString(parts[3]); err != nil || len(salt) < 8 {
		return "", 0, nil, nil, fmt.Errorf("%w: bad salt", ErrHash)
	}
	if key, err = enc.DecodeString(parts[4]); err != nil || len(key) < 16 || len(key) > 64 {
		return "", 0, nil, nil, fmt.Errorf("%w: bad key", ErrHash)
	}
	return parts[1], iter, salt, key, nil
}

// VerifyToken reports whether token matches stored: a slow hash (either
// form) or a legacy hex sha256. A malformed or empty stored value never
// matches. The final comparison is constant-time.
func VerifyToken(stored, token string) bool {
	if isLegacy(stored) {
		got := TokenSHA256(token)
		return subtle.ConstantTimeCompare([]byte(got), []byte(strings.ToLower(stored))) == 1
	}
	scheme, iter, salt, key, err := parseHash(stored)
	if err != nil {
		return false
	}
	secret := token
	if scheme == hashSchemeWrapped {
		secret = TokenSHA256(token)
	}
	got, err := pbkdf2.Key(sha256.New, secret, salt, iter, len(key))
	if err != nil {
		return false
	}
	return subtle.ConstantTimeCompare(got, key) == 1
}
