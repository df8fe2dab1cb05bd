package egress

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ivms/ams/pkg/mqttconn"
)

// MQTTConfig configures the pool of publishing connections.
type MQTTConfig struct {
	URL      string
	Username string
	Password string
	// TLS configures ssl:// and wss:// connections (nil: the system's CAs).
	TLS *tls.Config
	// ClientIDPrefix: connection i has client id ClientIDPrefix + "-" + i.
	ClientIDPrefix string
	// Connections is the pool size K.
	Connections    int
	KeepAlive      time.Duration
	ConnectTimeout time.Duration
	// PublishTimeout bounds the wait for a PUBACK. On timeout the connection
	// is dropped and rebuilt, so the frame cannot reach the broker later
	// behind a re-publish.
	PublishTimeout time.Duration
}

// DefaultPublishTimeout is the MQTTConfig.PublishTimeout of a zero value (and
// of `ams egress -publish-timeout`).
const DefaultPublishTimeout = 10 * time.Second

// ErrNotConnected is the result of a publish on a connection that is down.
var ErrNotConnected = errors.New("mqtt connection down")

// errPublishTimeout is the result of a publish whose PUBACK did not come in time.
var errPublishTimeout = errors.New("mqtt publish timed out")

// ErrStaleGeneration is the result of a publish decided for a connection
// that has been replaced since (see Pool.Gen).
var ErrStaleGeneration = errors.New("mqtt connection replaced since the publish was decided")

// Pool publishes over K persistent MQTT connections. A device (sn) is pinned
// to connection fnv32a(sn) mod K, and a connection writes publishes in the
// order Publish is called, so the frames of one device published in order
// reach the broker in order.
//
// Each connection is one paho client at a time with clean session, no
// auto-reconnect and no resend from paho's store: when the connection is
// lost, every publish in flight on it fails (its callback gets an error) and
// the pool dials a new client. The caller re-publishes what failed.
//
// Generations: every client of a connection is a new generation (Gen). A
// new generation starts only after every callback of the previous one has
// run, and Publish refuses a frame decided under an older generation
// (ErrStaleGeneration). So a caller that decides what to publish under its
// own lock, reading Gen there, and records failures under the same lock,
// never sends a frame on a new connection while an earlier frame of the same
// device is unresolved on the old one. (paho's
// own auto-reconnect resends stored publishes under new tokens and completes
// the original tokens without error before the broker acknowledged them, so a
// caller waiting on those tokens would take a frame for delivered too early.)
type Pool struct {
	cfg   MQTTConfig
	log   *slog.Logger
	m     *Metrics
	conns []*conn
	wg    sync.WaitGroup
	stop  context.CancelFunc
}

// NewPool returns a pool; Connect dials it.
func NewPool(cfg MQTTConfig, log *slog.Logger, m *Metrics) *Pool {
	if cfg.Connections <= 0 {
		cfg.Connections = 4
	}
	cfg.KeepAlive, cfg.ConnectTimeout = mqttconn.Timings(cfg.KeepAlive, cfg.ConnectTimeout)
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = DefaultPublishTimeout
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	p := &Pool{cfg: cfg, log: log, m: m}
	for i := range cfg.Connections {
		p.conns = append(p.conns, &conn{pool: p, id: fmt.Sprintf("%s-%d", cfg.ClientIDPrefix, i), up: make(chan struct{})})
	}
	return p
}

// Connect starts every connection and waits until all are up (or ctx is
// done). Connections keep redialing until Close.
func (p *Pool) Connect(ctx context.Context) error {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.stop = cancel
	for _, c := range p.conns {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			c.run(runCtx)
		}()
	}
	for _, c := range p.conns {
		select {
		case <-c.upCh():
		case <-ctx.Done():
			return fmt.Errorf("mqtt %s: connection %s not up: %w", p.cfg.URL, c.id, ctx.Err())
		}
	}
	return nil
}

// Ready reports whether every connection is up.
func (p *Pool) Ready() error {
	for _, c := range p.conns {
		if !c.isUp() {
			return fmt.Errorf("mqtt connection %s down", c.id)
		}
	}
	return nil
}

// ConnFor returns the index of the connection sn is pinned to.
func (p *Pool) ConnFor(sn string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(sn))
	return int(h.Sum32() % uint32(len(p.conns)))
}

// WaitUp waits until the connection of sn is up, or ctx is done.
func (p *Pool) WaitUp(ctx context.Context, sn string) error {
	select {
	case <-p.conns[p.ConnFor(sn)].upCh():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Gen returns the generation of sn's connection.
func (p *Pool) Gen(sn string) uint64 {
	c := p.conns[p.ConnFor(sn)]
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// Publish publishes payload with QoS 1 on topic over sn's connection if it
// is still at generation gen, and calls done exactly once: nil after the
// broker's PUBACK; an error when the connection is down, has moved past gen,
// was lost before the PUBACK, or the PUBACK did not come within
// PublishTimeout. A failed frame may still have reached the broker (its
// PUBACK lost): re-publishing it is at-least-once.
func (p *Pool) Publish(sn, topic string, payload []byte, gen uint64, done func(error)) {
	p.conns[p.ConnFor(sn)].publish(topic, payload, gen, done)
}

// Close disconnects every connection (waiting up to 250 ms for in-flight
// publishes) and stops redialing.
func (p *Pool) Close(context.Context) error {
	if p.stop != nil {
		p.stop()
	}
	p.wg.Wait()
	return nil
}

// conn is one pooled connection: a sequence of paho clients, one per
// network connection.
type conn struct {
	pool *Pool
	id   string

	mu       sync.Mutex
	client   mqtt.Client     // current client; nil while down
	gen      uint64          // generation of client (the last one while down)
	inflight *sync.WaitGroup // publishes of the current generation whose done has not returned
	up       chan struct{}   // closed while a client is connected
	lost     func()          // ends the current client's connection (idempotent)
}

func (c *conn) upCh() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.up
}

func (c *conn) isUp() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.client != nil
}

func (c *conn) publish(topic string, payload []byte, gen uint64, done func(error)) {
	c.mu.Lock()
	cl, wg := c.client, c.inflight
	var err error
	switch {
	case cl == nil:
		err = ErrNotConnected
	case c.gen != gen:
		err = ErrStaleGeneration
	default:
		wg.Add(1) // under mu: run waits for these before the next generation
	}
	c.mu.Unlock()
	if err != nil {
		done(err)
		return
	}
	start := time.Now()
	tok := cl.Publish(topic, 1, false, payload)
	go func() {
		defer wg.Done()
		t := time.NewTimer(c.pool.cfg.PublishTimeout)
		defer t.Stop()
		select {
		case <-tok.Done():
			err := tok.Error()
			if err == nil {
				c.pool.m.publishSeconds.Observe(time.Since(start).Seconds())
			}
			done(err)
		case <-t.C:
			// The PUBACK is overdue: drop this connection so the frame cannot
			// be written later, behind its re-publish.
			c.drop(cl)
			done(errPublishTimeout)
		}
	}()
}

// drop ends cl's connection if it is still the current client.
func (c *conn) drop(cl mqtt.Client) {
	c.mu.Lock()
	var lost func()
	if c.client == cl {
		lost = c.lost
	}
	c.mu.Unlock()
	if lost != nil {
		lost()
	}
}

// run dials, waits for the connection to be lost, and dials again until ctx
// is done.
func (c *conn) run(ctx context.Context) {
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		lost := make(chan struct{})
		var lostOnce sync.Once
		signalLost := func() { lostOnce.Do(func() { close(lost) }) }
		cfg := c.pool.cfg
		opts := mqttconn.Conn{URL: cfg.URL, ClientID: c.id, Username: cfg.Username, Password: cfg.Password,
			TLS: cfg.TLS, KeepAlive: cfg.KeepAlive, ConnectTimeout: cfg.ConnectTimeout}.Options().
			SetCleanSession(true).
			SetAutoReconnect(false).
			SetConnectRetry(false).
			SetWriteTimeout(c.pool.cfg.PublishTimeout).
			SetOrderMatters(true).
			SetConnectionLostHandler(func(_ mqtt.Client, err error) {
				c.pool.log.Warn("egress mqtt connection lost", "client_id", c.id, "err", err)
				signalLost()
			})
		cl := mqtt.NewClient(opts)
		tok := cl.Connect()
		var err error
		select {
		case <-tok.Done():
			err = tok.Error()
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err != nil {
			cl.Disconnect(0)
			if ctx.Err() != nil {
				return
			}
			c.pool.log.Warn("egress mqtt connect failed; retrying", "client_id", c.id, "url", c.pool.cfg.URL, "err", err, "in", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 200 * time.Millisecond
		c.mu.Lock()
		c.client, c.lost = cl, signalLost
		c.gen++
		c.inflight = &sync.WaitGroup{}
		close(c.up)
		c.mu.Unlock()
		c.pool.m.mqttUp.Inc()
		c.pool.m.mqttConnects.Inc()
		c.pool.log.Info("egress mqtt connected", "client_id", c.id, "url", c.pool.cfg.URL)

		select {
		case <-lost:
		case <-ctx.Done():
		}
		c.mu.Lock()
		c.client, c.lost = nil, nil
		c.up = make(chan struct{})
		wg := c.inflight
		c.mu.Unlock()
		c.pool.m.mqttUp.Dec()
		// Disconnect fails the tokens still in flight (paho cleans up the
		// message ids of a client that will not reconnect).
		quiesce := uint(0)
		if ctx.Err() != nil {
			quiesce = 250
		}
		cl.Disconnect(quiesce)
		// The next generation starts only when every publish of this one has
		// reported back (a token paho missed fails at PublishTimeout).
		wg.Wait()
	}
}
