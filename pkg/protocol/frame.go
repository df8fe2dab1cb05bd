package protocol

import (
	"strconv"
	"unicode/utf8"
)

// Frame kinds (iCmdType).
const (
	CmdHandshake     = 0 // up: RSA block; down: AES(key1, iv1) block
	CmdConfiguration = 1 // up: Configuration
	CmdHeartbeat     = 2 // up: Heartbeat; down: HeartbeatReply
	CmdCommand       = 3 // down: a command, sub-kind in iAppCmdType
	CmdReply         = 6 // up: the reply to the command whose sMsgId it carries
	CmdAms           = 7 // both: sub-kind in iAmsCmdType

	// MaxCmdType is the largest iCmdType a frame may carry. Kinds without a
	// constant above (4, 5, 8 to 16) are accepted but not understood.
	MaxCmdType = 16
)

// Sub-kinds of CmdAms (iAmsCmdType).
const (
	AmsStreamURL     = 702 // device asks for its stream push URL; cloud answers
	AmsUploadParams  = 703 // device asks where to upload pictures; cloud answers
	AmsStreamControl = 704 // cloud starts/stops/restarts streaming; device answers
	AmsUploadControl = 705 // cloud starts/stops picture upload; device answers
)

// Sub-kinds of CmdCommand (iAppCmdType), cloud to device.
const (
	AppGetConfig       = 301 // {"iGetconfig":1,"iBindStatus":0|1}
	AppReboot          = 313 // {"iReboot":1}
	AppReset           = 314 // {"iReset":N}
	AppUploadLog       = 317 // {"iReqUploadZlog":N}
	AppFormatSD        = 318 // {"iFormat":1}
	AppFaceSnapshot    = 328 // face snapshot settings object
	AppVehicleSnapshot = 329 // vehicle snapshot settings object
	AppTimeAlarm       = 330 // time zone, alarm light, siren object
	AppAudioVideo      = 331 // audio and video settings object
	AppGetSDInfo       = 332 // {"iGetSDInfo":1}
	AppOSD             = 333 // OSD settings, device name
)

// Frame is the JSON envelope of every frame, both directions.
type Frame struct {
	CmdType         int    `json:"iCmdType"`
	ProtocolVersion string `json:"sProtocolVersion"`
	MsgID           string `json:"sMsgId,omitempty"`
	AppCmdType      int    `json:"iAppCmdType,omitempty"`
	AmsCmdType      int    `json:"iAmsCmdType,omitempty"`
	Data            string `json:"sData"`
}

// KnownCmdType reports whether t is a frame kind the protocol defines a body
// for (0, 1, 2, 3, 6, 7). Frames of these kinds must carry sData and
// sProtocolVersion.
func KnownCmdType(t int) bool {
	switch t {
	case CmdHandshake, CmdConfiguration, CmdHeartbeat, CmdCommand, CmdReply, CmdAms:
		return true
	}
	return false
}

// DecodeFrame parses one frame strictly, in one pass over b. It fails with
//
//   - bad_utf8 if b is not valid UTF-8;
//   - bad_json if b is not exactly one valid JSON value (RFC 8259; nesting
//     deeper than 10000 is refused);
//   - bad_envelope if the value is not a JSON object;
//   - bad_cmd_type if iCmdType is missing or not a plain integer literal in
//     0..16 (no sign, fraction, exponent or quotes);
//   - bad_envelope if sProtocolVersion, sMsgId or sData is not a string, or
//     iAppCmdType or iAmsCmdType is not an integer literal that fits an int;
//   - bad_envelope if a frame of a known kind (KnownCmdType) has an empty or
//     missing sData or sProtocolVersion.
//
// Field names match exactly (case-sensitive, like the seed's dict lookups);
// unknown fields are ignored; when a name repeats, the last value wins; null
// counts as absent. String escapes are decoded as encoding/json does (a lone
// surrogate becomes U+FFFD). sData is not checked here: DecryptBody and
// ParseHandshake do that. DecodeFrame never panics; on error the Frame is
// zero.
func DecodeFrame(b []byte) (Frame, error) {
	if !utf8.Valid(b) {
		return Frame{}, newError(ReasonBadUTF8, "frame is not valid UTF-8")
	}
	var w envelope
	notObject, serr := parseEnvelope(b, &w)
	if serr != nil {
		return Frame{}, wrapError(ReasonBadJSON, "frame is not valid JSON", serr)
	}
	if notObject {
		return Frame{}, newError(ReasonBadEnvelope, "frame is not a JSON object")
	}
	if !w.cmdPresent {
		return Frame{}, newError(ReasonBadCmdType, "iCmdType missing")
	}
	if !w.cmdValid {
		return Frame{}, newError(ReasonBadCmdType, "iCmdType is not an integer in 0..16")
	}
	if w.typeErr != "" {
		return Frame{}, newError(ReasonBadEnvelope, "field "+w.typeErr+" has the wrong type")
	}
	f := Frame{
		CmdType:         w.cmdType,
		ProtocolVersion: w.protocolVersion,
		MsgID:           w.msgID,
		AppCmdType:      w.appCmdType,
		AmsCmdType:      w.amsCmdType,
		Data:            w.data,
	}
	if KnownCmdType(f.CmdType) {
		if f.Data == "" {
			return Frame{}, newError(ReasonBadEnvelope, "sData missing for iCmdType "+strconv.Itoa(f.CmdType))
		}
		if f.ProtocolVersion == "" {
			return Frame{}, newError(ReasonBadEnvelope, "sProtocolVersion missing for iCmdType "+strconv.Itoa(f.CmdType))
		}
	}
	return f, nil
}

func firstNonSpace(b []byte) (byte, bool) {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		}
		return c, true
	}
	return 0, false
}

// Encode returns the frame as compact ASCII JSON, escaped like MarshalASCII,
// fields in struct order; sMsgId, iAppCmdType and iAmsCmdType are left out
// when zero. The output always decodes back to f with DecodeFrame when f is
// valid for DecodeFrame.
func (f Frame) Encode() []byte {
	n := 64 + len(f.ProtocolVersion) + len(f.MsgID) + len(f.Data)
	b := make([]byte, 0, n)
	b = append(b, `{"iCmdType":`...)
	b = strconv.AppendInt(b, int64(f.CmdType), 10)
	b = append(b, `,"sProtocolVersion":`...)
	b = appendJSONString(b, f.ProtocolVersion)
	if f.MsgID != "" {
		b = append(b, `,"sMsgId":`...)
		b = appendJSONString(b, f.MsgID)
	}
	if f.AppCmdType != 0 {
		b = append(b, `,"iAppCmdType":`...)
		b = strconv.AppendInt(b, int64(f.AppCmdType), 10)
	}
	if f.AmsCmdType != 0 {
		b = append(b, `,"iAmsCmdType":`...)
		b = strconv.AppendInt(b, int64(f.AmsCmdType), 10)
	}
	b = append(b, `,"sData":`...)
	b = appendJSONString(b, f.Data)
	return append(b, '}')
}
