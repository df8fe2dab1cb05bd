// Package protocol implements the wire protocol the cameras' firmware speaks
// over MQTT, byte-compatible with the original Python cloud service (the
// "seed"); docs and test vectors live in shared/protocol.
//
// # The protocol
//
// A device publishes on UplinkTopic(sn) ("/ivms/pub/{sn}") and subscribes to
// DownlinkTopic(sn) ("/ivms/sub/{sn}"). Every frame, both ways, is one JSON
// object (Frame): iCmdType says what it is (CmdHandshake, CmdConfiguration,
// CmdHeartbeat, CmdCommand, CmdReply, CmdAms; 4, 5 and 8 to 16 are accepted
// but unknown), iAppCmdType and iAmsCmdType refine CmdCommand and CmdAms,
// sMsgId correlates a command with its reply, and sData carries the body.
//
// A session starts with a handshake. The device picks key1 (32 chars) and iv1
// (16 chars) and sends, RSA PKCS#1 v1.5 encrypted to the cloud's public key,
// "key1:iv1:md5hex(key1:iv1)" (ParseHandshake reads it, NewHandshake makes
// it). The cloud answers with "key2:iv2:md5hex(key2:iv2)" encrypted with
// AES-CBC under key1/iv1 (HandshakeRequest.Reply, checked on the device side
// by VerifyReply). Both sides then derive the session key (DeriveSession):
// s = sha256hex(key1+iv1+key2+iv2), iv = s[0:16], key = s[16:48], used as
// ASCII bytes, so AES-256-CBC. Every later body is
// sData = hex(AES-256-CBC(key, iv, PKCS7(json))) with the same iv for every
// frame (EncryptBody, DecryptBody, DecryptJSON; UnmarshalBody is DecryptJSON's
// check and decode of a body already decrypted, the one path the device
// processor reads bodies by). Bodies are serialised like
// the seed's ujson.dumps (MarshalASCII): compact, ASCII only, '/' escaped.
//
// # Guarantees
//
//   - Compatibility: the package reproduces every frame of the seed's vectors
//     byte for byte (handshake reply, session key, every body's ciphertext,
//     the JSON of the bodies the cloud sends).
//   - Strictness: input from the network is never trusted. Invalid UTF-8,
//     invalid JSON, a non-object frame, a missing or out-of-range iCmdType,
//     bad hex, a ciphertext that is empty or not whole blocks, bad PKCS#7
//     padding, a bad md5, an RSA block no key decrypts, and malformed
//     handshake strings are all rejected with an *Error whose Reason
//     (ReasonOf) is a stable label for metrics and rejection records.
//   - No panics: no function panics on any input (fuzzed: FuzzDecodeFrame,
//     FuzzDecryptBody, FuzzParseHandshake, FuzzDecodeBody).
//   - No secrets in errors: error messages carry lengths and offsets, never
//     key material or decrypted handshake data; SessionKey, HandshakeRequest
//     and HandshakeReply redact themselves in fmt and log/slog output.
//   - No global state: every function is safe for concurrent use; nothing is
//     cached between calls (buffers can be reused explicitly with
//     AppendDecryptBody and AppendDecryptJSON).
//
// # Limits inherited from the firmware
//
// The firmware's scheme has no integrity protection (CBC without a MAC), a
// fixed iv per session (equal bodies give equal ciphertexts), and uses
// PKCS#1 v1.5 encryption, whose decryption is a padding oracle for whoever
// can tell a successful handshake from a failed one. None of this can change
// without new firmware; callers should rate-limit handshakes per device.
package protocol
