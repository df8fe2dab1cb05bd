// Command ams-dev is `make run`: every role of ams in one process, on
// embedded services, for a first run. Kafka is franz-go's kfake, Redis is
// miniredis, the MQTT broker is pkg/devkit/devbroker (mochi, with ams's broker
// policy and EMQX 5 connection events); ClickHouse, which has no embedded
// form, is a private clickhouse-server process with its data under -dir (or
// the server of -clickhouse-addr). The roles are the same code as `ams
// process`, `ams ingest`, ... (cmd/internal/roles), their Options built here
// from their defaults; their logs go to {dir}/logs.
//
// Kafka and Redis live in memory: each run starts with an empty log, so the
// ClickHouse database is emptied at start too (its rows' ids come from log
// offsets, which start again at 0).
//
// It is a binary of its own so that the production `ams` links none of the
// embedded services.
//
//	ams-dev [flags]                   run everything
//	ams-dev clickhouse-config DIR ... write the ClickHouse server config (deploy/stack/up.sh uses it)
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
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/cmd/internal/roles"
	"github.com/ivms/ams/pkg/connsec"
	"github.com/ivms/ams/pkg/deviceauth"
	"github.com/ivms/ams/pkg/devkit/devbroker"
	"github.com/ivms/ams/pkg/devkit/devicesim"
	"github.com/ivms/ams/pkg/envflag"
	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/protocol"
)

// main runs ams-dev; its flags are also read from their AMS_* variables.
func main() { roles.Main(run) }

// run executes ams-dev and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := flag.NewFlagSet("ams-dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := defaultDevConfig()
	c.flags(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "ams-dev: %s\n\nFlags (each also read from its environment variable):\n", devSummary)
		envflag.Usage(stderr, fs)
	}
	if err := envflag.Parse(fs, args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "ams-dev: %v\n", err)
		return 2
	}
	ignoreBrokenPipe()
	err := runDev(ctx, c, stdout, stderr)
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		err = nil // interrupted while starting
	}
	if err != nil {
		fmt.Fprintf(stderr, "ams-dev: %v\n", err)
		return 1
	}
	return 0
}

const devSummary = "run every role in one process on embedded Kafka, Redis and MQTT (and a private ClickHouse), with a simulated fleet"

// defaultDevConfig is ams-dev's defaults.
func defaultDevConfig() devConfig {
	return devConfig{devices: 1000, mqttAddr: "127.0.0.1:18830", httpAddr: "127.0.0.1:8088",
		clickhouseServer: "clickhouse-server", partitions: 4, view: time.Second, heartbeat: 30 * time.Second,
		logs: roles.DefaultLog()}
}

// flags declares ams-dev's flags on c's fields.
func (c *devConfig) flags(fs *flag.FlagSet) {
	c.logs.Flags(fs)
	fs.StringVar(&c.dir, "dir", c.dir, "folder of the dev stack's keys, logs and ClickHouse data (default $AMS_STACK_DIR/dev-embedded, else .stack/dev-embedded)")
	fs.IntVar(&c.devices, "devices", c.devices, "simulated devices (0: no fleet)")
	fs.StringVar(&c.mqttAddr, "mqtt-addr", c.mqttAddr, "listen address of the embedded MQTT broker")
	fs.StringVar(&c.httpAddr, "http-addr", c.httpAddr, "listen address of the API")
	fs.StringVar(&c.clickhouseAddr, "clickhouse-addr", c.clickhouseAddr, "ClickHouse native address to use (its database ams_dev is emptied at start); empty: start a private clickhouse-server with its data in -dir")
	fs.StringVar(&c.clickhouseServer, "clickhouse-server", c.clickhouseServer, "the clickhouse-server program started when -clickhouse-addr is empty")
	fs.IntVar(&c.partitions, "partitions", c.partitions, "partition count of every topic of the embedded Kafka")
	fs.DurationVar(&c.view, "view", c.view, "refresh interval of the live view on stderr (0: none)")
	fs.DurationVar(&c.duration, "duration", c.duration, "stop after this long (0: until interrupted)")
	fs.DurationVar(&c.heartbeat, "sim-heartbeat", c.heartbeat, "mean heartbeat interval of the simulated devices")
}

// ignoreBrokenPipe keeps `ams-dev 2>&1 | tee log` alive when Ctrl-C kills
// tee first: without it, Go exits with SIGPIPE on the first write to the
// closed stdout or stderr, before the roles stop, and the ClickHouse child
// (Pdeathsig) dies before the sink has flushed. With it such a write fails
// (EPIPE, the view and log lines are lost; the roles' logs under -dir stay)
// and the SIGINT the terminal sent stops every role in order.
func ignoreBrokenPipe() { signal.Ignore(syscall.SIGPIPE) }

// devConfig is the parsed flags of `ams-dev`.
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
	logs             roles.Log
}

// devServiceAccount is the MQTT account of the roles inside `ams-dev`.
const devServiceAccount = "ams-dev"

// devSNPrefix is the sn prefix of the simulated fleet.
const devSNPrefix = "0505050505"

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
	log, err := c.logs.Logger(devLogFile)
	if err != nil {
		return err
	}
	if c.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.duration)
		defer cancel()
	}
	t0 := time.Now()
	fmt.Fprintf(stderr, "ams-dev: starting in %s (logs: %s)\n", c.dir, logDir)
	fmt.Fprintln(stderr, "ams-dev: OPEN, for development only: the in-process Kafka and Redis and the embedded MQTT broker "+
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
	kafka := roles.DefaultKafka()
	kafka.Brokers, kafka.Partitions = seeds, c.partitions
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
	brokerLog, err := roles.Log{Level: "warn", Format: c.logs.Format}.Logger(brokerLogFile)
	if err != nil {
		return err
	}
	broker, err := devbroker.Start(devbroker.Config{Addr: c.mqttAddr, Accounts: accounts, Logger: brokerLog})
	if err != nil {
		return fmt.Errorf("%w (is another `ams-dev` running? pick another with -mqtt-addr)", err)
	}
	defer broker.Close()
	log.Info("embedded services up", "kafka", seeds, "redis", mr.Addr(), "mqtt", broker.URL())

	// The roles.
	rolesCtx, stopRoles := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRoles()
	failed := make(chan *devRole, 8)
	var started []*devRole
	var rolesWG sync.WaitGroup
	// start runs one role, its output (out) in its own log file.
	start := func(name string, out *roles.Output, run func(context.Context) error) error {
		r := &devRole{name: name, log: filepath.Join(logDir, strings.ReplaceAll(name, " ", "-")+".log"), done: make(chan struct{})}
		f, err := os.Create(r.log)
		if err != nil {
			return err
		}
		out.SetOutput(f, f)
		started = append(started, r)
		rolesWG.Add(1)
		go func() {
			defer rolesWG.Done()
			defer f.Close()
			r.err = run(rolesCtx)
			close(r.done)
			if rolesCtx.Err() == nil {
				failed <- r
			}
		}()
		return nil
	}
	// The roles' options: their defaults, with the embedded services, no
	// ops server, and dev's secrets.
	mqtt := roles.DefaultMQTT()
	mqtt.URL, mqtt.Username, mqtt.Password = broker.URL(), devServiceAccount, sec.servicePassword
	redis := roles.DefaultRedis()
	redis.Addr = mr.Addr()

	process := roles.DefaultProcess()
	process.Kafka, process.Log, process.OpsAddr = kafka, c.logs, ""
	process.InstanceID, process.AllowUnregistered = "dev", true
	process.PrivateKeyFiles, process.KEKFile = sec.privateKeyFile, sec.kekFile
	process.StreamSecretFile, process.StreamBaseURL = sec.streamSecretFile, "rtmp://127.0.0.1:1935/live"
	process.Upload.SigningSecretFile, process.Upload.HostURL, process.Upload.Bucket = sec.uploadSecretFile, "http://127.0.0.1:9900", "ams-dev"

	ingest := roles.DefaultIngest()
	ingest.Kafka, ingest.Log, ingest.MQTT, ingest.OpsAddr = kafka, c.logs, mqtt, ""
	ingest.Instance, ingest.ClientID = "dev", "ams-ingest-dev"

	egress := roles.DefaultEgress()
	egress.Kafka, egress.Log, egress.MQTT, egress.OpsAddr = kafka, c.logs, mqtt, ""
	egress.EgressID = "ams-egress-dev"

	sinkRedis := roles.DefaultSinkRedis()
	sinkRedis.Kafka, sinkRedis.Log, sinkRedis.Redis, sinkRedis.OpsAddr = kafka, c.logs, redis, ""

	hook := roles.DefaultMediaHook()
	hook.Log, hook.Redis, hook.OpsAddr = c.logs, redis, ""
	hook.Addr, hook.StreamSecretFiles, hook.KeyFile = devMediaHookAddr, sec.streamSecretFile, sec.mediaHookKeyFile

	for _, err := range []error{
		start("process", &process.Output, func(ctx context.Context) error { return roles.RunProcess(ctx, process) }),
		start("ingest", &ingest.Output, func(ctx context.Context) error { return roles.RunIngest(ctx, ingest) }),
		start("egress", &egress.Output, func(ctx context.Context) error { return roles.RunEgress(ctx, egress) }),
		start("sink redis", &sinkRedis.Output, func(ctx context.Context) error { return roles.RunSinkRedis(ctx, sinkRedis) }),
		start("media-hook", &hook.Output, func(ctx context.Context) error { return roles.RunMediaHook(ctx, hook) }),
	} {
		if err != nil {
			return err
		}
	}
	// Stop the roles (after the fleet) before the services they talk to.
	defer func() {
		stopRoles()
		waitTimeout(&rolesWG, 30*time.Second)
		for _, r := range started {
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
	ch := roles.DefaultClickHouse()
	ch.Addr, ch.Database = chAddr, chDB
	devCHOpts, err := ch.Options()
	if err != nil {
		return err
	}
	if err := resetDevClickHouse(ctx, devCHOpts, log, devLogFile); err != nil {
		return err
	}
	sinkCH := roles.DefaultSinkClickHouse()
	sinkCH.Kafka, sinkCH.Log, sinkCH.ClickHouse, sinkCH.OpsAddr = kafka, c.logs, ch, ""
	if err := start("sink clickhouse", &sinkCH.Output, func(ctx context.Context) error { return roles.RunSinkClickHouse(ctx, sinkCH) }); err != nil {
		return err
	}
	// The API (and its console, which reads the history) once ClickHouse is known.
	apiOpts := roles.DefaultAPI()
	apiOpts.Kafka, apiOpts.Log, apiOpts.Redis, apiOpts.ClickHouse, apiOpts.OpsAddr = kafka, c.logs, redis, ch, ""
	apiOpts.HTTPAddr, apiOpts.Token = c.httpAddr, sec.apiToken
	if err := start("api", &apiOpts.Output, func(ctx context.Context) error { return roles.RunAPI(ctx, apiOpts) }); err != nil {
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
		fmt.Fprintln(stderr, "ams-dev: stopping...")
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
	log, err := c.logs.Logger(f)
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
