package roles

import (
	"context"
	"crypto/rsa"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/connsec"
	"github.com/ivms/ams/pkg/kafkagroup"
	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/processors/cmdlife"
	"github.com/ivms/ams/processors/device"
	"github.com/ivms/ams/processors/keyed"
	"github.com/ivms/ams/processors/presence"
)

// ProcessOptions configure `ams process`: the device processor (uplinks to
// events, presence and replies, exactly-once over Kafka transactions). Every
// default is the value in force: no field means "the package default" by 0.
type ProcessOptions struct {
	Output
	Kafka                 Kafka
	Log                   Log
	OpsAddr               string
	Group                 string
	TransactionalIDPrefix string
	InstanceID            string // empty: host-pid, dynamic membership
	SessionTimeout        time.Duration
	TransactionTimeout    time.Duration
	MaxRecords            int
	MaxLinger             time.Duration
	TimerTick             time.Duration
	RestoreSkipCorrupt    bool
	PrivateKeyFiles       string // comma-separated, current first (required)
	KEK                   string // 64 hex chars; or KEKFile
	KEKFile               string
	PreviousKEKFiles      string // comma-separated
	HeartbeatTimeout      time.Duration
	StreamBaseURL         string
	StreamSecretFile      string
	Upload                UploadOptions
	CommandMaxInFlight    int
	CommandReplyTimeout   time.Duration
	CommandQueueTTL       time.Duration
	CommandMaxListBytes   int
	AllowUnregistered     bool
	HandshakeBurst        int // negative: no limit
	HandshakeEvery        time.Duration
	FrameBurst            int // negative: no limit
	FrameEvery            time.Duration
}

// UploadOptions configure the answer to a device's 703 upload-parameter request.
type UploadOptions struct {
	HostURL, Bucket, ObjectPath, CallbackURL string
	SigningSecretFile                        string
	CredentialTTL                            time.Duration
	StaticAccessKey, StaticSecretKeyFile     string
	AllowLongTermKeys                        bool
}

// DefaultProcess returns the defaults of `ams process`.
func DefaultProcess() ProcessOptions {
	return ProcessOptions{
		Kafka: DefaultKafka(), Log: DefaultLog(),
		OpsAddr:               ":9103",
		Group:                 "ams-process-device",
		TransactionalIDPrefix: "ams-process-device-",
		SessionTimeout:        kafkagroup.DefaultSessionTimeout,
		TransactionTimeout:    20 * time.Second,
		MaxRecords:            1000,
		TimerTick:             100 * time.Millisecond,
		HeartbeatTimeout:      presence.DefaultHeartbeatTimeout,
		Upload:                UploadOptions{ObjectPath: "ai_engine_imgs", CredentialTTL: device.DefaultUploadCredentialTTL},
		CommandMaxInFlight:    cmdlife.DefaultMaxInFlight,
		CommandReplyTimeout:   cmdlife.DefaultReplyTimeout,
		CommandQueueTTL:       cmdlife.DefaultQueueTTL,
		CommandMaxListBytes:   cmdlife.DefaultMaxListBytes,
		HandshakeBurst:        device.DefaultHandshakeBurst,
		HandshakeEvery:        device.DefaultHandshakeEvery,
		FrameBurst:            device.DefaultFrameBurst,
		FrameEvery:            device.DefaultFrameEvery,
	}
}

// Flags declares the flags of `ams process` on o's fields.
func (o *ProcessOptions) Flags(fs *flag.FlagSet) {
	o.Kafka.Flags(fs)
	o.Log.Flags(fs)
	fs.StringVar(&o.OpsAddr, "ops-addr", o.OpsAddr, "listen address of /healthz, /readyz and /metrics (empty: off)")
	fs.StringVar(&o.Group, "process-group", o.Group, "Kafka consumer group of the device processor instances")
	fs.StringVar(&o.TransactionalIDPrefix, "transactional-id-prefix", o.TransactionalIDPrefix, "prefix of this process's Kafka transactional id")
	fs.StringVar(&o.InstanceID, "instance-id", o.InstanceID, "this instance's stable name (the pod name), unique among live instances: its Kafka group.instance.id (static membership: restarted after a crash, it takes its partitions back at once) and its part of the transactional id (a crashed predecessor's transaction is aborted at once); empty: {host}-{pid}, dynamic membership")
	sessionTimeoutFlag(fs, &o.SessionTimeout)
	fs.DurationVar(&o.TransactionTimeout, "transaction-timeout", o.TransactionTimeout, "Kafka transaction timeout: the longest a crashed instance's open transaction holds readers back")
	fs.IntVar(&o.MaxRecords, "max-records", o.MaxRecords, "most input records (and, per partition, timers) in one transaction")
	fs.DurationVar(&o.MaxLinger, "max-linger", o.MaxLinger, "how long a transaction keeps polling to fill up to max-records")
	fs.DurationVar(&o.TimerTick, "timer-tick", o.TimerTick, "how often due timers are looked for")
	fs.BoolVar(&o.RestoreSkipCorrupt, "restore-skip-corrupt", o.RestoreSkipCorrupt, "recovery only (docs/OPERATIONS.md): a device whose latest state record does not decode keeps its last good state (logged, ams_keyed_restore_skipped_total) instead of stopping the partition; never to drop a KEK still in use")
	fs.StringVar(&o.PrivateKeyFiles, "rsa-private-key-file", o.PrivateKeyFiles, "PEM files (PKCS#1 or PKCS#8) of the cloud's RSA private keys, comma-separated, current key first; each is tried in turn (required)")
	fs.StringVar(&o.KEK, "kek", o.KEK, "the 32-byte key-encryption key that seals secrets in the state changelog, as 64 hex chars (or use -kek-file)")
	fs.StringVar(&o.KEKFile, "kek-file", o.KEKFile, "file holding the key-encryption key, hex (alternative to -kek)")
	fs.StringVar(&o.PreviousKEKFiles, "previous-kek-files", o.PreviousKEKFiles, "files of retired KEKs (hex), comma-separated, still accepted when restoring")
	fs.DurationVar(&o.HeartbeatTimeout, "heartbeat-timeout", o.HeartbeatTimeout, "how long a device stays online without a frame")
	fs.StringVar(&o.StreamBaseURL, "stream-base-url", o.StreamBaseURL, "push URL base for stream requests; the sn is appended (empty: not answered)")
	fs.StringVar(&o.StreamSecretFile, "stream-secret-file", o.StreamSecretFile, "file holding the HMAC secret shared with the media server")
	o.Upload.flags(fs)
	fs.IntVar(&o.CommandMaxInFlight, "command-max-inflight", o.CommandMaxInFlight, "commands of one device awaiting a reply at once")
	fs.DurationVar(&o.CommandReplyTimeout, "command-reply-timeout", o.CommandReplyTimeout, "default wait for a device's reply to a command")
	fs.DurationVar(&o.CommandQueueTTL, "command-queue-ttl", o.CommandQueueTTL, "default time a command may wait queued for an offline device")
	fs.BoolVar(&o.AllowUnregistered, "allow-unregistered", o.AllowUnregistered, "open (dev) mode: devices that ams.registry does not hold may handshake, and any device with a session gets upload credentials (off: such a handshake is rejected unregistered, 703 needs a registered, bound device)")
	fs.IntVar(&o.HandshakeBurst, "rate-handshake-burst", o.HandshakeBurst, "new handshakes a device may make at once (negative: no limit)")
	fs.DurationVar(&o.HandshakeEvery, "rate-handshake-every", o.HandshakeEvery, "one more handshake allowed per this interval")
	fs.IntVar(&o.FrameBurst, "rate-frame-burst", o.FrameBurst, "frames a device may send at once (negative: no limit)")
	fs.DurationVar(&o.FrameEvery, "rate-frame-every", o.FrameEvery, "one more frame allowed per this interval")
	fs.IntVar(&o.CommandMaxListBytes, "command-max-list-bytes", o.CommandMaxListBytes, "most bytes of one device's command list in its state record; a command beyond it is REJECTED queue_full (default: the producer's 1000012-byte record limit less 32 KiB)")
}

func (u *UploadOptions) flags(fs *flag.FlagSet) {
	fs.StringVar(&u.HostURL, "upload-host-url", u.HostURL, "object storage (or upload gateway) URL sent to devices asking where to upload pictures (empty: 703 not answered)")
	fs.StringVar(&u.Bucket, "upload-bucket", u.Bucket, "bucket name sent with the upload parameters")
	fs.StringVar(&u.ObjectPath, "upload-object-path", u.ObjectPath, "object path prefix; each device uploads under {path}/{sn}")
	fs.StringVar(&u.CallbackURL, "upload-callback-url", u.CallbackURL, "callback URL sent with the upload parameters")
	fs.StringVar(&u.SigningSecretFile, "upload-signing-secret-file", u.SigningSecretFile, "file holding the secret shared with the upload gateway; devices get short-lived credentials scoped to their path (preferred)")
	fs.DurationVar(&u.CredentialTTL, "upload-credential-ttl", u.CredentialTTL, "lifetime of signed upload credentials")
	fs.StringVar(&u.StaticAccessKey, "upload-static-access-key", u.StaticAccessKey, "FALLBACK: long-term access key sent to every device (needs -upload-allow-long-term-keys)")
	fs.StringVar(&u.StaticSecretKeyFile, "upload-static-secret-key-file", u.StaticSecretKeyFile, "FALLBACK: file holding the long-term secret key sent to every device")
	fs.BoolVar(&u.AllowLongTermKeys, "upload-allow-long-term-keys", u.AllowLongTermKeys, "allow the long-term key fallback, as the original service did (every device learns the keys)")
}

func (u UploadOptions) config() (device.UploadConfig, error) {
	c := device.UploadConfig{HostURL: u.HostURL, Bucket: u.Bucket, ObjectPath: u.ObjectPath, CallbackURL: u.CallbackURL, AllowLongTermKeys: u.AllowLongTermKeys}
	switch {
	case u.SigningSecretFile != "" && u.StaticAccessKey != "":
		return c, fmt.Errorf("upload: give -upload-signing-secret-file or the static key fallback, not both")
	case u.SigningSecretFile != "":
		secret, err := connsec.Secret("upload-signing-secret", "", u.SigningSecretFile)
		if err != nil {
			return c, err
		}
		c.Credentials = device.SignedUploadCredentials{Secret: []byte(secret), TTL: u.CredentialTTL}
	case u.StaticAccessKey != "":
		secret, err := connsec.Secret("upload-static-secret-key", "", u.StaticSecretKeyFile)
		if err != nil {
			return c, err
		}
		c.Credentials = device.StaticUploadKeys{AccessKey: u.StaticAccessKey, SecretKey: secret}
	}
	return c, nil
}

// RunProcess runs the device processor until ctx is done.
func RunProcess(ctx context.Context, o ProcessOptions) error {
	e, _, kopts, err := newKafkaEnv("process", o.Output, o.Log, o.Kafka)
	if err != nil {
		return err
	}
	keys, err := ReadPrivateKeys(o.PrivateKeyFiles)
	if err != nil {
		return err
	}
	var kek [32]byte
	switch {
	case o.KEK != "" && o.KEKFile != "":
		return fmt.Errorf("kek: give -kek or -kek-file, not both")
	case o.KEK != "":
		if kek, err = ParseKEK(o.KEK); err != nil {
			return fmt.Errorf("kek: %w", err)
		}
	default:
		if kek, err = ReadKEK(o.KEKFile); err != nil {
			return fmt.Errorf("kek-file: %w", err)
		}
	}
	var prev [][32]byte
	for _, f := range SplitList(o.PreviousKEKFiles) {
		p, err := ReadKEK(f)
		if err != nil {
			return fmt.Errorf("previous-kek-files: %w", err)
		}
		prev = append(prev, p)
	}
	var streamSecret []byte
	if o.StreamSecretFile != "" {
		s, err := connsec.Secret("stream-secret", "", o.StreamSecretFile)
		if err != nil {
			return err
		}
		streamSecret = []byte(s)
	}
	upload, err := o.Upload.config()
	if err != nil {
		return err
	}
	topics := o.Kafka.Names()
	proc, err := device.New(device.Config{
		Topics:            topics,
		Registry:          e.reg,
		PrivateKeys:       keys,
		KEK:               kek,
		PreviousKEKs:      prev,
		HeartbeatTimeout:  o.HeartbeatTimeout,
		Stream:            device.StreamConfig{BaseURL: o.StreamBaseURL, Secret: streamSecret},
		Upload:            upload,
		Commands:          cmdlife.Config{MaxInFlight: o.CommandMaxInFlight, ReplyTimeout: o.CommandReplyTimeout, QueueTTL: o.CommandQueueTTL, MaxListBytes: o.CommandMaxListBytes},
		AllowUnregistered: o.AllowUnregistered,
		Limits:            device.Limits{HandshakeBurst: o.HandshakeBurst, HandshakeEvery: o.HandshakeEvery, FrameBurst: o.FrameBurst, FrameEvery: o.FrameEvery},
		Metrics:           e.ops.Registry,
		Logger:            e.log,
	})
	if err != nil {
		return err
	}
	static := o.InstanceID != "" // {host}-{pid} is not stable: no static membership with it
	if o.InstanceID == "" {
		o.InstanceID = instanceName()
	}
	r, err := keyed.NewRunner[device.State](keyed.Config{
		Name:                  "device",
		Brokers:               o.Kafka.Seeds(),
		Group:                 o.Group,
		Inputs:                proc.Inputs(),
		Changelog:             topics.StateDevices,
		Outputs:               proc.Outputs(),
		TransactionalIDPrefix: o.TransactionalIDPrefix,
		InstanceID:            o.InstanceID,
		StaticMembership:      static,
		TransactionTimeout:    o.TransactionTimeout,
		MaxRecords:            o.MaxRecords,
		MaxLinger:             o.MaxLinger,
		TimerTick:             o.TimerTick,
		SkipCorruptState:      o.RestoreSkipCorrupt,
		Logger:                e.log,
		Registerer:            e.ops.Registry,
		KafkaOpts:             append(kopts, kgo.SessionTimeout(o.SessionTimeout)),
	}, proc)
	if err != nil {
		return err
	}
	e.ops.AddCheck("kafka", r.Ready)
	e.log.Info("device processor starting", "group", o.Group, "instance", o.InstanceID)
	return e.serve(ctx, o.OpsAddr, r.Run)
}

// ReadPrivateKeys reads the PEM files of a comma-separated list.
func ReadPrivateKeys(list string) ([]*rsa.PrivateKey, error) {
	files := SplitList(list)
	if len(files) == 0 {
		return nil, fmt.Errorf("rsa-private-key-file: none given (AMS_RSA_PRIVATE_KEY_FILE)")
	}
	var pems [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("rsa-private-key-file: %w", err)
		}
		pems = append(pems, b)
	}
	keys, err := protocol.ParsePrivateKeys(pems...)
	if err != nil {
		return nil, fmt.Errorf("rsa-private-key-file: %w", err)
	}
	return keys, nil
}

// ReadKEK reads a hex key-encryption key (64 hex characters) from a file.
func ReadKEK(file string) ([32]byte, error) {
	if file == "" {
		return [32]byte{}, fmt.Errorf("no key-encryption key: set -kek (AMS_KEK) or -kek-file (AMS_KEK_FILE)")
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return [32]byte{}, err
	}
	kek, err := ParseKEK(string(b))
	if err != nil {
		return kek, fmt.Errorf("%s: %w", file, err)
	}
	return kek, nil
}

// ParseKEK decodes a 32-byte key given as 64 hex characters. The error never
// repeats the value.
func ParseKEK(s string) ([32]byte, error) {
	var kek [32]byte
	raw, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(raw) != len(kek) {
		return kek, fmt.Errorf("want %d bytes as %d hex characters", len(kek), 2*len(kek))
	}
	copy(kek[:], raw)
	return kek, nil
}
