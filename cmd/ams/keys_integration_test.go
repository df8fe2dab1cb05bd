//go:build integration

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/pkg/testkit/mqttconform"
	"github.com/ivms/ams/pkg/testkit/testenv"
	"github.com/ivms/ams/schemas"
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
	// registered: production mode (only devices of ams.registry may
	// handshake); else -allow-unregistered.
	registered bool
}

func newKeysRig(t *testing.T, name string) *keysRig {
	t.Helper()
	r := &keysRig{t: t, id: testenv.Unique(t, name), kc: testenv.KafkaClient(t), dir: t.TempDir()}
	r.names = kafkatopics.WithPrefix(r.id + ".")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	t.Cleanup(func() { _, _ = kadm.NewClient(r.kc).DeleteTopics(context.Background(), r.names.All()...) })
	// Ensure checks the layout right after creating it; on a busy broker
	// the new topics can be missing from that first look: ask again.
	var err error
	for range 5 {
		if err = kafkatopics.Ensure(ctx, kadm.NewClient(r.kc), r.names, kafkatopics.Layout{Partitions: 2, Replication: 1}); err == nil {
			break
		}
		time.Sleep(time.Second)
	}
	if err != nil {
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
		"-instance-id", "p"+strconv.Itoa(r.n), "-rsa-private-key-file", r.privFile, "-allow-unregistered="+strconv.FormatBool(!r.registered)), extra...)
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
	t0 := time.Now()
	r := newKeysRig(t, "kekrw")
	kek1, kek2 := r.kek("kek1"), r.kek("kek2")
	p := r.process("-kek-file", kek1)
	t.Logf("%v: rig and processor (KEK1) ready", time.Since(t0).Round(time.Millisecond))
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

	t.Logf("%v: cameras served under KEK1, processor stopped", time.Since(t0).Round(time.Millisecond))

	// KEK2 current, KEK1 previous: the restored states are stale and
	// re-sealed.
	p = r.process("-kek-file", kek2, "-previous-kek-files", kek1)
	t.Logf("%v: processor (KEK2, KEK1 previous) ready", time.Since(t0).Round(time.Millisecond))
	e2eWaitFor(t, 60*time.Second, "every session re-sealed under KEK2", func() (bool, string) {
		stale, series := gaugeSum(t, p, "ams_keyed_state_stale_keys")
		fired, _ := gaugeSum(t, p, "ams_keyed_timers_fired_total")
		return series == 2 && stale == 0 && fired >= float64(len(cams)),
			"stale " + strconv.FormatFloat(stale, 'f', -1, 64) + " on " + strconv.Itoa(series) + " partitions, timers fired " + strconv.FormatFloat(fired, 'f', -1, 64)
	})
	if err := p.Term(30 * time.Second); err != nil {
		t.Fatalf("processor with KEK2 and KEK1: %v", err)
	}

	t.Logf("%v: re-sealed, processor stopped", time.Since(t0).Round(time.Millisecond))

	// KEK1 dropped.
	p = r.process("-kek-file", kek2)
	t.Logf("%v: processor (KEK2 alone) ready", time.Since(t0).Round(time.Millisecond))
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

// register writes sn's registration to ams.registry (as the API does).
func (r *keysRig) register(sn string) {
	r.t.Helper()
	reg, err := schemas.NewRegistry()
	if err != nil {
		r.t.Fatal(err)
	}
	v, err := reg.Encode(&schemas.Registration{SN: sn, TokenSHA256: strings.Repeat("ab", 32), Bound: true, Name: "cam " + sn,
		UpdatedAt: time.Now().UTC().Truncate(time.Millisecond), UpdatedBy: "test"})
	if err != nil {
		r.t.Fatal(err)
	}
	if err := r.kc.ProduceSync(context.Background(), &kgo.Record{Topic: r.names.Registry, Key: []byte(sn), Value: v}).FirstErr(); err != nil {
		r.t.Fatal(err)
	}
}

// changelogPartition is the changelog partition holding sn's state.
func (r *keysRig) changelogPartition(sn string) int32 {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(r.kc).ListEndOffsets(ctx, r.names.StateDevices)
	if err != nil {
		r.t.Fatal(err)
	}
	assign := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) { assign[o.Partition] = kgo.NewOffset().AtStart() })
	rd := testenv.KafkaClient(r.t, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{r.names.StateDevices: assign}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	for ctx.Err() == nil {
		var found int32 = -1
		rd.PollFetches(ctx).EachRecord(func(rec *kgo.Record) {
			if string(rec.Key) == sn {
				found = rec.Partition
			}
		})
		if found >= 0 {
			return found
		}
	}
	r.t.Fatalf("no state of %s in %s", sn, r.names.StateDevices)
	return -1
}

// TestChangelogRecover proves the two recoveries of docs/OPERATIONS.md
// ("Recover a lost or corrupt changelog"). Corrupt: a device's latest
// changelog record does not decode; the processor refuses to start on it,
// and with -restore-skip-corrupt it starts, records the skip, and the
// device keeps its last good state (its next heartbeat is answered, no new
// handshake). Lost: every changelog record is deleted; the restarted
// processor knows no device (a handshake is refused unregistered) until
// `ams registry republish` writes the registrations again; the devices
// then handshake again and are served. The time from the republish to the
// first answered handshake is logged.
func TestChangelogRecover(t *testing.T) {
	r := newKeysRig(t, "clrec")
	r.registered = true
	kek := r.kek("kek")
	prefix := e2eSNPrefix(t)
	sns := []string{prefix + "0000000001", prefix + "0000000002"}
	for _, sn := range sns {
		r.register(sn)
	}
	p := r.process("-kek-file", kek)
	var cams []*keysCamera
	for _, sn := range sns {
		c := r.camera(sn)
		var ok bool
		for range 6 { // the registration may still be on its way to the processor
			if ok = c.handshake(t, r.pub, 5*time.Second); ok {
				break
			}
		}
		if !ok || !c.heartbeat(t, 30*time.Second) {
			t.Fatalf("camera %s not served (handshake %v)", sn, ok)
		}
		cams = append(cams, c)
	}
	if err := p.Term(30 * time.Second); err != nil {
		t.Fatal(err)
	}

	// Corrupt the first camera's latest state record.
	part := r.changelogPartition(sns[0])
	bad := &kgo.Record{Topic: r.names.StateDevices, Partition: part, Key: []byte(sns[0]), Value: []byte("\x00corrupt")}
	wr := testenv.KafkaClient(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err := wr.ProduceSync(context.Background(), bad).FirstErr(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	out, err := exec.CommandContext(ctx, amsBinary, r.processArgs("-kek-file", kek)...).CombinedOutput()
	timedOut := ctx.Err() != nil
	cancel()
	if err == nil || timedOut || !bytes.Contains(out, []byte("does not decode")) {
		t.Fatalf("the processor on a corrupt changelog: %v (timed out %v); want it to stop on the record\n%s", err, timedOut, tail(string(out), 20))
	}
	p = r.process("-kek-file", kek, "-restore-skip-corrupt")
	if n, _ := gaugeSum(t, p, "ams_keyed_restore_skipped_total"); n != 1 {
		t.Fatalf("%v records skipped, want 1", n)
	}
	for _, c := range cams {
		if !c.heartbeat(t, 30*time.Second) {
			t.Fatalf("camera %s: no heartbeat reply after the corrupt record was skipped", c.sn)
		}
	}
	if err := p.Term(30 * time.Second); err != nil {
		t.Fatal(err)
	}

	// Lose the changelog: the topic is deleted and created again, empty
	// (a compacted topic refuses DeleteRecords).
	ctx, cancel = context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	adm := kadm.NewClient(r.kc)
	if res, err := adm.DeleteTopics(ctx, r.names.StateDevices); err != nil || res.Error() != nil {
		t.Fatalf("delete the changelog: %v %v", err, res.Error())
	}
	e2eWaitFor(t, 60*time.Second, "the changelog created again, empty", func() (bool, string) {
		if err := kafkatopics.Ensure(ctx, adm, r.names, kafkatopics.Layout{Partitions: 2, Replication: 1}); err != nil {
			return false, err.Error()
		}
		ends, err := adm.ListEndOffsets(ctx, r.names.StateDevices)
		if err != nil || ends.Error() != nil {
			return false, fmt.Sprint(err, ends.Error())
		}
		var n int64
		ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
		return n == 0, fmt.Sprintf("%d records", n)
	})
	p = r.process("-kek-file", kek)
	if keys, _ := gaugeSum(t, p, "ams_keyed_state_keys"); keys != 0 {
		t.Fatalf("%v keys restored from a deleted changelog", keys)
	}
	if cams[0].handshake(t, r.pub, 5*time.Second) {
		t.Fatal("a handshake was answered for a device the processor no longer knows")
	}
	t0 := time.Now()
	cmd := exec.Command(amsBinary, append(append([]string{"registry", "republish"}, r.kafkaArgs...), "-republish-partitions", "0,1")...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("republish: %v\n%s", err, stderr.String())
	}
	var rep struct {
		Republished int `json:"republished"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil || rep.Republished != len(sns) {
		t.Fatalf("republish report %s (%v): want %d republished", stdout.String(), err, len(sns))
	}
	for _, c := range cams {
		var ok bool
		for range 12 {
			if ok = c.handshake(t, r.pub, 5*time.Second); ok {
				break
			}
		}
		if !ok {
			t.Fatalf("camera %s: no handshake answered after the republish", c.sn)
		}
		t.Logf("camera %s: handshake answered %v after the republish started", c.sn, time.Since(t0).Round(time.Millisecond))
		if !c.heartbeat(t, 30*time.Second) {
			t.Fatalf("camera %s: no heartbeat reply after its new handshake", c.sn)
		}
	}
	if err := p.Term(30 * time.Second); err != nil {
		t.Fatal(err)
	}
}
