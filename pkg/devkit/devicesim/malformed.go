package devicesim

import (
	"github.com/ivms/ams/pkg/protocol"
)

// MalformedKind is one way a device breaks a frame on purpose. The cloud
// must reject each of them with a recorded reason (the reason it should
// give is in the kind's comment).
type MalformedKind string

// The malformed kinds, sent in this rotation.
const (
	// MalBadJSON: the frame is cut off mid-way (bad_json).
	MalBadJSON MalformedKind = "bad_json"
	// MalBadEnvelope: sData is a number, not a string (bad_envelope).
	MalBadEnvelope MalformedKind = "bad_envelope"
	// MalBadCmdType: an otherwise valid heartbeat with iCmdType 99 (bad_cmd_type).
	MalBadCmdType MalformedKind = "bad_cmd_type"
	// MalBadHex: a heartbeat whose sData starts with non-hex characters (bad_hex).
	MalBadHex MalformedKind = "bad_hex"
	// MalBadBlockSize: a heartbeat whose ciphertext lost its last byte (bad_block_size).
	MalBadBlockSize MalformedKind = "bad_block_size"
	// MalBadPadding: a heartbeat whose ciphertext lost its last block, so the
	// new last block decrypts to JSON text, never valid PKCS#7 (bad_padding).
	MalBadPadding MalformedKind = "bad_padding"
	// MalBadBody: a heartbeat whose body, correctly encrypted, is not JSON (bad_json).
	MalBadBody MalformedKind = "bad_body"
	// MalWrongSN: a configuration upload whose sDeviceSn is another device's
	// (the cloud must refuse it: the sn must match the topic's).
	MalWrongSN MalformedKind = "wrong_sn"
)

// malformedKinds is the number of MalformedKind values.
const malformedKinds = 8

// MalformedKinds lists every MalformedKind in the order devices rotate
// through them.
var MalformedKinds = [malformedKinds]MalformedKind{MalBadJSON, MalBadEnvelope, MalBadCmdType, MalBadHex,
	MalBadBlockSize, MalBadPadding, MalBadBody, MalWrongSN}

// malformedFrame builds the payload of a malformed frame of kind k for
// device sn with session s. Kinds that break the ciphertext start from a
// valid heartbeat of at least two AES blocks.
func malformedFrame(k MalformedKind, sn, version string, s protocol.SessionKey) []byte {
	hb := heartbeatBody(sn)
	valid := protocol.EncryptBody(s, hb)
	frame := func(cmd int, data string) []byte {
		return protocol.Frame{CmdType: cmd, ProtocolVersion: version, Data: data}.Encode()
	}
	switch k {
	case MalBadJSON:
		b := frame(protocol.CmdHeartbeat, valid)
		return b[:len(b)/2]
	case MalBadEnvelope:
		return []byte(`{"iCmdType":2,"sProtocolVersion":` + quote(version) + `,"sData":12345}`)
	case MalBadCmdType:
		return frame(99, valid)
	case MalBadHex:
		return frame(protocol.CmdHeartbeat, "zz"+valid[2:])
	case MalBadBlockSize:
		return frame(protocol.CmdHeartbeat, valid[:len(valid)-2])
	case MalBadPadding:
		return frame(protocol.CmdHeartbeat, valid[:len(valid)-32])
	case MalBadBody:
		return frame(protocol.CmdHeartbeat, protocol.EncryptBody(s, []byte(`{"sDeviceSn":`+quote(sn)+`,"iHeartBeat":`)))
	case MalWrongSN:
		body, _ := protocol.MarshalASCII(configurationOf(wrongSN(sn), 0))
		return frame(protocol.CmdConfiguration, protocol.EncryptBody(s, body))
	}
	return frame(protocol.CmdHeartbeat, "")
}

// wrongSN returns an sn of the same length that differs from sn in every
// position.
func wrongSN(sn string) string {
	b := []byte(sn)
	for i, c := range b {
		if c == 'F' {
			b[i] = 'E'
		} else {
			b[i] = 'F'
		}
	}
	return string(b)
}

func quote(s string) string {
	b, _ := protocol.MarshalASCII(s)
	return string(b)
}
