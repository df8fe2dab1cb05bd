package roles

import (
	"context"
	"errors"
	"flag"

	"github.com/ivms/ams/pkg/connsec"
	"github.com/ivms/ams/pkg/uploadgw"
)

// UploadGatewayOptions configure `ams upload-gateway`: the object store
// endpoint cameras upload pictures to with the scoped credentials of their
// 703 reply; it verifies each request and forwards the object to an
// S3-compatible store.
type UploadGatewayOptions struct {
	Output
	Log               Log
	Addr              string
	OpsAddr           string
	TLSCertFile       string
	TLSKeyFile        string
	SigningSecretFile string // required
	Bucket            string // required
	ObjectPath        string
	CallbackURL       string
	MaxObjectBytes    int64
	RatePerMinute     float64
	Burst             int
	S3Endpoint        string // required
	S3Bucket          string // empty: Bucket
	S3Region          string
	S3AccessKey       string // required
	S3SecretKeyFile   string // required
	S3TLS             bool
	S3CAFile          string
}

// DefaultUploadGateway returns the defaults of `ams upload-gateway`.
func DefaultUploadGateway() UploadGatewayOptions {
	return UploadGatewayOptions{Log: DefaultLog(), Addr: ":8091", OpsAddr: ":9109", ObjectPath: "ai_engine_imgs",
		MaxObjectBytes: 10 << 20, RatePerMinute: 30, Burst: 10, S3TLS: true}
}

// Flags declares the flags of `ams upload-gateway` on o's fields.
func (o *UploadGatewayOptions) Flags(fs *flag.FlagSet) {
	o.Log.Flags(fs)
	fs.StringVar(&o.Addr, "upload-gateway-addr", o.Addr, "listen address of the upload API cameras call (the processor's -upload-host-url points here)")
	fs.StringVar(&o.OpsAddr, "ops-addr", o.OpsAddr, "listen address of /healthz, /readyz and /metrics (empty: off)")
	fs.StringVar(&o.TLSCertFile, "upload-gateway-tls-cert-file", o.TLSCertFile, "TLS certificate (PEM) of the upload listener (empty: plain HTTP behind a TLS-terminating proxy)")
	fs.StringVar(&o.TLSKeyFile, "upload-gateway-tls-key-file", o.TLSKeyFile, "TLS private key (PEM) of the upload listener")
	fs.StringVar(&o.SigningSecretFile, "upload-signing-secret-file", o.SigningSecretFile, "file holding the secret shared with `ams process` (its -upload-signing-secret-file) (required)")
	fs.StringVar(&o.Bucket, "upload-bucket", o.Bucket, "bucket name the processor sends devices (required)")
	fs.StringVar(&o.ObjectPath, "upload-object-path", o.ObjectPath, "object path prefix; each device may write only under {path}/{sn}/")
	fs.StringVar(&o.CallbackURL, "upload-callback-url", o.CallbackURL, "the one callback URL called after an upload (the processor's -upload-callback-url; empty: callbacks refused)")
	fs.Int64Var(&o.MaxObjectBytes, "upload-max-object-bytes", o.MaxObjectBytes, "largest object accepted, bytes")
	fs.Float64Var(&o.RatePerMinute, "upload-rate-per-minute", o.RatePerMinute, "uploads per minute each camera may make (token bucket)")
	fs.IntVar(&o.Burst, "upload-burst", o.Burst, "uploads a camera may make at once before the rate applies")
	fs.StringVar(&o.S3Endpoint, "s3-endpoint", o.S3Endpoint, "S3-compatible store behind the gateway, host:port (required)")
	fs.StringVar(&o.S3Bucket, "s3-bucket", o.S3Bucket, "bucket in the store (default: -upload-bucket)")
	fs.StringVar(&o.S3Region, "s3-region", o.S3Region, "region of the store (empty: the store's default)")
	fs.StringVar(&o.S3AccessKey, "s3-access-key", o.S3AccessKey, "the gateway's own access key for the store (required)")
	fs.StringVar(&o.S3SecretKeyFile, "s3-secret-key-file", o.S3SecretKeyFile, "file holding the gateway's secret key for the store (required; never logged)")
	fs.BoolVar(&o.S3TLS, "s3-tls", o.S3TLS, "HTTPS to the store")
	fs.StringVar(&o.S3CAFile, "s3-ca-file", o.S3CAFile, "CA certificate (PEM) that signs the store's certificate (default: the system's)")
}

// RunUploadGateway serves the upload API until ctx is done.
func RunUploadGateway(ctx context.Context, o UploadGatewayOptions) error {
	e, err := newEnv("upload-gateway", o.Output, o.Log)
	if err != nil {
		return err
	}
	if o.SigningSecretFile == "" {
		return errors.New("no -upload-signing-secret-file")
	}
	secret, err := connsec.Secret("upload signing secret", "", o.SigningSecretFile)
	if err != nil {
		return err
	}
	if o.S3SecretKeyFile == "" {
		return errors.New("no -s3-secret-key-file")
	}
	s3Secret, err := connsec.Secret("s3 secret key", "", o.S3SecretKeyFile)
	if err != nil {
		return err
	}
	if err := bothOrNeither(o.TLSCertFile, o.TLSKeyFile, "upload-gateway-tls-cert-file", "upload-gateway-tls-key-file"); err != nil {
		return err
	}
	if o.S3Bucket == "" {
		o.S3Bucket = o.Bucket
	}
	store, err := uploadgw.NewS3Store(uploadgw.S3Config{Endpoint: o.S3Endpoint, Bucket: o.S3Bucket, Region: o.S3Region,
		AccessKey: o.S3AccessKey, SecretKey: s3Secret, TLS: o.S3TLS, CAFile: o.S3CAFile})
	if err != nil {
		return err
	}
	gw, err := uploadgw.New(uploadgw.Config{Secret: []byte(secret), Bucket: o.Bucket, ObjectPath: o.ObjectPath,
		CallbackURL: o.CallbackURL, MaxObjectBytes: o.MaxObjectBytes, RatePerMinute: o.RatePerMinute, Burst: o.Burst}, store, e.log, e.ops.Registry)
	if err != nil {
		return err
	}
	e.ops.AddCheck("s3", store.Ready)
	e.log.Info("upload gateway starting", "bucket", o.Bucket, "object_path", o.ObjectPath, "s3_endpoint", o.S3Endpoint, "s3_bucket", o.S3Bucket)
	return e.serve(ctx, o.OpsAddr, func(ctx context.Context) error {
		return serveFiles(ctx, e.log, "upload-gateway", o.Addr, gw, o.TLSCertFile, o.TLSKeyFile)
	})
}
