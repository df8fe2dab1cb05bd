package devicesim

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"
)

// errVanished is what paho reads and writes after the device vanished.
var errVanished = errors.New("devicesim: device vanished")

// VanishMode says how a vanishing device leaves its TCP connection. Neither
// mode sends an MQTT DISCONNECT.
type VanishMode string

const (
	// VanishSilent stops using the connection but keeps the socket open and
	// unread, like a device that lost power behind a NAT: the broker learns
	// of it only by its keep-alive timeout (1.5 × keep-alive). The socket is
	// closed when the device comes back.
	VanishSilent VanishMode = "silent"
	// VanishReset closes the socket at once with a TCP RST (SO_LINGER 0).
	VanishReset VanishMode = "reset"
)

// deviceConn is the net.Conn paho gets for one MQTT connection. It lets the
// simulator cut the connection under paho without an MQTT DISCONNECT:
// vanish makes paho's pending and later reads and writes fail (so paho
// reports the connection lost and stops), while the socket itself is either
// kept open and silent or reset.
type deviceConn struct {
	*net.TCPConn

	mu       sync.Mutex
	detached bool // vanish was called: paho sees errVanished, the socket is ours
}

// dial opens the TCP connection of one MQTT connection attempt, from local
// address laddr when not nil. tcp:// and mqtt:// broker URLs, and ssl://,
// tls:// and mqtts:// whose TLS session startTLS layers on top (the
// simulator owns the TCP socket underneath either way).
func dial(uri *url.URL, laddr *net.TCPAddr, timeout time.Duration) (*deviceConn, error) {
	switch uri.Scheme {
	case "tcp", "mqtt", "ssl", "tls", "mqtts":
	default:
		return nil, fmt.Errorf("devicesim: broker scheme %q not supported (use tcp://)", uri.Scheme)
	}
	d := net.Dialer{Timeout: timeout}
	if laddr != nil {
		d.LocalAddr = laddr
	}
	c, err := d.Dial("tcp", uri.Host)
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		_ = c.Close()
		return nil, fmt.Errorf("devicesim: dial returned %T, not a TCP connection", c)
	}
	return &deviceConn{TCPConn: tc}, nil
}

// usesTLS reports whether the broker URL's scheme means MQTT over TLS.
func usesTLS(uri *url.URL) bool {
	switch uri.Scheme {
	case "ssl", "tls", "mqtts":
		return true
	}
	return false
}

// startTLS runs the TLS handshake over raw (within timeout) and returns the
// TLS connection paho reads and writes; vanishing still acts on raw.
func startTLS(raw *deviceConn, uri *url.URL, cfg *tls.Config, timeout time.Duration) (net.Conn, error) {
	if cfg == nil {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if cfg.ServerName == "" {
		cfg = cfg.Clone()
		cfg.ServerName = uri.Hostname()
	}
	tc := tls.Client(raw, cfg)
	_ = raw.SetDeadline(time.Now().Add(timeout))
	if err := tc.Handshake(); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("devicesim: tls handshake with %s: %w", uri.Host, err)
	}
	_ = raw.SetDeadline(time.Time{})
	return tc, nil
}

func (c *deviceConn) isDetached() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.detached
}

func (c *deviceConn) Read(b []byte) (int, error) {
	n, err := c.TCPConn.Read(b)
	if err != nil && c.isDetached() {
		return n, errVanished
	}
	return n, err
}

func (c *deviceConn) Write(b []byte) (int, error) {
	if c.isDetached() {
		return 0, errVanished
	}
	return c.TCPConn.Write(b)
}

// Close closes the socket unless the device vanished silently, in which case
// the socket stays open until release.
func (c *deviceConn) Close() error {
	if c.isDetached() {
		return nil
	}
	return c.TCPConn.Close()
}

func (c *deviceConn) SetDeadline(t time.Time) error {
	if c.isDetached() {
		return nil
	}
	return c.TCPConn.SetDeadline(t)
}

func (c *deviceConn) SetReadDeadline(t time.Time) error {
	if c.isDetached() {
		return nil
	}
	return c.TCPConn.SetReadDeadline(t)
}

func (c *deviceConn) SetWriteDeadline(t time.Time) error {
	if c.isDetached() {
		return nil
	}
	return c.TCPConn.SetWriteDeadline(t)
}

// vanish cuts paho off the socket. In VanishSilent mode the socket stays
// open, nothing more is written to it and it is not read; in VanishReset mode
// it is closed with a RST. Either way paho's blocked read returns at once.
func (c *deviceConn) vanish(mode VanishMode) {
	c.mu.Lock()
	c.detached = true
	c.mu.Unlock()
	if mode == VanishReset {
		_ = c.TCPConn.SetLinger(0)
		_ = c.TCPConn.Close()
		return
	}
	// Wake paho's reader; deadlines paho sets from now on are ignored.
	_ = c.TCPConn.SetReadDeadline(time.Unix(1, 0))
}

// release closes a socket kept open by a silent vanish (a no-op otherwise).
func (c *deviceConn) release() {
	if c.isDetached() {
		_ = c.TCPConn.Close()
	}
}
