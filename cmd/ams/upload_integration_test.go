//go:build integration

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ivms/ams/pkg/devkit/devicesim"
	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/pkg/testkit/mqttconform"
	"github.com/ivms/ams/pkg/uploadgw"
	"github.com/ivms/ams/processors/device"
)

// TestPictureUpload: simulated cameras get upload credentials in their 703
// reply from the real pipeline and upload a JPEG, the way the firmware talks
// to KS3, through `ams upload-gateway`, which forwards it with its own
// credentials to a real S3 server (gofakes3 over a directory, its own
// process, objects as files under DIR/buckets/BUCKET/) and then calls the
// upload callback. The object is found in the
// store under the camera's path and the callback names it. Refused: another
// camera's path, an expired key, a tampered signature, the device's
// credentials used directly against the store.
func TestPictureUpload(t *testing.T) {
	dir := t.TempDir()

	// The store: its own process, objects as files under storeDir.
	storeDir := filepath.Join(dir, "store")
	if err := os.MkdirAll(storeDir, 0o755); err != nil {
		t.Fatal(err)
	}
	s3bin := filepath.Join(dir, "s3server")
	if out, err := exec.Command("go", "build", "-o", s3bin, "github.com/ivms/ams/deploy/stack/s3server").CombinedOutput(); err != nil {
		t.Fatalf("build s3server: %v\n%s", err, out)
	}
	const storeAK = "GATEWAYKEY"
	s3Addr := startS3Server(t, s3bin, storeDir, "pictures", storeAK)

	// The callback receiver stands for the downstream AI service.
	var cbMu sync.Mutex
	var callbacks []url.Values
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		v, _ := url.ParseQuery(string(b))
		cbMu.Lock()
		callbacks = append(callbacks, v)
		cbMu.Unlock()
		fmt.Fprint(w, `{"accepted":true}`)
	}))
	defer cb.Close()

	gwAddr := fmt.Sprintf("127.0.0.1:%d", testPort(t))
	s := startStack(t, stackOptions{uploadHost: "http://" + gwAddr, uploadCallback: cb.URL + "/ai/callback"})

	secretFile, storeSecretFile := filepath.Join(dir, "upload.secret"), filepath.Join(dir, "s3.secret")
	e2eWriteFile(t, secretFile, string(s.uploadSecret)+"\n")
	e2eWriteFile(t, storeSecretFile, "gateway-store-secret\n")
	gw := mqttconform.StartProcess(t, "upload-gateway", amsBinary, "upload-gateway",
		"-ops-addr", "127.0.0.1:0",
		"-upload-gateway-addr", gwAddr,
		"-upload-signing-secret-file", secretFile,
		"-upload-bucket", s.uploadBucket,
		"-upload-object-path", s.uploadPath,
		"-upload-callback-url", cb.URL+"/ai/callback",
		"-s3-endpoint", s3Addr,
		"-s3-access-key", storeAK,
		"-s3-secret-key-file", storeSecretFile,
		"-s3-tls=false",
	)
	waitPort(t, gwAddr)

	// Two registered, bound cameras ask for upload parameters; the
	// simulator's uploader (what `ams simulate -sim-upload-pictures` runs)
	// uploads with each reply.
	prefix := e2eSNPrefix(t)
	sns := []string{simSN(prefix, 0), simSN(prefix, 1)}
	for _, sn := range sns {
		s.register(sn, e2eRegistration{Bound: true})
	}
	s.waitRegistered(sns...)
	up := newSimUploader(testLogger(t), 2)
	var gMu sync.Mutex
	grants := map[string]uploadgw.Grant{}
	f := s.startFleet(devicesim.Config{
		Devices:     2,
		SNPrefix:    prefix,
		Heartbeat:   time.Second,
		UploadEvery: 700 * time.Millisecond,
		UplinkQoS:   1,
		OnReceive: func(rc devicesim.Received) {
			up.onReceive(rc)
			if rc.Failure == "" && rc.Frame.CmdType == protocol.CmdAms && rc.Frame.AmsCmdType == protocol.AmsUploadParams {
				if g, err := uploadgw.GrantFromReply(rc.Body); err == nil {
					gMu.Lock()
					grants[rc.SN] = g
					gMu.Unlock()
				}
			}
		},
	})
	e2eWaitFor(t, 60*time.Second, "both cameras uploaded a picture and the callback ran", func() (bool, string) {
		cbMu.Lock()
		defer cbMu.Unlock()
		seen := map[string]bool{}
		for _, v := range callbacks {
			for _, sn := range sns {
				if strings.HasPrefix(v.Get("key"), s.uploadPath+"/"+sn+"/") {
					seen[sn] = true
				}
			}
		}
		return len(seen) == len(sns), fmt.Sprintf("stored %d refused %d failed %d; callbacks %v",
			up.ok.Load(), up.refused.Load(), up.failed.Load(), callbacks)
	})
	f.stop()
	up.close()
	if n := up.refused.Load() + up.failed.Load(); n != 0 {
		t.Errorf("%d simulated uploads refused or failed", n)
	}

	// The objects are in the store, under each camera's own path, as JPEGs.
	cbMu.Lock()
	for _, v := range callbacks {
		key := v.Get("key")
		b, err := os.ReadFile(filepath.Join(storeDir, "buckets", "pictures", filepath.FromSlash(key)))
		if err != nil {
			t.Errorf("callback names %s, not in the store: %v", key, err)
			continue
		}
		if !bytes.HasPrefix(b, []byte{0xff, 0xd8, 0xff}) || fmt.Sprint(len(b)) != v.Get("objectSize") {
			t.Errorf("%s: %d bytes, callback says %s; JPEG magic %x", key, len(b), v.Get("objectSize"), b[:min(3, len(b))])
		}
		if v.Get("bucket") != "pictures" || v.Get("etag") == "" || v.Get("mimeType") != "image/jpeg" {
			t.Errorf("callback body %v", v)
		}
	}
	cbMu.Unlock()

	// Refused cases, with the first camera's real grant as the starting point.
	gMu.Lock()
	g := grants[sns[0]]
	gMu.Unlock()
	ctx := context.Background()
	client := &http.Client{Timeout: 10 * time.Second}
	pic := uploadgw.TestJPEG(16, 16, 1)
	intoOther := g
	intoOther.ObjectPath = s.uploadPath + "/" + sns[1]
	expiredGrant := g
	old, err := device.SignedUploadCredentials{Secret: s.uploadSecret, TTL: time.Minute}.Grant(sns[0], s.uploadBucket,
		s.uploadPath+"/"+sns[0], time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	expiredGrant.AccessKey, expiredGrant.SecretKey = old.AccessKey, old.SecretKey
	tampered := g
	tampered.SecretKey = strings.Repeat("a", 40)
	direct := g // the device's credentials straight to the store
	direct.HostURL = "http://" + s3Addr
	refusals := []struct {
		name   string
		g      uploadgw.Grant
		status int
		reason string
	}{
		{"another camera's path", intoOther, http.StatusForbidden, uploadgw.ReasonOutsidePath},
		{"expired key", expiredGrant, http.StatusForbidden, uploadgw.ReasonExpired},
		{"tampered signature", tampered, http.StatusForbidden, uploadgw.ReasonBadSignature},
		{"device credentials at the store", direct, http.StatusForbidden, ""},
	}
	for _, c := range refusals {
		code, body, err := uploadgw.Put(ctx, client, c.g, "refused.jpg", "image/jpeg", pic)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if code != c.status || (c.reason != "" && !strings.Contains(body, "<Message>"+c.reason+"</Message>")) {
			t.Errorf("%s: %d %s, want %d %s", c.name, code, body, c.status, c.reason)
		}
	}
	if matches, _ := filepath.Glob(filepath.Join(storeDir, "buckets", "pictures", "*", "*", "refused.jpg")); len(matches) != 0 {
		t.Errorf("refused uploads reached the store: %v", matches)
	}
	metrics, err := gw.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	for _, reason := range []string{uploadgw.ReasonOutsidePath, uploadgw.ReasonExpired, uploadgw.ReasonBadSignature} {
		if !regexp.MustCompile(`ams_upload_gateway_requests_total\{reason="` + reason + `",result="refused"\} 1\b`).MatchString(metrics) {
			t.Errorf("gateway metrics lack one refusal %s:\n%s", reason, grepLines(metrics, "ams_upload_gateway_requests_total"))
		}
	}
}

// startS3Server runs the test object store and returns its address.
func startS3Server(t *testing.T, bin, dir, bucket, accessKey string) string {
	t.Helper()
	cmd := exec.Command(bin, "-addr", "127.0.0.1:0", "-dir", dir, "-bucket", bucket, "-access-key", accessKey)
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("start s3server: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); pw.Close() })
	addrC := make(chan string, 1)
	go func() {
		b := make([]byte, 4096)
		var seen []byte
		for {
			n, err := pr.Read(b)
			seen = append(seen, b[:n]...)
			if m := regexp.MustCompile(`s3server listening addr=(\S+)`).FindSubmatch(seen); m != nil {
				addrC <- string(m[1])
				_, _ = io.Copy(io.Discard, pr)
				return
			}
			if err != nil {
				return
			}
		}
	}()
	select {
	case a := <-addrC:
		return a
	case <-time.After(30 * time.Second):
		t.Fatal("s3server did not start within 30s")
		return ""
	}
}

// testLogger logs to the test's log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, nil))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
