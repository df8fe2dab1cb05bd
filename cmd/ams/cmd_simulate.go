package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/ivms/ams/cmd/internal/roles"
	"github.com/ivms/ams/pkg/connsec"
	"github.com/ivms/ams/pkg/deviceauth"
	"github.com/ivms/ams/pkg/devkit/devicesim"
	"github.com/ivms/ams/pkg/mqttdynsec"
	"github.com/ivms/ams/pkg/protocol"
)

// portsPerSourceAddr is about how many TCP connections one local address can
// open to one broker address (Linux's default ephemeral port range).
const portsPerSourceAddr = 28000

// simulateCommand runs a fleet of simulated devices against the broker:
// the load generator of the benchmarks and the fleet of `make run`.
// Simulator-only flags start with "sim-" so their AMS_SIM_* variables cannot
// be mistaken for another role's.
func simulateCommand() command {
	return command{
		name:    "simulate",
		summary: "run a fleet of simulated devices speaking the device protocol over MQTT",
		flags: func(fs *flag.FlagSet) func(context.Context, io.Writer, io.Writer) error {
			lf := roles.DefaultLog()
			lf.Flags(fs)
			mq := roles.DefaultMQTT()
			fs.StringVar(&mq.URL, "mqtt-url", mq.URL, "MQTT broker URL: tcp://host:port or ssl://host:port (TLS; wss:// is not simulated)")
			mq.TLSFlags(fs)
			pubKeyFile := fs.String("rsa-public-key-file", "", "PEM file of the cloud's RSA public key, for the devices' handshakes (required)")
			devices := fs.Int("sim-devices", 100, "number of simulated devices, each with its own MQTT connection")
			snPrefix := fs.String("sim-sn-prefix", "0505050505", "serial number prefix; sn = prefix + zero-padded device number, 16 characters")
			snStart := fs.Int("sim-sn-start", 1, "number of the first device (run several simulators on disjoint ranges)")
			password := fs.String("sim-device-password", "", "MQTT password of every device; {sn} is replaced by the device's sn")
			version := fs.String("sim-protocol-version", "V1.0", "sProtocolVersion the devices send")
			qos := fs.Int("sim-qos", 1, "MQTT QoS of the devices' uplinks, 0 or 1")
			keepAlive := fs.Duration("sim-keepalive", 60*time.Second, "MQTT keep-alive of each device")
			heartbeat := fs.Duration("sim-heartbeat", 30*time.Second, "mean heartbeat interval")
			jitter := fs.Float64("sim-jitter", 0.1, "heartbeat interval spread, a share: each interval is heartbeat × (1 ± jitter)")
			ramp := fs.Float64("sim-ramp", 500, "connection attempts per second for the whole fleet (0: no limit)")
			duration := fs.Duration("sim-duration", 0, "how long to run (0: until interrupted)")
			streamEvery := fs.Duration("sim-stream-every", 0, "mean interval of each device's 702 stream-URL requests (0: none)")
			uploadEvery := fs.Duration("sim-upload-every", 0, "mean interval of each device's 703 upload-parameter requests (0: none)")
			uploadPictures := fs.Bool("sim-upload-pictures", false, "with -sim-upload-every: upload a JPEG with each 703 reply's credentials to its hosturl (an `ams upload-gateway`)")
			malformed := fs.Float64("sim-malformed", 0, "share (0..1) of heartbeats replaced by a malformed frame (kinds rotate)")
			stormEvery := fs.Duration("sim-reconnect-storm", 0, "start a reconnect storm at this interval (0: none)")
			stormShare := fs.Float64("sim-storm-share", 0.1, "share of the devices each reconnect storm disconnects and reconnects at once")
			vanish := fs.Float64("sim-vanish", 0, "share (0..1) of devices that now and then drop their connection without DISCONNECT")
			vanishEvery := fs.Duration("sim-vanish-every", 5*time.Minute, "mean time a vanishing device stays connected before it vanishes")
			vanishFor := fs.Duration("sim-vanish-for", 2*time.Minute, "how long a vanished device stays away")
			vanishMode := fs.String("sim-vanish-mode", "silent", "how a device vanishes: silent (socket left open and mute) or reset (TCP RST)")
			keepSession := fs.Float64("sim-keep-session", 0, "share (0..1) of reconnects that keep the session key instead of a new handshake")
			hsTimeout := fs.Duration("sim-handshake-timeout", 10*time.Second, "wait for a handshake reply before retrying (doubles per retry, up to 8×)")
			replyTimeout := fs.Duration("sim-reply-timeout", 10*time.Second, "wait for a reply before counting a request unanswered")
			sourceAddrs := fs.String("sim-source-addrs", "", "local IP addresses to connect from, comma-separated, round robin (about 28k connections each)")
			progress := fs.Duration("sim-progress", time.Second, "interval of the live progress line on stderr (0: none)")
			summaryJSON := fs.String("sim-summary-json", "", "write the final summary as JSON to this file")
			dynsecAdmin := fs.String("sim-dynsec-admin", "", "before starting, give every device of the fleet its account (sn, -sim-device-password) on a Mosquitto with the dynamic-security plugin, as this administrator")
			dynsecAdminPwFile := fs.String("sim-dynsec-admin-password-file", "", "file holding the password of -sim-dynsec-admin")
			closedLoop := fs.Bool("sim-closed-loop", false, "closed loop: each device sends its next heartbeat when the reply to the last one arrives; reports replies/s and the round trip's p50/p99/p999 after -sim-warmup")
			warmup := fs.Duration("sim-warmup", 10*time.Second, "with -sim-closed-loop: time after start that the measurement leaves out (connecting, handshakes)")
			metricsURLs := fs.String("sim-metrics-urls", "", "roles' /metrics URLs, comma-separated: print the per-hop latency histograms' p50/p99/p999 over the measurement at the end")
			return func(ctx context.Context, stdout, stderr io.Writer) error {
				log, err := lf.Logger(stderr)
				if err != nil {
					return err
				}
				mqttTLS, err := mq.TLSConfig()
				if err != nil {
					return err
				}
				if *pubKeyFile == "" {
					return errors.New("-rsa-public-key-file (AMS_RSA_PUBLIC_KEY_FILE) is required: the devices encrypt their " +
						"handshake to the cloud's RSA public key, so give the PEM of the key whose private half the processors use")
				}
				pem, err := os.ReadFile(*pubKeyFile)
				if err != nil {
					return fmt.Errorf("reading the cloud's public key: %w", err)
				}
				pub, err := protocol.ParsePublicKey(pem)
				if err != nil {
					return fmt.Errorf("the cloud's public key %s: %w", *pubKeyFile, err)
				}
				if *qos != 0 && *qos != 1 {
					return fmt.Errorf("-sim-qos %d: want 0 or 1", *qos)
				}
				var addrs []net.IP
				for _, a := range roles.SplitList(*sourceAddrs) {
					ip := net.ParseIP(a)
					if ip == nil {
						return fmt.Errorf("-sim-source-addrs: %q is not an IP address", a)
					}
					addrs = append(addrs, ip)
				}
				if per := *devices / max(1, len(addrs)); per > portsPerSourceAddr {
					log.Warn("more connections per source address than ephemeral ports; add addresses with -sim-source-addrs (e.g. 127.0.0.1,127.0.0.2 for a loopback broker)",
						"devices", *devices, "source_addrs", max(1, len(addrs)))
				}
				// One descriptor per device, plus headroom; below devices+64
				// the last devices cannot connect.
				got, err := devicesim.RaiseOpenFileLimit(uint64(*devices) + 1024)
				switch {
				case got < uint64(*devices)+64:
					log.Warn("open-file limit too low for the fleet: some devices will fail to connect", "limit", got, "devices", *devices, "err", err)
				case err != nil:
					log.Info("open-file limit below the wanted headroom", "limit", got, "err", err)
				}
				pw := *password
				cfg := devicesim.Config{
					Devices:          *devices,
					SNPrefix:         *snPrefix,
					FirstIndex:       *snStart,
					BrokerURL:        mq.URL,
					TLS:              mqttTLS,
					SourceAddrs:      addrs,
					Token:            func(sn string) string { return strings.ReplaceAll(pw, "{sn}", sn) },
					PublicKey:        pub,
					ProtocolVersion:  *version,
					UplinkQoS:        byte(*qos),
					KeepAlive:        *keepAlive,
					Heartbeat:        *heartbeat,
					Jitter:           *jitter,
					Ramp:             *ramp,
					StreamEvery:      *streamEvery,
					UploadEvery:      *uploadEvery,
					Malformed:        *malformed,
					StormEvery:       *stormEvery,
					StormShare:       *stormShare,
					Vanish:           *vanish,
					VanishEvery:      *vanishEvery,
					VanishFor:        *vanishFor,
					VanishMode:       devicesim.VanishMode(*vanishMode),
					KeepSession:      *keepSession,
					HandshakeTimeout: *hsTimeout,
					ReplyTimeout:     *replyTimeout,
					ClosedLoop:       *closedLoop,
					Logger:           log,
				}
				if *closedLoop {
					cfg.Warmup = *warmup
				}
				// The library reads 0 as "default" and a negative value as
				// "none"; the flags say 0 for none.
				if *jitter == 0 {
					cfg.Jitter = -1
				}
				if *ramp == 0 {
					cfg.Ramp = -1
				}
				if *uploadPictures {
					up := newSimUploader(log, 4)
					cfg.OnReceive = up.onReceive
					defer up.close()
				}
				fleet, err := devicesim.New(cfg)
				if err != nil {
					return err
				}
				if *dynsecAdmin != "" {
					if err := addFleetAccounts(cfg, mq.URL, *dynsecAdmin, *dynsecAdminPwFile); err != nil {
						return err
					}
					log.Info("device accounts created on the broker", "devices", cfg.Devices, "admin", *dynsecAdmin)
				}
				if *duration > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, *duration)
					defer cancel()
				}
				stopProgress := startProgress(fleet, stderr, *progress)
				hops := startHopScrape(ctx, roles.SplitList(*metricsURLs), cfg.Warmup, stderr)
				sum, err := fleet.Run(ctx)
				stopProgress()
				if err != nil {
					return err
				}
				fmt.Fprint(stdout, devicesim.Report(sum.Stats))
				hops(stdout)
				if *summaryJSON != "" {
					if err := writeSummary(*summaryJSON, sum, fs); err != nil {
						return err
					}
				}
				return nil
			}
		},
	}
}

// startProgress writes a progress line every interval: one line rewritten in
// place when w is a terminal, plain lines otherwise. The returned function
// stops it (and ends the line).
func startProgress(fleet *devicesim.Fleet, w io.Writer, every time.Duration) func() {
	if every <= 0 {
		return func() {}
	}
	tty := roles.IsTerminal(w)
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(every)
		defer t.Stop()
		var prev devicesim.Stats
		for {
			select {
			case <-done:
				if tty {
					fmt.Fprintln(w)
				}
				return
			case <-t.C:
			}
			s := fleet.Stats()
			line := devicesim.ProgressLine(s, prev)
			prev = s
			if tty {
				fmt.Fprint(w, "\r"+line+"\x1b[K")
			} else {
				fmt.Fprintln(w, line)
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
	}
}

// writeSummary writes the summary and the flags it ran with (secrets left
// out) as JSON.
func writeSummary(path string, sum devicesim.Summary, fs *flag.FlagSet) error {
	flags := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.Contains(f.Name, "password") {
			flags[f.Name] = f.Value.String()
		}
	})
	b, err := json.MarshalIndent(struct {
		Flags   map[string]string `json:"flags"`
		Summary devicesim.Summary `json:"summary"`
	}{flags, sum}, "", "  ")
	if err != nil {
		return fmt.Errorf("summary: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing the summary: %w", err)
	}
	return nil
}

// addFleetAccounts creates (or re-creates) the broker account of every
// device of cfg through Mosquitto's dynamic-security plugin.
func addFleetAccounts(cfg devicesim.Config, url, admin, pwFile string) error {
	pw, err := connsec.Secret("sim-dynsec-admin-password", "", pwFile)
	if err != nil {
		return err
	}
	cl, err := mqttdynsec.Dial(url, admin, pw)
	if err != nil {
		return err
	}
	defer cl.Close()
	var creds []deviceauth.Credential
	for _, sn := range devicesim.SNs(cfg) {
		creds = append(creds, deviceauth.Credential{Username: sn, Password: cfg.Token(sn)})
	}
	// Left over from an earlier run: deleting what does not exist is an
	// error the plugin reports and this ignores.
	_ = cl.RemoveDevices(creds...)
	if err := cl.AddDevices(creds...); err != nil {
		return fmt.Errorf("device accounts: %w", err)
	}
	return nil
}
