package roles

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/namespace"
	"github.com/ivms/ams/pkg/opshttp"
	"github.com/ivms/ams/schemas"
)

// env is what every long-running role starts with: its logger, the schema
// registry and the ops server (/healthz, /readyz, /metrics) whose registry
// takes the role's metrics.
type env struct {
	log *slog.Logger
	reg *schemas.Registry
	ops *opshttp.Server
}

// newEnv builds the logger (to out's Stderr), the schema registry and the ops
// server, which exports ams_ready{role}.
func newEnv(role string, out Output, l Log) (env, error) {
	log, err := l.Logger(out.stderr())
	if err != nil {
		return env{}, err
	}
	reg, err := schemas.NewRegistry()
	if err != nil {
		return env{}, err
	}
	ops := opshttp.New(log)
	if err := ops.ExportReady(role); err != nil {
		return env{}, err
	}
	return env{log: log, reg: reg, ops: ops}, nil
}

// newKafkaEnv is newEnv for a role that talks to Kafka: it also checks the
// namespace, and returns the Kafka client options (logging how the role
// reaches Kafka).
func newKafkaEnv(role string, out Output, l Log, k Kafka) (env, namespace.Names, []kgo.Opt, error) {
	e, err := newEnv(role, out, l)
	if err != nil {
		return env{}, namespace.Names{}, nil, err
	}
	ns, err := names(k.Namespace)
	if err != nil {
		return env{}, namespace.Names{}, nil, err
	}
	opts, err := k.ClientOpts()
	if err != nil {
		return env{}, namespace.Names{}, nil, err
	}
	k.LogSecurity(e.log)
	return e, ns, opts, nil
}

// bridge is what a role between MQTT and Kafka (ingest, egress) starts with.
type bridge struct {
	env
	ns           namespace.Names
	kopts        []kgo.Opt
	mqttPassword string
	mqttTLS      *tls.Config
}

func newBridge(role string, out Output, l Log, k Kafka, m MQTT) (bridge, error) {
	e, ns, kopts, err := newKafkaEnv(role, out, l, k)
	if err != nil {
		return bridge{}, err
	}
	password, tc, err := m.Connection()
	if err != nil {
		return bridge{}, err
	}
	m.LogSecurity(e.log, tc)
	return bridge{env: e, ns: ns, kopts: kopts, mqttPassword: password, mqttTLS: tc}, nil
}

// Main is the main function of ams and ams-dev: run with the process's
// arguments, writers and environment, stopped by SIGINT or SIGTERM, and exit
// with its code.
func Main(run func(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// serve runs role and the ops server on addr together (see RunWithOps).
func (e env) serve(ctx context.Context, addr string, role func(context.Context) error) error {
	return RunWithOps(ctx, e.ops, addr, role)
}

// RunWithOps runs role and the ops HTTP server together. The server outlives
// the role's drain (so /metrics and /healthz answer during shutdown) and
// stops after it; a server failure (e.g. the address is taken) stops the
// role. An empty addr serves nothing.
func RunWithOps(ctx context.Context, ops *opshttp.Server, addr string, role func(context.Context) error) error {
	roleCtx, roleCancel := context.WithCancel(ctx)
	defer roleCancel()
	opsCtx, opsCancel := context.WithCancel(context.WithoutCancel(ctx))
	opsErr := make(chan error, 1)
	go func() {
		err := ops.Serve(opsCtx, addr)
		if err != nil {
			roleCancel()
		}
		opsErr <- err
	}()
	err := role(roleCtx)
	opsCancel()
	if oerr := <-opsErr; oerr != nil && err == nil {
		err = oerr
	}
	return err
}

// ServeHTTP serves h on ln until ctx is done, over TLS when tc is not nil,
// and shuts down gracefully (opshttp.ServeUntil). It logs the bound address.
func ServeHTTP(ctx context.Context, log *slog.Logger, name string, ln net.Listener, h http.Handler, tc *tls.Config) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	if tc != nil {
		ln = tls.NewListener(ln, tc)
		log.Info(name+" listening (TLS)", "addr", ln.Addr().String())
	} else {
		log.Warn(name+" listening on plain HTTP: keep it on a private network or behind a TLS-terminating proxy", "addr", ln.Addr().String())
	}
	if err := opshttp.ServeUntil(ctx, srv, ln); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// serveFiles is ServeHTTP on a new listener of addr, with the certificate
// and key files (both or neither) for TLS 1.2 and up.
func serveFiles(ctx context.Context, log *slog.Logger, name, addr string, h http.Handler, certFile, keyFile string) error {
	var tc *tls.Config
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return fmt.Errorf("%s: tls: %w", name, err)
		}
		tc = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: listen %s: %w", name, addr, err)
	}
	return ServeHTTP(ctx, log, name, ln, h, tc)
}

// bothOrNeither checks a certificate/key flag pair.
func bothOrNeither(cert, key, certFlag, keyFlag string) error {
	if (cert == "") != (key == "") {
		return fmt.Errorf("give both -%s and -%s, or neither", certFlag, keyFlag)
	}
	return nil
}

// IsTerminal reports whether w is a terminal (a live line is rewritten in
// place there).
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// instanceName is the default name of a role instance: host-pid.
func instanceName() string {
	return fmt.Sprintf("%s-%d", hostname(), os.Getpid())
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return h
}

// names validates a namespace and returns its derived names.
func names(ns string) (namespace.Names, error) {
	if err := namespace.Validate(ns); err != nil {
		return namespace.Names{}, err
	}
	return namespace.Derive(ns), nil
}

// ApplyNamespace sets every name flag of fs that was not given (on the
// command line or in the environment) from -namespace: the flag layer's
// step between parsing and Run. Options built in code set their names
// themselves.
func ApplyNamespace(fs *flag.FlagSet) error {
	ns := ""
	if f := fs.Lookup("namespace"); f != nil {
		ns = f.Value.String()
	}
	n, err := names(ns)
	if err != nil || ns == "" {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	derived := map[string]string{
		"topic-prefix":            n.TopicPrefix,
		"process-group":           n.ProcessGroup,
		"transactional-id-prefix": n.TransactionalIDPrefix,
		"egress-group":            n.EgressGroup,
		"mqtt-share-group":        n.MQTTShareGroup,
		"redis-prefix":            n.RedisPrefix,
		"clickhouse-database":     n.ClickHouseDatabase,
	}
	if f := fs.Lookup("sink-group"); f != nil {
		switch f.DefValue {
		case namespace.DefaultSinkRedisGroup:
			derived["sink-group"] = n.SinkRedisGroup
		case namespace.DefaultSinkClickHouseGroup:
			derived["sink-group"] = n.SinkClickHouseGroup
		default:
			return fmt.Errorf("namespace: no derived name for -sink-group (default %q)", f.DefValue)
		}
	}
	for name, v := range derived {
		if fs.Lookup(name) == nil || given[name] {
			continue
		}
		if err := fs.Set(name, v); err != nil {
			return fmt.Errorf("namespace %q: -%s: %w", ns, name, err)
		}
	}
	return nil
}
