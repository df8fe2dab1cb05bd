// Command s3server is the S3-compatible object store of the upload tests: the
// S3 protocol implementation of github.com/johannesboyne/gofakes3 over a
// directory on disk (objects are files under -dir/buckets/BUCKET/), behind a check that every
// request is signed (AWS signature v4) with the one configured access key.
// It checks the access key id of the signature, not the signature itself:
// enough to show the upload gateway uses its own store credentials and never
// a device's, not a production store.
//
//	s3server -addr 127.0.0.1:0 -dir DIR -bucket NAME -access-key AK
//
// It prints "s3server listening addr=HOST:PORT" once it serves.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3afero"
	"github.com/spf13/afero"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	dir := flag.String("dir", "", "directory holding the objects (required)")
	bucket := flag.String("bucket", "", "bucket created at start (required)")
	accessKey := flag.String("access-key", "", "the only access key id accepted (required)")
	flag.Parse()
	if *dir == "" || *bucket == "" || *accessKey == "" {
		log.Fatal("s3server: -dir, -bucket and -access-key are required")
	}
	fs, err := s3afero.NewBasePathFs(afero.NewOsFs(), *dir, 0)
	if err != nil {
		log.Fatalf("s3server: %v", err)
	}
	be, err := s3afero.MultiBucket(fs)
	if err != nil {
		log.Fatalf("s3server: %v", err)
	}
	if err := be.CreateBucket(*bucket); err != nil && !gofakes3.HasErrorCode(err, gofakes3.ErrBucketAlreadyExists) {
		log.Fatalf("s3server: create bucket: %v", err)
	}
	s3 := gofakes3.New(be, gofakes3.WithAutoBucket(false))
	h := requireKey(*accessKey, s3.Server())
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("s3server: %v", err)
	}
	fmt.Fprintf(os.Stderr, "s3server listening addr=%s\n", ln.Addr())
	log.Fatal(http.Serve(ln, h))
}

// requireKey refuses requests not signed with accessKey (signature v4
// Authorization header or presigned X-Amz-Credential).
func requireKey(accessKey string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cred := r.URL.Query().Get("X-Amz-Credential")
		if a := r.Header.Get("Authorization"); strings.HasPrefix(a, "AWS4-HMAC-SHA256 ") {
			if _, c, ok := strings.Cut(a, "Credential="); ok {
				cred = c
			}
		}
		if ak, _, _ := strings.Cut(cred, "/"); ak != accessKey {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidAccessKeyId</Code><Message>unknown access key</Message></Error>`)
			return
		}
		next.ServeHTTP(w, r)
	})
}
