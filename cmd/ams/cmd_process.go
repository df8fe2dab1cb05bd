package main

import (
	"context"
	"crypto/rsa"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/kafkagroup"
	"github.com/ivms/ams/pkg/opshttp"
	"github.com/ivms/ams/pkg/protocol"
	cmdlife "github.com/ivms/ams/processors/commands"
	"github.com/ivms/ams/processors/device"
	"github.com/ivms/ams/processors/keyed"
	"github.com/ivms/ams/schemas"
)

func processCommand() command {
	return command{
		name:    "process",
		summary: "run the device processor: uplinks to events, presence and replies, exactly-once over Kafka transactions",
		flags: func(fs *flag.FlagSet) func(context.Context, io.Writer, io.Writer) error {
			var k kafkaFlags
			var lf logFlags
			k.register(fs)
			lf.register(fs)
			opsAddr := fs.String("ops-addr", ":9103", "listen address of /healthz, /readyz and /metrics (empty: off)")
			group := fs.String("process-group", "ams-process-device", "Kafka consumer group of the device processor instances")
			txnPrefix := fs.String("transactional-id-prefix", "ams-process-device-", "prefix of this process's Kafka transactional id")
			instance := fs.String("instance-id", "", "this instance's stable name (the pod name), unique among live instances: its Kafka group.instance.id (static membership: restarted after a crash, it takes its partitions back at once) and its part of the transactional id (a crashed predecessor's transaction is aborted at once); empty: {host}-{pid}, dynamic membership")
			sessionTimeout := fs.Duration("kafka-session-timeout", kafkagroup.DefaultSessionTimeout, "Kafka group session timeout: how long the partitions of a crashed instance that is not restarted with its -instance-id wait before they move")
			txnTimeout := fs.Duration("transaction-timeout", 20*time.Second, "Kafka transaction timeout: the longest a crashed instance's open transaction holds readers back")
			maxRecords := fs.Int("max-records", 1000, "most input records (and, per partition, timers) in one transaction")
			linger := fs.Duration("max-linger", 0, "how long a transaction keeps polling to fill up to max-records")
			tick := fs.Duration("timer-tick", 100*time.Millisecond, "how often due timers are looked for")
			keyFiles := fs.String("rsa-private-key-file", "", "PEM files (PKCS#1 or PKCS#8) of the cloud's RSA private keys, comma-separated, current key first; each is tried in turn (required)")
			kekHex := fs.String("kek", "", "the 32-byte key-encryption key that seals secrets in the state changelog, as 64 hex chars (or use -kek-file)")
			kekFile := fs.String("kek-file", "", "file holding the key-encryption key, hex (alternative to -kek)")
			prevKEKFiles := fs.String("previous-kek-files", "", "files of retired KEKs (hex), comma-separated, still accepted when restoring")
			heartbeat := fs.Duration("heartbeat-timeout", 0, "how long a device stays online without a frame (0: the presence default)")
			streamURL := fs.String("stream-base-url", "", "push URL base for stream requests; the sn is appended (empty: not answered)")
			streamSecretFile := fs.String("stream-secret-file", "", "file holding the HMAC secret shared with the media server")
			var up uploadFlags
			up.register(fs)
			maxInFlight := fs.Int("command-max-inflight", 0, "commands of one device awaiting a reply at once (0: default 4)")
			replyTimeout := fs.Duration("command-reply-timeout", 0, "default wait for a device's reply to a command (0: default 30s)")
			queueTTL := fs.Duration("command-queue-ttl", 0, "default time a command may wait queued for an offline device (0: default 10m)")
			allowUnreg := fs.Bool("allow-unregistered", false, "open (dev) mode: devices that ams.registry does not hold may handshake, and any device with a session gets upload credentials (off: such a handshake is rejected unregistered, 703 needs a registered, bound device)")
			hsBurst := fs.Int("rate-handshake-burst", 0, "new handshakes a device may make at once (0: default 5; negative: no limit)")
			hsEvery := fs.Duration("rate-handshake-every", 0, "one more handshake allowed per this interval (0: default 1m)")
			frBurst := fs.Int("rate-frame-burst", 0, "frames a device may send at once (0: default 120; negative: no limit)")
			frEvery := fs.Duration("rate-frame-every", 0, "one more frame allowed per this interval (0: default 100ms)")
			skipCorrupt := fs.Bool("restore-skip-corrupt", false, "recovery only (docs/OPERATIONS.md): a device whose latest state record does not decode keeps its last good state (logged, ams_keyed_restore_skipped_total) instead of stopping the partition; never to drop a KEK still in use")
			maxListBytes := fs.Int("command-max-list-bytes", 0, "most bytes of one device's command list in its state record; a command beyond it is REJECTED queue_full (0: default 967244, the producer's 1000012-byte record limit less 32 KiB)")
			return func(ctx context.Context, stdout, stderr io.Writer) error {
				log, err := lf.logger(stderr)
				if err != nil {
					return err
				}
				if _, err := applyNamespace(fs); err != nil {
					return err
				}
				kopts, err := k.opts()
				if err != nil {
					return err
				}
				k.logSecurity(log)
				keys, err := readPrivateKeys(*keyFiles)
				if err != nil {
					return err
				}
				var kek [32]byte
				switch {
				case *kekHex != "" && *kekFile != "":
					return fmt.Errorf("kek: give -kek or -kek-file, not both")
				case *kekHex != "":
					if kek, err = parseKEK(*kekHex); err != nil {
						return fmt.Errorf("kek: %w", err)
					}
				default:
					if kek, err = readKEK(*kekFile); err != nil {
						return fmt.Errorf("kek-file: %w", err)
					}
				}
				var prev [][32]byte
				for _, f := range splitList(*prevKEKFiles) {
					p, err := readKEK(f)
					if err != nil {
						return fmt.Errorf("previous-kek-files: %w", err)
					}
					prev = append(prev, p)
				}
				var streamSecret []byte
				if *streamSecretFile != "" {
					if streamSecret, err = os.ReadFile(*streamSecretFile); err != nil {
						return fmt.Errorf("stream-secret-file: %w", err)
					}
					streamSecret = []byte(strings.TrimSpace(string(streamSecret)))
				}
				upload, err := up.config()
				if err != nil {
					return err
				}
				reg, err := schemas.NewRegistry()
				if err != nil {
					return err
				}
				ops := opshttp.New(log)
				if err := ops.ExportReady("process"); err != nil {
					return err
				}
				names := k.names()
				proc, err := device.New(device.Config{
					Topics:            names,
					Registry:          reg,
					PrivateKeys:       keys,
					KEK:               kek,
					PreviousKEKs:      prev,
					HeartbeatTimeout:  *heartbeat,
					Stream:            device.StreamConfig{BaseURL: *streamURL, Secret: streamSecret},
					Upload:            upload,
					Commands:          cmdlife.Config{MaxInFlight: *maxInFlight, ReplyTimeout: *replyTimeout, QueueTTL: *queueTTL, MaxListBytes: *maxListBytes},
					AllowUnregistered: *allowUnreg,
					Limits:            device.Limits{HandshakeBurst: *hsBurst, HandshakeEvery: *hsEvery, FrameBurst: *frBurst, FrameEvery: *frEvery},
					Metrics:           ops.Registry,
					Logger:            log,
				})
				if err != nil {
					return err
				}
				static := *instance != "" // {host}-{pid} is not stable: no static membership with it
				if *instance == "" {
					*instance = instanceName()
				}
				r, err := keyed.NewRunner[device.State](keyed.Config{
					Name:                  "device",
					Brokers:               k.seeds(),
					Group:                 *group,
					Inputs:                proc.Inputs(),
					Changelog:             names.StateDevices,
					Outputs:               proc.Outputs(),
					TransactionalIDPrefix: *txnPrefix,
					InstanceID:            *instance,
					StaticMembership:      static,
					TransactionTimeout:    *txnTimeout,
					MaxRecords:            *maxRecords,
					MaxLinger:             *linger,
					TimerTick:             *tick,
					SkipCorruptState:      *skipCorrupt,
					Logger:                log,
					Registerer:            ops.Registry,
					KafkaOpts:             append(kopts, kgo.SessionTimeout(*sessionTimeout)),
				}, proc)
				if err != nil {
					return err
				}
				ops.AddCheck("kafka", r.Ready)
				log.Info("device processor starting", "group", *group, "instance", *instance)
				return runWithOps(ctx, ops, *opsAddr, r.Run)
			}
		},
	}
}

// readPrivateKeys reads the PEM files of a comma-separated list.
func readPrivateKeys(list string) ([]*rsa.PrivateKey, error) {
	files := splitList(list)
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

// readKEK reads a 32-byte key written as 64 hex digits.
// readKEK reads a hex key-encryption key from a file.
func readKEK(file string) ([32]byte, error) {
	if file == "" {
		return [32]byte{}, fmt.Errorf("no key-encryption key: set -kek (AMS_KEK) or -kek-file (AMS_KEK_FILE)")
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return [32]byte{}, err
	}
	kek, err := parseKEK(string(b))
	if err != nil {
		return kek, fmt.Errorf("%s: %w", file, err)
	}
	return kek, nil
}

// parseKEK decodes a 32-byte key given as 64 hex characters. The error never
// repeats the value.
func parseKEK(s string) ([32]byte, error) {
	var kek [32]byte
	raw, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(raw) != len(kek) {
		return kek, fmt.Errorf("want %d bytes as %d hex characters", len(kek), 2*len(kek))
	}
	copy(kek[:], raw)
	return kek, nil
}

// uploadFlags configure the answer to a device's 703 upload-parameter request.
type uploadFlags struct {
	hostURL, bucket, objectPath, callbackURL string
	secretFile                               string
	ttl                                      time.Duration
	staticAccessKey, staticSecretFile        string
	allowLongTerm                            bool
}

func (u *uploadFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&u.hostURL, "upload-host-url", "", "object storage (or upload gateway) URL sent to devices asking where to upload pictures (empty: 703 not answered)")
	fs.StringVar(&u.bucket, "upload-bucket", "", "bucket name sent with the upload parameters")
	fs.StringVar(&u.objectPath, "upload-object-path", "ai_engine_imgs", "object path prefix; each device uploads under {path}/{sn}")
	fs.StringVar(&u.callbackURL, "upload-callback-url", "", "callback URL sent with the upload parameters")
	fs.StringVar(&u.secretFile, "upload-signing-secret-file", "", "file holding the secret shared with the upload gateway; devices get short-lived credentials scoped to their path (preferred)")
	fs.DurationVar(&u.ttl, "upload-credential-ttl", 0, "lifetime of signed upload credentials (0: default 12h)")
	fs.StringVar(&u.staticAccessKey, "upload-static-access-key", "", "FALLBACK: long-term access key sent to every device (needs -upload-allow-long-term-keys)")
	fs.StringVar(&u.staticSecretFile, "upload-static-secret-key-file", "", "FALLBACK: file holding the long-term secret key sent to every device")
	fs.BoolVar(&u.allowLongTerm, "upload-allow-long-term-keys", false, "allow the long-term key fallback, as the original service did (every device learns the keys)")
}

func (u *uploadFlags) config() (device.UploadConfig, error) {
	c := device.UploadConfig{HostURL: u.hostURL, Bucket: u.bucket, ObjectPath: u.objectPath, CallbackURL: u.callbackURL, AllowLongTermKeys: u.allowLongTerm}
	switch {
	case u.secretFile != "" && u.staticAccessKey != "":
		return c, fmt.Errorf("upload: give -upload-signing-secret-file or the static key fallback, not both")
	case u.secretFile != "":
		secret, err := os.ReadFile(u.secretFile)
		if err != nil {
			return c, fmt.Errorf("upload-signing-secret-file: %w", err)
		}
		c.Credentials = device.SignedUploadCredentials{Secret: []byte(strings.TrimSpace(string(secret))), TTL: u.ttl}
	case u.staticAccessKey != "":
		secret, err := os.ReadFile(u.staticSecretFile)
		if err != nil {
			return c, fmt.Errorf("upload-static-secret-key-file: %w", err)
		}
		c.Credentials = device.StaticUploadKeys{AccessKey: u.staticAccessKey, SecretKey: strings.TrimSpace(string(secret))}
	}
	return c, nil
}
