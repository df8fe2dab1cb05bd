package ingest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ivms/ams/pkg/mqttconn"
	"github.com/ivms/ams/pkg/protocol"
)

// MQTTConfig configures the MQTT input.
type MQTTConfig struct {
	URL      string // e.g. tcp://127.0.0.1:1883
	ClientID string // stable across restarts, so the broker keeps the session
	Username string
	Password string
	// TLS configures ssl:// and wss:// connections (nil: the system's CAs).
	TLS *tls.Config
	// Group is the shared-subscription group; empty subscribes without
	// $share (every instance then gets every frame).
	Group string
	// ShareEvents subscribes the event filters through the same group, so
	// that one instance (not all) writes each event.
	ShareEvents bool
	Events      []EventFilter
	// QueueSize is the buffer between paho's handler and Read. When it is
	// full the handler blocks, which stops paho reading the connection.
	QueueSize int
	// UnsubscribeOnClose unsubscribes before disconnecting at Close, so the
	// broker stops routing to this session (use when scaling in for good;
	// otherwise the session keeps its share of messages for the restart).
	UnsubscribeOnClose bool
	KeepAlive          time.Duration
	ConnectTimeout     time.Duration
}

// DefaultQueueSize is the MQTTConfig.QueueSize of a zero value (and of `ams
// ingest -mqtt-queue`).
const DefaultQueueSize = 1024

// MQTTInput reads device frames and connection events from an MQTT broker
// with paho.mqtt.golang (MQTT 3.1.1).
//
// The session is persistent (clean session false) under a stable client id,
// so QoS 1 messages the broker sent and ingest did not acknowledge, and those
// queued while ingest was away, are redelivered when it reconnects. Messages
// are handled in the order the broker sends them (paho OrderMatters) and
// acknowledged manually (AutoAckDisabled): Message.Ack sends the PUBACK.
// A PUBACK of a message received on a connection that has since been lost is
// dropped by paho; the broker redelivers that message (a duplicate, never a
// loss).
//
// Reconnects are paho's (auto-reconnect); every (re)connect subscribes again,
// which a broker that lost the session needs and one that kept it ignores.
type MQTTInput struct {
	cfg MQTTConfig
	log *slog.Logger
	m   *Metrics

	client     mqtt.Client
	ch         chan *Message
	closed     chan struct{}
	closeOnce  sync.Once
	subscribed atomic.Bool
	firstSub   chan struct{}
	firstOnce  sync.Once
}

// NewMQTTInput returns an input; Connect starts it.
func NewMQTTInput(cfg MQTTConfig, log *slog.Logger, m *Metrics) *MQTTInput {
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	cfg.KeepAlive, cfg.ConnectTimeout = mqttconn.Timings(cfg.KeepAlive, cfg.ConnectTimeout)
	if m == nil {
		m = NewMetrics(nil)
	}
	return &MQTTInput{
		cfg:      cfg,
		log:      log,
		m:        m,
		ch:       make(chan *Message, cfg.QueueSize),
		closed:   make(chan struct{}),
		firstSub: make(chan struct{}),
	}
}

// Filters returns the subscriptions: the device uplinks (shared when a group
// is set) and the connection events.
func (in *MQTTInput) Filters() []string {
	share := func(f string) string {
		if in.cfg.Group == "" {
			return f
		}
		return "$share/" + in.cfg.Group + "/" + f
	}
	fs := []string{share(protocol.UplinkFilter)}
	for _, e := range in.cfg.Events {
		if in.cfg.ShareEvents {
			fs = append(fs, share(e.Filter))
		} else {
			fs = append(fs, e.Filter)
		}
	}
	return fs
}

// Connect connects (retrying until ctx is done) and returns once the broker
// accepted the connection. The subscriptions are made on every connect in the
// background (Ready reports them): on a resumed session the broker sends the
// queued backlog before the SUBACK, so the caller must already be reading, or
// paho's reader would block behind a full queue and never see the SUBACK.
func (in *MQTTInput) Connect(ctx context.Context) error {
	opts := mqttconn.Conn{URL: in.cfg.URL, ClientID: in.cfg.ClientID, Username: in.cfg.Username, Password: in.cfg.Password,
		TLS: in.cfg.TLS, KeepAlive: in.cfg.KeepAlive, ConnectTimeout: in.cfg.ConnectTimeout}.Options().
		SetCleanSession(false).
		SetAutoAckDisabled(true).
		SetOrderMatters(true).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(10 * time.Second).
		SetResumeSubs(false).
		SetStore(discardStore{}).
		SetDefaultPublishHandler(in.handle).
		SetOnConnectHandler(in.onConnect).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			in.subscribed.Store(false)
			in.m.mqttConnected.Set(0)
			in.m.mqttLost.Inc()
			in.log.Warn("mqtt connection lost; reconnecting", "err", err)
		}).
		SetReconnectingHandler(func(_ mqtt.Client, _ *mqtt.ClientOptions) {
			in.log.Info("mqtt reconnecting", "url", in.cfg.URL)
		})
	if bufferable(in.cfg.URL) {
		opts.SetCustomOpenConnectionFn(openBuffered)
	}
	in.client = mqtt.NewClient(opts)
	tok := in.client.Connect()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return fmt.Errorf("mqtt connect %s: %w", in.cfg.URL, err)
		}
	case <-ctx.Done():
		in.client.Disconnect(0)
		return ctx.Err()
	}
	return nil
}

// Subscribed is closed once the first subscription is in place.
func (in *MQTTInput) Subscribed() <-chan struct{} { return in.firstSub }

func (in *MQTTInput) onConnect(c mqtt.Client) {
	in.m.mqttConnects.Inc()
	backoff := 500 * time.Millisecond
	for {
		err := in.subscribe(c)
		if err == nil {
			break
		}
		in.log.Error("mqtt subscribe failed; retrying", "err", err, "filters", in.Filters())
		select {
		case <-in.closed:
			return
		case <-time.After(backoff):
		}
		if !c.IsConnectionOpen() {
			return // the next connect subscribes again
		}
		backoff = min(2*backoff, 10*time.Second)
	}
	in.subscribed.Store(true)
	in.m.mqttConnected.Set(1)
	in.log.Info("mqtt connected and subscribed", "url", in.cfg.URL, "client_id", in.cfg.ClientID, "filters", in.Filters())
	in.firstOnce.Do(func() { close(in.firstSub) })
}

func (in *MQTTInput) subscribe(c mqtt.Client) error {
	filters := map[string]byte{}
	for _, f := range in.Filters() {
		filters[f] = 1
	}
	tok := c.SubscribeMultiple(filters, nil)
	if !tok.WaitTimeout(in.cfg.ConnectTimeout) {
		return errors.New("subscribe timed out")
	}
	if err := tok.Error(); err != nil {
		return err
	}
	if st, ok := tok.(*mqtt.SubscribeToken); ok {
		for f, qos := range st.Result() {
			if qos == 0x80 {
				return fmt.Errorf("subscription %q refused by the broker (check its ACL)", f)
			}
		}
	}
	return nil
}

// handle is paho's handler: it runs on paho's router goroutine, one message
// at a time in delivery order, and blocks while the queue is full.
func (in *MQTTInput) handle(_ mqtt.Client, pm mqtt.Message) {
	msg := &Message{Topic: pm.Topic(), Payload: pm.Payload(), Received: receivedNow(), ack: pm.Ack}
	select {
	case in.ch <- msg:
		return
	default:
	}
	in.m.handlerBlocked.Inc()
	select {
	case in.ch <- msg:
	case <-in.closed:
		// Not acknowledged: the broker redelivers it to the next session.
	}
}

// Read returns the next message.
func (in *MQTTInput) Read(ctx context.Context) (*Message, error) {
	select {
	case m := <-in.ch:
		return m, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-in.closed:
		return nil, errClosed
	}
}

var errClosed = errors.New("input closed")

// Ready reports whether the connection is up and subscribed.
func (in *MQTTInput) Ready() error {
	if in.client == nil || !in.client.IsConnectionOpen() {
		return errors.New("mqtt not connected")
	}
	if !in.subscribed.Load() {
		return errors.New("mqtt not subscribed")
	}
	return nil
}

// Close unsubscribes when configured, then disconnects. Messages read and
// not acknowledged stay with the broker's session.
func (in *MQTTInput) Close(ctx context.Context) error {
	in.closeOnce.Do(func() { close(in.closed) })
	if in.client == nil {
		return nil
	}
	if in.cfg.UnsubscribeOnClose && in.client.IsConnectionOpen() {
		tok := in.client.Unsubscribe(in.Filters()...)
		select {
		case <-tok.Done():
		case <-ctx.Done():
		}
	}
	in.client.Disconnect(250)
	in.m.mqttConnected.Set(0)
	return nil
}
