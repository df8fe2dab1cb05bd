package mqttconform

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Device publishes as one device would: client id = username = sn, QoS 1.
//
// It reports a frame as acknowledged only on the broker's PUBACK: each
// network connection is a fresh paho client with clean session and no
// auto-reconnect, so paho never resends from its store (its resend completes
// the original token as if acknowledged). After a failure the next Publish
// dials again.
type Device struct {
	SN string
	// Token is the device's password (empty: none, for an open broker;
	// on the stack's broker register it with testenv.MQTTDevice first).
	Token string
	url   string
	mu    sync.Mutex
	cl    mqtt.Client
}

// NewDevice returns a device of the broker at url.
func NewDevice(url, sn string) *Device { return &Device{SN: sn, url: url} }

func (d *Device) client(ctx context.Context) (mqtt.Client, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cl != nil && d.cl.IsConnectionOpen() {
		return d.cl, nil
	}
	if d.cl != nil {
		d.cl.Disconnect(0)
		d.cl = nil
	}
	backoff := 50 * time.Millisecond
	for {
		opts := mqtt.NewClientOptions().AddBroker(d.url).SetClientID(d.SN).SetUsername(d.SN).SetPassword(d.Token).
			SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
			SetConnectTimeout(5 * time.Second).SetKeepAlive(30 * time.Second).SetWriteTimeout(10 * time.Second)
		cl := mqtt.NewClient(opts)
		tok := cl.Connect()
		if tok.WaitTimeout(6*time.Second) && tok.Error() == nil {
			d.cl = cl
			return cl, nil
		}
		cl.Disconnect(0)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// Publish publishes payloads on topic in order, pipelined, and returns one
// error per payload: nil when the broker acknowledged it.
func (d *Device) Publish(ctx context.Context, topic string, payloads [][]byte) []error {
	errs := make([]error, len(payloads))
	cl, err := d.client(ctx)
	if err != nil {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	toks := make([]mqtt.Token, len(payloads))
	for i, p := range payloads {
		toks[i] = cl.Publish(topic, 1, false, p)
	}
	failed := false
	for i, tok := range toks {
		select {
		case <-tok.Done():
			errs[i] = tok.Error()
		case <-time.After(15 * time.Second):
			errs[i] = errors.New("no PUBACK within 15s")
		case <-ctx.Done():
			errs[i] = ctx.Err()
		}
		failed = failed || errs[i] != nil
	}
	if failed {
		d.mu.Lock()
		if d.cl == cl {
			d.cl.Disconnect(0)
			d.cl = nil
		}
		d.mu.Unlock()
	}
	return errs
}

// Close disconnects.
func (d *Device) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cl != nil {
		d.cl.Disconnect(100)
		d.cl = nil
	}
}

// Subscriber receives what a set of devices would: a persistent session
// (clean session false, fixed client id) subscribed with QoS 1, so frames
// queued while it is away, or while the broker restarts, still arrive.
type Subscriber struct {
	cl mqtt.Client
	ch chan Frame
}

// NewSubscriber subscribes filter on the broker at url and turns each
// message into a Frame with parse (false: ignore it). It is closed when the
// test ends.
func NewSubscriber(t testing.TB, url, clientID, filter string, parse func(topic string, payload []byte) (Frame, bool)) *Subscriber {
	t.Helper()
	s := &Subscriber{ch: make(chan Frame, 1<<20)}
	subscribed := make(chan struct{}, 1)
	opts := mqtt.NewClientOptions().AddBroker(url).SetClientID(clientID).
		SetCleanSession(false).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(100 * time.Millisecond).SetMaxReconnectInterval(time.Second).
		SetOrderMatters(true).SetResumeSubs(false).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			if f, ok := parse(m.Topic(), m.Payload()); ok {
				s.ch <- f
			}
		}).
		SetOnConnectHandler(func(c mqtt.Client) {
			tok := c.Subscribe(filter, 1, nil)
			if tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
				select {
				case subscribed <- struct{}{}:
				default:
				}
			}
		})
	s.cl = mqtt.NewClient(opts)
	if tok := s.cl.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect %s: %v", url, tok.Error())
	}
	select {
	case <-subscribed:
	case <-time.After(20 * time.Second):
		t.Fatalf("subscriber: subscribe %s timed out", filter)
	}
	t.Cleanup(func() { s.cl.Disconnect(100) })
	return s
}

// Frames delivers the received frames in arrival order.
func (s *Subscriber) Frames() <-chan Frame { return s.ch }

// Payload is the suite's frame payload: "sn#seq".
func Payload(sn string, seq int) []byte { return fmt.Appendf(nil, "%s#%06d", sn, seq) }
