package ks3sign

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// The expected signature was computed independently with Python's hmac and
// base64 modules over the string below (the KS3 SDKs' canonical string).
func TestSignatureVector(t *testing.T) {
	h := http.Header{}
	h.Set("Content-Type", "image/jpeg")
	h.Set("Date", "Sun, 29 Nov 2026 15:00:00 GMT")
	h.Set("X-Kss-Callbackurl", "http://ai.example.test/cb")
	h.Set("x-kss-callbackbody", "bucket=${bucket}&key=${key}")
	h.Set("User-Agent", "not signed")
	sts := StringToSign("PUT", h, "pictures", "ai_engine_imgs/0505050505050003/pic 1.jpg", nil)
	want := "PUT\n\nimage/jpeg\nSun, 29 Nov 2026 15:00:00 GMT\n" +
		"x-kss-callbackbody:bucket=${bucket}&key=${key}\nx-kss-callbackurl:http://ai.example.test/cb\n" +
		"/pictures/ai_engine_imgs/0505050505050003/pic%201.jpg"
	if sts != want {
		t.Fatalf("string to sign:\n%q\nwant\n%q", sts, want)
	}
	const sig = "mpuDEqukkzXY1x7RJ2L8SaQqk8w="
	if got := Signature("229c8a68157df02f62054484721e89f3d169fdc8", sts); got != sig {
		t.Fatalf("signature %s, want %s", got, sig)
	}
	if !Verify("229c8a68157df02f62054484721e89f3d169fdc8", sts, sig) || Verify("other", sts, sig) {
		t.Fatal("Verify disagrees with Signature")
	}
}

func TestXKssDateReplacesDate(t *testing.T) {
	h := http.Header{}
	h.Set("Date", "Sun, 29 Nov 2026 15:00:00 GMT")
	h.Set("X-Kss-Date", "Sun, 29 Nov 2026 15:00:01 GMT")
	sts := StringToSign("GET", h, "b", "k", nil)
	if !strings.HasPrefix(sts, "GET\n\n\n\nx-kss-date:Sun, 29 Nov 2026 15:00:01 GMT\n/b/k") {
		t.Fatalf("got %q", sts)
	}
}

func TestResourceSubresources(t *testing.T) {
	q := url.Values{"uploadId": {"u1"}, "partNumber": {"2"}, "x-ignored": {"1"}, "acl": {""}}
	if got := Resource("b", "a/b.jpg", q); got != "/b/a/b.jpg?acl&partNumber=2&uploadId=u1" {
		t.Fatalf("got %q", got)
	}
	if got := Resource("b", "/lead", nil); got != "/b/%2Flead" {
		t.Fatalf("leading slash: got %q", got)
	}
}

func TestSignAndParse(t *testing.T) {
	req, _ := http.NewRequest(http.MethodPut, "http://gw.test/pictures/p/sn/x.jpg", nil)
	req.Header.Set("Date", "Sun, 29 Nov 2026 15:00:00 GMT")
	Sign(req, "pictures", "p/sn/x.jpg", "ams1.1700000000.SN:1", "secret")
	ak, sig, err := ParseAuthorization(req.Header.Get("Authorization"))
	if err != nil || ak != "ams1.1700000000.SN:1" {
		t.Fatalf("parse: %q %v", ak, err)
	}
	if !Verify("secret", StringToSign("PUT", req.Header, "pictures", "p/sn/x.jpg", nil), sig) {
		t.Fatal("signed request does not verify")
	}
	for _, bad := range []string{"", "AWS a:b", "KSS ab", "KSS :sig", "KSS ak:"} {
		if _, _, err := ParseAuthorization(bad); err == nil {
			t.Errorf("ParseAuthorization(%q) accepted", bad)
		}
	}
}
