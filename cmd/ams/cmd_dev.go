package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/connsec"
	"github.com/ivms/ams/pkg/devbroker"
	"github.com/ivms/ams/pkg/deviceauth"
	"github.com/ivms/ams/pkg/devicesim"
	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/protocol"
)

// devCommand is `ams dev`: every role in one process, on embedded services,
// for a first run. Kafka is franz-go's kfake, Redis is miniredis, the MQTT
// broker is pkg/devbroker (mochi, with ams's broker policy and EMQX 5
// connection events); ClickHouse, which has no embedded form, is a private
// clickhouse-server process with its data under -dir (or the server of
// -clickhouse-addr). The roles are the same code as `ams process`, `ams
// ingest`, ... started with the flags below and their defaults; their
// logs go to {dir}/logs.
//
// Kafka and Redis live in memory: each run starts with an empty log, so the
// ClickHouse database is emptied at start too (its rows' ids come from log
// offsets, which start again at 0).
func devCommand() command {
	return command{
		name:    "dev",
		summary: "run every role in one process on embedded Kafka, Redis and MQTT (and a private ClickHouse), with a simulated fleet",
		flags: func(fs *flag.FlagSet) func(context.Context, io.Writer, io.Writer) error {
			var c devConfig
			var lf logFlags
			lf.register(fs)
			fs.StringVar(&c.dir, "dir", "", "folder of the dev stack's keys, logs and ClickHouse data (default $AMS_STACK_DIR/dev-embedded, else .stack/dev-embedded)")
			fs.IntVar(&c.devices, "devices", 1000, "simulated devices (0: no fleet)")
			fs.StringVar(&c.mqttAddr, "mqtt-addr", "127.0.0.1:18830", "listen address of the embedded MQTT broker")
			fs.StringVar(&c.httpAddr, "http-addr", "127.0.0.1:8088", "listen address of the API")
			fs.StringVar(&c.clickhouseAddr, "clickhouse-addr", "", "ClickHouse native address to use (its database ams_dev is emptied at start); empty: start a private clickhouse-server with its data in -dir")
			fs.StringVar(&c.clickhouseServer, "clickhouse-server", "clickhouse-server", "the clickhouse-server program started when -clickhouse-addr is empty")
			fs.IntVar(&c.partitions, "partitions", 4, "partition count of every topic of the embedded Kafka")
			fs.DurationVar(&c.view, "view", time.Second, "refresh interval of the live view on stderr (0: none)")
			fs.DurationVar(&c.duration, "duration", 0, "stop after this long (0: until interrupted)")
			fs.DurationVar(&c.heartbeat, "sim-heartbeat", 30*time.Second, "mean heartbeat interval of the simulated devices")
			return func(ctx context.Context, stdout, stderr io.Writer) error {
				c.logs = lf
				ignoreBrokenPipe()
				err := runDev(ctx, c, stdout, stderr)
				if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
					return nil // interrupted while starting
				}
				return err
			}
		},
	}
}

// ignoreBrokenPipe keeps `ams dev 2>&1 | tee log` alive when Ctrl-C kills
// tee first: without it, Go exits with SIGPIPE on the first write to the
// closed stdout or stderr, before the roles stop, and the ClickHouse child
// (Pdeathsig) dies before the sink has flushed. With it such a write fails
// (EPIPE, the view and log lines are lost; the roles' logs under -dir stay)
// and the SIGINT the terminal sent stops every role in order.
func ignoreBrokenPipe() { signal.Ignore(syscall.SIGPIPE) }

// devConfig is the parsed flags of `ams dev`.
type devConfig struct {
	dir              string
	devices          int
	mqttAddr         string
	httpAddr         string
	clickhouseAddr   string
	clickhouseServer string
	partitions       int
	view             time.Duration
	duration         time.Duration
	heartbeat        time.Duration
	logs             logFlags
}

// devServiceAccount is the MQTT account of the roles inside `ams dev`.
const devServiceAccount = "ams-dev"

// devSNPrefix is the sn prefix of the simulated fleet.
const devSNPrefix = "0505050505"

// noEnv keeps AMS_* variables meant for standalone roles out of the roles
// `ams dev` runs: they run on the flags dev gives them and their defaults.
func noEnv(string) string { return "" }

func defaultDevDir() string {
	if d := os.Getenv("AMS_STACK_DIR"); d != "" {
		return filepath.Join(d, "dev-embedded")
	}
	return filepath.Join(".stack", "dev-embedded")
}

// devRole is one role running in the dev process.
type devRole struct {
	name string
	log  string // its log file
	done chan struct{}
	err  error
}

func runDev(ctx context.Context, c devConfig, stdout, stderr io.Writer) (err error) {
	if c.dir == "" {
		c.dir = defaultDevDir()
	}
	if c.dir, err = filepath.Abs(c.dir); err != nil {
		return err
	}
	if c.partitions < 1 {
		return fmt.Errorf("-partitions %d: want at least 1", c.partitions)
	}
	if c.devices < 0 {
		return fmt.Errorf("-devices %d: want 0 or more", c.devices)
	}
	logDir := filepath.Join(c.dir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}
	devLogFile, err := os.Create(filepath.Join(logDir, "dev.log"))
	if err != nil {
		return err
	}
	defer devLogFile.Close()
	log, err := c.logs.logger(devLogFile)
	if err != nil {
		return err
	}
	if c.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.duration)
		defer cancel()
	}
	t0 := time.Now()
	fmt.Fprintf(stderr, "ams dev: starting in %s (logs: %s)\n", c.dir, logDir)
	fmt.Fprintln(stderr, "ams dev: OPEN, for development only: the in-process Kafka and Redis and the embedded MQTT broker "+
		"run without TLS, Kafka and Redis without authentication, and topics have replication factor 1 "+
		"(what `ams migrate` refuses without -allow-unsafe-replication); see README \"Security\"")

	sec, err := devSecrets(c.dir)
	if err != nil {
		return err
	}

	// ClickHouse takes seconds to start: start it first, wait for it last.
	type chResult struct {
		addr string
		srv  *devClickHouse
		err  error
	}
	chDone := make(chan chResult, 1)
	chCtx, cancelCH := context.WithCancel(ctx)
	defer cancelCH()
	chDB := "ams"
	if c.clickhouseAddr != "" {
		chDB = "ams_dev"
		chDone <- chResult{addr: c.clickhouseAddr}
	} else {
		go func() {
			srv, err := startDevClickHouse(chCtx, c.clickhouseServer, filepath.Join(c.dir, "clickhouse"), logDir, log)
			chDone <- chResult{srv: srv, err: err}
		}()
	}
	var chSrv *devClickHouse
	chReceived := false
	defer func() {
		if !chReceived {
			// Still starting (or never waited for): abort the start-up, or
			// take the server it started, and stop it.
			cancelCH()
			chSrv = (<-chDone).srv
		}
		chSrv.stop(log)
	}()

	// Kafka.
	kc, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		return fmt.Errorf("embedded kafka: %w", err)
	}
	defer kc.Close()
	seeds := strings.Join(kc.ListenAddrs(), ",")
	kafkaArgs := []string{"-kafka-brokers", seeds, "-partitions", strconv.Itoa(c.partitions),
		"-log-level", c.logs.level, "-log-format", c.logs.format}
	if err := createDevTopics(ctx, kc.ListenAddrs(), int32(c.partitions)); err != nil {
		return err
	}
	log.Info("kafka topics ready", "partitions", c.partitions)

	// Redis.
	mr := miniredis.NewMiniRedis()
	if err := mr.StartAddr("127.0.0.1:0"); err != nil {
		return fmt.Errorf("embedded redis: %w", err)
	}
	defer mr.Close()

	// MQTT.
	accounts, err := deviceauth.ParseAccounts(devServiceAccount + ":" + sec.servicePassword)
	if err != nil {
		return err
	}
	brokerLogFile, err := os.Create(filepath.Join(logDir, "broker.log"))
	if err != nil {
		return err
	}
	defer brokerLogFile.Close()
	brokerLog, err := (&logFlags{level: "warn", format: c.logs.format}).logger(brokerLogFile)
	if err != nil {
		return err
	}
	broker, err := devbroker.Start(devbroker.Config{Addr: c.mqttAddr, Accounts: accounts, Logger: brokerLog})
	if err != nil {
		return fmt.Errorf("%w (is another `ams dev` running? pick another with -mqtt-addr)", err)
	}
	defer broker.Close()
	log.Info("embedded services up", "kafka", seeds, "redis", mr.Addr(), "mqtt", broker.URL())

	// The roles.
	rolesCtx, stopRoles := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRoles()
	failed := make(chan *devRole, 8)
	var roles []*devRole
	var rolesWG sync.WaitGroup
	start := func(name string, flags func(*flag.FlagSet) func(context.Context, io.Writer, io.Writer) error, args ...string) error {
		r := &devRole{name: name, log: filepath.Join(logDir, strings.ReplaceAll(name, " ", "-")+".log"), done: make(chan struct{})}
		f, err := os.Create(r.log)
		if err != nil {
			return err
		}
		// Every role that talks to Kafka gets the embedded cluster's address.
		probe := flag.NewFlagSet(name, flag.ContinueOnError)
		flags(probe)
		if probe.Lookup("kafka-brokers") != nil {
			args = append(append([]string{}, kafkaArgs...), args...)
		}
		exec, err := parseRole(name, flags, args, f)
		if err != nil {
			f.Close()
			return err
		}
		roles = append(roles, r)
		rolesWG.Add(1)
		go func() {
			defer rolesWG.Done()
			defer f.Close()
			r.err = exec(rolesCtx, f, f)
			close(r.done)
			if rolesCtx.Err() == nil {
				failed <- r
			}
		}()
		return nil
	}
	mqttArgs := []string{"-mqtt-url", broker.URL(), "-mqtt-username", devServiceAccount, "-mqtt-password", sec.servicePassword}
	redisArgs := []string{"-redis-addr", mr.Addr()}
	steps := []struct {
		name  string
		flags func(*flag.FlagSet) func(context.Context, io.Writer, io.Writer) error
		args  []string
	}{
		{"process", processCommand().flags, []string{"-ops-addr=", "-instance-id", "dev", "-allow-unregistered",
			"-rsa-private-key-file", sec.privateKeyFile, "-kek-file", sec.kekFile,
			"-stream-secret-file", sec.streamSecretFile, "-stream-base-url", "rtmp://127.0.0.1:1935/live",
			"-upload-signing-secret-file", sec.uploadSecretFile, "-upload-host-url", "http://127.0.0.1:9900", "-upload-bucket", "ams-dev"}},
		{"ingest", ingestCommand().flags, append([]string{"-ops-addr=", "-instance", "dev", "-mqtt-client-id", "ams-ingest-dev"}, mqttArgs...)},
		{"egress", egressCommand().flags, append([]string{"-ops-addr=", "-egress-id", "ams-egress-dev"}, mqttArgs...)},
		{"sink redis", redisSinkFlags, append([]string{"-ops-addr="}, redisArgs...)},
		{"media-hook", mediaHookCommand().flags, append([]string{"-ops-addr=", "-media-hook-addr", devMediaHookAddr,
			"-stream-secret-files", sec.streamSecretFile, "-media-hook-key-file", sec.mediaHookKeyFile}, redisArgs...)},
	}
	for _, s := range steps {
		if err := start(s.name, s.flags, s.args...); err != nil {
			return err
		}
	}
	// Stop the roles (after the fleet) before the services they talk to.
	defer func() {
		stopRoles()
		waitTimeout(&rolesWG, 30*time.Second)
		for _, r := range roles {
			select {
			case <-r.done:
			default:
				log.Warn("role did not stop in time", "role", r.name)
			}
		}
	}()
	roleFailure := func(r *devRole) error {
		return fmt.Errorf("role %s stopped: %v (log: %s)\n%s", r.name, r.err, r.log, tailFile(r.log, 15))
	}

	// ClickHouse: wait, empty the database, migrate, start the sink.
	var chAddr string
	select {
	case r := <-chDone:
		chReceived = true
		if r.err != nil {
			return r.err
		}
		chSrv, chAddr = r.srv, r.addr
		if r.srv != nil {
			chAddr = r.srv.addr
		}
	case r := <-failed:
		return roleFailure(r)
	case <-ctx.Done():
		return nil
	}
	chOpts := clickHouseFlags{addr: chAddr, database: chDB, username: "default"}
	devCHOpts, err := chOpts.options()
	if err != nil {
		return err
	}
	if err := resetDevClickHouse(ctx, devCHOpts, log, devLogFile); err != nil {
		return err
	}
	if err := start("sink clickhouse", clickhouseSinkFlags, "-ops-addr=", "-clickhouse-addr", chAddr, "-clickhouse-database", chDB); err != nil {
		return err
	}
	// The API (and its console, which reads the history) once ClickHouse is known.
	if err := start("api", apiCommand().flags, append([]string{"-ops-addr=", "-http-addr", c.httpAddr, "-api-token", sec.apiToken,
		"-clickhouse-addr", chAddr, "-clickhouse-database", chDB}, redisArgs...)...); err != nil {
		return err
	}

	api := "http://" + dialAddr(c.httpAddr)
	if err := waitHTTP(ctx, api+"/v1/command-kinds", sec.apiToken, 30*time.Second, failed); err != nil {
		var r *devRole
		if errors.As(err, &r) {
			return roleFailure(r)
		}
		return err
	}

	// The fleet: registered first, so configuration uploads get their name
	// and stream requests a URL.
	var fleet *devicesim.Fleet
	fleetDone := make(chan struct{})
	fleetCtx, stopFleet := context.WithCancel(context.WithoutCancel(ctx))
	defer stopFleet()
	if c.devices > 0 {
		if err := registerDevices(ctx, api, sec.apiToken, devSNPrefix, c.devices); err != nil {
			return err
		}
		fleet, err = startDevFleet(fleetCtx, c, broker.URL(), sec.publicKeyFile, logDir, fleetDone)
		if err != nil {
			return err
		}
	} else {
		close(fleetDone)
	}
	defer func() {
		stopFleet()
		select {
		case <-fleetDone:
		case <-time.After(20 * time.Second):
			log.Warn("fleet did not stop in time")
		}
	}()

	hookKey, err := connsec.Secret("media-hook key", "", sec.mediaHookKeyFile)
	if err != nil {
		return err
	}
	mediaLine, stopNginx := startDevNginx(c.dir, hookKey, log)
	defer stopNginx()
	chPort := chAddr[strings.LastIndex(chAddr, ":")+1:]
	printDevHints(stdout, devHints{media: mediaLine, api: api, token: sec.apiToken, tokenFile: sec.apiTokenFile, mqtt: broker.URL(),
		sn: devSNPrefix + "000001", chHost: chAddr[:strings.LastIndex(chAddr, ":")], chPort: chPort, chDB: chDB,
		devices: c.devices, logs: logDir, started: time.Since(t0)})

	view := newDevView(devViewConfig{
		seeds: kc.ListenAddrs(), redisAddr: mr.Addr(), fleet: fleet, broker: broker, devices: c.devices,
		started: t0, api: api, log: log,
	})
	stopView := view.start(ctx, stderr, c.view)
	defer stopView()

	select {
	case <-ctx.Done():
		stopView()
		fmt.Fprintln(stderr, "ams dev: stopping...")
		return nil
	case r := <-failed:
		stopView()
		return roleFailure(r)
	}
}

// dialAddr turns a listen address into one to connect to: an empty or
// unspecified host becomes 127.0.0.1.
func dialAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// parseRole parses a role's flags (without the environment) and returns
// the function that runs it.
func parseRole(name string, flags func(*flag.FlagSet) func(context.Context, io.Writer, io.Writer) error, args []string, out io.Writer) (func(context.Context, io.Writer, io.Writer) error, error) {
	fs := flag.NewFlagSet("ams "+name, flag.ContinueOnError)
	fs.SetOutput(out)
	exec := flags(fs)
	if err := parseFlags(fs, args, noEnv); err != nil {
		return nil, fmt.Errorf("role %s: %w", name, err)
	}
	return exec, nil
}

// createDevTopics creates the ams topics as `ams migrate` does. Its own
// client keeps metadata for 100 ms only (kgo's default is 5 s), so the check
// after the creation sees the new topics at once.
func createDevTopics(ctx context.Context, seeds []string, partitions int32) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.MetadataMinAge(100*time.Millisecond))
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	layout := kafkatopics.Layout{Partitions: partitions, Replication: 1, RetentionMs: (7 * 24 * time.Hour).Milliseconds()}
	if err := kafkatopics.Ensure(ctx, kadm.NewClient(cl), kafkatopics.WithPrefix(""), layout); err != nil {
		return fmt.Errorf("creating the topics: %w", err)
	}
	return nil
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

// Error makes a failed role usable as an error (waitHTTP returns it).
func (r *devRole) Error() string { return "role " + r.name + " stopped" }

// waitHTTP polls url until it answers 200, a role fails or the timeout passes.
func waitHTTP(ctx context.Context, url, token string, timeout time.Duration, failed <-chan *devRole) error {
	deadline := time.Now().Add(timeout)
	cl := &http.Client{Timeout: 2 * time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("wait for %s: %w", url, err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := cl.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer within %s: %v", url, timeout, err)
		}
		select {
		case r := <-failed:
			return r
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// tailFile returns the last n lines of a file, indented.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// startDevFleet runs the simulated fleet against the embedded broker until
// ctx is done; done is closed once every device disconnected.
func startDevFleet(ctx context.Context, c devConfig, brokerURL, publicKeyFile, logDir string, done chan struct{}) (*devicesim.Fleet, error) {
	pem, err := os.ReadFile(publicKeyFile)
	if err != nil {
		return nil, err
	}
	pub, err := protocol.ParsePublicKey(pem)
	if err != nil {
		return nil, fmt.Errorf("the cloud's public key: %w", err)
	}
	f, err := os.Create(filepath.Join(logDir, "simulate.log"))
	if err != nil {
		return nil, err
	}
	log, err := c.logs.logger(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	// Two descriptors per device (its client side and the broker's), plus headroom.
	want := uint64(2*c.devices) + 2048
	if got, err := devicesim.RaiseOpenFileLimit(want); got < want {
		log.Warn("open-file limit below the fleet's needs: some devices may not connect", "limit", got, "want", want, "err", err)
	}
	fleet, err := devicesim.New(devicesim.Config{
		Devices:     c.devices,
		SNPrefix:    devSNPrefix,
		FirstIndex:  1,
		BrokerURL:   brokerURL,
		PublicKey:   pub,
		UplinkQoS:   1,
		Heartbeat:   c.heartbeat,
		StreamEvery: 5 * time.Minute,
		UploadEvery: 10 * time.Minute,
		Logger:      log,
	})
	if err != nil {
		f.Close()
		return nil, err
	}
	go func() {
		defer close(done)
		defer f.Close()
		_, _ = fleet.Run(ctx)
	}()
	return fleet, nil
}
