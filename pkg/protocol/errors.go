package protocol

import "errors"

// Reason is a stable, machine-readable cause of a rejected input. Reasons are
// meant for metrics labels and recorded rejections; they never change meaning.
type Reason string

// The reasons this package reports.
const (
	// ReasonBadJSON: the frame or decrypted body is not valid JSON, is not a
	// JSON object where one is required, or does not fit the typed body.
	ReasonBadJSON Reason = "bad_json"
	// ReasonBadEnvelope: the frame is valid JSON but not a valid envelope
	// (not an object, a field of the wrong type, sData or sProtocolVersion
	// missing for a kind that needs them).
	ReasonBadEnvelope Reason = "bad_envelope"
	// ReasonBadCmdType: iCmdType is missing or not an integer in 0..16.
	ReasonBadCmdType Reason = "bad_cmd_type"
	// ReasonBadHex: sData is not an even-length string of hex digits.
	ReasonBadHex Reason = "bad_hex"
	// ReasonBadBlockSize: the ciphertext is empty or not a multiple of the
	// AES block size (16 bytes).
	ReasonBadBlockSize Reason = "bad_block_size"
	// ReasonBadPadding: the decrypted PKCS#7 padding is invalid (usually: the
	// wrong session key).
	ReasonBadPadding Reason = "bad_padding"
	// ReasonBadMD5: a handshake block's md5 does not match its key and iv.
	ReasonBadMD5 Reason = "bad_md5"
	// ReasonBadRSA: no private key decrypts the handshake block.
	ReasonBadRSA Reason = "bad_rsa"
	// ReasonBadHandshake: a decrypted handshake block is not
	// "key:iv:md5" with a 32-char key and a 16-char iv.
	ReasonBadHandshake Reason = "bad_handshake"
	// ReasonBadUTF8: the frame or decrypted body is not valid UTF-8.
	ReasonBadUTF8 Reason = "bad_utf8"
	// ReasonBadKey: key material given to this package is unusable (PEM
	// that does not parse, a key or iv of the wrong length).
	ReasonBadKey Reason = "bad_key"
	// ReasonInternal is what ReasonOf reports for an error that does not
	// come from this package's validation (an I/O error, a failing random
	// source).
	ReasonInternal Reason = "internal"
)

// Error is the error returned for every rejected input. Detail is a short
// human-readable explanation; it never contains key material or decrypted
// handshake data (it may contain lengths and offsets). Err, when set, is the
// underlying cause.
type Error struct {
	Reason Reason
	Detail string
	Err    error
}

func (e *Error) Error() string {
	s := "protocol: " + string(e.Reason)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the underlying cause, if any.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is an *Error with the same Reason and neither
// Detail nor Err set, so that
//
//	errors.Is(err, &protocol.Error{Reason: protocol.ReasonBadPadding})
//
// matches any bad_padding error.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Reason == e.Reason && t.Detail == "" && t.Err == nil
}

// ReasonOf returns "" for a nil error, the Reason of the first *Error in
// err's chain, and ReasonInternal for any other error.
func ReasonOf(err error) Reason {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) && e != nil {
		return e.Reason
	}
	return ReasonInternal
}

func newError(r Reason, detail string) *Error {
	return &Error{Reason: r, Detail: detail}
}

func wrapError(r Reason, detail string, err error) *Error {
	return &Error{Reason: r, Detail: detail, Err: err}
}
