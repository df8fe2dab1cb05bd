// Package opshttp serves the operational endpoints every ams role exposes:
// /healthz (the process is alive), /readyz (every readiness check passes) and
// /metrics (Prometheus, from the role's own registry).
package opshttp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check reports whether one dependency is ready; nil means ready.
type Check func(ctx context.Context) error

// Server is the operational HTTP server of one role. Its zero value is not
// usable; build it with New. Checks may be added at any time.
type Server struct {
	Registry *prometheus.Registry
	mux      *http.ServeMux
	log      *slog.Logger

	mu     sync.Mutex
	checks map[string]Check
}

// New returns a server with a fresh registry holding the Go and process collectors.
func New(log *slog.Logger) *Server {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s := &Server{Registry: reg, mux: http.NewServeMux(), log: log, checks: map[string]Check{}}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	s.mux.HandleFunc("GET /readyz", s.ready)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return s
}

// Mux returns the server's mux, so a role (the API) can add its own routes.
func (s *Server) Mux() *http.ServeMux { return s.mux }

// AddCheck registers a readiness check under a name.
func (s *Server) AddCheck(name string, c Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks[name] = c
}

// ExportReady registers the gauge ams_ready{role}: 1 when every readiness
// check passes, 0 when one fails, evaluated at each scrape like /readyz
// (same checks, same 2 s bound), so alerting needs no kube-state-metrics.
func (s *Server) ExportReady(role string) error {
	g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ams_ready",
		Help: "1 when every readiness check of the role passes (its /readyz answers 200), else 0; evaluated at each scrape.", ConstLabels: prometheus.Labels{"role": role}},
		func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if s.check(ctx, nil) {
				return 1
			}
			return 0
		})
	if err := s.Registry.Register(g); err != nil {
		return fmt.Errorf("ams_ready: %w", err)
	}
	return nil
}

// check runs every readiness check, in name order, reporting each result to
// report (if not nil); it returns whether all passed.
func (s *Server) check(ctx context.Context, report func(name string, err error)) bool {
	s.mu.Lock()
	names := make([]string, 0, len(s.checks))
	checks := make(map[string]Check, len(s.checks))
	for n, c := range s.checks {
		names = append(names, n)
		checks[n] = c
	}
	s.mu.Unlock()
	sort.Strings(names)
	ok := true
	for _, n := range names {
		err := checks[n](ctx)
		if err != nil {
			ok = false
		}
		if report != nil {
			report(n, err)
		}
	}
	return ok
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	names := make([]string, 0, len(s.checks))
	for n := range s.checks {
		names = append(names, n)
	}
	checks := make(map[string]Check, len(s.checks))
	for n, c := range s.checks {
		checks[n] = c
	}
	s.mu.Unlock()
	sort.Strings(names)
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	status := http.StatusOK
	var body []byte
	for _, n := range names {
		if err := checks[n](ctx); err != nil {
			status = http.StatusServiceUnavailable
			body = fmt.Appendf(body, "%s: %v\n", n, err)
		} else {
			body = fmt.Appendf(body, "%s: ok\n", n)
		}
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// Serve listens on addr and serves until ctx is done, then shuts down
// gracefully. An empty addr disables the server (Serve waits for ctx).
func (s *Server) Serve(ctx context.Context, addr string) error {
	if addr == "" {
		<-ctx.Done()
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("ops http listen %s: %w", addr, err)
	}
	return s.ServeListener(ctx, ln)
}

// ServeListener is Serve on an existing listener.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second}
	s.log.Info("ops http listening", "addr", ln.Addr().String())
	if err := ServeUntil(ctx, srv, ln); err != nil {
		return fmt.Errorf("ops http: %w", err)
	}
	return nil
}

// ServeUntil serves srv on ln until ctx is done, then shuts it down
// gracefully, giving requests in flight 5 s. It returns the error that
// stopped serving early, or the shutdown's. Every HTTP listener of ams (the
// ops endpoints, the API, the media hook, the upload gateway) runs through it.
func ServeUntil(ctx context.Context, srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
