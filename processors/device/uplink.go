package device

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"time"

	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/processors/cmdlife"
	"github.com/ivms/ams/processors/presence"
	"github.com/ivms/ams/schemas"
)

// uplink handles one ams.uplink.raw record. After an accepted frame, a
// device online with a session is sent its waiting commands (up to the
// in-flight limit).
func (c *call) uplink(s *State, raw *schemas.UplinkRaw) *State {
	next := c.uplinkRecord(s, raw)
	if c.frameSeen && deliverable(next) {
		next = c.cmdTx(next, (*cmdlife.Tx).Drain)
	}
	return next
}

func (c *call) uplinkRecord(s *State, raw *schemas.UplinkRaw) *State {
	if raw.SN != c.sn {
		c.reject(ReasonSNMismatch, fmt.Sprintf("record sn %q is not the key", raw.SN), raw.Topic, raw.Payload)
		return s
	}
	switch raw.Kind {
	case schemas.UplinkFrame:
		return c.frame(s, raw)
	case schemas.UplinkConnected, schemas.UplinkDisconnected:
		return c.connection(s, raw)
	}
	c.reject(ReasonUnknownKind, fmt.Sprintf("uplink kind %q", raw.Kind), raw.Topic, raw.Payload)
	return s
}

// eventTime is when an uplink happened: the broker's time, else ingest's.
func (c *call) eventTime(raw *schemas.UplinkRaw) time.Time {
	switch {
	case raw.BrokerTime != nil && !raw.BrokerTime.IsZero():
		return *raw.BrokerTime
	case !raw.IngestTime.IsZero():
		return raw.IngestTime
	case !c.in.Timestamp.IsZero():
		return c.in.Timestamp
	}
	return c.now
}

func unixMilli(t *time.Time) int64 {
	if t == nil || t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// event returns a DeviceEvent of the input with the fields every kind shares.
func (c *call) event(kind string, raw *schemas.UplinkRaw) *schemas.DeviceEvent {
	c.p.m.frames.WithLabelValues(kind).Inc()
	return &schemas.DeviceEvent{
		EventID:     c.src,
		SN:          c.sn,
		Kind:        kind,
		BrokerTime:  raw.BrokerTime,
		IngestTime:  raw.IngestTime,
		ProcessedAt: c.now,
	}
}

func (c *call) frameEvent(kind string, raw *schemas.UplinkRaw, f protocol.Frame, body string) {
	e := c.event(kind, raw)
	e.CmdType = int32(f.CmdType)
	e.SubType = int32(subType(f))
	e.MsgID = f.MsgID
	e.ProtocolVersion = f.ProtocolVersion
	e.Body = body
	c.emit(e)
}

// connection handles a broker connect / disconnect event.
func (c *call) connection(s *State, raw *schemas.UplinkRaw) *State {
	if raw.ClientID != "" && raw.ClientID != c.sn {
		c.reject(ReasonForeignClient, fmt.Sprintf("client id %q is not the device's sn", raw.ClientID), raw.Topic, raw.Payload)
		return s
	}
	connected := raw.Kind == schemas.UplinkConnected
	epoch := unixMilli(raw.ConnectedAt)
	at := c.eventTime(raw)
	if connected && epoch == 0 {
		// EMQX 4 reports only ts: the connect event's time is the epoch.
		epoch = unixMilli(raw.BrokerTime)
		if epoch == 0 {
			epoch = presence.Millis(at).UnixMilli()
		}
	}
	if connected && raw.BrokerTime == nil && raw.ConnectedAt != nil {
		at = *raw.ConnectedAt
	}
	e := c.event(schemas.EventConnection, raw)
	e.Connection = &schemas.Connection{
		Connected:   connected,
		ClientID:    raw.ClientID,
		ConnectedAt: raw.ConnectedAt,
	}
	kind := presence.Connected
	if !connected {
		e.Connection.Reason = raw.Reason
		kind = presence.Disconnected
	}
	c.emit(e)
	next := c.change(s)
	c.observe(next, presence.Event{Kind: kind, At: at, Epoch: epoch, Detail: raw.Reason})
	return next
}

// seen records an accepted frame in next's presence.
func (c *call) seen(next *State, raw *schemas.UplinkRaw) {
	c.frameSeen = true
	c.observe(next, presence.Event{Kind: presence.Seen, At: c.eventTime(raw), Epoch: unixMilli(raw.ConnectedAt)})
}

// frame handles one frame published by the device.
func (c *call) frame(s *State, raw *schemas.UplinkRaw) *State {
	f, err := protocol.DecodeFrame(raw.Payload)
	if err != nil {
		c.rejectErr(err, raw)
		return s
	}
	if f.CmdType == protocol.CmdHandshake && !c.p.openReg && (s == nil || !s.reg.Registered) {
		c.reject(ReasonUnregistered, "handshake from a device ams.registry does not hold", raw.Topic, raw.Payload)
		return s
	}
	if s != nil {
		// The frame limit, for devices with state (one without state can
		// only be refused or handshake, which creates it).
		b, ok := take(s.frameBucket, c.now, c.p.limits.FrameBurst, c.p.limits.FrameEvery)
		if !ok {
			c.reject(ReasonRateLimited, "frame rate limit", raw.Topic, raw.Payload)
			return s
		}
		if b != s.frameBucket {
			s = c.change(s)
			s.frameBucket = b
		}
	}
	switch f.CmdType {
	case protocol.CmdHandshake:
		return c.handshake(s, raw, f)
	case protocol.CmdConfiguration, protocol.CmdHeartbeat, protocol.CmdReply, protocol.CmdAms:
		return c.known(s, raw, f)
	}
	return c.unknown(s, raw, f)
}

// handshake answers iCmdType 0. A redelivered copy of the accepted request
// (same sData) gets the reply already sent, and keeps the session; a new
// request gets a new session.
func (c *call) handshake(s *State, raw *schemas.UplinkRaw, f protocol.Frame) *State {
	digest := sha256.Sum256([]byte(f.Data))
	if s != nil && s.session != nil && s.sealedReply != nil && s.handshake == digest {
		payload, err := c.p.open(c.sn, purposeReply, s.sealedReply)
		if err != nil {
			c.fail(fmt.Errorf("device: %s: stored handshake reply: %w", c.sn, err))
			return s
		}
		next := c.change(s)
		c.frameEvent(schemas.EventHandshake, raw, f, "")
		c.seen(next, raw)
		c.downlink(payload, protocol.Frame{CmdType: protocol.CmdHandshake}, PurposeHandshakeReply)
		return next
	}
	hsBucket, ok := take(s.handshakeBucket(), c.now, c.p.limits.HandshakeBurst, c.p.limits.HandshakeEvery)
	if !ok {
		c.reject(ReasonRateLimited, "handshake rate limit", raw.Topic, raw.Payload)
		return s
	}
	req, err := protocol.ParseHandshake(c.p.keys, f.Data)
	if err != nil {
		c.rejectErr(err, raw)
		if s != nil && hsBucket != s.hsBucket { // the RSA work was spent: the token is taken
			s = c.change(s)
			s.hsBucket = hsBucket
		}
		return s
	}
	reply, err := req.Reply(c.p.rand)
	if err != nil {
		c.fail(fmt.Errorf("device: %s: handshake reply: %w", c.sn, err))
		return s
	}
	key := reply.Session
	payload := protocol.Frame{CmdType: protocol.CmdHandshake, ProtocolVersion: f.ProtocolVersion, Data: reply.SData}.Encode()
	var plain [sessionPlainLen]byte
	copy(plain[:32], key.Key[:])
	copy(plain[32:], key.IV[:])
	sealedSession, err := c.p.seal(c.sn, purposeSession, plain[:])
	clear(plain[:])
	if err != nil {
		c.fail(err)
		return s
	}
	sealedReply, err := c.p.seal(c.sn, purposeReply, payload)
	if err != nil {
		c.fail(err)
		return s
	}
	next := c.change(s)
	next.session = &key
	next.sealedSession = sealedSession
	next.sessionAt = c.now
	next.handshake = digest
	next.sealedReply = sealedReply
	next.hsBucket = hsBucket
	c.frameEvent(schemas.EventHandshake, raw, f, "")
	c.seen(next, raw)
	c.downlink(payload, protocol.Frame{CmdType: protocol.CmdHandshake}, PurposeHandshakeReply)
	return next
}

// uplinkBody is what the processor reads of a decrypted body: the optional
// sDeviceSn (nil when absent or null), and the request of the kinds it
// answers.
type uplinkBody struct {
	protocol.SNBody
	stream protocol.StreamURLRequest
	upload protocol.UploadParamsRequest
}

// decodeBody checks and decodes the decrypted body pt of f with
// protocol.UnmarshalBody (bad_utf8, bad_json): a configuration must fit
// protocol.Configuration, a 702 or 703 request its type; of any other kind
// only sDeviceSn is read. One decode per body.
func decodeBody(f protocol.Frame, pt []byte) (b uplinkBody, err error) {
	switch {
	case f.CmdType == protocol.CmdConfiguration:
		var v protocol.ConfigurationSN
		err = protocol.UnmarshalBody(pt, &v)
		b.DeviceSn = v.DeviceSn
	case f.CmdType == protocol.CmdAms && f.AmsCmdType == protocol.AmsStreamURL:
		err = protocol.UnmarshalBody(pt, &struct {
			*protocol.StreamURLRequest
			*protocol.SNBody
		}{&b.stream, &b.SNBody})
	case f.CmdType == protocol.CmdAms && f.AmsCmdType == protocol.AmsUploadParams:
		err = protocol.UnmarshalBody(pt, &struct {
			*protocol.UploadParamsRequest
			*protocol.SNBody
		}{&b.upload, &b.SNBody})
	default:
		err = protocol.UnmarshalBody(pt, &b.SNBody)
	}
	return b, err
}

// snMismatch reports (with a reject) a body whose sDeviceSn is not the
// device's sn.
func (c *call) snMismatch(b uplinkBody, raw *schemas.UplinkRaw) bool {
	if b.DeviceSn == nil || *b.DeviceSn == c.sn {
		return false
	}
	c.reject(ReasonSNMismatch, fmt.Sprintf("body sDeviceSn %q is not the device's sn", *b.DeviceSn), raw.Topic, raw.Payload)
	return true
}

// known handles the frame kinds that carry an encrypted body: 1, 2, 6, 7.
func (c *call) known(s *State, raw *schemas.UplinkRaw, f protocol.Frame) *State {
	if !s.HasSession() {
		c.reject(ReasonNoSession, fmt.Sprintf("iCmdType %d from a device without a session", f.CmdType), raw.Topic, raw.Payload)
		return s
	}
	pt, err := protocol.DecryptBody(*s.session, f.Data)
	if err != nil {
		c.rejectErr(err, raw)
		return s
	}
	b, err := decodeBody(f, pt)
	if err != nil {
		c.rejectErr(err, raw)
		return s
	}
	if c.snMismatch(b, raw) {
		return s
	}
	body := string(pt)
	next := c.change(s)
	switch f.CmdType {
	case protocol.CmdConfiguration:
		c.frameEvent(schemas.EventConfiguration, raw, f, body)
		c.seen(next, raw)
		c.configReplies(next, f)
	case protocol.CmdHeartbeat:
		c.frameEvent(schemas.EventHeartbeat, raw, f, body)
		c.seen(next, raw)
		c.reply(next, f, protocol.CmdHeartbeat, 0, false, heartbeatReply, PurposeHeartbeatReply)
	case protocol.CmdReply:
		c.frameEvent(schemas.EventReply, raw, f, body)
		c.seen(next, raw)
		next = c.commandReply(next, f, body)
	case protocol.CmdAms:
		switch f.AmsCmdType {
		case protocol.AmsStreamURL:
			c.frameEvent(schemas.EventStreamRequest, raw, f, body)
			c.seen(next, raw)
			c.streamReply(next, f, b.stream)
		case protocol.AmsUploadParams:
			if (!next.reg.Registered || !next.reg.Bound) && !c.p.openReg {
				c.reject(ReasonUnbound, "upload credentials are only for registered, bound devices", raw.Topic, raw.Payload)
				return s
			}
			c.frameEvent(schemas.EventUploadRequest, raw, f, body)
			c.seen(next, raw)
			c.uploadReply(next, f, b.upload)
		case protocol.AmsStreamControl, protocol.AmsUploadControl:
			c.frameEvent(schemas.EventReply, raw, f, body)
			c.seen(next, raw)
			next = c.commandReply(next, f, body)
		default:
			c.frameEvent(schemas.EventUnknown, raw, f, body)
			c.seen(next, raw)
		}
	}
	return next
}

// unknown handles frame kinds the cloud does not act on (3 up, 4, 5, 8 to
// 16): accepted and recorded with the decrypted body when it decrypts to a
// JSON object, else with the frame as received.
func (c *call) unknown(s *State, raw *schemas.UplinkRaw, f protocol.Frame) *State {
	body := string(raw.Payload)
	if s.HasSession() && f.Data != "" {
		if pt, err := protocol.DecryptBody(*s.session, f.Data); err == nil {
			if b, err := decodeBody(f, pt); err == nil {
				if c.snMismatch(b, raw) {
					return s
				}
				body = string(pt)
			}
		}
	}
	next := c.change(s)
	c.frameEvent(schemas.EventUnknown, raw, f, body)
	c.seen(next, raw)
	return next
}

// unregister handles an ams.registry tombstone: the registration is
// removed, which ends the device's session (presence and commands are kept;
// a state left empty is deleted).
func (c *call) unregister(s *State) *State {
	if s == nil || !s.reg.Registered {
		return s
	}
	next := c.change(s)
	next.reg = Registration{}
	endSession(next)
	if next.empty() {
		return nil
	}
	return next
}

// registry handles one ams.registry registration. Changing a device's
// token ends its session (the device must connect with its new
// credentials and handshake again).
func (c *call) registry(s *State, r *schemas.Registration) *State {
	if r.SN != c.sn {
		c.reject(ReasonSNMismatch, fmt.Sprintf("registration sn %q is not the key", r.SN), "", c.in.Value)
		return s
	}
	reg := Registration{Registered: true, Bound: r.Bound, Name: r.Name, StreamURL: r.StreamURL, TokenSHA256: credentialDigest(*r)}
	if s != nil && s.reg == reg {
		return s
	}
	next := c.change(s)
	if s != nil && s.reg.Registered && s.reg.TokenSHA256 != reg.TokenSHA256 {
		endSession(next)
	}
	next.reg = reg
	return next
}

// credentialDigest identifies the device credential a registration holds, so
// a change of token is seen: the sha256 of its salted slow hash (token_hash),
// or the legacy token_sha256 for a registration written before token_hash. A
// re-registration that keeps the token keeps its stored hash (the API copies
// it), so a rename does not end the session; the one exception is a legacy
// entry, which its first rewrite wraps in a slow hash.
func credentialDigest(r schemas.Registration) string {
	if r.TokenHash == "" {
		return r.TokenSHA256
	}
	sum := sha256.Sum256([]byte(r.TokenHash))
	return hex.EncodeToString(sum[:])
}

// endSession drops s's session and the handshake that made it.
func endSession(s *State) {
	s.session, s.sealedSession, s.sessionAt = nil, nil, time.Time{}
	s.handshake, s.sealedReply = [32]byte{}, nil
}

// msgID returns a fresh 32-hex-digit message id.
func (c *call) msgID() string {
	var b [16]byte
	if _, err := io.ReadFull(c.p.rand, b[:]); err != nil {
		c.fail(fmt.Errorf("device: reading a message id: %w", err))
		return ""
	}
	return hex.EncodeToString(b[:])
}
