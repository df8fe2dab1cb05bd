package roles

import (
	"context"
	"errors"
	"flag"
	"net/http"

	"github.com/ivms/ams/pkg/connsec"
	"github.com/ivms/ams/pkg/devicestate"
	"github.com/ivms/ams/pkg/mediahook"
)

// MediaHookOptions configure `ams media-hook`: the publish callback of a
// media server (nginx-rtmp on_publish, SRS on_publish) for the signed push
// URLs of 702 replies.
type MediaHookOptions struct {
	Output
	Log               Log
	Redis             Redis
	Namespace         string // derives the Redis prefix (flag layer)
	Addr              string
	OpsAddr           string
	StreamSecretFiles string // comma-separated, current first (required)
	KeyFile           string // required
	TLSCertFile       string
	TLSKeyFile        string
}

// DefaultMediaHook returns the defaults of `ams media-hook`.
func DefaultMediaHook() MediaHookOptions {
	return MediaHookOptions{Log: DefaultLog(), Redis: DefaultRedis(), Addr: "127.0.0.1:8090", OpsAddr: ":9108"}
}

// Flags declares the flags of `ams media-hook` on o's fields.
func (o *MediaHookOptions) Flags(fs *flag.FlagSet) {
	o.Log.Flags(fs)
	o.Redis.Flags(fs)
	fs.StringVar(&o.Namespace, "namespace", o.Namespace, "namespace of this stack: derives the Redis prefix (as every role's -namespace; an explicit -redis-prefix wins)")
	fs.StringVar(&o.Addr, "media-hook-addr", o.Addr, "listen address of the publish callback (the media server's network only)")
	fs.StringVar(&o.OpsAddr, "ops-addr", o.OpsAddr, "listen address of /healthz, /readyz and /metrics (empty: off)")
	fs.StringVar(&o.StreamSecretFiles, "stream-secret-files", o.StreamSecretFiles, "files of the stream-signing secrets shared with `ams process` (-stream-secret-file), comma-separated, current first (required)")
	fs.StringVar(&o.KeyFile, "media-hook-key-file", o.KeyFile, "file holding the key the media server passes as ?key= of the callback URL (required; never logged)")
	fs.StringVar(&o.TLSCertFile, "media-hook-tls-cert-file", o.TLSCertFile, "TLS certificate (PEM) of the callback listener (empty: plain HTTP; keep it on a private network)")
	fs.StringVar(&o.TLSKeyFile, "media-hook-tls-key-file", o.TLSKeyFile, "TLS private key (PEM) of the callback listener")
}

// RunMediaHook serves the publish callback until ctx is done.
func RunMediaHook(ctx context.Context, o MediaHookOptions) error {
	e, err := newEnv("media-hook", o.Output, o.Log)
	if err != nil {
		return err
	}
	if _, err := names(o.Namespace); err != nil {
		return err
	}
	var secrets [][]byte
	for _, f := range SplitList(o.StreamSecretFiles) {
		s, err := connsec.Secret("stream-secret-files", "", f)
		if err != nil {
			return err
		}
		secrets = append(secrets, []byte(s))
	}
	if o.KeyFile == "" {
		return errors.New("no -media-hook-key-file: the media server must authenticate to the hook")
	}
	key, err := connsec.Secret("media-hook key", "", o.KeyFile)
	if err != nil {
		return err
	}
	if err := bothOrNeither(o.TLSCertFile, o.TLSKeyFile, "media-hook-tls-cert-file", "media-hook-tls-key-file"); err != nil {
		return err
	}
	rdb, err := o.Redis.open(e.log)
	if err != nil {
		return err
	}
	defer rdb.Close()
	store := devicestate.NewStore(rdb, o.Redis.Keys())
	hook, err := mediahook.New(mediahook.Config{Secrets: secrets, Key: key}, storeRegistrations{store}, e.log, e.ops.Registry)
	if err != nil {
		return err
	}
	e.ops.AddCheck("redis", store.Ping)
	mux := http.NewServeMux()
	hook.Register(mux)
	return e.serve(ctx, o.OpsAddr, func(ctx context.Context) error {
		return serveFiles(ctx, e.log, "media-hook", o.Addr, mux, o.TLSCertFile, o.TLSKeyFile)
	})
}

// storeRegistrations reads registrations from the Redis projection.
type storeRegistrations struct{ s *devicestate.Store }

func (r storeRegistrations) Registration(ctx context.Context, sn string) (bool, bool, error) {
	reg, _, ok, err := r.s.RegistrationOf(ctx, sn)
	return ok, ok && reg.Bound, err
}
