// Package ks3sign implements the request signature of Kingsoft KS3's object
// store API (the store the original service pointed cameras at), in the S3
// v2 HMAC style that KS3's own SDKs use:
//
//	Authorization: KSS {AccessKey}:{Signature}
//	Signature    = base64(HMAC-SHA1(SecretKey, StringToSign))
//	StringToSign = Method + "\n"
//	             + Content-MD5 + "\n"
//	             + Content-Type + "\n"
//	             + Date + "\n"
//	             + CanonicalizedKssHeaders      (each "name:value\n", names lowercased, sorted)
//	             + CanonicalizedResource        ("/" + bucket + "/" + key, then "?" + sub-resources)
//
// Date is the Date header, or "" when an x-kss-date header is sent (which is
// then signed among the x-kss headers). The key in the resource is
// URL-encoded as KS3's SDKs do (path segments escaped, "/" kept; a leading
// "/" of the key becomes "%2F"). Only the sub-resources KS3 signs (acl,
// uploads, uploadId, partNumber, ...) enter the resource.
package ks3sign

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"sort"
	"strings"
)

// Scheme is the Authorization scheme word of a KS3 signature.
const Scheme = "KSS"

// signedSubresources are the query arguments KS3 includes in the resource.
var signedSubresources = map[string]bool{
	"acl": true, "cors": true, "defaultObjectAcl": true, "location": true, "logging": true,
	"partNumber": true, "policy": true, "requestPayment": true, "torrent": true,
	"versioning": true, "versionId": true, "versions": true, "website": true,
	"uploads": true, "uploadId": true, "response-content-type": true,
	"response-content-language": true, "response-expires": true,
	"response-cache-control": true, "response-content-disposition": true,
	"response-content-encoding": true, "delete": true, "lifecycle": true,
	"tagging": true, "restore": true,
}

// StringToSign returns the string a KS3 request signature covers.
func StringToSign(method string, h http.Header, bucket, key string, query url.Values) string {
	var b strings.Builder
	b.WriteString(method)
	b.WriteByte('\n')
	b.WriteString(h.Get("Content-Md5"))
	b.WriteByte('\n')
	b.WriteString(h.Get("Content-Type"))
	b.WriteByte('\n')
	if h.Get("X-Kss-Date") == "" {
		b.WriteString(h.Get("Date"))
	}
	b.WriteByte('\n')
	var names []string
	for name := range h {
		if l := strings.ToLower(name); strings.HasPrefix(l, "x-kss-") {
			names = append(names, l)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		b.WriteString(n)
		b.WriteByte(':')
		b.WriteString(strings.TrimSpace(strings.Join(h.Values(n), ",")))
		b.WriteByte('\n')
	}
	b.WriteString(Resource(bucket, key, query))
	return b.String()
}

// Resource is the canonicalized resource: "/" + bucket + "/" + encoded key,
// then the signed sub-resources sorted by name.
func Resource(bucket, key string, query url.Values) string {
	r := "/"
	if bucket != "" {
		r += bucket + "/"
	}
	r += EncodeKey(key)
	r = strings.ReplaceAll(r, "//", "/%2F")
	var subs []string
	for k := range query {
		if signedSubresources[k] {
			subs = append(subs, k)
		}
	}
	sort.Strings(subs)
	for i, k := range subs {
		if i == 0 {
			r += "?"
		} else {
			r += "&"
		}
		r += k
		if v := query.Get(k); v != "" {
			r += "=" + v
		}
	}
	return r
}

// EncodeKey escapes an object key as KS3's SDKs do: each path segment
// escaped, "/" kept.
func EncodeKey(key string) string {
	segs := strings.Split(key, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// Signature is base64(HMAC-SHA1(secretKey, stringToSign)).
func Signature(secretKey, stringToSign string) string {
	m := hmac.New(sha1.New, []byte(secretKey))
	m.Write([]byte(stringToSign))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Sign sets the Authorization header of req, a request on key in bucket
// (its Date or x-kss-date header must be set already).
func Sign(req *http.Request, bucket, key, accessKey, secretKey string) {
	sts := StringToSign(req.Method, req.Header, bucket, key, req.URL.Query())
	req.Header.Set("Authorization", Scheme+" "+accessKey+":"+Signature(secretKey, sts))
}

// ErrNoSignature is returned by ParseAuthorization for a header that is not
// "KSS {access key}:{signature}".
var ErrNoSignature = errors.New("ks3sign: Authorization is not KSS access-key:signature")

// ParseAuthorization splits "KSS {access key}:{signature}".
func ParseAuthorization(v string) (accessKey, signature string, err error) {
	rest, ok := strings.CutPrefix(v, Scheme+" ")
	if !ok {
		return "", "", ErrNoSignature
	}
	i := strings.LastIndexByte(rest, ':')
	if i <= 0 || i == len(rest)-1 {
		return "", "", ErrNoSignature
	}
	return rest[:i], rest[i+1:], nil
}

// Verify reports whether signature is the signature of stringToSign under
// secretKey, in constant time.
func Verify(secretKey, stringToSign, signature string) bool {
	return hmac.Equal([]byte(Signature(secretKey, stringToSign)), []byte(signature))
}
