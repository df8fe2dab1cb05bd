// Package device is the device processor: it turns a device's uplinks (frames
// and broker connection events from ams.uplink.raw) and its registration
// (ams.registry) into device events, presence transitions, automatic
// replies (downlinks) and rejects, keeping per-device state: the session key,
// the last handshake, presence and registration. It also runs the command
// lifecycle (processors/cmdlife): requests of ams.commands are validated
// (pkg/commandkinds), queued, sent as downlinks and correlated with the
// broker's receipts and the device's replies, every change recorded on
// ams.command.events.
//
// Processor implements keyed.Handler[State]; the keyed runtime gives it
// exactly-once semantics. Process is pure apart from its random source (new
// session keys, message ids, sealing nonces) and its metrics: it does no I/O
// and never blocks. Bad input never makes it fail: every input of
// ams.uplink.raw yields exactly one DeviceEvent (accepted) or one Reject
// (refused, with a machine-readable reason). An error means a bug or a broken
// environment (an exhausted random source, a record type missing from the
// schema registry) and stops the partition.
//
// What each frame kind does is listed in README.md beside this file; the
// push URL signature is specified in STREAM_SIGNING.md, the upload
// credentials in UPLOAD_CREDENTIALS.md.
package device

import (
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/processors/cmdlife"
	"github.com/ivms/ams/processors/keyed"
	"github.com/ivms/ams/processors/presence"
	"github.com/ivms/ams/schemas"
)

// Reject reasons of this processor that do not come from pkg/protocol (whose
// protocol.Reason values are used as they are).
const (
	ReasonNoSession     = "no_session"     // a frame that needs a session from a device without one
	ReasonSNMismatch    = "sn_mismatch"    // the body's sDeviceSn, or the record's sn, is not the record key
	ReasonBadRecord     = "bad_record"     // the Kafka value does not decode (Avro), or is an unexpected tombstone
	ReasonUnknownKind   = "unknown_kind"   // an ams.uplink.raw record of a kind this processor does not know
	ReasonForeignClient = "foreign_client" // a connection event of a client id that is not the device's sn
)

// Downlink purposes of the automatic replies.
const (
	PurposeHandshakeReply = "handshake_reply"
	PurposeHeartbeatReply = "heartbeat_reply"
	PurposeDeviceName     = "device_name"
	PurposeBindStatus     = "bind_status"
	PurposeStreamURL      = "stream_url"
	PurposeUploadParams   = "upload_params"
	PurposeCommand        = "command" // a command of ams.commands (see processors/cmdlife)
)

// DefaultCommandProtocolVersion is the sProtocolVersion of command frames
// when Config.CommandProtocolVersion is empty (the version the fleet speaks).
const DefaultCommandProtocolVersion = "V1.0"

// Config configures a Processor.
type Config struct {
	// Topics names the topics: inputs are told apart by Input.Topic, and
	// outputs go to DeviceEvents, Presence, Downlink and Rejects.
	Topics kafkatopics.Names
	// Registry encodes and decodes every record (required).
	Registry *schemas.Registry
	// PrivateKeys are the cloud's RSA keys for the handshake, tried in
	// order: list the current key first and retired ones after it while
	// devices still use them (required).
	PrivateKeys []*rsa.PrivateKey
	// KEK seals the session keys and handshake replies in the state
	// changelog (AES-256-GCM). PreviousKEKs are tried too when restoring, so
	// a KEK can be rotated: add the new one as KEK and the old one here
	// until every device's state has been rewritten.
	KEK          [32]byte
	PreviousKEKs [][32]byte
	// HeartbeatTimeout is how long a device stays online without a frame;
	// 0 means presence.DefaultHeartbeatTimeout (90 s).
	HeartbeatTimeout time.Duration
	// Stream signs stream push URLs (702); zero value: not answered.
	Stream StreamConfig
	// Upload answers picture upload parameter requests (703); zero value:
	// not answered.
	Upload UploadConfig
	// Commands is the command lifecycle's policy (in-flight limit, reply
	// timeout, queue expiry, duplicate memory); zero fields take the
	// defaults of processors/cmdlife.
	Commands cmdlife.Config
	// CommandProtocolVersion is the sProtocolVersion of command frames
	// (the state keeps no device's own version); "" means
	// DefaultCommandProtocolVersion.
	CommandProtocolVersion string
	// AllowUnregistered is the open (dev) mode: a device that ams.registry
	// does not hold may handshake, and upload credentials (703) go to any
	// device with a session. Off (production): such a handshake is rejected
	// unregistered before any RSA work, and 703 is answered only for
	// registered, bound devices (else a reject unbound).
	AllowUnregistered bool
	// Limits are the per-device rate limits (zero fields: defaults).
	Limits Limits
	// Rand is the source of session keys, message ids and nonces; nil
	// means crypto/rand.Reader. Tests pass a deterministic reader.
	Rand io.Reader
	// Metrics registers the processor's counters; nil registers nothing.
	Metrics prometheus.Registerer
	// Logger logs configuration problems met while processing (never per
	// frame, never secrets); nil discards.
	Logger *slog.Logger
}

// Processor is the device processor. It is safe for concurrent use: it holds
// no mutable state of its own (the per-device State is the runtime's).
type Processor struct {
	topo     *topology
	reg      *schemas.Registry
	keys     []*rsa.PrivateKey
	aeads    []cipher.AEAD
	presence presence.Machine
	stream   StreamConfig
	upload   UploadConfig
	cmds     *cmdlife.Lifecycle
	cmdProto string
	openReg  bool   // Config.AllowUnregistered
	limits   Limits // with defaults
	rand     io.Reader
	log      *slog.Logger
	m        *metrics
}

var _ keyed.Handler[State] = (*Processor)(nil)

// New checks cfg and returns a Processor.
func New(cfg Config) (*Processor, error) {
	if cfg.Registry == nil {
		return nil, errors.New("device: no schema registry")
	}
	if len(cfg.PrivateKeys) == 0 {
		return nil, errors.New("device: no RSA private key")
	}
	for i, k := range cfg.PrivateKeys {
		if k == nil || k.N == nil {
			return nil, fmt.Errorf("device: RSA private key %d is empty", i)
		}
	}
	if cfg.HeartbeatTimeout < 0 {
		return nil, errors.New("device: negative heartbeat timeout")
	}
	ins, outs := declare(cfg.Topics)
	topo, err := newTopology(cfg.Registry, ins, outs, emittedRecords())
	if err != nil {
		return nil, err
	}
	if err := cfg.Stream.validate(); err != nil {
		return nil, err
	}
	if err := cfg.Upload.validate(); err != nil {
		return nil, err
	}
	if err := cfg.Limits.validate(); err != nil {
		return nil, err
	}
	cmds, err := cmdlife.New(cfg.Commands)
	if err != nil {
		return nil, fmt.Errorf("device: %w", err)
	}
	aeads, err := newAEADs(cfg.KEK, cfg.PreviousKEKs)
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	p := &Processor{
		topo:     topo,
		reg:      cfg.Registry,
		keys:     cfg.PrivateKeys,
		aeads:    aeads,
		presence: presence.Machine{HeartbeatTimeout: cfg.HeartbeatTimeout},
		stream:   cfg.Stream,
		upload:   cfg.Upload,
		cmds:     cmds,
		cmdProto: cfg.CommandProtocolVersion,
		openReg:  cfg.AllowUnregistered,
		limits:   cfg.Limits.WithDefaults(),
		rand:     cfg.Rand,
		log:      cfg.Logger,
		m:        m,
	}
	if p.rand == nil {
		p.rand = rand.Reader
	}
	if p.cmdProto == "" {
		p.cmdProto = DefaultCommandProtocolVersion
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	return p, nil
}

// Inputs are the topics the processor consumes (all co-partitioned by sn),
// as its topology declares them: for keyed.Config.Inputs.
func (p *Processor) Inputs() []string { return p.topo.inputTopics() }

// Outputs are the topics the processor produces to, as its topology
// declares them: for keyed.Config.Outputs.
func (p *Processor) Outputs() []string { return p.topo.outputTopics() }

// Process implements keyed.Handler: the input goes to the handler its
// topology declares for its topic (ams.uplink.raw, ams.registry,
// ams.commands, ams.downlink.receipts); any other topic is an error.
func (p *Processor) Process(now time.Time, key string, s *State, in keyed.Input) (*State, []keyed.Output, error) {
	route, ok := p.topo.byTopic[in.Topic]
	if !ok {
		return s, nil, fmt.Errorf("device: input from unexpected topic %q", in.Topic)
	}
	c := &call{p: p, now: presence.Millis(now), sn: key, in: in,
		src: in.Topic + "/" + strconv.FormatInt(int64(in.Partition), 10) + "/" + strconv.FormatInt(in.Offset, 10)}
	next := route.run(c, s)
	if c.err != nil {
		return s, nil, c.err
	}
	return next, c.out, nil
}

// Timer implements keyed.Handler: the heartbeat timeout, the reply
// timeouts of sent commands and the expiry of queued ones (a command that
// finishes frees a slot: the next waiting one is sent if the device is
// still online with a session).
func (p *Processor) Timer(now time.Time, key string, s *State) (*State, []keyed.Output, error) {
	if s == nil {
		return s, nil, nil
	}
	c := &call{p: p, now: presence.Millis(now), sn: key}
	orig := s
	if s.staleSeal {
		r, err := c.reseal(s)
		if err != nil {
			return orig, nil, err
		}
		s = r
	}
	next := s
	deadline := s.presence.Deadline
	if ps, tr, ok := p.presence.Apply(s.presence, presence.Event{Kind: presence.Tick, Now: now}); ok {
		next = c.change(s)
		next.presence = ps
		c.presenceOut(tr, key+"/heartbeat_timeout/"+strconv.FormatInt(deadline.UnixMilli(), 10))
	}
	send := deliverable(next)
	next = c.cmdTx(next, func(tx *cmdlife.Tx) {
		tx.Expire()
		if send {
			tx.Drain()
		}
	})
	if c.err != nil {
		return orig, nil, c.err
	}
	return next, c.out, nil
}

// Deadline implements keyed.Handler: the earliest of the heartbeat deadline
// of an online device, the reply deadlines of its sent commands and the
// expiries of its queued ones; for a state sealed under a previous KEK,
// at once (resealDue), so that Timer re-seals it.
func (p *Processor) Deadline(s *State) (time.Time, bool) {
	if s == nil {
		return time.Time{}, false
	}
	if s.staleSeal {
		return resealDue, true
	}
	at, ok := presence.DeadlineOf(s.presence)
	if cat, cok := cmdlife.Deadline(s.pending); cok && (!ok || cat.Before(at)) {
		at, ok = cat, true
	}
	return at, ok
}

// call is the work of one Process or Timer call: it collects the outputs.
type call struct {
	p   *Processor
	now time.Time
	sn  string
	in  keyed.Input
	src string // "topic/partition/offset" of the input: the base of deterministic ids
	out []keyed.Output
	n   int // downlinks emitted so far
	err error
	// frameSeen: a frame of the device was accepted (its waiting commands
	// may go out).
	frameSeen bool
}

// change returns a copy of s (or a new State) to modify, stamped now.
func (c *call) change(s *State) *State {
	var n State
	if s != nil {
		n = *s
	}
	n.updatedAt = c.now
	return &n
}

// emit writes record v to the output its topology declares for v's type.
func (c *call) emit(v any) {
	if c.err != nil {
		return
	}
	topic, ok := c.p.topo.byType[reflect.TypeOf(v)]
	if !ok { // cannot happen: New checked every record emit is given
		c.err = fmt.Errorf("device: no output declared for %T", v)
		return
	}
	b, err := c.p.reg.Encode(v)
	if err != nil {
		c.err = fmt.Errorf("device: encoding output for %s: %w", topic, err)
		return
	}
	c.out = append(c.out, keyed.Output{Topic: topic, Key: c.sn, Value: b})
}

func (c *call) fail(err error) {
	if c.err == nil {
		c.err = err
	}
}

// reject records a refusal of the input.
func (c *call) reject(reason, detail, mqttTopic string, payload []byte) {
	c.p.m.rejects.WithLabelValues(reason).Inc()
	c.emit(schemas.NewReject(schemas.Refusal{
		Stage:           schemas.StageProcessor,
		By:              "processor",
		Reason:          reason,
		Detail:          detail,
		SN:              c.sn,
		Topic:           mqttTopic,
		Payload:         payload,
		PayloadMax:      -1, // the input fits a record, and so does its reject
		SourceTopic:     c.in.Topic,
		SourcePartition: c.in.Partition,
		SourceOffset:    c.in.Offset,
		At:              c.now,
	}))
}

// rejectErr records a refusal for a pkg/protocol error.
func (c *call) rejectErr(err error, raw *schemas.UplinkRaw) {
	c.reject(string(protocol.ReasonOf(err)), err.Error(), raw.Topic, raw.Payload)
}

// presenceOut emits a presence transition.
func (c *call) presenceOut(t presence.Transition, id string) {
	c.p.m.transitions.WithLabelValues(strconv.FormatBool(t.Online), t.Reason).Inc()
	rec := &schemas.Presence{
		EventID:    id,
		SN:         c.sn,
		Online:     t.Online,
		Reason:     t.Reason,
		Detail:     t.Detail,
		At:         t.At,
		IntervalMs: t.Interval.Milliseconds(),
		Epoch:      t.Epoch,
		Seq:        t.Seq,
	}
	if !t.Since.IsZero() {
		since := t.Since
		rec.Since = &since
	}
	c.emit(rec)
}

// observe applies a presence event to next and emits the transition, if any.
func (c *call) observe(next *State, e presence.Event) {
	e.Now = c.now
	ps, tr, ok := c.p.presence.Apply(next.presence, e)
	next.presence = ps
	if ok {
		c.presenceOut(tr, c.src)
	}
}

// downlink emits a frame for the device.
func (c *call) downlink(payload []byte, f protocol.Frame, purpose string) {
	c.p.m.replies.WithLabelValues(purpose).Inc()
	c.emit(&schemas.Downlink{
		FrameID:   c.src + "/" + strconv.Itoa(c.n),
		SN:        c.sn,
		Topic:     protocol.DownlinkTopic(c.sn),
		Payload:   payload,
		CmdType:   int32(f.CmdType),
		SubType:   int32(subType(f)),
		MsgID:     f.MsgID,
		Purpose:   purpose,
		CreatedAt: c.now,
	})
	c.n++
}

func subType(f protocol.Frame) int {
	switch {
	case f.CmdType == protocol.CmdCommand:
		return f.AppCmdType
	case f.CmdType == protocol.CmdAms:
		return f.AmsCmdType
	case f.AppCmdType != 0:
		return f.AppCmdType
	}
	return f.AmsCmdType
}
