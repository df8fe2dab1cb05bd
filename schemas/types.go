// Package schemas holds the Avro schemas of every ams topic (the .avsc files
// beside this file), the Go types they map to, and the codec that frames each
// value so that it names its own schema.
//
// The .avsc files are the contract for systems outside ams: a consumer needs
// nothing but those files to decode any record (see README.md in this folder).
// The Go types below mirror them field for field; a test checks that every
// type round-trips through its schema.
package schemas

import "time"

// Topic names. Every topic is keyed by the device serial number and has the
// same partition count, so one processor owns all records of a device.
const (
	TopicUplinkRaw        = "ams.uplink.raw"
	TopicCommands         = "ams.commands"
	TopicRegistry         = "ams.registry"
	TopicDeviceEvents     = "ams.device.events"
	TopicPresence         = "ams.presence"
	TopicCommandEvents    = "ams.command.events"
	TopicDownlink         = "ams.downlink"
	TopicDownlinkReceipts = "ams.downlink.receipts"
	TopicRejects          = "ams.rejects"
	TopicStateDevices     = "ams.state.devices"
)

// UplinkKind says what an UplinkRaw record carries.
const (
	UplinkFrame        = "FRAME"        // a frame published by a device on /ivms/pub/{sn}
	UplinkConnected    = "CONNECTED"    // the broker reported the device's client connected
	UplinkDisconnected = "DISCONNECTED" // the broker reported the device's client disconnected
)

// UplinkRaw is one record of ams.uplink.raw: everything that entered from a
// broker, as received. Written by ingest only.
type UplinkRaw struct {
	Kind     string `avro:"kind"`      // UplinkFrame, UplinkConnected or UplinkDisconnected
	SN       string `avro:"sn"`        // device serial number (the record key too)
	Topic    string `avro:"topic"`     // MQTT topic the message arrived on
	Payload  []byte `avro:"payload"`   // frame bytes as received (empty for connection events' parsed form; raw event JSON for events)
	ClientID string `avro:"client_id"` // MQTT client id (events); empty for frames when the broker does not say
	Username string `avro:"username"`  // MQTT username (events)
	Reason   string `avro:"reason"`    // broker's disconnect reason (events)
	Node     string `avro:"node"`      // broker node that reported the event
	// BrokerTime is when the broker received the message or produced the event
	// (event ts / connected_at / disconnected_at); nil when the broker does not say.
	BrokerTime *time.Time `avro:"broker_time"`
	// ConnectedAt identifies the connection (the connection epoch): the time the
	// connection was established, as reported by the broker; nil when unknown.
	ConnectedAt *time.Time `avro:"connected_at"`
	IngestTime  time.Time  `avro:"ingest_time"` // when ingest received it
	Ingest      string     `avro:"ingest"`      // id of the ingest instance
}

// Offline policies of a command.
const (
	OfflineQueue  = "QUEUE"
	OfflineReject = "REJECT"
)

// Command is one record of ams.commands: a request to send a command to a device.
type Command struct {
	ID          string     `avro:"id"`           // unique command id, chosen by the requester
	SN          string     `avro:"sn"`           // target device
	Kind        string     `avro:"kind"`         // command kind name, e.g. "reboot" (see the command table)
	Body        string     `avro:"body"`         // JSON object body
	TimeoutMs   int64      `avro:"timeout_ms"`   // how long to wait for the device's reply once sent; 0 = default
	ExpiresAt   *time.Time `avro:"expires_at"`   // a queued command not sent by then expires; nil = default
	Offline     string     `avro:"offline"`      // OfflineQueue or OfflineReject
	RequestedBy string     `avro:"requested_by"` // who asked
	RequestedAt time.Time  `avro:"requested_at"`
}

// Registration is one record of the compacted ams.registry; a tombstone (nil
// value) removes the device.
type Registration struct {
	SN          string    `avro:"sn"`
	TokenSHA256 string    `avro:"token_sha256"` // legacy: hex sha256 of the device's MQTT password; "" in new records
	Bound       bool      `avro:"bound"`        // bound to a user
	Name        string    `avro:"name"`         // device name shown in the OSD
	StreamURL   string    `avro:"stream_url"`   // base push URL; empty = the configured default
	UpdatedAt   time.Time `avro:"updated_at"`
	UpdatedBy   string    `avro:"updated_by"`
	TokenHash   string    `avro:"token_hash"` // salted PBKDF2 of the token with its parameters (deviceauth.HashToken); the token itself is never stored
}

// Device event kinds.
const (
	EventUnknown       = "UNKNOWN"
	EventHandshake     = "HANDSHAKE"
	EventConfiguration = "CONFIGURATION"
	EventHeartbeat     = "HEARTBEAT"
	EventReply         = "REPLY"          // iCmdType 6, or 7 / 704, 705
	EventStreamRequest = "STREAM_REQUEST" // iCmdType 7 / 702
	EventUploadRequest = "UPLOAD_REQUEST" // iCmdType 7 / 703
	EventConnection    = "CONNECTION"
)

// Connection is the connection change carried by an EventConnection event.
type Connection struct {
	Connected   bool       `avro:"connected"`
	Reason      string     `avro:"reason"`
	ClientID    string     `avro:"client_id"`
	ConnectedAt *time.Time `avro:"connected_at"`
}

// DeviceEvent is one record of ams.device.events: one accepted uplink, decoded.
// EventID is derived from the source record (topic, partition, offset), so a
// replay produces the same id and sinks can deduplicate.
type DeviceEvent struct {
	EventID         string      `avro:"event_id"`
	SN              string      `avro:"sn"`
	Kind            string      `avro:"kind"`
	CmdType         int32       `avro:"cmd_type"` // iCmdType
	SubType         int32       `avro:"sub_type"` // iAppCmdType or iAmsCmdType, 0 if none
	MsgID           string      `avro:"msg_id"`
	ProtocolVersion string      `avro:"protocol_version"`
	Body            string      `avro:"body"` // decrypted JSON body; never holds key material
	Connection      *Connection `avro:"connection"`
	BrokerTime      *time.Time  `avro:"broker_time"`
	IngestTime      time.Time   `avro:"ingest_time"`
	ProcessedAt     time.Time   `avro:"processed_at"`
}

// Presence transition reasons.
const (
	PresenceConnected        = "connected"
	PresenceFirstFrame       = "first_frame"
	PresenceHeartbeatTimeout = "heartbeat_timeout"
	PresenceDisconnected     = "disconnected"
)

// Presence is one record of ams.presence: an online/offline transition.
type Presence struct {
	EventID    string     `avro:"event_id"`
	SN         string     `avro:"sn"`
	Online     bool       `avro:"online"`
	Reason     string     `avro:"reason"` // one of the Presence* reasons
	Detail     string     `avro:"detail"` // e.g. the broker's disconnect reason
	At         time.Time  `avro:"at"`
	Since      *time.Time `avro:"since"`       // start of the interval that ended; nil for a device's first transition
	IntervalMs int64      `avro:"interval_ms"` // length of the interval that ended
	Epoch      int64      `avro:"epoch"`       // connection epoch (unix ms of connected_at), 0 if unknown
	Seq        int64      `avro:"seq"`         // per-device transition number, from 1
}

// Command states.
const (
	CommandAccepted  = "ACCEPTED"
	CommandQueued    = "QUEUED"
	CommandSent      = "SENT"
	CommandDelivered = "DELIVERED"
	CommandSucceeded = "SUCCEEDED"
	CommandTimedOut  = "TIMED_OUT"
	CommandExpired   = "EXPIRED"
	CommandRejected  = "REJECTED"
	CommandFailed    = "FAILED"
)

// CommandEvent is one record of ams.command.events: one state change of a command.
type CommandEvent struct {
	EventID   string    `avro:"event_id"`
	CommandID string    `avro:"command_id"`
	SN        string    `avro:"sn"`
	Kind      string    `avro:"kind"`
	Code      int32     `avro:"code"` // iAppCmdType / iAmsCmdType
	State     string    `avro:"state"`
	At        time.Time `avro:"at"`
	Reason    string    `avro:"reason"`
	MsgID     string    `avro:"msg_id"`
	Reply     *string   `avro:"reply"` // the device's decrypted JSON reply, when State is SUCCEEDED
	Seq       int32     `avro:"seq"`   // per-command state change number, from 1
}

// Downlink is one record of ams.downlink: a frame to publish, already encrypted.
type Downlink struct {
	FrameID   string    `avro:"frame_id"`
	SN        string    `avro:"sn"`
	Topic     string    `avro:"topic"`   // /ivms/sub/{sn}
	Payload   []byte    `avro:"payload"` // the JSON frame, as the device will receive it
	CmdType   int32     `avro:"cmd_type"`
	SubType   int32     `avro:"sub_type"`
	MsgID     string    `avro:"msg_id"`
	CommandID *string   `avro:"command_id"`
	Purpose   string    `avro:"purpose"` // e.g. handshake_reply, heartbeat_reply, bind_status, command
	CreatedAt time.Time `avro:"created_at"`
	// Deadline: egress never publishes the frame at or after it (nil: none).
	Deadline *time.Time `avro:"deadline"`
	// AtMostOnce: the frame must not be published twice (see downlink.avsc).
	AtMostOnce bool `avro:"at_most_once"`
}

// DownlinkReceipt statuses.
const (
	ReceiptPublished            = "published"              // the broker acknowledged the frame
	ReceiptPublishing           = "publishing"             // intent: egress is about to publish an at_most_once frame
	ReceiptExpiredBeforePublish = "expired_before_publish" // the deadline passed first; not published
	ReceiptDeliveryUnknown      = "delivery_unknown"       // an intent without outcome found after a restart; not published again
)

// DownlinkReceipt is one record of ams.downlink.receipts: the broker
// acknowledged a downlink.
type DownlinkReceipt struct {
	FrameID     string    `avro:"frame_id"`
	SN          string    `avro:"sn"`
	CommandID   *string   `avro:"command_id"`
	MsgID       string    `avro:"msg_id"`
	PublishedAt time.Time `avro:"published_at"`
	Egress      string    `avro:"egress"` // id of the egress instance
	Status      string    `avro:"status"` // Receipt*; "published" in records written before the field existed
	// PublishSentAt is when egress sent the frame's last PUBLISH (nil in
	// receipts written before the field existed).
	PublishSentAt *time.Time `avro:"publish_sent_at"`
}

// Reject stages.
const (
	StageIngest    = "INGEST"
	StageProcessor = "PROCESSOR"
	StageSink      = "SINK"
)

// Reject is one record of ams.rejects: something refused, with its reason.
type Reject struct {
	RejectID        string    `avro:"reject_id"`
	Stage           string    `avro:"stage"`
	Reason          string    `avro:"reason"` // machine-readable, e.g. bad_hex, no_session
	Detail          string    `avro:"detail"` // human-readable
	SN              string    `avro:"sn"`
	Topic           string    `avro:"topic"`
	Payload         []byte    `avro:"payload"`
	SourceTopic     string    `avro:"source_topic"`
	SourcePartition int32     `avro:"source_partition"`
	SourceOffset    int64     `avro:"source_offset"`
	At              time.Time `avro:"at"`
}

// DeviceState is one record of the compacted ams.state.devices: the whole
// state a processor keeps for one device, written after every change. The
// next owner of the device's partition restores it from this changelog; a
// tombstone (nil value) drops the device's state. Secrets are sealed with
// AES-GCM by the processor and are never held here in plain text.
type DeviceState struct {
	SN string `avro:"sn"`
	// SealedSession is the device's session key (and iv), sealed with
	// AES-GCM; nil when the device has no session. Never the plain key.
	SealedSession        []byte     `avro:"sealed_session"`
	SessionEstablishedAt *time.Time `avro:"session_established_at"`
	// HandshakeDigest is the hex sha256 of the last accepted handshake
	// request's sData: a redelivered handshake is answered with
	// SealedHandshakeReply instead of a new session.
	HandshakeDigest      string           `avro:"handshake_digest"`
	SealedHandshakeReply []byte           `avro:"sealed_handshake_reply"` // sealed like SealedSession; nil when none
	Presence             PresenceState    `avro:"presence"`
	HeartbeatDeadline    *time.Time       `avro:"heartbeat_deadline"` // offline-for-lack-of-heartbeat timer; nil when not armed
	Registered           bool             `avro:"registered"`         // ams.registry holds the device; the four fields below are empty otherwise
	Bound                bool             `avro:"bound"`
	Name                 string           `avro:"name"`
	StreamURL            string           `avro:"stream_url"`
	TokenSHA256          string           `avro:"token_sha256"`
	PendingCommands      []PendingCommand `avro:"pending_commands"` // commands not in a final state, in acceptance order
	UpdatedAt            time.Time        `avro:"updated_at"`
	HandshakeBucket      *TokenBucket     `avro:"handshake_bucket"` // rate limit of new handshakes; nil: full
	FrameBucket          *TokenBucket     `avro:"frame_bucket"`     // rate limit of frames; nil: full
}

// TokenBucket is a per-device rate limit's bucket (part of DeviceState).
type TokenBucket struct {
	MilliTokens int64     `avro:"milli_tokens"` // tokens left at At, in thousandths
	At          time.Time `avro:"at"`
}

// PresenceState is a device's presence as a processor tracks it (part of
// DeviceState).
type PresenceState struct {
	Online   bool       `avro:"online"`
	Since    *time.Time `avro:"since"`     // start of the current interval; nil before the first transition
	LastSeen *time.Time `avro:"last_seen"` // last frame or connection event; nil if never
	Epoch    int64      `avro:"epoch"`     // connection epoch (unix ms of connected_at), 0 if unknown
	Seq      int64      `avro:"seq"`       // Presence.Seq of the last transition emitted, 0 before the first
}

// PendingCommand is a command not yet in a final state (part of DeviceState).
type PendingCommand struct {
	CommandID string     `avro:"command_id"`
	Kind      string     `avro:"kind"`
	Code      int32      `avro:"code"`   // iAppCmdType / iAmsCmdType
	MsgID     string     `avro:"msg_id"` // empty before it is sent
	Body      string     `avro:"body"`
	State     string     `avro:"state"`      // CommandAccepted, CommandQueued, CommandSent or CommandDelivered
	TimeoutMs int64      `avro:"timeout_ms"` // reply timeout once sent, resolved against the default
	Deadline  *time.Time `avro:"deadline"`   // reply deadline of a sent command; nil before it is sent
	ExpiresAt *time.Time `avro:"expires_at"` // a queued command expires unsent then; nil = never
	Seq       int32      `avro:"seq"`        // CommandEvent.Seq of the last event emitted for it
}
