// Package devbroker is the embedded MQTT broker of `ams-dev`: a mochi-mqtt
// server on one TCP listener that behaves, for ams, like the production
// EMQX 5 cluster:
//
//   - It applies ams's broker policy (pkg/deviceauth): service accounts log
//     in with their password; every publish and subscribe (and every
//     delivery) is checked with deviceauth.Authorize, so a device may only
//     publish /ivms/pub/{its sn} and read /ivms/sub/{its sn} and /ivms/push.
//     Device logins are decided by Config.Devices (default AnyDevice: any
//     valid sn whose client id equals its username, the dev-mode rule).
//   - It publishes EMQX 5 client events: after a client's CONNACK,
//     $SYS/brokers/{node}/clients/{clientid}/connected with connected_at
//     (unix ms); when its connection ends, .../disconnected with
//     disconnected_at, reason (normal, takenover, keepalive_timeout,
//     tcp_closed) and the connected_at of that connection. The events are
//     published at QoS 1 through the server's inline client, so `ams ingest`
//     reads them as it reads EMQX's.
//
// Delivery is mochi's: QoS 0/1/2, shared subscriptions ($share/{group}/...),
// no persistence (sessions live as long as the process).
package devbroker

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ivms/ams/pkg/deviceauth"
	"github.com/ivms/ams/pkg/protocol"
)

// DefaultNode is the broker node name in the event topics.
const DefaultNode = "ams-dev@127.0.0.1"

// Config configures a Broker.
type Config struct {
	// Addr is the TCP listen address, e.g. 127.0.0.1:18830 (":0" style
	// addresses pick a free port; see Broker.Addr).
	Addr string
	// Node is the node name in the event topics (default DefaultNode).
	Node string
	// Accounts are the service accounts of ams's roles.
	Accounts deviceauth.Accounts
	// Devices decides a login whose username is not a service account
	// (default AnyDevice).
	Devices func(deviceauth.Login) deviceauth.Decision
	// Logger receives refused logins (info) and broker errors; nil discards.
	Logger *slog.Logger
	// Now is the clock of the event times (default time.Now).
	Now func() time.Time
}

// AnyDevice is the dev-mode device rule: any valid sn logs in, without a
// password check, as long as its client id equals its username.
func AnyDevice(l deviceauth.Login) deviceauth.Decision {
	switch {
	case !protocol.ValidSN(l.Username):
		return deviceauth.Decision{Reason: deviceauth.ReasonBadUsername}
	case l.ClientID != l.Username:
		return deviceauth.Decision{Reason: deviceauth.ReasonClientIDNotSN}
	}
	return deviceauth.Decision{Allow: true, Reason: deviceauth.ReasonDevice}
}

// Broker is a running embedded broker. Build it with Start; Close stops it.
type Broker struct {
	srv    *mochi.Server
	addr   string
	hook   *hook
	closed atomic.Bool
}

// Start starts the broker listening on cfg.Addr.
func Start(cfg Config) (*Broker, error) {
	if cfg.Node == "" {
		cfg.Node = DefaultNode
	}
	if cfg.Devices == nil {
		cfg.Devices = AnyDevice
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("devbroker: listen %s: %w", cfg.Addr, err)
	}
	srv := mochi.New(&mochi.Options{
		InlineClient:           true,
		Logger:                 cfg.Logger,
		SysTopicResendInterval: 3600,
	})
	h := &hook{cfg: cfg, srv: srv, conns: map[*mochi.Client]int64{}}
	if err := srv.AddHook(h, nil); err != nil {
		ln.Close()
		return nil, fmt.Errorf("devbroker: add hook: %w", err)
	}
	l := listeners.NewNet("tcp", ln)
	if err := srv.AddListener(l); err != nil {
		ln.Close()
		return nil, fmt.Errorf("devbroker: add listener: %w", err)
	}
	if err := srv.Serve(); err != nil {
		ln.Close()
		return nil, fmt.Errorf("devbroker: serve: %w", err)
	}
	return &Broker{srv: srv, addr: ln.Addr().String(), hook: h}, nil
}

// Addr returns the listen address (host:port).
func (b *Broker) Addr() string { return b.addr }

// URL returns the broker URL for MQTT clients, tcp://host:port (an
// unspecified listen host, as in ":1883", becomes 127.0.0.1).
func (b *Broker) URL() string {
	host, port, err := net.SplitHostPort(b.addr)
	if err != nil {
		return "tcp://" + b.addr
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "tcp://" + net.JoinHostPort(host, port)
}

// Connected returns the number of clients connected now (devices and roles).
func (b *Broker) Connected() int64 { return atomic.LoadInt64(&b.srv.Info.ClientsConnected) }

// Refused returns the logins refused so far.
func (b *Broker) Refused() int64 { return b.hook.refused.Load() }

// Close disconnects every client and stops the broker. Calling it again
// does nothing.
func (b *Broker) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	b.hook.closing.Store(true)
	return b.srv.Close()
}

// hook applies the policy and publishes the connection events.
type hook struct {
	mochi.HookBase
	cfg     Config
	srv     *mochi.Server
	refused atomic.Int64
	closing atomic.Bool

	mu    sync.Mutex
	conns map[*mochi.Client]int64 // connected_at (unix ms) of each live connection
}

func (h *hook) ID() string { return "ams-devbroker" }

func (h *hook) Provides(b byte) bool {
	switch b {
	case mochi.OnConnectAuthenticate, mochi.OnACLCheck, mochi.OnSessionEstablished, mochi.OnDisconnect:
		return true
	}
	return false
}

func (h *hook) OnConnectAuthenticate(cl *mochi.Client, pk packets.Packet) bool {
	l := deviceauth.Login{ClientID: cl.ID, Username: string(pk.Connect.Username), Password: string(pk.Connect.Password)}
	var d deviceauth.Decision
	if h.cfg.Accounts.Has(l.Username) {
		d = deviceauth.Authenticate(l, h.cfg.Accounts, "")
	} else {
		d = h.cfg.Devices(l)
	}
	if !d.Allow {
		h.refused.Add(1)
		h.cfg.Logger.Info("devbroker: login refused", "clientid", l.ClientID, "username", l.Username, "reason", d.Reason)
	}
	return d.Allow
}

func (h *hook) OnACLCheck(cl *mochi.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	a := deviceauth.Access{ClientID: cl.ID, Username: string(cl.Properties.Username), Topic: topic, Action: deviceauth.Subscribe}
	if write {
		a.Action = deviceauth.Publish
	}
	return deviceauth.Authorize(a, h.cfg.Accounts).Allow
}

// connectedEvent is the EMQX 5 client.connected payload (the fields ams
// and a human reading it use).
type connectedEvent struct {
	ClientID    string `json:"clientid"`
	Username    string `json:"username"`
	IPAddress   string `json:"ipaddress"`
	ProtoName   string `json:"proto_name"`
	ProtoVer    byte   `json:"proto_ver"`
	Keepalive   uint16 `json:"keepalive"`
	CleanStart  bool   `json:"clean_start"`
	ConnectedAt int64  `json:"connected_at"`
	TS          int64  `json:"ts"`
}

// disconnectedEvent is the EMQX 5 client.disconnected payload.
type disconnectedEvent struct {
	ClientID       string `json:"clientid"`
	Username       string `json:"username"`
	Reason         string `json:"reason"`
	ConnectedAt    int64  `json:"connected_at"`
	DisconnectedAt int64  `json:"disconnected_at"`
	TS             int64  `json:"ts"`
}

func (h *hook) OnSessionEstablished(cl *mochi.Client, _ packets.Packet) {
	now := h.cfg.Now().UnixMilli()
	h.mu.Lock()
	h.conns[cl] = now
	h.mu.Unlock()
	ip := cl.Net.Remote
	if host, _, err := net.SplitHostPort(ip); err == nil {
		ip = host
	}
	h.publish(cl.ID, "connected", connectedEvent{
		ClientID: cl.ID, Username: string(cl.Properties.Username), IPAddress: ip, ProtoName: "MQTT",
		ProtoVer: cl.Properties.ProtocolVersion, Keepalive: cl.State.Keepalive, CleanStart: cl.Properties.Clean,
		ConnectedAt: now, TS: now,
	})
}

func (h *hook) OnDisconnect(cl *mochi.Client, err error, _ bool) {
	h.mu.Lock()
	at, ok := h.conns[cl]
	delete(h.conns, cl)
	h.mu.Unlock()
	if !ok {
		return // never got past authentication: EMQX reports no event either
	}
	now := h.cfg.Now().UnixMilli()
	h.publish(cl.ID, "disconnected", disconnectedEvent{
		ClientID: cl.ID, Username: string(cl.Properties.Username), Reason: h.reason(cl, err),
		ConnectedAt: at, DisconnectedAt: now, TS: now,
	})
}

// reason maps how a connection ended to EMQX's disconnect reasons.
func (h *hook) reason(cl *mochi.Client, err error) string {
	cause := cl.StopCause()
	var ne net.Error
	switch {
	case cl.IsTakenOver() || errors.Is(cause, packets.ErrSessionTakenOver):
		return "takenover"
	case h.closing.Load():
		return "kicked"
	case err == nil || errors.Is(cause, packets.CodeDisconnect):
		return "normal"
	case errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		return "keepalive_timeout"
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		return "tcp_closed"
	default:
		return "tcp_closed"
	}
}

func (h *hook) publish(clientID, what string, v any) {
	if clientID == "" || strings.ContainsAny(clientID, "/+#") {
		return // not a single topic level: EMQX could not name it either
	}
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	topic := "$SYS/brokers/" + h.cfg.Node + "/clients/" + clientID + "/" + what
	if err := h.srv.Publish(topic, b, false, 1); err != nil {
		h.cfg.Logger.Warn("devbroker: publish event", "topic", topic, "err", err)
	}
}
