//go:build integration

package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/mqttconform"
	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/pkg/testenv"
)

// keysRig is a private pipeline for the day-2 key and recovery procedures:
// its own topics (2 partitions) on the shared Kafka, a private Mosquitto,
// ingest and egress; the processor is started and stopped by the test.
type keysRig struct {
	t         *testing.T
	id        string
	names     kafkatopics.Names
	kc        *kgo.Client
	kafkaArgs []string
	broker    *mqttconform.Mosquitto
	dir       string
	privFile  string
	pub       *rsa.PublicKey
	n         int // processes started (instance ids)
}

func newKeysRig(t *testing.T, name string) *keysRig {
	t.Helper()
	r := &keysRig{t: t, id: testenv.Unique(t, name), kc: testenv.KafkaClient(t), dir: t.TempDir()}
	r.names = kafkatopics.WithPrefix(r.id + ".")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	t.Cleanup(func() { _, _ = kadm.NewClient(r.kc).DeleteTopics(context.Background(), r.names.All()...) })
	if err := kafkatopics.Ensure(ctx, kadm.NewClient(r.kc), r.names, kafkatopics.Layout{Partitions: 2, Replication: 1}); err != nil {
		t.Fatal(err)
	}
	pubPEM, err := os.ReadFile("testdata/cloud_rsa_public.pem")
	if err != nil {
		t.Fatal(err)
	}
	if r.pub, err = protocol.ParsePublicKey(pubPEM); err != nil {
		t.Fatal(err)
	}
	r.privFile, _ = filepath.Abs("testdata/cloud_rsa_private.pem")
	r.kafkaArgs = []string{"-kafka-brokers", strings.Join(testenv.KafkaBrokers(), ","), "-topic-prefix", r.id + ".", "-partitions", "2"}
	r.broker = mqttconform.StartMosquitto(t, 100)
	mqttconform.StartProcess(t, "ingest", amsBinary, append(append([]string{"ingest"}, r.kafkaArgs...),
		"-ops-addr", "127.0.0.1:0", "-mqtt-url", r.broker.URL, "-mqtt-client-id", "ams-ingest-"+r.id, "-mqtt-share-group", "",
		"-event-connected-filter", "", "-event-disconnected-filter", "", "-instance", "ingest-"+r.id)...)
	mqttconform.StartProcess(t, "egress", amsBinary, append(append([]string{"egress"}, r.kafkaArgs...),
		"-ops-addr", "127.0.0.1:0", "-mqtt-url", r.broker.URL, "-egress-id", "ams-egress-"+r.id, "-egress-group", r.id+"-egress")...)
	return r
}

// kek writes a new random KEK file.
func (r *keysRig) kek(name string) string {
	f := filepath.Join(r.dir, name+".hex")
	e2eWriteFile(r.t, f, hex.EncodeToString(e2eRandomBytes(r.t, 32))+"\n")
	return f
}

// processArgs are the arguments of `ams process` on the rig with extra.
func (r *keysRig) processArgs(extra ...string) []string {
	r.n++
	return append(append(append([]string{"process"}, r.kafkaArgs...),
		"-ops-addr", "127.0.0.1:0", "-process-group", r.id+"-process", "-transactional-id-prefix", r.id+"-process-",
		"-instance-id", "p"+strconv.Itoa(r.n), "-rsa-private-key-file", r.privFile, "-allow-unregistered"), extra...)
}

// process starts `ams process` and waits until it is ready (restored).
func (r *keysRig) process(extra ...string) *mqttconform.Process {
	return mqttconform.StartProcess(r.t, "process-"+strconv.Itoa(r.n+1), amsBinary, r.processArgs(extra...)...)
}

// keysCamera is a camera on the rig's broker.
type keysCamera struct {
	sn      string
	cl      mqtt.Client
	session protocol.SessionKey
	got     chan protocol.Frame
	hb      int
}

func (r *keysRig) camera(sn string) *keysCamera {
	r.t.Helper()
	c := &keysCamera{sn: sn, got: make(chan protocol.Frame, 100)}
	c.cl = mqtt.NewClient(mqtt.NewClientOptions().AddBroker(r.broker.URL).SetClientID(sn).SetUsername(sn).SetPassword("t").
		SetAutoReconnect(false).SetOrderMatters(true))
	if tok := c.cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		r.t.Fatalf("camera %s connect: %v", sn, tok.Error())
	}
	r.t.Cleanup(func() { c.cl.Disconnect(100) })
	if tok := c.cl.Subscribe(protocol.DownlinkTopic(sn), 1, func(_ mqtt.Client, m mqtt.Message) {
		if fr, err := protocol.DecodeFrame(m.Payload()); err == nil {
			c.got <- fr
		}
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		r.t.Fatalf("camera %s subscribe: %v", sn, tok.Error())
	}
	return c
}

func (c *keysCamera) publish(t *testing.T, fr protocol.Frame) {
	t.Helper()
	if tok := c.cl.Publish(protocol.UplinkTopic(c.sn), 1, false, fr.Encode()); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("camera %s publish: %v", c.sn, tok.Error())
	}
}

// handshake sends a handshake and waits up to wait for its verified reply;
// it reports false if none came.
func (c *keysCamera) handshake(t *testing.T, pub *rsa.PublicKey, wait time.Duration) bool {
	t.Helper()
	req, sData, err := protocol.NewHandshake(pub, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c.publish(t, protocol.Frame{CmdType: protocol.CmdHandshake, ProtocolVersion: "V1.0", Data: sData})
	deadline := time.After(wait)
	for {
		select {
		case fr := <-c.got:
			if fr.CmdType != protocol.CmdHandshake {
				continue
			}
			_, _, sess, err := req.VerifyReply(fr.Data)
			if err != nil {
				t.Fatalf("camera %s: handshake reply does not verify: %v", c.sn, err)
			}
			c.session = sess
			return true
		case <-deadline:
			return false
		}
	}
}

// heartbeat sends a heartbeat under the camera's session and waits up to
// wait for a heartbeat reply that decrypts under it; false if none came.
func (c *keysCamera) heartbeat(t *testing.T, wait time.Duration) bool {
	t.Helper()
	c.hb++
	body, err := protocol.MarshalASCII(protocol.Heartbeat{DeviceSn: c.sn, HeartBeat: c.hb})
	if err != nil {
		t.Fatal(err)
	}
	c.publish(t, protocol.Frame{CmdType: protocol.CmdHeartbeat, ProtocolVersion: "V1.0", Data: protocol.EncryptBody(c.session, body)})
	deadline := time.After(wait)
	for {
		select {
		case fr := <-c.got:
			if fr.CmdType != protocol.CmdHeartbeat {
				continue
			}
			var v map[string]any
			if err := protocol.DecryptJSON(c.session, fr.Data, &v); err != nil {
				t.Fatalf("camera %s: heartbeat reply does not decrypt under its session: %v", c.sn, err)
			}
			return true
		case <-deadline:
			return false
		}
	}
}

// gaugeSum sums a metric's series in a process's /metrics and counts them.
func gaugeSum(t *testing.T, p *mqttconform.Process, name string) (sum float64, series int) {
	t.Helper()
	text, err := p.Metrics()
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		sum += v
		series++
	}
	return sum, series
}

// TestKEKRewrap rotates the KEK end to end: cameras handshake under KEK1;
// the processor restarts with KEK2 (KEK1 as previous) and re-seals every
// restored session (ams_keyed_state_stale_keys falls to 0 on both
// partitions); it restarts again with KEK2 alone — the changelog still
// holds the superseded KEK1 records, compaction has not run — and every
// camera's next heartbeat is answered under its session, with no new
// handshake.
func TestKEKRewrap(t *testing.T) {
	r := newKeysRig(t, "kekrw")
	kek1, kek2 := r.kek("kek1"), r.kek("kek2")
	p := r.process("-kek-file", kek1)
	prefix := e2eSNPrefix(t)
	var cams []*keysCamera
	for i := range 4 {
		c := r.camera(prefix + "000000000" + strconv.Itoa(i))
		if !c.handshake(t, r.pub, 30*time.Second) {
			t.Fatalf("camera %s: no handshake reply under KEK1", c.sn)
		}
		if !c.heartbeat(t, 30*time.Second) {
			t.Fatalf("camera %s: no heartbeat reply under KEK1", c.sn)
		}
		cams = append(cams, c)
	}
	if err := p.Term(30 * time.Second); err != nil {
		t.Fatalf("processor with KEK1: %v", err)
	}

	// KEK2 current, KEK1 previous: the restored states are stale and
	// re-sealed.
	p = r.process("-kek-file", kek2, "-previous-kek-files", kek1)
	e2eWaitFor(t, 60*time.Second, "every session re-sealed under KEK2", func() (bool, string) {
		stale, series := gaugeSum(t, p, "ams_keyed_state_stale_keys")
		fired, _ := gaugeSum(t, p, "ams_keyed_timers_fired_total")
		return series == 2 && stale == 0 && fired >= float64(len(cams)),
			"stale " + strconv.FormatFloat(stale, 'f', -1, 64) + " on " + strconv.Itoa(series) + " partitions, timers fired " + strconv.FormatFloat(fired, 'f', -1, 64)
	})
	if err := p.Term(30 * time.Second); err != nil {
		t.Fatalf("processor with KEK2 and KEK1: %v", err)
	}

	// KEK1 dropped.
	p = r.process("-kek-file", kek2)
	if stale, series := gaugeSum(t, p, "ams_keyed_state_stale_keys"); series != 2 || stale != 0 {
		t.Fatalf("with KEK2 alone: %v stale keys on %d partitions", stale, series)
	}
	for _, c := range cams {
		if !c.heartbeat(t, 30*time.Second) {
			t.Fatalf("camera %s: no heartbeat reply after KEK1 was dropped", c.sn)
		}
	}
	if err := p.Term(30 * time.Second); err != nil {
		t.Fatalf("processor with KEK2 alone: %v", err)
	}
}
