// Package devicesim simulates a fleet of cameras that speak the device
// protocol (shared/protocol/PROTOCOL.md) over MQTT: the load generator of
// every ams benchmark and the fleet of `make run`.
//
// Each device has its own MQTT connection (client id = username = sn), does
// the RSA/AES handshake with the cloud's public key, uploads its
// configuration, sends heartbeats and, at configurable rates, stream-URL
// (702) and upload-parameter (703) requests, and answers every command the
// cloud sends (iCmdType 3 with iCmdType 6; 704/705 with iCmdType 7). Every
// frame a device receives is decoded, decrypted and checked; what fails is
// counted by reason (Stats.Failures), what goes unanswered by request kind
// (Stats.Unanswered), and request-to-reply latencies are kept in histograms
// (Stats.Latency).
//
// A Fleet can also misbehave on purpose: send a share of malformed frames
// (MalformedKinds), disconnect a share of its devices at once and reconnect
// them (reconnect storms), and let devices vanish without an MQTT DISCONNECT
// and come back later.
package devicesim

import (
	"context"
	"crypto/rsa"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/ivms/ams/pkg/protocol"
)

// SNLength is the length of every simulated serial number.
const SNLength = 16

// Config configures a Fleet. Zero values take the defaults documented on
// each field, except Devices, BrokerURL and PublicKey, which are required.
type Config struct {
	// Devices is the number of devices (> 0).
	Devices int
	// SNPrefix starts every sn; the rest is the device's number (FirstIndex,
	// FirstIndex+1, ...) zero-padded to SNLength characters in all. The
	// prefix must leave room for the largest number.
	SNPrefix string
	// FirstIndex is the number of the first device (lets several simulator
	// processes share out one fleet).
	FirstIndex int
	// BrokerURL is the MQTT broker, tcp://host:port (mqtt:// also accepted),
	// or ssl://host:port (tls:// and mqtts:// also accepted) for MQTT over TLS.
	BrokerURL string
	// TLS configures ssl:// connections (nil: the system's CAs, the URL's
	// host as server name). Ignored for tcp://.
	TLS *tls.Config
	// SourceAddrs, when set, are local IP addresses the devices' TCP
	// connections are bound to, round robin. One address gives at most
	// about 28k connections to one broker address (the ephemeral port
	// range); loopback brokers can be reached from any 127.x.y.z.
	SourceAddrs []net.IP
	// Token returns a device's MQTT password; nil sends no password.
	Token func(sn string) string
	// PublicKey is the cloud's RSA public key for the handshake.
	PublicKey *rsa.PublicKey
	// ProtocolVersion is sent in sProtocolVersion (default "V1.0").
	ProtocolVersion string
	// UplinkQoS is the MQTT QoS of the devices' publishes, 0 or 1 (their
	// subscription to the downlink topic is always QoS 1).
	UplinkQoS byte
	// KeepAlive is the MQTT keep-alive (default 60s).
	KeepAlive time.Duration
	// ConnectTimeout bounds one MQTT connection attempt (default 30s).
	ConnectTimeout time.Duration
	// Heartbeat is the mean heartbeat interval (default 30s). A device's
	// first heartbeat after its configuration upload comes after a uniformly
	// drawn share of it, so the fleet's heartbeat rate is steady from the
	// start.
	Heartbeat time.Duration
	// Jitter spreads each heartbeat interval uniformly over
	// Heartbeat × (1 ± Jitter); 0 <= Jitter < 1. Negative means none; zero
	// means the default 0.1.
	Jitter float64
	// Ramp is the rate of connection attempts, per second, for the whole
	// fleet (default 500; negative means no limit). Reconnects after a storm
	// skip it (that is the storm); all other reconnects wait for it.
	Ramp float64
	// StreamEvery is the mean interval between a device's 702 stream-URL
	// requests (exponentially distributed); 0 sends none.
	StreamEvery time.Duration
	// UploadEvery is the same for 703 upload-parameter requests.
	UploadEvery time.Duration
	// Malformed is the share (0..1) of heartbeats replaced by a malformed
	// frame; the kinds rotate through MalformedKinds.
	Malformed float64
	// StormEvery starts a reconnect storm at this interval (0: none): a share
	// StormShare of the devices disconnect (with DISCONNECT) at once and
	// reconnect at once, without waiting for Ramp.
	StormEvery time.Duration
	// StormShare is the share of devices in each storm (default 0.1).
	StormShare float64
	// Vanish is the share (0..1) of devices that, from time to time, drop
	// their TCP connection without DISCONNECT (see VanishMode), stay away
	// VanishFor, and reconnect.
	Vanish float64
	// VanishEvery is the mean time a vanishing device stays connected
	// before it vanishes (exponentially distributed; default 5m).
	VanishEvery time.Duration
	// VanishFor is how long a vanished device stays away (default 2m, above
	// the broker's 1.5 × KeepAlive timeout).
	VanishFor time.Duration
	// VanishMode is VanishSilent (default) or VanishReset.
	VanishMode VanishMode
	// KeepSession is the share (0..1) of reconnects that keep the previous
	// session key instead of a new handshake (the protocol lets a session
	// survive reconnects); such a device re-sends its configuration only.
	KeepSession float64
	// HandshakeTimeout is how long a device waits for the handshake reply
	// before sending a new handshake (default 10s); the wait doubles with
	// every retry, up to 8 times this.
	HandshakeTimeout time.Duration
	// ReplyTimeout is how long a request waits for its reply before it is
	// counted unanswered (default 10s).
	ReplyTimeout time.Duration
	// ClosedLoop makes every device send its next heartbeat as soon as the
	// reply to the previous one arrives (and again after ReplyTimeout if
	// none comes), instead of every Heartbeat: the fleet then offers as
	// much load as the cloud can answer, and Stats.ClosedLoop measures the
	// round trip under it. The first heartbeat still comes after a uniform
	// share of Heartbeat (use a short one, e.g. 1s, to start quickly).
	ClosedLoop bool
	// Warmup is how long after Run starts Stats.ClosedLoop begins counting
	// (connections, handshakes and the first round trips are left out).
	Warmup time.Duration
	// Logger receives connection errors (debug) and fleet events (info);
	// nil discards them.
	Logger *slog.Logger
	// OnReceive, when set, is called for every frame a device receives,
	// after the device checked it, from the device's goroutine (frames of
	// one device in order). It must not block.
	OnReceive func(Received)
}

// Received is one frame a device received, for Config.OnReceive.
type Received struct {
	SN string
	// Payload is the MQTT payload as received.
	Payload []byte
	// Frame is the decoded envelope (zero if it did not decode).
	Frame protocol.Frame
	// Body is the decrypted body (nil for a handshake reply or a failure).
	Body []byte
	// Failure is the failure reason, "" if the frame passed every check.
	Failure string
	// At is when paho delivered the frame.
	At time.Time
}

func (c *Config) withDefaults() (Config, error) {
	cfg := *c
	if cfg.Devices <= 0 {
		return cfg, errors.New("devicesim: Devices must be positive")
	}
	if cfg.PublicKey == nil {
		return cfg, errors.New("devicesim: the cloud's public key is required for the handshake")
	}
	u, err := url.Parse(cfg.BrokerURL)
	if err != nil || u.Host == "" {
		return cfg, fmt.Errorf("devicesim: broker URL %q: want tcp://host:port", cfg.BrokerURL)
	}
	switch u.Scheme {
	case "tcp", "mqtt", "ssl", "tls", "mqtts":
	default:
		return cfg, fmt.Errorf("devicesim: broker URL %q: only tcp:// and ssl:// are supported", cfg.BrokerURL)
	}
	if cfg.FirstIndex < 0 {
		return cfg, errors.New("devicesim: FirstIndex must not be negative")
	}
	digits := SNLength - len(cfg.SNPrefix)
	if digits < 1 || len(strconv.Itoa(cfg.FirstIndex+cfg.Devices-1)) > digits {
		return cfg, fmt.Errorf("devicesim: sn prefix %q leaves %d digits, too few for device number %d",
			cfg.SNPrefix, max(digits, 0), cfg.FirstIndex+cfg.Devices-1)
	}
	for _, s := range []struct {
		name string
		v    float64
	}{{"Malformed", cfg.Malformed}, {"StormShare", cfg.StormShare}, {"Vanish", cfg.Vanish}, {"KeepSession", cfg.KeepSession}} {
		if s.v < 0 || s.v > 1 {
			return cfg, fmt.Errorf("devicesim: %s must be within 0..1, not %v", s.name, s.v)
		}
	}
	if cfg.UplinkQoS > 1 {
		return cfg, fmt.Errorf("devicesim: UplinkQoS must be 0 or 1, not %d", cfg.UplinkQoS)
	}
	if cfg.Jitter >= 1 {
		return cfg, fmt.Errorf("devicesim: Jitter must be below 1, not %v", cfg.Jitter)
	}
	if cfg.VanishMode == "" {
		cfg.VanishMode = VanishSilent
	}
	if cfg.VanishMode != VanishSilent && cfg.VanishMode != VanishReset {
		return cfg, fmt.Errorf("devicesim: vanish mode %q: want %q or %q", cfg.VanishMode, VanishSilent, VanishReset)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.KeepAlive, 60*time.Second)
	def(&cfg.ConnectTimeout, 30*time.Second)
	def(&cfg.Heartbeat, 30*time.Second)
	def(&cfg.VanishEvery, 5*time.Minute)
	def(&cfg.VanishFor, 2*time.Minute)
	def(&cfg.HandshakeTimeout, 10*time.Second)
	def(&cfg.ReplyTimeout, 10*time.Second)
	switch {
	case cfg.Jitter == 0:
		cfg.Jitter = 0.1
	case cfg.Jitter < 0:
		cfg.Jitter = 0
	}
	switch {
	case cfg.Ramp == 0:
		cfg.Ramp = 500
	case cfg.Ramp < 0:
		cfg.Ramp = 0
	}
	if cfg.StormShare == 0 {
		cfg.StormShare = 0.1
	}
	if cfg.ProtocolVersion == "" {
		cfg.ProtocolVersion = "V1.0"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg, nil
}

// Fleet is a simulated fleet of devices. Create it with New, run it once
// with Run; Stats, Device and DeviceBySN may be called at any time, from any
// goroutine.
type Fleet struct {
	cfg     Config
	devices []*Device
	bySN    map[string]*Device
	c       counters
	limiter *limiter

	mu      sync.Mutex
	started time.Time
	ran     bool
}

// New checks cfg and prepares the fleet's devices; nothing connects yet.
func New(cfg Config) (*Fleet, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	f := &Fleet{
		cfg:     cfg,
		devices: make([]*Device, cfg.Devices),
		bySN:    make(map[string]*Device, cfg.Devices),
		limiter: newLimiter(cfg.Ramp),
	}
	sns := SNs(cfg)
	for i := range f.devices {
		sn := sns[i]
		d := newDevice(f, i, sn)
		if len(cfg.SourceAddrs) > 0 {
			d.laddr = &net.TCPAddr{IP: cfg.SourceAddrs[i%len(cfg.SourceAddrs)]}
		}
		d.vanisher = cfg.Vanish > 0 && rand.Float64() < cfg.Vanish
		f.devices[i] = d
		f.bySN[sn] = d
	}
	return f, nil
}

func zeros(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = '0'
	}
	return string(b)
}

// Config returns the fleet's configuration with its defaults filled in.
func (f *Fleet) Config() Config { return f.cfg }

// Len returns the number of devices.
func (f *Fleet) Len() int { return len(f.devices) }

// Device returns the i-th device (0-based), nil if there is none.
// SNs returns the serial numbers of cfg's devices, in order (the prefix,
// then the number FirstIndex+i zero-padded to SNLength), e.g. to give the
// broker their credentials before the fleet starts.
func SNs(cfg Config) []string {
	out := make([]string, cfg.Devices)
	digits := SNLength - len(cfg.SNPrefix)
	for i := range out {
		n := strconv.Itoa(cfg.FirstIndex + i)
		out[i] = cfg.SNPrefix + zeros(digits-len(n)) + n
	}
	return out
}

func (f *Fleet) Device(i int) *Device {
	if i < 0 || i >= len(f.devices) {
		return nil
	}
	return f.devices[i]
}

// DeviceBySN returns the device with serial number sn, nil if there is none.
func (f *Fleet) DeviceBySN(sn string) *Device { return f.bySN[sn] }

// Stats returns a snapshot of the fleet's counters; see Stats.
func (f *Fleet) Stats() Stats {
	f.mu.Lock()
	started := f.started
	f.mu.Unlock()
	var elapsed time.Duration
	if !started.IsZero() {
		elapsed = time.Since(started)
	}
	return f.c.snapshot(len(f.devices), elapsed, f.cfg.ClosedLoop)
}

// Summary is the outcome of a Run: the final Stats, taken after every
// device disconnected.
type Summary struct {
	Stats
	// Start is when Run started.
	Start time.Time `json:"start"`
}

// ErrAlreadyRun is returned by a second call of Run.
var ErrAlreadyRun = errors.New("devicesim: the fleet has already run")

// Run runs the fleet until ctx is done: every device connects (at the
// configured Ramp rate) and keeps its protocol going, reconnecting on its
// own (with backoff) whenever its connection fails. When ctx is done, each
// device disconnects cleanly (MQTT DISCONNECT) and Run returns the summary
// once every device goroutine has ended. Run returns an error only if it
// was called before (ErrAlreadyRun); connection errors are counted, not
// returned.
func (f *Fleet) Run(ctx context.Context) (Summary, error) {
	f.mu.Lock()
	if f.ran {
		f.mu.Unlock()
		return Summary{}, ErrAlreadyRun
	}
	f.ran = true
	f.started = time.Now()
	start := f.started
	f.c.loopFrom.Store(start.Add(f.cfg.Warmup).UnixNano())
	f.mu.Unlock()

	log := f.cfg.Logger
	log.Info("fleet starting", "devices", len(f.devices), "broker", f.cfg.BrokerURL,
		"first_sn", f.devices[0].sn, "last_sn", f.devices[len(f.devices)-1].sn)

	var wg sync.WaitGroup
	for _, d := range f.devices {
		wg.Go(func() { d.run(ctx) })
	}
	if f.cfg.StormEvery > 0 {
		wg.Go(func() { f.storms(ctx) })
	}
	wg.Wait()
	s := f.Stats()
	log.Info("fleet stopped", "sent", s.SentTotal, "received", s.ReceivedTotal, "failures", s.FailuresTotal)
	return Summary{Stats: s, Start: start}, nil
}

// storms starts a reconnect storm every StormEvery until ctx is done.
func (f *Fleet) storms(ctx context.Context) {
	t := time.NewTicker(f.cfg.StormEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := int(f.cfg.StormShare*float64(len(f.devices)) + 0.5)
		f.c.storms.Add(1)
		f.cfg.Logger.Info("reconnect storm", "devices", n)
		for _, i := range rand.Perm(len(f.devices))[:n] {
			f.devices[i].signal(ctlStorm)
		}
	}
}
