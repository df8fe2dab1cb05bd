package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/ivms/ams/pkg/connsec"
	"github.com/ivms/ams/pkg/mediahook"
	"github.com/ivms/ams/pkg/opshttp"
	amsredis "github.com/ivms/ams/sinks/redis"
)

// mediaHookCommand is `ams media-hook`: the publish callback of a media
// server (nginx-rtmp on_publish, SRS on_publish) for the signed push URLs of
// 702 replies.
func mediaHookCommand() command {
	return command{
		name:    "media-hook",
		summary: "answer a media server's publish callback (nginx-rtmp, SRS) for the signed stream push URLs",
		flags: func(fs *flag.FlagSet) func(context.Context, io.Writer, io.Writer) error {
			var lf logFlags
			var rf redisFlags
			lf.register(fs)
			rf.register(fs)
			fs.String("namespace", "", "namespace of this stack: derives the Redis prefix (as every role's -namespace; an explicit -redis-prefix wins)")
			addr := fs.String("media-hook-addr", "127.0.0.1:8090", "listen address of the publish callback (the media server's network only)")
			opsAddr := fs.String("ops-addr", ":9108", "listen address of /healthz, /readyz and /metrics (empty: off)")
			secretFiles := fs.String("stream-secret-files", "", "files of the stream-signing secrets shared with `ams process` (-stream-secret-file), comma-separated, current first (required)")
			keyFile := fs.String("media-hook-key-file", "", "file holding the key the media server passes as ?key= of the callback URL (required; never logged)")
			certFile := fs.String("media-hook-tls-cert-file", "", "TLS certificate (PEM) of the callback listener (empty: plain HTTP; keep it on a private network)")
			keyPEMFile := fs.String("media-hook-tls-key-file", "", "TLS private key (PEM) of the callback listener")
			return func(ctx context.Context, stdout, stderr io.Writer) error {
				log, err := lf.logger(stderr)
				if err != nil {
					return err
				}
				if _, err := applyNamespace(fs); err != nil {
					return err
				}
				var secrets [][]byte
				for _, f := range splitList(*secretFiles) {
					s, err := connsec.Secret("stream-secret-files", "", f)
					if err != nil {
						return err
					}
					secrets = append(secrets, []byte(s))
				}
				if *keyFile == "" {
					return errors.New("no -media-hook-key-file: the media server must authenticate to the hook")
				}
				key, err := connsec.Secret("media-hook key", "", *keyFile)
				if err != nil {
					return err
				}
				if (*certFile == "") != (*keyPEMFile == "") {
					return errors.New("give both -media-hook-tls-cert-file and -media-hook-tls-key-file, or neither")
				}
				rf.logSecurity(log)
				rdb, err := rf.client()
				if err != nil {
					return err
				}
				defer rdb.Close()
				store := amsredis.NewStore(rdb, rf.keys())
				ops := opshttp.New(log)
				if err := ops.ExportReady("media-hook"); err != nil {
					return err
				}
				hook, err := mediahook.New(mediahook.Config{Secrets: secrets, Key: key},
					storeRegistrations{store}, log, ops.Registry)
				if err != nil {
					return err
				}
				ops.AddCheck("redis", store.Ping)
				mux := http.NewServeMux()
				hook.Register(mux)
				return runWithOps(ctx, ops, *opsAddr, func(ctx context.Context) error {
					return serveHTTP(ctx, log, "media-hook", *addr, mux, *certFile, *keyPEMFile)
				})
			}
		},
	}
}

// storeRegistrations reads registrations from the Redis projection.
type storeRegistrations struct{ s *amsredis.Store }

func (r storeRegistrations) Registration(ctx context.Context, sn string) (bool, bool, error) {
	reg, _, ok, err := r.s.RegistrationOf(ctx, sn)
	return ok, ok && reg.Bound, err
}

// serveHTTP serves h on addr until ctx is done, over TLS when a certificate
// is given (TLS 1.2 at least), and shuts down gracefully. It logs the bound
// address (addr may have port 0).
func serveHTTP(ctx context.Context, log *slog.Logger, name, addr string, h http.Handler, certFile, keyFile string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: listen %s: %w", name, addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute,
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12}}
	errc := make(chan error, 1)
	if certFile != "" {
		log.Info(name+" listening (TLS)", "addr", ln.Addr().String())
		go func() { errc <- srv.ServeTLS(ln, certFile, keyFile) }()
	} else {
		log.Warn(name+" listening on plain HTTP: keep it on a private network or behind a TLS-terminating proxy", "addr", ln.Addr().String())
		go func() { errc <- srv.Serve(ln) }()
	}
	select {
	case err := <-errc:
		return fmt.Errorf("%s: serve: %w", name, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("%s: shutdown: %w", name, err)
	}
	return nil
}
