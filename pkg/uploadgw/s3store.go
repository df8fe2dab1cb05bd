package uploadgw

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config is the S3-compatible store behind the gateway and the gateway's
// own credentials for it (never a device's).
type S3Config struct {
	Endpoint  string // host:port
	Bucket    string
	Region    string
	AccessKey string
	SecretKey string
	// TLS: HTTPS to the store; CAFile adds a CA (PEM) to the system pool.
	TLS    bool
	CAFile string
}

// S3Store is a Store on an S3-compatible object store (minio-go).
type S3Store struct {
	cl     *minio.Client
	bucket string
}

// NewS3Store returns a store; it does no I/O.
func NewS3Store(c S3Config) (*S3Store, error) {
	if c.Endpoint == "" || c.Bucket == "" {
		return nil, errors.New("uploadgw: S3 endpoint and bucket are required")
	}
	if c.AccessKey == "" || c.SecretKey == "" {
		return nil, errors.New("uploadgw: S3 access key and secret key are required")
	}
	opts := &minio.Options{Creds: credentials.NewStaticV4(c.AccessKey, c.SecretKey, ""), Secure: c.TLS, Region: c.Region}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("uploadgw: S3 CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("uploadgw: S3 CA file %s holds no certificate", c.CAFile)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		opts.Transport = tr
	}
	cl, err := minio.New(c.Endpoint, opts)
	if err != nil {
		return nil, fmt.Errorf("uploadgw: S3 client: %w", err)
	}
	return &S3Store{cl: cl, bucket: c.Bucket}, nil
}

// Put implements Store: one streaming PUT for an object of known size
// (minio-go switches to multipart above its part size, buffering one part).
func (s *S3Store) Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) (string, error) {
	info, err := s.cl.PutObject(ctx, s.bucket, key, r, size, minio.PutObjectOptions{ContentType: contentType})
	if err != nil {
		return "", fmt.Errorf("uploadgw: put %s/%s: %w", s.bucket, key, err)
	}
	return info.ETag, nil
}

// Delete implements Store.
func (s *S3Store) Delete(ctx context.Context, key string) error {
	if err := s.cl.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{}); err != nil {
		return fmt.Errorf("uploadgw: delete %s/%s: %w", s.bucket, key, err)
	}
	return nil
}

// Ready reports whether the store answers and the bucket exists.
func (s *S3Store) Ready(ctx context.Context) error {
	ok, err := s.cl.BucketExists(ctx, s.bucket)
	if err != nil {
		return fmt.Errorf("uploadgw: S3: %w", err)
	}
	if !ok {
		return fmt.Errorf("uploadgw: S3 bucket %s does not exist", s.bucket)
	}
	return nil
}
