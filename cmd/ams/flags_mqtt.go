package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/ivms/ams/pkg/connsec"
	"github.com/ivms/ams/pkg/opshttp"
)

// mqttFlags are the flags of a role that connects to the broker with its own
// credentials (ingest, egress).
type mqttFlags struct {
	url            string
	username       string
	password       string
	keepAlive      time.Duration
	connectTimeout time.Duration
	sec            mqttTLSFlags
}

func (m *mqttFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&m.url, "mqtt-url", "tcp://127.0.0.1:1883", "MQTT broker URL: tcp://host:port, ssl:// (TLS), ws://, wss:// (TLS)")
	fs.StringVar(&m.username, "mqtt-username", "", "MQTT username of this role (its own credentials, never a device's)")
	fs.StringVar(&m.password, "mqtt-password", "", "MQTT password of this role (prefer -mqtt-password-file; never logged)")
	m.sec.register(fs, true)
	fs.DurationVar(&m.keepAlive, "mqtt-keepalive", 30*time.Second, "MQTT keep-alive")
	fs.DurationVar(&m.connectTimeout, "mqtt-connect-timeout", 10*time.Second, "MQTT connect and subscribe timeout")
}

// connection returns the role's MQTT password (from the flag or its file) and
// the TLS config of its URL (nil for tcp:// and ws://).
func (m *mqttFlags) connection() (password string, tc *tls.Config, err error) {
	password, err = connsec.Secret("mqtt password", m.password, m.sec.passwordFile)
	if err != nil {
		return "", nil, err
	}
	tc, err = m.sec.config(m.url)
	if err != nil {
		return "", nil, err
	}
	return password, tc, nil
}

// logSecurity logs how the role reaches the broker (never the password).
func (m *mqttFlags) logSecurity(log *slog.Logger, tc *tls.Config) {
	log.Info("mqtt connection", "url", m.url, "tls", tc != nil, "user", m.username)
	if tc == nil {
		log.Warn("mqtt: no TLS (use ssl:// or wss:// with -mqtt-tls-ca-file): the role's credentials are readable on the network")
	}
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

// runWithOps runs role and the ops HTTP server together. The server outlives
// the role's drain (so /metrics and /healthz answer during shutdown) and
// stops after it; a server failure (e.g. the address is taken) stops the role.
func runWithOps(ctx context.Context, ops *opshttp.Server, addr string, role func(context.Context) error) error {
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
