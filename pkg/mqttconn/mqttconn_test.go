package mqttconn

import (
	"crypto/tls"
	"testing"
	"time"
)

func TestOptions(t *testing.T) {
	o := Conn{URL: "ssl://127.0.0.1:8883", ClientID: "ams-x", Username: "u", Password: "p", TLS: &tls.Config{ServerName: "b"}}.Options()
	if len(o.Servers) != 1 || o.Servers[0].String() != "ssl://127.0.0.1:8883" || o.ClientID != "ams-x" || o.Username != "u" || o.Password != "p" {
		t.Errorf("options: %+v", o)
	}
	if o.KeepAlive != int64(DefaultKeepAlive/time.Second) || o.ConnectTimeout != DefaultConnectTimeout || o.PingTimeout != PingTimeout {
		t.Errorf("timings: keepalive %d, connect %s, ping %s", o.KeepAlive, o.ConnectTimeout, o.PingTimeout)
	}
	if o.TLSConfig == nil || o.TLSConfig.ServerName != "b" {
		t.Errorf("tls: %+v", o.TLSConfig)
	}
	o = Conn{URL: "tcp://x:1", KeepAlive: 5 * time.Second, ConnectTimeout: 2 * time.Second}.Options()
	if o.KeepAlive != 5 || o.ConnectTimeout != 2*time.Second {
		t.Errorf("given timings: keepalive %d, connect %s", o.KeepAlive, o.ConnectTimeout)
	}
}
