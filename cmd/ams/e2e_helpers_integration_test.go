//go:build integration

package main

// Helpers of the end-to-end tests (e2e_integration_test.go): a whole ams
// pipeline per test, every role a subprocess of the built binary, against
// the shared Kafka and Redis and a private Mosquitto.

import (
	"crypto/tls"
	"os/exec"

	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"fmt"
	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/devicestate"
	"github.com/ivms/ams/pkg/devkit/devicesim"
	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/pkg/testkit/mqttconform"
	"github.com/ivms/ams/pkg/testkit/testenv"
	"github.com/ivms/ams/schemas"
)

// e2ePartitions is the partition count of every topic of a test.
const e2ePartitions = 6

// amsBinary is the ams binary TestMain built for this test binary.
var amsBinary string

func TestMain(m *testing.M) { os.Exit(mqttconform.MainWithAMS(m, &amsBinary)) }

// stackOptions shape one test's pipeline.
type stackOptions struct {
	processors       int           // ams process instances (default 1)
	heartbeatTimeout time.Duration // -heartbeat-timeout (0: the default)
	replyTimeout     time.Duration // -command-reply-timeout (0: the default)
	clickhouse       bool          // also run `ams sink clickhouse` into a private database
	streamBase       string        // -stream-base-url (default rtmp://vms.e2e.test/live)
	uploadHost       string        // -upload-host-url (default https://upload.e2e.test)
	uploadCallback   string        // -upload-callback-url (default none)
	// allowUnregistered runs the processors in the open (dev) mode
	// (-allow-unregistered): unregistered devices handshake, unbound ones
	// get upload credentials.
	allowUnregistered bool
}

// stack is one test's whole pipeline: private topics, a private broker, a
// private Redis prefix, and the roles as subprocesses.
type e2eStack struct {
	t           *testing.T
	id          string // unique name of this run
	names       kafkatopics.Names
	prefix      string // topic prefix
	broker      *mqttconform.Mosquitto
	redisPrefix string
	token       string
	apiURL      string       // https://, verified with apiClient's pool
	apiCAFile   string       // the API's self-signed certificate, its own CA
	apiClient   *http.Client // trusts the API's test certificate
	streamBase  string
	secret      []byte
	pub         *rsa.PublicKey
	reg         *schemas.Registry
	kafka       *kgo.Client
	chDatabase  string // ClickHouse database of the history sink (clickhouse option)

	procArgs []string
	procs    map[string]*mqttconform.Process

	// egress is the running `ams egress`; egressArgs its arguments without
	// -egress-group (see startEgress).
	egress     *mqttconform.Process
	egressArgs []string

	// Upload parameters (703) the processors answer with.
	uploadHost, uploadBucket, uploadPath string
	uploadSecret                         []byte
}

// startStack creates the topics and starts the broker and every role; it
// returns once each role answers /readyz.
func startStack(t *testing.T, o stackOptions) *e2eStack {
	t.Helper()
	if o.processors == 0 {
		o.processors = 1
	}
	s := &e2eStack{t: t, procs: map[string]*mqttconform.Process{}}
	s.id = testenv.Unique(t, "e2e")
	s.prefix = s.id + "."
	s.names = kafkatopics.WithPrefix(s.prefix)
	s.redisPrefix = s.id + ":"
	s.token = hex.EncodeToString(e2eRandomBytes(t, 16))
	s.streamBase = "rtmp://vms.e2e.test/live"
	if o.streamBase != "" {
		s.streamBase = o.streamBase
	}
	s.secret = []byte(hex.EncodeToString(e2eRandomBytes(t, 24)))
	s.uploadHost, s.uploadBucket, s.uploadPath = "https://upload.e2e.test", "pictures", "ai_engine_imgs"
	if o.uploadHost != "" {
		s.uploadHost = o.uploadHost
	}
	s.uploadSecret = []byte(hex.EncodeToString(e2eRandomBytes(t, 24)))
	var err error
	if s.reg, err = schemas.NewRegistry(); err != nil {
		t.Fatal(err)
	}
	pubPEM, err := os.ReadFile("testdata/cloud_rsa_public.pem")
	if err != nil {
		t.Fatal(err)
	}
	if s.pub, err = protocol.ParsePublicKey(pubPEM); err != nil {
		t.Fatal(err)
	}
	privFile, err := filepath.Abs("testdata/cloud_rsa_private.pem")
	if err != nil {
		t.Fatal(err)
	}

	// Topics, deleted at the end (registered first, so it runs last).
	s.kafka = testenv.KafkaClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	t.Cleanup(func() { s.deleteTopics() })
	if err := kafkatopics.Ensure(ctx, kadm.NewClient(s.kafka), s.names,
		kafkatopics.Layout{Partitions: e2ePartitions, Replication: 1}); err != nil {
		t.Fatalf("create topics: %v", err)
	}
	t.Cleanup(func() { s.deleteRedisKeys() })

	dir := t.TempDir()
	kekFile := filepath.Join(dir, "kek.hex")
	secretFile := filepath.Join(dir, "stream.secret")
	e2eWriteFile(t, kekFile, hex.EncodeToString(e2eRandomBytes(t, 32))+"\n")
	e2eWriteFile(t, secretFile, string(s.secret)+"\n")
	uploadSecretFile := filepath.Join(dir, "upload.secret")
	e2eWriteFile(t, uploadSecretFile, string(s.uploadSecret)+"\n")

	// The API: HTTPS with a test certificate the client verifies, and a
	// named admin token from a tokens file (what it writes says "e2e-admin").
	certFile, keyFile, pool := testenv.SelfSignedServerCert(t, dir, "api")
	s.apiCAFile = certFile
	tokensFile := filepath.Join(dir, "api.tokens")
	e2eWriteFile(t, tokensFile, "e2e-admin admin "+s.token+"\n")

	s.broker = mqttconform.StartMosquitto(t, 1000)

	kafkaArgs := []string{
		"-kafka-brokers", strings.Join(testenv.KafkaBrokers(), ","),
		"-topic-prefix", s.prefix,
		"-partitions", fmt.Sprint(e2ePartitions),
		"-log-level", "info",
	}
	s.procArgs = append(append([]string{"process"}, kafkaArgs...),
		"-ops-addr", "127.0.0.1:0",
		"-process-group", s.id+"-process",
		"-transactional-id-prefix", s.id+"-process-",
		"-transaction-timeout", "10s",
		"-kafka-session-timeout", "6s",
		"-rsa-private-key-file", privFile,
		"-kek-file", kekFile,
		"-stream-base-url", s.streamBase,
		"-stream-secret-file", secretFile,
		"-upload-host-url", s.uploadHost,
		"-upload-bucket", s.uploadBucket,
		"-upload-object-path", s.uploadPath,
		"-upload-signing-secret-file", uploadSecretFile,
	)
	if o.uploadCallback != "" {
		s.procArgs = append(s.procArgs, "-upload-callback-url", o.uploadCallback)
	}
	if o.heartbeatTimeout > 0 {
		s.procArgs = append(s.procArgs, "-heartbeat-timeout", o.heartbeatTimeout.String())
	}
	if o.replyTimeout > 0 {
		s.procArgs = append(s.procArgs, "-command-reply-timeout", o.replyTimeout.String())
	}
	if o.allowUnregistered {
		s.procArgs = append(s.procArgs, "-allow-unregistered")
	}
	for i := range o.processors {
		s.startProcessor(fmt.Sprintf("p%d", i))
	}
	mqttconform.StartProcess(t, "ingest", amsBinary, append(append([]string{"ingest"}, kafkaArgs...),
		"-ops-addr", "127.0.0.1:0",
		"-mqtt-url", s.broker.URL,
		"-mqtt-client-id", "ams-ingest-"+s.id,
		"-mqtt-share-group", "", // Mosquitto: one ingest, plain subscription (ingest/README.md)
		"-mqtt-keepalive", "5s",
		"-event-connected-filter", "", // Mosquitto publishes no client events
		"-event-disconnected-filter", "",
		"-instance", "ingest-"+s.id,
	)...)
	s.egressArgs = append(append([]string{"egress"}, kafkaArgs...),
		"-ops-addr", "127.0.0.1:0",
		"-mqtt-url", s.broker.URL,
		"-egress-id", "ams-egress-"+s.id,
		"-mqtt-connections", "2",
		"-mqtt-keepalive", "5s",
		"-commit-interval", "200ms",
		"-kafka-session-timeout", "10s",
	)
	s.startEgress(s.id + "-egress")
	mqttconform.StartProcess(t, "sink-redis", amsBinary, append(append([]string{"sink", "redis"}, kafkaArgs...),
		"-ops-addr", "127.0.0.1:0",
		"-redis-addr", testenv.RedisAddr(),
		"-redis-prefix", s.redisPrefix,
		"-sink-group", s.id+"-sink-redis",
	)...)
	api := mqttconform.StartProcess(t, "api", amsBinary, append(append([]string{"api"}, kafkaArgs...),
		"-http-addr", "127.0.0.1:0",
		"-ops-addr", "127.0.0.1:0",
		"-redis-addr", testenv.RedisAddr(),
		"-redis-prefix", s.redisPrefix,
		"-api-tokens-file", tokensFile,
		"-api-tls-cert-file", certFile, "-api-tls-key-file", keyFile,
		"-max-wait", "60s",
	)...)
	s.apiURL = "https://" + api.APIAddr(t)
	s.apiClient = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	if o.clickhouse {
		s.startClickHouseSink(kafkaArgs)
	}
	return s
}

// startEgress starts `ams egress` in consumer group group and waits until
// it is ready.
func (s *e2eStack) startEgress(group string) *mqttconform.Process {
	s.t.Helper()
	s.egress = mqttconform.StartProcess(s.t, "egress", amsBinary, append(append([]string{}, s.egressArgs...), "-egress-group", group)...)
	return s.egress
}

// startClickHouseSink migrates a private ClickHouse database with `ams
// migrate` (topics exist already: its Kafka part only checks them) and runs
// `ams sink clickhouse` into it. The database is dropped at the end.
func (s *e2eStack) startClickHouseSink(kafkaArgs []string) {
	t := s.t
	t.Helper()
	s.chDatabase = s.id
	t.Cleanup(func() {
		if conn, err := s.clickhouse(); err == nil {
			_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+s.chDatabase)
			conn.Close()
		}
	})
	out, err := exec.Command(amsBinary, append(append([]string{"migrate", "-replication", "1", "-allow-unsafe-replication"}, kafkaArgs...),
		"-clickhouse-addr", testenv.ClickHouseAddr(), "-clickhouse-database", s.chDatabase)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ams migrate: %v\n%s", err, out)
	}
	mqttconform.StartProcess(t, "sink-clickhouse", amsBinary, append(append([]string{"sink", "clickhouse"}, kafkaArgs...),
		"-ops-addr", "127.0.0.1:0",
		"-clickhouse-addr", testenv.ClickHouseAddr(),
		"-clickhouse-database", s.chDatabase,
		"-sink-group", s.id+"-sink-clickhouse",
		"-batch-interval", "200ms",
	)...)
}

// clickhouse opens a native connection to the test ClickHouse server.
func (s *e2eStack) clickhouse() (driver.Conn, error) {
	return ch.Open(testenv.ClickHouseOptions("default"))
}

// exampleQuery returns the example query titled title from
// sinks/chsink/README.md, reading this test's database instead of ams.
func (s *e2eStack) exampleQuery(title string) string {
	s.t.Helper()
	b, err := os.ReadFile("../../sinks/chsink/README.md")
	if err != nil {
		s.t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Example queries\n")
	if !ok {
		s.t.Fatal("sinks/chsink/README.md has no Example queries section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	for _, part := range strings.Split(section, "```sql\n")[1:] {
		q, _, _ := strings.Cut(part, "```")
		first, _, _ := strings.Cut(q, "\n")
		if strings.TrimSpace(strings.TrimPrefix(first, "--")) == title {
			return strings.ReplaceAll(q, "ams.", s.chDatabase+".")
		}
	}
	s.t.Fatalf("sinks/chsink/README.md has no example query %q", title)
	return ""
}

// startProcessor starts one `ams process` instance named name (its
// -instance-id) and waits until it is ready.
func (s *e2eStack) startProcessor(name string) *mqttconform.Process {
	s.t.Helper()
	p := mqttconform.StartProcess(s.t, "process-"+name, amsBinary, append(append([]string{}, s.procArgs...), "-instance-id", name)...)
	s.procs[name] = p
	return p
}

func (s *e2eStack) deleteTopics() {
	cl, err := testenv.NewKafkaClient()
	if err != nil {
		return
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _ = kadm.NewClient(cl).DeleteTopics(ctx, s.names.All()...)
}

func (s *e2eStack) deleteRedisKeys() {
	rdb := goredis.NewClient(testenv.RedisOptions())
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	iter := rdb.Scan(ctx, 0, s.redisPrefix+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
		if len(keys) == 500 {
			rdb.Del(ctx, keys...)
			keys = keys[:0]
		}
	}
	if len(keys) > 0 {
		rdb.Del(ctx, keys...)
	}
}

func e2eRandomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func e2eWriteFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// snPrefix returns a random 6-hex-digit serial number prefix.
func e2eSNPrefix(t testing.TB) string {
	return strings.ToUpper(hex.EncodeToString(e2eRandomBytes(t, 3)))
}

// ---- HTTP API ----

// apiDo sends one API request with the bearer token; body (if not nil) is
// sent as JSON. It returns the status and the answer's body.
func (s *e2eStack) apiDo(method, path string, body any) (int, []byte) {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			s.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.apiURL+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.apiClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatalf("%s %s: read answer: %v", method, path, err)
	}
	return resp.StatusCode, b
}

// registration is the body of PUT /v1/devices/{sn}.
type e2eRegistration struct {
	Token     string `json:"token,omitempty"`
	Bound     bool   `json:"bound"`
	Name      string `json:"name,omitempty"`
	StreamURL string `json:"stream_url,omitempty"`
}

// register registers (or updates) a device through the API.
func (s *e2eStack) register(sn string, r e2eRegistration) {
	s.t.Helper()
	if r.Token == "" {
		r.Token = "token-" + sn
	}
	code, b := s.apiDo(http.MethodPut, "/v1/devices/"+sn, r)
	if code != http.StatusCreated && code != http.StatusOK {
		s.t.Fatalf("PUT /v1/devices/%s: %d %s", sn, code, b)
	}
}

// device reads GET /v1/devices/{sn}; ok is false on 404.
func (s *e2eStack) device(sn string) (devicestate.Device, bool) {
	s.t.Helper()
	code, b := s.apiDo(http.MethodGet, "/v1/devices/"+sn, nil)
	switch code {
	case http.StatusOK:
	case http.StatusNotFound:
		return devicestate.Device{}, false
	default:
		s.t.Fatalf("GET /v1/devices/%s: %d %s", sn, code, b)
	}
	var d devicestate.Device
	if err := json.Unmarshal(b, &d); err != nil {
		s.t.Fatalf("GET /v1/devices/%s: %v: %s", sn, err, b)
	}
	return d, true
}

// waitRegistered waits until every sn's registration is projected (the API
// answers 200 with registered true).
func (s *e2eStack) waitRegistered(sns ...string) {
	s.t.Helper()
	e2eWaitFor(s.t, 30*time.Second, "registrations projected into Redis", func() (bool, string) {
		for _, sn := range sns {
			if d, ok := s.device(sn); !ok || !d.Registered {
				return false, sn + " not yet registered"
			}
		}
		return true, ""
	})
}

// commandRequest is the body of POST /v1/devices/{sn}/commands.
type commandRequest struct {
	Kind    string          `json:"kind"`
	Body    json.RawMessage `json:"body,omitempty"`
	Timeout string          `json:"timeout,omitempty"`
	Expires string          `json:"expires,omitempty"`
	Offline string          `json:"offline,omitempty"`
}

// commandAnswer is either answer of POST .../commands: the command once
// final (200) or the acceptance (202).
type commandAnswer struct {
	devicestate.Command
	URL string `json:"url"`
}

// postCommand posts a command, with ?wait= when wait > 0, and returns the
// status and the decoded answer. Anything but 200 or 202 fails the test.
func (s *e2eStack) postCommand(sn string, req commandRequest, wait time.Duration) (int, commandAnswer) {
	s.t.Helper()
	path := "/v1/devices/" + sn + "/commands"
	if wait > 0 {
		path += "?wait=" + wait.String()
	}
	code, b := s.apiDo(http.MethodPost, path, req)
	if code != http.StatusOK && code != http.StatusAccepted {
		s.t.Fatalf("POST %s %s: %d %s", path, req.Kind, code, b)
	}
	var a commandAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		s.t.Fatalf("POST %s: %v: %s", path, err, b)
	}
	return code, a
}

// command reads GET /v1/commands/{id}; ok is false on 404.
func (s *e2eStack) command(id string) (devicestate.Command, bool) {
	s.t.Helper()
	code, b := s.apiDo(http.MethodGet, "/v1/commands/"+id, nil)
	switch code {
	case http.StatusOK:
	case http.StatusNotFound:
		return devicestate.Command{}, false
	default:
		s.t.Fatalf("GET /v1/commands/%s: %d %s", id, code, b)
	}
	var c devicestate.Command
	if err := json.Unmarshal(b, &c); err != nil {
		s.t.Fatalf("GET /v1/commands/%s: %v: %s", id, err, b)
	}
	return c, true
}

// waitCommand waits until the command's projected state satisfies ok.
func (s *e2eStack) waitCommand(id, what string, timeout time.Duration, ok func(devicestate.Command) bool) devicestate.Command {
	s.t.Helper()
	var last devicestate.Command
	e2eWaitFor(s.t, timeout, "command "+id+" "+what, func() (bool, string) {
		c, found := s.command(id)
		if !found {
			return false, "not projected yet"
		}
		last = c
		return ok(c), "state " + c.State
	})
	return last
}

func historyStates(c devicestate.Command) []string {
	var out []string
	for _, h := range c.History {
		out = append(out, h.State)
	}
	return out
}

// ---- waiting ----

// waitFor polls cond every 100ms until it holds, and fails the test with
// what and cond's last explanation when timeout passes first.
func e2eWaitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %s", timeout, what, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ---- the fleet ----

// runningFleet is a devicesim fleet running in the test process.
type runningFleet struct {
	*devicesim.Fleet
	cancel context.CancelFunc
	done   chan devicesim.Summary
	once   sync.Once
	sum    devicesim.Summary
}

// startFleet runs a fleet against the stack's broker; it is stopped at the
// end of the test if the test did not stop it.
func (s *e2eStack) startFleet(cfg devicesim.Config) *runningFleet {
	s.t.Helper()
	cfg.BrokerURL = s.broker.URL
	cfg.PublicKey = s.pub
	f, err := devicesim.New(cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rf := &runningFleet{Fleet: f, cancel: cancel, done: make(chan devicesim.Summary, 1)}
	go func() {
		sum, _ := f.Run(ctx)
		rf.done <- sum
	}()
	s.t.Cleanup(func() { rf.stop() })
	return rf
}

// stop stops the fleet (each device disconnects) and returns its summary.
func (rf *runningFleet) stop() devicesim.Summary {
	rf.once.Do(func() {
		rf.cancel()
		rf.sum = <-rf.done
	})
	return rf.sum
}

// waitFleet waits until cond holds on the fleet's stats.
func waitFleet(t testing.TB, f *runningFleet, timeout time.Duration, what string, cond func(devicesim.Stats) (bool, string)) {
	t.Helper()
	e2eWaitFor(t, timeout, what, func() (bool, string) {
		st := f.Stats()
		if ok, why := cond(st); !ok {
			return false, why + "\n" + devicesim.Report(st)
		}
		return true, ""
	})
}

func (rf *runningFleet) sns() []string {
	out := make([]string, rf.Len())
	for i := range out {
		out[i] = rf.Device(i).SN()
	}
	return out
}

// ---- a silent device ----

// silentDevice is a device that connects, handshakes through the real
// pipeline and then never answers anything: its received frames are kept.
type silentDevice struct {
	sn       string
	cl       mqtt.Client
	session  protocol.SessionKey
	received chan protocol.Frame
}

// startSilentDevice connects as sn, handshakes with the cloud's public key
// and waits for a verified handshake reply.
func (s *e2eStack) startSilentDevice(sn string) *silentDevice {
	s.t.Helper()
	d := &silentDevice{sn: sn, received: make(chan protocol.Frame, 1000)}
	opts := mqtt.NewClientOptions().AddBroker(s.broker.URL).SetClientID(sn).SetUsername(sn).
		SetPassword("token-" + sn).SetCleanSession(true).SetAutoReconnect(false).
		SetKeepAlive(30 * time.Second).SetOrderMatters(true)
	d.cl = mqtt.NewClient(opts)
	if tok := d.cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		s.t.Fatalf("silent device %s: connect: %v", sn, tok.Error())
	}
	s.t.Cleanup(func() { d.cl.Disconnect(100) })
	tok := d.cl.Subscribe(protocol.DownlinkTopic(sn), 1, func(_ mqtt.Client, m mqtt.Message) {
		fr, err := protocol.DecodeFrame(m.Payload())
		if err != nil {
			s.t.Errorf("silent device %s: undecodable downlink %q: %v", sn, m.Payload(), err)
			return
		}
		d.received <- fr
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		s.t.Fatalf("silent device %s: subscribe: %v", sn, tok.Error())
	}
	req, sData, err := protocol.NewHandshake(s.pub, rand.Reader)
	if err != nil {
		s.t.Fatal(err)
	}
	hs := protocol.Frame{CmdType: protocol.CmdHandshake, ProtocolVersion: "V1.0", Data: sData}
	if tok := d.cl.Publish(protocol.UplinkTopic(sn), 1, false, hs.Encode()); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		s.t.Fatalf("silent device %s: publish handshake: %v", sn, tok.Error())
	}
	select {
	case fr := <-d.received:
		if fr.CmdType != protocol.CmdHandshake {
			s.t.Fatalf("silent device %s: first downlink is iCmdType %d, want the handshake reply", sn, fr.CmdType)
		}
		_, _, sess, err := req.VerifyReply(fr.Data)
		if err != nil {
			s.t.Fatalf("silent device %s: handshake reply does not verify: %v", sn, err)
		}
		d.session = sess
	case <-time.After(30 * time.Second):
		s.t.Fatalf("silent device %s: no handshake reply within 30s", sn)
	}
	return d
}

// next returns the next frame the device receives, failing after timeout.
func (d *silentDevice) next(t testing.TB, timeout time.Duration) protocol.Frame {
	t.Helper()
	select {
	case fr := <-d.received:
		return fr
	case <-time.After(timeout):
		t.Fatalf("silent device %s: nothing received within %v", d.sn, timeout)
		return protocol.Frame{}
	}
}

// ---- reading the committed log ----

// readCommitted returns every committed data record of topic, from the
// start to the last stable offsets taken at the call, in partition order
// (records of one partition, so of one device, in log order).
func (s *e2eStack) readCommitted(topic string) []*kgo.Record {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(s.kafka).ListCommittedOffsets(ctx, topic)
	if err != nil {
		s.t.Fatalf("list committed offsets of %s: %v", topic, err)
	}
	want := map[int32]int64{}
	parts := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			s.t.Fatalf("committed offset of %s/%d: %v", topic, o.Partition, o.Err)
		}
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
			parts[o.Partition] = kgo.NewOffset().AtStart()
		}
	})
	if len(want) == 0 {
		return nil
	}
	// Control records are kept so the last offset before the stable one is
	// always seen, even when it is a transaction marker.
	cl, err := testenv.NewKafkaClient(
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	if err != nil {
		s.t.Fatal(err)
	}
	defer cl.Close()
	byPart := map[int32][]*kgo.Record{}
	for len(want) > 0 {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			s.t.Fatalf("reading %s: %v (partitions left: %v)", topic, ctx.Err(), want)
		}
		fetches.EachError(func(_ string, p int32, err error) {
			s.t.Fatalf("reading %s/%d: %v", topic, p, err)
		})
		fetches.EachRecord(func(r *kgo.Record) {
			end, ok := want[r.Partition]
			if !ok || r.Offset >= end {
				return
			}
			if !r.Attrs.IsControl() {
				byPart[r.Partition] = append(byPart[r.Partition], r)
			}
			if r.Offset+1 >= end {
				delete(want, r.Partition)
			}
		})
	}
	var ps []int32
	for p := range byPart {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	var out []*kgo.Record
	for _, p := range ps {
		out = append(out, byPart[p]...)
	}
	return out
}

// decodeAll decodes every record of topic into a T.
func decodeAll[T any](s *e2eStack, topic string) []T {
	s.t.Helper()
	recs := s.readCommitted(topic)
	out := make([]T, 0, len(recs))
	for _, r := range recs {
		var v T
		if err := s.reg.Decode(r.Value, &v); err != nil {
			s.t.Fatalf("%s/%d@%d: decode: %v", topic, r.Partition, r.Offset, err)
		}
		out = append(out, v)
	}
	return out
}
