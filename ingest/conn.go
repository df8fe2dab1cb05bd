package ingest

import (
	"bufio"
	"crypto/tls"
	"net"
	"net/url"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// discardStore is a paho Store that keeps nothing. paho stores inbound QoS 1
// messages until their PUBACK and outbound packets for a resend after a
// reconnect; ingest publishes nothing, subscribes again on every connect and
// gets at most QoS 1, and the broker's session (not paho's memory) is what
// redelivers an unacknowledged message. So nothing in paho's store is ever
// needed, and keeping it costs a map insert and delete (with formatted keys)
// per message.
type discardStore struct{}

func (discardStore) Open()                             {}
func (discardStore) Put(string, packets.ControlPacket) {}
func (discardStore) Get(string) packets.ControlPacket  { return nil }
func (discardStore) All() []string                     { return nil }
func (discardStore) Del(string)                        {}
func (discardStore) Close()                            {}
func (discardStore) Reset()                            {}

// bufferedConn reads through a buffer. paho reads every packet with several
// small reads straight from the connection (the fixed header byte, each
// byte of the remaining length, then the body): three or more system calls
// per message. A 64 KiB read buffer turns a burst of messages into one.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// openBuffered is a paho OpenConnectionFunc for tcp:// and mqtt:// (plain)
// and ssl://, tls://, mqtts:// (TLS with the client options' TLS config)
// that returns a bufferedConn. Other schemes are left to paho.
func openBuffered(uri *url.URL, opts mqtt.ClientOptions) (net.Conn, error) {
	d := &net.Dialer{Timeout: opts.ConnectTimeout}
	var conn net.Conn
	var err error
	switch uri.Scheme {
	case "ssl", "tls", "mqtts", "tcps":
		cfg := opts.TLSConfig
		if cfg == nil {
			cfg = &tls.Config{}
		}
		if cfg.ServerName == "" {
			cfg = cfg.Clone()
			cfg.ServerName = uri.Hostname()
		}
		conn, err = (&tls.Dialer{NetDialer: d, Config: cfg}).Dial("tcp", uri.Host)
	default:
		conn, err = d.Dial("tcp", uri.Host)
	}
	if err != nil {
		return nil, err
	}
	return &bufferedConn{Conn: conn, r: bufio.NewReaderSize(conn, 64<<10)}, nil
}

// bufferable reports whether openBuffered handles the URL's scheme.
func bufferable(rawURL string) bool {
	u, err := url.Parse(rawURL)
	if err != nil {
		return false
	}
	switch u.Scheme {
	case "tcp", "mqtt", "ssl", "tls", "mqtts", "tcps":
		return true
	}
	return false
}
