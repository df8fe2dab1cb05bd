package main

import (
	"context"
	"errors"
	"flag"
	"io"

	"github.com/ivms/ams/pkg/connsec"
	"github.com/ivms/ams/pkg/opshttp"
	"github.com/ivms/ams/pkg/uploadgw"
)

// uploadGatewayCommand is `ams upload-gateway`: the object store endpoint
// cameras upload pictures to with the scoped credentials of their 703 reply;
// it verifies each request and forwards the object to an S3-compatible store.
func uploadGatewayCommand() command {
	return command{
		name:    "upload-gateway",
		summary: "accept camera picture uploads (KS3 API, 703 credentials) and forward them to an S3-compatible store",
		flags: func(fs *flag.FlagSet) func(context.Context, io.Writer, io.Writer) error {
			var lf logFlags
			lf.register(fs)
			addr := fs.String("upload-gateway-addr", ":8091", "listen address of the upload API cameras call (the processor's -upload-host-url points here)")
			opsAddr := fs.String("ops-addr", ":9109", "listen address of /healthz, /readyz and /metrics (empty: off)")
			certFile := fs.String("upload-gateway-tls-cert-file", "", "TLS certificate (PEM) of the upload listener (empty: plain HTTP behind a TLS-terminating proxy)")
			keyFile := fs.String("upload-gateway-tls-key-file", "", "TLS private key (PEM) of the upload listener")
			secretFile := fs.String("upload-signing-secret-file", "", "file holding the secret shared with `ams process` (its -upload-signing-secret-file) (required)")
			bucket := fs.String("upload-bucket", "", "bucket name the processor sends devices (required)")
			objectPath := fs.String("upload-object-path", "ai_engine_imgs", "object path prefix; each device may write only under {path}/{sn}/")
			callback := fs.String("upload-callback-url", "", "the one callback URL called after an upload (the processor's -upload-callback-url; empty: callbacks refused)")
			maxBytes := fs.Int64("upload-max-object-bytes", 10<<20, "largest object accepted, bytes")
			rate := fs.Float64("upload-rate-per-minute", 30, "uploads per minute each camera may make (token bucket)")
			burst := fs.Int("upload-burst", 10, "uploads a camera may make at once before the rate applies")
			s3Endpoint := fs.String("s3-endpoint", "", "S3-compatible store behind the gateway, host:port (required)")
			s3Bucket := fs.String("s3-bucket", "", "bucket in the store (default: -upload-bucket)")
			s3Region := fs.String("s3-region", "", "region of the store (empty: the store's default)")
			s3AccessKey := fs.String("s3-access-key", "", "the gateway's own access key for the store (required)")
			s3SecretFile := fs.String("s3-secret-key-file", "", "file holding the gateway's secret key for the store (required; never logged)")
			s3TLS := fs.Bool("s3-tls", true, "HTTPS to the store")
			s3CA := fs.String("s3-ca-file", "", "CA certificate (PEM) that signs the store's certificate (default: the system's)")
			return func(ctx context.Context, stdout, stderr io.Writer) error {
				log, err := lf.logger(stderr)
				if err != nil {
					return err
				}
				if *secretFile == "" {
					return errors.New("no -upload-signing-secret-file")
				}
				secret, err := connsec.Secret("upload signing secret", "", *secretFile)
				if err != nil {
					return err
				}
				if *s3SecretFile == "" {
					return errors.New("no -s3-secret-key-file")
				}
				s3Secret, err := connsec.Secret("s3 secret key", "", *s3SecretFile)
				if err != nil {
					return err
				}
				if (*certFile == "") != (*keyFile == "") {
					return errors.New("give both -upload-gateway-tls-cert-file and -upload-gateway-tls-key-file, or neither")
				}
				if *s3Bucket == "" {
					*s3Bucket = *bucket
				}
				store, err := uploadgw.NewS3Store(uploadgw.S3Config{Endpoint: *s3Endpoint, Bucket: *s3Bucket, Region: *s3Region,
					AccessKey: *s3AccessKey, SecretKey: s3Secret, TLS: *s3TLS, CAFile: *s3CA})
				if err != nil {
					return err
				}
				ops := opshttp.New(log)
				if err := ops.ExportReady("upload-gateway"); err != nil {
					return err
				}
				gw, err := uploadgw.New(uploadgw.Config{Secret: []byte(secret), Bucket: *bucket, ObjectPath: *objectPath,
					CallbackURL: *callback, MaxObjectBytes: *maxBytes, RatePerMinute: *rate, Burst: *burst}, store, log, ops.Registry)
				if err != nil {
					return err
				}
				ops.AddCheck("s3", store.Ready)
				log.Info("upload gateway starting", "bucket", *bucket, "object_path", *objectPath, "s3_endpoint", *s3Endpoint, "s3_bucket", *s3Bucket)
				return runWithOps(ctx, ops, *opsAddr, func(ctx context.Context) error {
					return serveHTTP(ctx, log, "upload-gateway", *addr, gw, *certFile, *keyFile)
				})
			}
		},
	}
}
