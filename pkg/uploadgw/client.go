package uploadgw

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/ivms/ams/pkg/ks3sign"
)

// Grant is what a device learned from its 703 reply (the "http" object).
type Grant struct {
	HostURL     string `json:"hosturl"`
	AccessKey   string `json:"access_key"`
	SecretKey   string `json:"secret_key"`
	Bucket      string `json:"bucket_name"`
	ObjectPath  string `json:"object_path"`
	CallbackURL string `json:"callbackurl"`
}

// NewPutRequest builds the request a camera makes to upload body as name
// under its object path: KS3's PUT Object, path-style
// ({hosturl}/{bucket}/{object_path}/{name}), with Date, Content-Type,
// Content-MD5, the callback headers when the grant has a callback URL, and
// the KSS signature.
func NewPutRequest(ctx context.Context, g Grant, name, contentType string, body []byte, now time.Time) (*http.Request, error) {
	key := strings.Trim(g.ObjectPath, "/") + "/" + name
	u := strings.TrimRight(g.HostURL, "/") + "/" + g.Bucket + "/" + ks3sign.EncodeKey(key)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("upload request: %w", err)
	}
	req.ContentLength = int64(len(body))
	req.Header.Set("Date", now.UTC().Format(http.TimeFormat))
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Content-Md5", ContentMD5(body))
	if g.CallbackURL != "" {
		req.Header.Set("X-Kss-Callbackurl", g.CallbackURL)
		req.Header.Set("X-Kss-Callbackbody", "bucket=${bucket}&key=${key}&etag=${etag}&objectSize=${objectSize}&mimeType=${mimeType}")
	}
	ks3sign.Sign(req, g.Bucket, key, g.AccessKey, g.SecretKey)
	return req, nil
}

// Put uploads body as name with client and returns the answer's status and
// body (at most 64 KiB).
func Put(ctx context.Context, client *http.Client, g Grant, name, contentType string, body []byte) (int, string, error) {
	req, err := NewPutRequest(ctx, g, name, contentType, body, time.Now())
	if err != nil {
		return 0, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("upload %s: %w", name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(b), nil
}

// GrantFromReply reads the upload grant of a 703 reply body (its "http"
// object; processors/device/UPLOAD_CREDENTIALS.md).
func GrantFromReply(body []byte) (Grant, error) {
	var v struct {
		Forbidden int    `json:"isForBidden"`
		Method    string `json:"uploadmethod"`
		HTTP      Grant  `json:"http"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return Grant{}, fmt.Errorf("703 reply: %w", err)
	}
	if v.Forbidden != 0 || v.Method != "http" || v.HTTP.HostURL == "" || v.HTTP.AccessKey == "" {
		return Grant{}, fmt.Errorf("703 reply grants no http upload (isForBidden %d, uploadmethod %q)", v.Forbidden, v.Method)
	}
	return v.HTTP, nil
}

// TestJPEG returns a small valid JPEG picture (w×h, a gradient with a mark
// that depends on seed), what the simulated cameras upload.
func TestJPEG(w, h, seed int) []byte {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{R: uint8(x * 255 / w), G: uint8(y * 255 / h), B: uint8(seed * 37), A: 255})
		}
	}
	var b bytes.Buffer
	_ = jpeg.Encode(&b, img, &jpeg.Options{Quality: 70})
	return b.Bytes()
}
