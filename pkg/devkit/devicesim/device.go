package devicesim

import (
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ivms/ams/pkg/protocol"
)

// Errors of Device.Send and Device.SendFrame.
var (
	ErrNotConnected = errors.New("devicesim: device not connected")
	ErrNoSession    = errors.New("devicesim: device has no session")
)

// maxAttempts is how many handshake attempts of one connection a device
// remembers, to tell a late reply to a superseded attempt from a bad one.
const maxAttempts = 4

type control int

const ctlStorm control = 1

type endReason int

const (
	endShutdown endReason = iota // ctx done
	endLost                      // paho reported the connection lost
	endStorm                     // a reconnect storm picked this device
	endVanish                    // the device vanished on purpose
)

// inFrame is one frame paho delivered, with its delivery time and the
// connection it came on.
type inFrame struct {
	payload []byte
	at      time.Time
	conn    *connection
}

// pendingReq is a 702 or 703 request waiting for its reply.
type pendingReq struct {
	index int64
	at    time.Time
}

// Device is one simulated device. Its protocol runs in one goroutine (so
// the frames it receives are handled one at a time, in the order the broker
// delivered them); the exported methods are safe to call from any
// goroutine.
type Device struct {
	f        *Fleet
	index    int
	sn       string
	uplink   string
	downlink string
	laddr    *net.TCPAddr
	vanisher bool

	session atomic.Pointer[protocol.SessionKey]
	cur     atomic.Pointer[connection]

	// Frames delivered by paho and not yet handled. paho's router only
	// appends here (never blocks), so a slow device cannot stall paho's
	// reading of PUBACKs.
	inMu  sync.Mutex
	inQ   []inFrame
	inSig chan struct{} // capacity 1: "inQ is not empty"
	ctl   chan control  // capacity 1

	// Owned by the device goroutine.
	work                             []inFrame
	hsT, hbT, streamT, uploadT, vanT *time.Timer
	attempts                         []protocol.HandshakeRequest
	hsDone                           bool
	hsSent                           time.Time
	hsTries                          int
	configAt                         time.Time // zero: no configuration awaiting its 301
	configSwept                      bool      // configAt was counted unanswered
	hb                               []time.Time
	hbSwept                          int // heartbeats counted unanswered whose reply may still come
	// The last ended connection: how many of its heartbeats may still be
	// answered on a later one (the cloud answers on the device's downlink
	// topic, not on a connection), its session, and until when frames
	// under that session are expected.
	hbCarry        int
	prevSession    *protocol.SessionKey
	prevUntil      time.Time
	stream, upload []pendingReq
	seq            int64
	malSeq         int
	bound          bool
	hbFor          *protocol.SessionKey // session hbData was encrypted with
	hbData         string               // the heartbeat's sData (constant per session: fixed iv)
}

// connection is one MQTT connection of a device: a fresh paho client, so
// that callbacks of an old connection can never be mistaken for the
// current one's.
type connection struct {
	client mqtt.Client
	lost   chan struct{} // closed when paho reports the connection lost
	once   sync.Once

	mu  sync.Mutex
	raw *deviceConn
}

func (c *connection) markLost() { c.once.Do(func() { close(c.lost) }) }

func (c *connection) rawConn() *deviceConn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.raw
}

func newDevice(f *Fleet, index int, sn string) *Device {
	d := &Device{
		f:        f,
		index:    index,
		sn:       sn,
		uplink:   protocol.UplinkTopic(sn),
		downlink: protocol.DownlinkTopic(sn),
		inSig:    make(chan struct{}, 1),
		ctl:      make(chan control, 1),
		malSeq:   index % malformedKinds,
	}
	return d
}

// SN returns the device's serial number.
func (d *Device) SN() string { return d.sn }

// Index returns the device's position in the fleet (0-based).
func (d *Device) Index() int { return d.index }

// Connected reports whether the device has an MQTT connection now.
func (d *Device) Connected() bool { return d.cur.Load() != nil }

// Session returns the device's current session key, and false if it has
// none (no handshake completed yet).
func (d *Device) Session() (protocol.SessionKey, bool) {
	s := d.session.Load()
	if s == nil {
		return protocol.SessionKey{}, false
	}
	return *s, true
}

// Send publishes payload as is on the device's uplink topic, over its
// current connection, and waits for paho to complete the publish (for QoS 1,
// the broker's PUBACK). It fails with ErrNotConnected when the device has
// no connection. Counted in Stats.Sent as "custom".
func (d *Device) Send(payload []byte) error {
	c := d.cur.Load()
	if c == nil {
		return ErrNotConnected
	}
	return d.publish(c, sCustom, payload)
}

// SendFrame encrypts body with the device's session key into fr.Data (body
// nil leaves fr.Data as given) and publishes the frame like Send. It fails
// with ErrNoSession when body is set and the device has no session.
func (d *Device) SendFrame(fr protocol.Frame, body []byte) error {
	if body != nil {
		s := d.session.Load()
		if s == nil {
			return ErrNoSession
		}
		fr.Data = protocol.EncryptBody(*s, body)
	}
	return d.Send(fr.Encode())
}

func (d *Device) signal(c control) {
	select {
	case d.ctl <- c:
	default:
	}
}

// maxHBCarry bounds how many replies to an ended connection's heartbeats
// a device still accepts as late.
const maxHBCarry = 8

// onMessage queues a frame paho delivered on connection c for the device
// goroutine; it runs in paho's router goroutine and never blocks on it.
func (d *Device) onMessage(c *connection, m mqtt.Message) {
	in := inFrame{payload: m.Payload(), at: time.Now(), conn: c}
	d.inMu.Lock()
	d.inQ = append(d.inQ, in)
	d.inMu.Unlock()
	select {
	case d.inSig <- struct{}{}:
	default:
	}
}

// backoff returns the wait before the n-th retry (n >= 1): 1s doubling to
// 30s, each drawn uniformly from [d/2, d] so retries do not synchronise.
func backoff(n int) time.Duration {
	d := time.Second << min(n-1, 5)
	d = min(d, 30*time.Second)
	return d/2 + rand.N(d/2+1)
}

// expDuration draws an exponentially distributed duration of mean m.
func expDuration(m time.Duration) time.Duration {
	return time.Duration(rand.ExpFloat64() * float64(m))
}

// run is the device's goroutine: connect, serve, reconnect, until ctx is done.
func (d *Device) run(ctx context.Context) {
	f := d.f
	failures := 0
	skipRamp := false
	defer d.stopTimers()
	for ctx.Err() == nil {
		if !skipRamp {
			if f.limiter.Wait(ctx) != nil {
				return
			}
		}
		skipRamp = false
		c, err := d.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			f.c.connectFailures.Add(1)
			failures++
			f.cfg.Logger.Debug("device connect failed", "sn", d.sn, "attempt", failures, "err", err)
			if sleepCtx(ctx, backoff(failures)) != nil {
				return
			}
			continue
		}
		failures = 0
		f.c.connects.Add(1)
		f.c.connected.Add(1)
		end := d.serve(ctx, c)
		f.c.connected.Add(-1)
		switch end {
		case endShutdown:
			c.client.Disconnect(250)
			return
		case endStorm:
			f.c.stormDisconnects.Add(1)
			c.client.Disconnect(50)
			skipRamp = true
		case endLost:
			f.c.connectionsLost.Add(1)
			f.cfg.Logger.Debug("device connection lost", "sn", d.sn)
			if sleepCtx(ctx, backoff(1)) != nil {
				return
			}
		case endVanish:
			f.c.vanished.Add(1)
			err := sleepCtx(ctx, f.cfg.VanishFor)
			if raw := c.rawConn(); raw != nil {
				raw.release()
			}
			if err != nil {
				return
			}
		}
	}
}

// connect opens a new MQTT connection and subscribes to the downlink topic.
func (d *Device) connect(ctx context.Context) (*connection, error) {
	cfg := &d.f.cfg
	c := &connection{lost: make(chan struct{})}
	opts := mqtt.NewClientOptions().
		AddBroker(cfg.BrokerURL).
		SetClientID(d.sn).
		SetUsername(d.sn).
		SetCleanSession(true).
		SetAutoReconnect(false). // the device reconnects itself, through the fleet's ramp
		SetConnectRetry(false).
		SetResumeSubs(false).
		SetKeepAlive(cfg.KeepAlive).
		SetConnectTimeout(cfg.ConnectTimeout).
		SetWriteTimeout(cfg.ReplyTimeout).
		// Order matters: frames of one device reach onMessage in order (it
		// only queues them, so paho's router never blocks on it).
		SetOrderMatters(true).
		SetProtocolVersion(4).
		SetCustomOpenConnectionFn(func(uri *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
			raw, err := dial(uri, d.laddr, cfg.ConnectTimeout)
			if err != nil {
				return nil, err
			}
			c.mu.Lock()
			c.raw = raw
			c.mu.Unlock()
			if usesTLS(uri) {
				return startTLS(raw, uri, cfg.TLS, cfg.ConnectTimeout)
			}
			return raw, nil
		}).
		SetConnectionLostHandler(func(mqtt.Client, error) { c.markLost() })
	if cfg.Token != nil {
		opts.SetPassword(cfg.Token(d.sn))
	}
	c.client = mqtt.NewClient(opts)
	if err := waitToken(ctx, c.client.Connect(), cfg.ConnectTimeout+5*time.Second); err != nil {
		c.client.Disconnect(0)
		return nil, fmt.Errorf("connect: %w", err)
	}
	onMessage := func(_ mqtt.Client, m mqtt.Message) { d.onMessage(c, m) }
	if err := waitToken(ctx, c.client.Subscribe(d.downlink, 1, onMessage), cfg.ReplyTimeout); err != nil {
		c.client.Disconnect(0)
		return nil, fmt.Errorf("subscribe %s: %w", d.downlink, err)
	}
	return c, nil
}

var errTokenTimeout = errors.New("timed out")

func waitToken(ctx context.Context, tok mqtt.Token, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return errTokenTimeout
	}
}

func timerC(t *time.Timer) <-chan time.Time {
	if t == nil {
		return nil
	}
	return t.C
}

// arm (re)starts *t to fire after dt, creating it on first use.
func arm(t **time.Timer, dt time.Duration) {
	if *t == nil {
		*t = time.NewTimer(dt)
		return
	}
	(*t).Reset(dt)
}

func disarm(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

func (d *Device) stopTimers() {
	for _, t := range []*time.Timer{d.hsT, d.hbT, d.streamT, d.uploadT, d.vanT} {
		disarm(t)
	}
}

// serve runs the protocol over one connection until it ends.
func (d *Device) serve(ctx context.Context, c *connection) endReason {
	f := d.f
	cfg := &f.cfg
	// A storm signal that arrived while disconnected is dropped. Frames an
	// earlier connection's paho router still delivers are dropped where they
	// are handled (their inFrame.conn is not c).
	select {
	case <-d.ctl:
	default:
	}
	d.attempts = d.attempts[:0]
	d.hsDone, d.hsTries = false, 0
	d.cur.Store(c)
	defer func() {
		d.cur.Store(nil)
		d.stopTimers()
		d.sweep(time.Now())
		d.configAt, d.configSwept = time.Time{}, false
		// The cloud may still answer this connection's heartbeats, on the
		// downlink topic the next connection subscribes to: those replies
		// are late, not unsolicited.
		d.hbCarry = min(len(d.hb)+d.hbSwept, maxHBCarry)
		d.prevSession, d.prevUntil = d.session.Load(), time.Now().Add(cfg.ReplyTimeout)
		d.hb, d.stream, d.upload = d.hb[:0], d.stream[:0], d.upload[:0]
		d.hbSwept = 0
		if d.hsDone {
			f.c.ready.Add(-1)
		}
	}()

	if d.session.Load() != nil && cfg.KeepSession > 0 && rand.Float64() < cfg.KeepSession {
		f.c.resumed.Add(1)
		d.onReady(c)
	} else {
		d.session.Store(nil)
		d.sendHandshake(c)
	}
	if d.vanisher {
		arm(&d.vanT, expDuration(cfg.VanishEvery))
	}

	for {
		select {
		case <-ctx.Done():
			return endShutdown
		case <-c.lost:
			return endLost
		case ctl := <-d.ctl:
			if ctl == ctlStorm {
				return endStorm
			}
		case <-d.inSig:
			d.inMu.Lock()
			d.work, d.inQ = d.inQ, d.work[:0]
			d.inMu.Unlock()
			for i := range d.work {
				if d.work[i].conn == c {
					d.handle(c, d.work[i])
				} else {
					f.c.staleFrames.Add(1)
				}
				d.work[i] = inFrame{}
			}
			d.work = d.work[:0]
		case <-timerC(d.hsT):
			f.c.handshakeRetries.Add(1)
			f.c.unanswered[qHandshake].Add(1)
			d.hsTries++
			d.sendHandshake(c)
		case <-timerC(d.hbT):
			d.sweep(time.Now())
			if cfg.Malformed > 0 && rand.Float64() < cfg.Malformed {
				d.sendMalformed(c)
			} else {
				d.sendHeartbeat(c)
			}
			if cfg.ClosedLoop {
				// The reply sends the next one; this re-sends if it is lost.
				arm(&d.hbT, cfg.ReplyTimeout)
			} else {
				arm(&d.hbT, d.heartbeatInterval())
			}
		case <-timerC(d.streamT):
			d.sendStreamURL(c)
			arm(&d.streamT, expDuration(cfg.StreamEvery))
		case <-timerC(d.uploadT):
			d.sendUploadParams(c)
			arm(&d.uploadT, expDuration(cfg.UploadEvery))
		case <-timerC(d.vanT):
			raw := c.rawConn()
			if raw == nil {
				c.client.Disconnect(0)
				return endLost
			}
			raw.vanish(cfg.VanishMode)
			t := time.NewTimer(10 * time.Second)
			select {
			case <-c.lost:
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
			return endVanish
		}
	}
}

func (d *Device) heartbeatInterval() time.Duration {
	cfg := &d.f.cfg
	j := 1 + cfg.Jitter*(2*rand.Float64()-1)
	return time.Duration(float64(cfg.Heartbeat) * j)
}

// onReady runs once the device has a session on this connection: it
// uploads the configuration and starts the periodic requests.
func (d *Device) onReady(c *connection) {
	cfg := &d.f.cfg
	d.hsDone = true
	d.f.c.ready.Add(1)
	d.sendConfiguration(c)
	// The first heartbeat comes after a uniform share of the interval, so a
	// fleet that connected in a burst still heartbeats at a steady rate.
	arm(&d.hbT, time.Duration(rand.Int64N(int64(cfg.Heartbeat))+1))
	if cfg.StreamEvery > 0 {
		arm(&d.streamT, expDuration(cfg.StreamEvery))
	}
	if cfg.UploadEvery > 0 {
		arm(&d.uploadT, expDuration(cfg.UploadEvery))
	}
}

// sweep counts as unanswered every request older than the reply timeout.
func (d *Device) sweep(now time.Time) {
	f := d.f
	cut := now.Add(-f.cfg.ReplyTimeout)
	n := 0
	for n < len(d.hb) && d.hb[n].Before(cut) {
		n++
	}
	if n > 0 {
		f.c.unanswered[qHeartbeat].Add(int64(n))
		d.hbSwept += n
		d.hb = append(d.hb[:0], d.hb[n:]...)
	}
	if !d.configAt.IsZero() && !d.configSwept && d.configAt.Before(cut) {
		f.c.unanswered[qConfiguration].Add(1)
		d.configSwept = true
	}
	if n := len(d.stream); n > 0 {
		d.stream = sweepReqs(d.stream, cut, &f.c.unanswered[qStreamURL])
		if d.bound {
			f.c.unansweredBound.Add(int64(n - len(d.stream)))
		}
	}
	d.upload = sweepReqs(d.upload, cut, &f.c.unanswered[qUploadParams])
}

func sweepReqs(q []pendingReq, cut time.Time, ctr *atomic.Int64) []pendingReq {
	n := 0
	for n < len(q) && q[n].at.Before(cut) {
		n++
	}
	if n == 0 {
		return q
	}
	ctr.Add(int64(n))
	return append(q[:0], q[n:]...)
}

// publish sends one frame and waits (up to the reply timeout) for paho to
// complete it.
func (d *Device) publish(c *connection, kind sentKind, payload []byte) error {
	f := d.f
	f.c.sent[kind].Add(1)
	tok := c.client.Publish(d.uplink, f.cfg.UplinkQoS, false, payload)
	if !tok.WaitTimeout(f.cfg.ReplyTimeout) {
		f.c.publishFailures.Add(1)
		return errTokenTimeout
	}
	if err := tok.Error(); err != nil {
		f.c.publishFailures.Add(1)
		return err
	}
	return nil
}

func (d *Device) frame(cmd int, data string) protocol.Frame {
	return protocol.Frame{CmdType: cmd, ProtocolVersion: d.f.cfg.ProtocolVersion, Data: data}
}

func (d *Device) sendHandshake(c *connection) {
	f := d.f
	req, sData, err := protocol.NewHandshake(f.cfg.PublicKey, crand.Reader)
	if err != nil {
		f.c.fail(string(protocol.ReasonOf(err)))
		f.cfg.Logger.Error("building handshake", "sn", d.sn, "err", err)
	} else {
		if len(d.attempts) == maxAttempts {
			d.attempts = append(d.attempts[:0], d.attempts[1:]...)
		}
		d.attempts = append(d.attempts, req)
		d.hsSent = time.Now()
		_ = d.publish(c, sHandshake, d.frame(protocol.CmdHandshake, sData).Encode())
	}
	arm(&d.hsT, f.cfg.HandshakeTimeout<<min(d.hsTries, 3))
}

func (d *Device) sendConfiguration(c *connection) {
	s := d.session.Load()
	body, err := protocol.MarshalASCII(configurationOf(d.sn, d.f.cfg.FirstIndex+d.index))
	if err != nil || s == nil {
		return
	}
	d.configAt, d.configSwept = time.Now(), false
	_ = d.publish(c, sConfiguration, d.frame(protocol.CmdConfiguration, protocol.EncryptBody(*s, body)).Encode())
}

func heartbeatBody(sn string) []byte {
	b, _ := protocol.MarshalASCII(protocol.Heartbeat{DeviceSn: sn, HeartBeat: 1})
	return b
}

func (d *Device) sendHeartbeat(c *connection) {
	s := d.session.Load()
	if s == nil {
		return
	}
	if d.hbFor != s {
		d.hbFor, d.hbData = s, protocol.EncryptBody(*s, heartbeatBody(d.sn))
	}
	d.hb = append(d.hb, time.Now())
	_ = d.publish(c, sHeartbeat, d.frame(protocol.CmdHeartbeat, d.hbData).Encode())
}

func (d *Device) sendMalformed(c *connection) {
	s := d.session.Load()
	if s == nil {
		return
	}
	k := d.malSeq % malformedKinds
	d.malSeq++
	d.f.c.malformed[k].Add(1)
	_ = d.publish(c, sMalformed, malformedFrame(MalformedKinds[k], d.sn, d.f.cfg.ProtocolVersion, *s))
}

// msgID returns a fresh 32-hex-digit message id.
func msgID() string {
	var b [32]byte
	const hexd = "0123456789abcdef"
	x, y := rand.Uint64(), rand.Uint64()
	for i := 0; i < 16; i++ {
		b[i] = hexd[x>>(60-4*i)&15]
		b[16+i] = hexd[y>>(60-4*i)&15]
	}
	return string(b[:])
}

func (d *Device) sendAms(c *connection, kind sentKind, ams int, body any) {
	s := d.session.Load()
	if s == nil {
		return
	}
	b, err := protocol.MarshalASCII(body)
	if err != nil {
		return
	}
	fr := d.frame(protocol.CmdAms, protocol.EncryptBody(*s, b))
	fr.AmsCmdType = ams
	fr.MsgID = msgID()
	_ = d.publish(c, kind, fr.Encode())
}

func (d *Device) sendStreamURL(c *connection) {
	d.seq++
	d.stream = append(d.stream, pendingReq{index: d.seq, at: time.Now()})
	d.sendAms(c, sStreamURL, protocol.AmsStreamURL, struct {
		Index   int64 `json:"iGetVMSURL"`
		Expires int64 `json:"iExpiresTime"`
	}{d.seq, time.Now().Unix() + 120})
}

func (d *Device) sendUploadParams(c *connection) {
	d.seq++
	d.upload = append(d.upload, pendingReq{index: d.seq, at: time.Now()})
	d.sendAms(c, sUploadParams, protocol.AmsUploadParams, protocol.UploadParamsRequest{Index: d.seq})
}

// handle checks one received frame, acts on it, counts it and calls the hook.
func (d *Device) handle(c *connection, in inFrame) {
	r := Received{SN: d.sn, Payload: in.payload, At: in.at}
	pendingHB := len(d.hb)
	r.Frame, r.Body, r.Failure = d.check(c, in)
	if r.Failure != "" {
		d.f.c.fail(r.Failure)
	}
	if d.f.cfg.ClosedLoop && r.Failure == "" && r.Frame.CmdType == protocol.CmdHeartbeat && pendingHB > 0 && len(d.hb) == 0 {
		// Closed loop: the reply to the last outstanding heartbeat
		// sends the next one at once.
		d.sendHeartbeat(c)
		arm(&d.hbT, d.f.cfg.ReplyTimeout)
	}
	if hook := d.f.cfg.OnReceive; hook != nil {
		hook(r)
	}
}

func recvKindOf(fr protocol.Frame) recvKind {
	switch fr.CmdType {
	case protocol.CmdHandshake:
		return rHandshake
	case protocol.CmdHeartbeat:
		return rHeartbeat
	case protocol.CmdCommand:
		return rCommand
	case protocol.CmdAms:
		switch fr.AmsCmdType {
		case protocol.AmsStreamURL:
			return rStreamURL
		case protocol.AmsUploadParams:
			return rUploadParams
		case protocol.AmsStreamControl:
			return rStreamControl
		case protocol.AmsUploadControl:
			return rUploadControl
		}
	}
	return rOther
}

func reasonOf(err error) string { return string(protocol.ReasonOf(err)) }

// decodeBody checks that a decrypted body is UTF-8 and a JSON object and
// decodes it into v, failing with the reasons protocol.DecryptJSON uses.
func decodeBody(body []byte, v any) string {
	if !utf8.Valid(body) {
		return string(protocol.ReasonBadUTF8)
	}
	i := 0
	for i < len(body) && (body[i] == ' ' || body[i] == '\t' || body[i] == '\n' || body[i] == '\r') {
		i++
	}
	if i == len(body) || body[i] != '{' {
		return string(protocol.ReasonBadJSON)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return string(protocol.ReasonBadJSON)
	}
	return ""
}

// check decodes, decrypts and verifies one frame and acts on it. It returns
// the decoded frame, the decrypted body and the failure reason ("" if none).
func (d *Device) check(c *connection, in inFrame) (protocol.Frame, []byte, string) {
	f := d.f
	fr, err := protocol.DecodeFrame(in.payload)
	if err != nil {
		f.c.received[rOther].Add(1)
		return fr, nil, reasonOf(err)
	}
	kind := recvKindOf(fr)
	f.c.received[kind].Add(1)
	switch kind {
	case rHandshake:
		return fr, nil, d.onHandshakeReply(c, fr, in.at)
	case rOther:
		return fr, nil, FailUnexpectedKind
	}
	s := d.session.Load()
	var body []byte
	if s != nil {
		body, err = protocol.DecryptBody(*s, fr.Data)
	}
	if s == nil || err != nil {
		if d.oldSessionFrame(s, fr, kind, in.at) {
			return fr, nil, ""
		}
		if s == nil {
			return fr, nil, FailNoSession
		}
		return fr, nil, reasonOf(err)
	}
	switch kind {
	case rHeartbeat:
		var v protocol.HeartbeatReply
		if r := decodeBody(body, &v); r != "" {
			return fr, body, r
		}
		switch {
		case len(d.hb) > 0:
			rtt := in.at.Sub(d.hb[0])
			f.c.latency[qHeartbeat].Record(rtt)
			if f.cfg.ClosedLoop && in.at.UnixNano() >= f.c.loopFrom.Load() {
				f.c.loop.Record(rtt)
			}
			d.hb = append(d.hb[:0], d.hb[1:]...)
		case d.hbSwept > 0:
			f.c.lateReplies.Add(1)
			d.hbSwept--
		case d.hbCarry > 0:
			f.c.lateReplies.Add(1)
			d.hbCarry--
		default:
			return fr, body, FailUnsolicited
		}
		if v.Online != 1 {
			return fr, body, FailBadValue
		}
		return fr, body, ""
	case rCommand:
		return fr, body, d.onCommand(c, *s, fr, body, in.at)
	case rStreamURL:
		var v protocol.StreamURLReply
		if r := decodeBody(body, &v); r != "" {
			return fr, body, r
		}
		return fr, body, d.matchReply(&d.stream, v.Index, qStreamURL, in.at)
	case rUploadParams:
		var v struct {
			Index int64 `json:"index"`
		}
		if r := decodeBody(body, &v); r != "" {
			return fr, body, r
		}
		return fr, body, d.matchReply(&d.upload, v.Index, qUploadParams, in.at)
	default: // rStreamControl, rUploadControl
		var v protocol.AmsControl
		if r := decodeBody(body, &v); r != "" {
			return fr, body, r
		}
		if fr.MsgID == "" {
			return fr, body, FailMissingMsgID
		}
		reply := d.frame(protocol.CmdAms, protocol.EncryptBody(*s, []byte(`{"iResult":0}`)))
		reply.AmsCmdType, reply.MsgID = fr.AmsCmdType, fr.MsgID
		f.c.replies.Add(1)
		_ = d.publish(c, sControlReply, reply.Encode())
		return fr, body, ""
	}
}

// oldSessionFrame handles a frame that the device's current session cannot
// decrypt (or that came while it has none) but the session of its last
// ended connection can, within the reply timeout of that connection's end:
// the cloud sent it before it saw the new handshake. A heartbeat reply
// among them is late (up to the heartbeats that connection left
// unanswered); anything else is stale and not acted on, as the firmware
// would not. It reports whether the frame was one of those.
func (d *Device) oldSessionFrame(s *protocol.SessionKey, fr protocol.Frame, kind recvKind, at time.Time) bool {
	old := d.prevSession
	if old == nil || (s != nil && *s == *old) || !at.Before(d.prevUntil) {
		return false
	}
	body, err := protocol.DecryptBody(*old, fr.Data)
	if err != nil {
		return false
	}
	if kind == rHeartbeat {
		var v protocol.HeartbeatReply
		if decodeBody(body, &v) != "" || v.Online != 1 || d.hbCarry == 0 {
			return false
		}
		d.hbCarry--
		d.f.c.lateReplies.Add(1)
		return true
	}
	d.f.c.staleFrames.Add(1)
	return true
}

// matchReply matches a 702/703 reply to its request by index. A reply to a
// request of this device that is no longer pending (counted unanswered, or
// answered twice) is late, not a failure; an index the device never sent is.
func (d *Device) matchReply(q *[]pendingReq, index int64, kind reqKind, at time.Time) string {
	for i, p := range *q {
		if p.index == index {
			d.f.c.latency[kind].Record(at.Sub(p.at))
			*q = append((*q)[:i], (*q)[i+1:]...)
			return ""
		}
	}
	if index > 0 && index <= d.seq {
		d.f.c.lateReplies.Add(1)
		return ""
	}
	return FailUnmatchedReply
}

func (d *Device) onHandshakeReply(c *connection, fr protocol.Frame, at time.Time) string {
	f := d.f
	n := len(d.attempts)
	if n == 0 {
		return FailUnexpectedHandshake
	}
	_, _, s, err := d.attempts[n-1].VerifyReply(fr.Data)
	if err == nil {
		d.session.Store(&s)
		if d.hsDone {
			f.c.duplicateHS.Add(1) // the cloud's latest reply wins
			return ""
		}
		f.c.handshakes.Add(1)
		f.c.latency[qHandshake].Record(at.Sub(d.hsSent))
		disarm(d.hsT)
		d.onReady(c)
		return ""
	}
	for i := n - 2; i >= 0; i-- {
		if _, _, _, e := d.attempts[i].VerifyReply(fr.Data); e == nil {
			f.c.lateHS.Add(1)
			return ""
		}
	}
	return reasonOf(err)
}

// onCommand handles an iCmdType 3 command and answers it with iCmdType 6.
func (d *Device) onCommand(c *connection, s protocol.SessionKey, fr protocol.Frame, body []byte, at time.Time) string {
	f := d.f
	failure := ""
	switch fr.AppCmdType {
	case protocol.AppGetConfig:
		var v protocol.BindStatus
		if r := decodeBody(body, &v); r != "" {
			return r
		}
		if b := v.BindStatus == 1; b != d.bound {
			d.bound = b
			if b {
				f.c.bound.Add(1)
			} else {
				f.c.bound.Add(-1)
			}
		}
		if !d.configAt.IsZero() {
			if d.configSwept {
				f.c.lateReplies.Add(1)
			} else {
				f.c.latency[qConfiguration].Record(at.Sub(d.configAt))
			}
			f.c.configured.Add(1)
			d.configAt, d.configSwept = time.Time{}, false
		}
		if v.GetConfig != 1 {
			failure = FailBadValue
		}
	default:
		var v map[string]json.RawMessage
		if r := decodeBody(body, &v); r != "" {
			return r
		}
	}
	if fr.MsgID == "" {
		return FailMissingMsgID
	}
	reply := d.frame(protocol.CmdReply, protocol.EncryptBody(s, d.commandReply(fr.AppCmdType)))
	reply.MsgID, reply.AppCmdType = fr.MsgID, fr.AppCmdType
	f.c.replies.Add(1)
	_ = d.publish(c, sCommandReply, reply.Encode())
	return failure
}

// commandReply is the body a device answers a command with.
func (d *Device) commandReply(app int) []byte {
	if app == protocol.AppGetSDInfo {
		cfg := configurationOf(d.sn, d.f.cfg.FirstIndex+d.index)
		b, _ := protocol.MarshalASCII(protocol.SDCardInfo{
			TFCardState: cfg.TFCardState, TFCardCapacitySize: cfg.TFCardCapacitySize, TFCardUseSize: cfg.TFCardUseSize,
		})
		return b
	}
	return []byte(`{"iResult":0}`)
}

// configurationOf returns the plausible configuration of device number n.
func configurationOf(sn string, n int) protocol.Configuration {
	a, b, c := byte(n>>16), byte(n>>8), byte(n)
	cfg := protocol.Configuration{
		DeviceSn:           sn,
		HwVersion:          "V1.2",
		ModelName:          "IPC-AI-4M-SIM",
		IPAddr:             fmt.Sprintf("10.%d.%d.%d", a, b, c),
		MacAddr:            fmt.Sprintf("02:00:5e:%02x:%02x:%02x", a, b, c),
		VPNIPAddr:          fmt.Sprintf("172.%d.%d.%d", 16+int(a)%16, b, c),
		FwVersion:          "V2.3.7 build 231012",
		AlphaVer:           "A1.0.3",
		AiModelVer:         "M5.2.0",
		IEVer:              "IE1.4",
		ChnCnt:             1,
		AlarmIn:            1,
		AlarmOut:           1,
		NetMethod:          0,
		TFCardState:        6,
		TFCardCapacitySize: 30436,
		TFCardUseSize:      int64(n%30000) + 100,
	}
	if n%5 == 4 {
		cfg.NetMethod = 1
		cfg.SSID = "sim-wifi-" + strconv.Itoa(n%7)
		cfg.WifiStrength = 40 + n%60
	}
	return cfg
}
