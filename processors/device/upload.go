package device

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"
)

// DefaultUploadCredentialTTL is how long signed upload credentials last.
const DefaultUploadCredentialTTL = 12 * time.Hour

// UploadConfig is how the processor answers a device's picture upload
// parameters request (iCmdType 7 / 703). Each device is told to upload under
// its own object path, ObjectPath/{sn}. See UPLOAD_CREDENTIALS.md.
type UploadConfig struct {
	HostURL     string // object storage (or upload gateway) endpoint, "hosturl"
	Bucket      string // "bucket_name"
	ObjectPath  string // path prefix; the device gets ObjectPath/{sn}
	CallbackURL string // "callbackurl"
	// Credentials gives the access / secret key pair sent to the device.
	// Nil: upload parameter requests are not answered.
	Credentials UploadCredentials
	// AllowLongTermKeys must be set to use credentials whose LongTerm
	// reports true (StaticUploadKeys): the fallback that sends the same
	// long-term object storage keys to every device, as the seed did. New
	// refuses them otherwise.
	AllowLongTermKeys bool
}

func (c UploadConfig) enabled() bool { return c.Credentials != nil && c.HostURL != "" }

func (c UploadConfig) validate() error {
	if c.Credentials == nil {
		return nil
	}
	if c.HostURL == "" || c.Bucket == "" {
		return errors.New("device: upload parameters need a host URL and a bucket")
	}
	if c.Credentials.LongTerm() && !c.AllowLongTermKeys {
		return errors.New("device: long-term upload keys are sent to every device; set AllowLongTermKeys to use them anyway")
	}
	return nil
}

// objectPath is the path a device uploads under.
func (c UploadConfig) objectPath(sn string) string {
	if c.ObjectPath == "" {
		return sn
	}
	return path.Join(c.ObjectPath, sn)
}

// UploadGrant is the credential pair a device gets.
type UploadGrant struct {
	AccessKey string
	SecretKey string
	Expires   time.Time // zero for long-term keys
}

// UploadCredentials gives devices credentials for uploading pictures.
// Implementations run inside the processor: they must be pure and fast (no
// I/O), and must never log the keys.
type UploadCredentials interface {
	// Grant returns credentials that let device sn upload into bucket under
	// objectPath, issued at now.
	Grant(sn, bucket, objectPath string, now time.Time) (UploadGrant, error)
	// LongTerm reports whether the credentials are the same long-term keys
	// for every device (see UploadConfig.AllowLongTermKeys).
	LongTerm() bool
}

// SignedUploadCredentials issues short-lived credentials scoped to one
// device's object path, derived from a secret shared with the upload
// gateway; no object storage key ever reaches a device:
//
//	access_key = "ams1." + exp + "." + sn        (exp: unix seconds, decimal)
//	secret_key = first 40 hex digits of
//	             hex(HMAC-SHA256(Secret, "ams-upload-v1\n" + access_key + "\n" + bucket + "\n" + object_path))
//
// The gateway parses the access key (ParseUploadAccessKey), refuses it after
// exp, recomputes object_path from the sn and the secret key with
// DeriveUploadSecret, verifies the device's request signature with it, and
// allows writes only under object_path. UPLOAD_CREDENTIALS.md has the detail.
type SignedUploadCredentials struct {
	Secret []byte        // at least 16 bytes, shared with the upload gateway
	TTL    time.Duration // 0 means DefaultUploadCredentialTTL
}

// Grant implements UploadCredentials.
func (c SignedUploadCredentials) Grant(sn, bucket, objectPath string, now time.Time) (UploadGrant, error) {
	if len(c.Secret) < 16 {
		return UploadGrant{}, errors.New("device: upload signing secret must be at least 16 bytes")
	}
	ttl := c.TTL
	if ttl <= 0 {
		ttl = DefaultUploadCredentialTTL
	}
	exp := now.Add(ttl).Unix()
	ak := "ams1." + strconv.FormatInt(exp, 10) + "." + sn
	return UploadGrant{
		AccessKey: ak,
		SecretKey: DeriveUploadSecret(c.Secret, ak, bucket, objectPath),
		Expires:   time.Unix(exp, 0).UTC(),
	}, nil
}

// LongTerm implements UploadCredentials: false.
func (SignedUploadCredentials) LongTerm() bool { return false }

// DeriveUploadSecret is the secret key of a signed upload access key (see
// SignedUploadCredentials).
func DeriveUploadSecret(secret []byte, accessKey, bucket, objectPath string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("ams-upload-v1\n"))
	m.Write([]byte(accessKey))
	m.Write([]byte{'\n'})
	m.Write([]byte(bucket))
	m.Write([]byte{'\n'})
	m.Write([]byte(objectPath))
	return hex.EncodeToString(m.Sum(nil))[:40]
}

// ParseUploadAccessKey splits a signed upload access key into its device sn
// and expiry.
func ParseUploadAccessKey(accessKey string) (sn string, exp time.Time, err error) {
	rest, ok := strings.CutPrefix(accessKey, "ams1.")
	if !ok {
		return "", time.Time{}, errors.New("device: not an ams1 upload access key")
	}
	e, sn, ok := strings.Cut(rest, ".")
	n, perr := strconv.ParseInt(e, 10, 64)
	if !ok || sn == "" || perr != nil {
		return "", time.Time{}, errors.New("device: malformed upload access key")
	}
	return sn, time.Unix(n, 0).UTC(), nil
}

// StaticUploadKeys is the fallback that hands every device the same
// long-term object storage keys, as the seed did. Anyone who reads one
// device's memory or traffic gets write access to the whole bucket for as
// long as the keys live. It needs UploadConfig.AllowLongTermKeys.
type StaticUploadKeys struct {
	AccessKey string
	SecretKey string
}

// Grant implements UploadCredentials.
func (k StaticUploadKeys) Grant(string, string, string, time.Time) (UploadGrant, error) {
	if k.AccessKey == "" || k.SecretKey == "" {
		return UploadGrant{}, errors.New("device: static upload keys are empty")
	}
	return UploadGrant{AccessKey: k.AccessKey, SecretKey: k.SecretKey}, nil
}

// LongTerm implements UploadCredentials: true.
func (StaticUploadKeys) LongTerm() bool { return true }

// String redacts the secret key.
func (k StaticUploadKeys) String() string {
	return fmt.Sprintf("StaticUploadKeys{AccessKey:%q SecretKey:REDACTED}", k.AccessKey)
}

// GoString redacts the secret key.
func (k StaticUploadKeys) GoString() string { return k.String() }

// String redacts the secret.
func (c SignedUploadCredentials) String() string {
	return fmt.Sprintf("SignedUploadCredentials{TTL:%v Secret:REDACTED}", c.TTL)
}

// GoString redacts the secret.
func (c SignedUploadCredentials) GoString() string { return c.String() }

// String redacts the secret.
func (c StreamConfig) String() string {
	return fmt.Sprintf("StreamConfig{BaseURL:%q DefaultExpiry:%v MaxExpiry:%v Secret:REDACTED}",
		c.BaseURL, c.DefaultExpiry, c.MaxExpiry)
}
