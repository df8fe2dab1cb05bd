//go:build integration

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/pkg/sessionimport"
	"github.com/ivms/ams/pkg/testkit/mqttconform"
	"github.com/ivms/ams/pkg/testkit/testenv"
)

// TestSessionImport: a camera handshakes with the old service (its session
// key and iv stored in Redis as do_rsa_handshake stores them: setex of the
// sha256-derived strings, one year); `ams registry import-sessions` carries
// the sessions into the processors' changelog; the processors start, and
// the camera's next heartbeat — with no new handshake — is answered by ams
// under that session. A second run is refused (the changelog holds state),
// and a key without its iv is reported.
func TestSessionImport(t *testing.T) {
	id := testenv.Unique(t, "sessimp")
	names := kafkatopics.WithPrefix(id + ".")
	kc := testenv.KafkaClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t.Cleanup(func() { _, _ = kadm.NewClient(kc).DeleteTopics(context.Background(), names.All()...) })
	if err := kafkatopics.Ensure(ctx, kadm.NewClient(kc), names, kafkatopics.Layout{Partitions: 2, Replication: 1}); err != nil {
		t.Fatal(err)
	}
	pubPEM, err := os.ReadFile("testdata/cloud_rsa_public.pem")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := protocol.ParsePublicKey(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	privPEM, err := os.ReadFile("testdata/cloud_rsa_private.pem")
	if err != nil {
		t.Fatal(err)
	}
	privs, err := protocol.ParsePrivateKeys(privPEM)
	if err != nil {
		t.Fatal(err)
	}

	// The old service: the handshake of do_rsa_handshake, the keys in its own
	// Redis (plain, as the old service ran it; not the stack's).
	oldRedis := startPlainRedis(t)
	rdb := goredis.NewClient(&goredis.Options{Addr: oldRedis})
	defer rdb.Close()
	oldKey, oldIV := id+":mqtt_aes_key:{sn}", id+":mqtt_aes_iv:{sn}"
	t.Cleanup(func() {
		keys, _ := rdb.Keys(context.Background(), id+":*").Result()
		if len(keys) > 0 {
			rdb.Del(context.Background(), keys...)
		}
	})
	sn := e2eSNPrefix(t) + "0000000001"
	req, sData, err := protocol.NewHandshake(pub, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := protocol.ParseHandshake(privs, sData)
	if err != nil {
		t.Fatal(err)
	}
	reply, err := hs.Reply(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, _, session, err := req.VerifyReply(reply.SData)
	if err != nil || session != reply.Session {
		t.Fatalf("the camera and the old service do not agree on the session: %v", err)
	}
	k, iv := reply.Session.Strings()
	year := 365 * 24 * time.Hour
	rdb.Set(ctx, strings.ReplaceAll(oldKey, "{sn}", sn), k, year)
	rdb.Set(ctx, strings.ReplaceAll(oldIV, "{sn}", sn), iv, year)
	orphan := e2eSNPrefix(t) + "0000000002" // a key without its iv
	rdb.Set(ctx, strings.ReplaceAll(oldKey, "{sn}", orphan), k, year)

	dir := t.TempDir()
	kekFile := filepath.Join(dir, "kek.hex")
	e2eWriteFile(t, kekFile, hex.EncodeToString(e2eRandomBytes(t, 32))+"\n")
	kafkaArgs := []string{"-kafka-brokers", strings.Join(testenv.KafkaBrokers(), ","), "-topic-prefix", id + ".", "-partitions", "2"}
	importArgs := append(append([]string{"registry", "import-sessions"}, kafkaArgs...),
		"-process-group", id+"-process", "-kek-file", kekFile, "-old-redis-addr", oldRedis,
		"-old-key-pattern", oldKey, "-old-iv-pattern", oldIV)
	runImport := func() (sessionimport.Report, string, error) {
		cmd := exec.Command(amsBinary, importArgs...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var rep sessionimport.Report
		if jerr := json.Unmarshal(stdout.Bytes(), &rep); jerr != nil {
			t.Fatalf("report: %v\n%s\n%s", jerr, stdout.String(), stderr.String())
		}
		if strings.Contains(stdout.String()+stderr.String(), k) || strings.Contains(stdout.String()+stderr.String(), iv) {
			t.Error("the import printed a session key or iv")
		}
		return rep, stderr.String(), err
	}
	rep, stderr, err := runImport()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("import: %v (want exit 1: one session refused)\n%s", err, stderr)
	}
	if rep.Found != 2 || rep.Imported != 1 || len(rep.Refused) != 1 || rep.Refused[0].SN != orphan || !strings.Contains(rep.Refused[0].Reason, "no iv") {
		t.Fatalf("report %+v: want 2 found, 1 imported, %s refused for its missing iv", rep, orphan)
	}

	// ams takes over: the processor restores the imported state.
	broker := mqttconform.StartMosquitto(t, 100)
	privFile, _ := filepath.Abs("testdata/cloud_rsa_private.pem")
	mqttconform.StartProcess(t, "process", amsBinary, append(append([]string{"process"}, kafkaArgs...),
		"-ops-addr", "127.0.0.1:0", "-process-group", id+"-process", "-transactional-id-prefix", id+"-process-",
		"-instance-id", "p0", "-rsa-private-key-file", privFile, "-kek-file", kekFile)...)
	mqttconform.StartProcess(t, "ingest", amsBinary, append(append([]string{"ingest"}, kafkaArgs...),
		"-ops-addr", "127.0.0.1:0", "-mqtt-url", broker.URL, "-mqtt-client-id", "ams-ingest-"+id, "-mqtt-share-group", "",
		"-event-connected-filter", "", "-event-disconnected-filter", "", "-instance", "ingest-"+id)...)
	mqttconform.StartProcess(t, "egress", amsBinary, append(append([]string{"egress"}, kafkaArgs...),
		"-ops-addr", "127.0.0.1:0", "-mqtt-url", broker.URL, "-egress-id", "ams-egress-"+id, "-egress-group", id+"-egress")...)

	// The camera reconnects and sends a heartbeat under its old session: no handshake.
	got := make(chan protocol.Frame, 10)
	cam := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker.URL).SetClientID(sn).SetUsername(sn).SetPassword("t"))
	if tok := cam.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("camera connect: %v", tok.Error())
	}
	defer cam.Disconnect(100)
	if tok := cam.Subscribe(protocol.DownlinkTopic(sn), 1, func(_ mqtt.Client, m mqtt.Message) {
		if fr, err := protocol.DecodeFrame(m.Payload()); err == nil {
			got <- fr
		}
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("camera subscribe: %v", tok.Error())
	}
	body, err := protocol.MarshalASCII(protocol.Heartbeat{DeviceSn: sn, HeartBeat: 1})
	if err != nil {
		t.Fatal(err)
	}
	hb := protocol.Frame{CmdType: protocol.CmdHeartbeat, ProtocolVersion: "V1.0", Data: protocol.EncryptBody(session, body)}
	if tok := cam.Publish(protocol.UplinkTopic(sn), 1, false, hb.Encode()); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("camera publish: %v", tok.Error())
	}
	select {
	case fr := <-got:
		if fr.CmdType != protocol.CmdHeartbeat {
			t.Fatalf("first downlink is iCmdType %d, want the heartbeat reply", fr.CmdType)
		}
		var v map[string]any
		if err := protocol.DecryptJSON(session, fr.Data, &v); err != nil {
			t.Fatalf("the heartbeat reply does not decrypt under the imported session: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("no heartbeat reply within 60s: the imported session was not used")
	}

	// A second run is refused: the changelog holds state now.
	_, stderr, err = runImport()
	if err == nil || !strings.Contains(stderr, "must not have run") {
		t.Errorf("second import: %v, %q; want a refusal", err, stderr)
	}
}

// startPlainRedis runs a private redis-server without persistence on a free
// loopback port and returns its address.
func startPlainRedis(t *testing.T) string {
	t.Helper()
	port := testPort(t)
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := "127.0.0.1:" + strconv.Itoa(port)
	waitPort(t, addr)
	return addr
}
