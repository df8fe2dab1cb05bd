// Package mqttconn is the paho client setup shared by ams's MQTT roles
// (ingest's subscriber, egress's publishing pool): the settings of one
// connection, their defaults, and the paho options they give. Each role
// adds its own session behaviour (clean session, reconnects, handlers) to
// the options it gets.
package mqttconn

import (
	"crypto/tls"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Defaults of a connection's timings.
const (
	DefaultKeepAlive      = 30 * time.Second
	DefaultConnectTimeout = 10 * time.Second
	// PingTimeout is how long a PINGRESP may take before paho drops the connection.
	PingTimeout = 10 * time.Second
)

// Conn is one client connection's settings.
type Conn struct {
	URL      string // tcp://, ssl://, ws://, wss://
	ClientID string
	Username string
	Password string
	// TLS configures ssl:// and wss:// connections (nil: the system's CAs).
	TLS            *tls.Config
	KeepAlive      time.Duration // 0: DefaultKeepAlive
	ConnectTimeout time.Duration // 0: DefaultConnectTimeout
}

// Timings returns keepAlive and connectTimeout with zero or negative values
// replaced by the defaults.
func Timings(keepAlive, connectTimeout time.Duration) (time.Duration, time.Duration) {
	if keepAlive <= 0 {
		keepAlive = DefaultKeepAlive
	}
	if connectTimeout <= 0 {
		connectTimeout = DefaultConnectTimeout
	}
	return keepAlive, connectTimeout
}

// Options returns paho options with the broker, credentials, TLS, keep-alive,
// ping and connect timeouts of c set.
func (c Conn) Options() *mqtt.ClientOptions {
	keepAlive, connectTimeout := Timings(c.KeepAlive, c.ConnectTimeout)
	opts := mqtt.NewClientOptions().
		AddBroker(c.URL).
		SetClientID(c.ClientID).
		SetUsername(c.Username).
		SetPassword(c.Password).
		SetKeepAlive(keepAlive).
		SetPingTimeout(PingTimeout).
		SetConnectTimeout(connectTimeout)
	if c.TLS != nil {
		opts.SetTLSConfig(c.TLS)
	}
	return opts
}
