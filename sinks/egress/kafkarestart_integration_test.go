//go:build integration

package egress_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/pkg/testkit/kafkabroker"
	"github.com/ivms/ams/pkg/testkit/mqttconform"
	"github.com/ivms/ams/pkg/testkit/testenv"
	"github.com/ivms/ams/schemas"
)

// TestEgressKafkaRestart restarts a private Kafka broker under `ams egress`
// while a transactional writer (as the processors write) keeps producing
// downlinks: egress reconnects, resumes from its committed offsets, and
// every at-least-once frame reaches its device (nothing lost; replays are
// counted), every at-most-once frame at most once. Figures are logged for
// docs/OPERATIONS.md.
func TestEgressKafkaRestart(t *testing.T) {
	const (
		rate    = 300
		tick    = 100 * time.Millisecond
		total   = 3000
		devices = 100
	)
	k := kafkabroker.Start(t)
	reg, err := schemas.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	prefix := testenv.Unique(t, "ekr") + "."
	names := kafkatopics.WithPrefix(prefix)
	admCl, err := kgo.NewClient(kgo.SeedBrokers(k.Addr))
	if err != nil {
		t.Fatal(err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	if _, err := adm.CreateTopics(ctx, 4, 1, nil, names.Downlink, names.DownlinkReceipts, names.Rejects); err != nil {
		t.Fatal(err)
	}

	mq := mqttconform.StartMosquitto(t, 100)
	sub := mqttconform.NewSubscriber(t, mq.URL, "devices-"+testenv.Unique(t, "sub"), protocol.DownlinkPrefix+"+",
		func(topic string, payload []byte) (mqttconform.Frame, bool) {
			sn, ok := strings.CutPrefix(topic, protocol.DownlinkPrefix)
			return mqttconform.Frame{SN: sn, Payload: payload}, ok
		})

	run := testenv.Unique(t, "f")
	frames := make([]*kgo.Record, total)
	atMostOnce := map[string]bool{}
	deadline := time.Now().UTC().Add(time.Hour)
	for i := range frames {
		sn := fmt.Sprintf("EKR%04d", i%devices)
		id := fmt.Sprintf("%s-%d", run, i)
		d := &schemas.Downlink{FrameID: id, SN: sn, Topic: protocol.DownlinkTopic(sn), Payload: []byte(id),
			CmdType: 3, SubType: 313, MsgID: "m-" + id, Purpose: "command", CreatedAt: time.Now().UTC()}
		if i%10 == 0 { // every tenth an at_most_once command
			cmdID := "cmd-" + id
			d.CommandID, d.Deadline, d.AtMostOnce = &cmdID, &deadline, true
			atMostOnce[id] = true
		}
		b, err := reg.Encode(d)
		if err != nil {
			t.Fatal(err)
		}
		frames[i] = &kgo.Record{Topic: names.Downlink, Key: []byte(sn), Value: b}
	}

	group := testenv.Unique(t, "egress-kr")
	logPath := filepath.Join(t.TempDir(), "egress.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(amsBin, "egress", "-kafka-brokers", k.Addr, "-topic-prefix", prefix,
		"-mqtt-url", mq.URL, "-egress-id", "ams-egress-kr", "-egress-group", group,
		"-kafka-instance-id", "egress-kr-0", "-mqtt-connections", "3", "-window", "64",
		"-publish-timeout", "5s", "-drain-timeout", "8s", "-commit-interval", "200ms", "-ops-addr", "")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AMS_KAFKA_") { // the private broker is plaintext
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_ = logf.Close()
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			s := string(b)
			if len(s) > 4000 {
				s = s[len(s)-4000:]
			}
			t.Logf("egress log:\n%s", s)
		}
	})

	// The devices: count what each frame id received.
	var mu sync.Mutex
	got := map[string]int{}
	go func() {
		for {
			select {
			case f := <-sub.Frames():
				mu.Lock()
				got[string(f.Payload)]++
				mu.Unlock()
			case <-ctx.Done():
				return
			}
		}
	}()

	// The writer: one transaction per tick, retried until it commits.
	w := k.WriteTxns(ctx, t, testenv.Unique(t, "ekr-txn"), frames, int(rate*tick/time.Second), tick)
	stopped, back := k.RestartAfter(ctx, w, total/3, 2*time.Second)
	resumed := kafkabroker.Resumed(ctx, adm, group, names.Downlink)
	t.Logf("broker down %v (from the start of its controlled shutdown to answering again, 2 s stopped)", back.Sub(stopped).Round(100*time.Millisecond))

	lastCommit := w.Wait()
	if n := w.Produced.Load(); n != total {
		t.Fatalf("the writer produced %d of %d", n, total)
	}
	// Every at-least-once frame arrives; at-most-once frames may be lost
	// (an intent written and the publish not confirmed), never doubled.
	missing := func() (n int, first string) {
		mu.Lock()
		defer mu.Unlock()
		for i := range total {
			id := fmt.Sprintf("%s-%d", run, i)
			if !atMostOnce[id] && got[id] == 0 {
				if n == 0 {
					first = id
				}
				n++
			}
		}
		return n, first
	}
	for {
		select {
		case <-exited:
			t.Fatal("egress exited")
		default:
		}
		n, first := missing()
		if n == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%d at-least-once frames never arrived (first %s)", n, first)
		}
		time.Sleep(200 * time.Millisecond)
	}
	allIn := time.Since(back)
	time.Sleep(2 * time.Second) // late replays, if any, are counted below
	mu.Lock()
	defer mu.Unlock()
	var replays, amoDelivered, amoDoubled int
	for id, n := range got {
		if atMostOnce[id] {
			amoDelivered++
			if n > 1 {
				amoDoubled++
				t.Errorf("at-most-once frame %s published %d times", id, n)
			}
		} else if n > 1 {
			replays += n - 1
		}
	}
	ms := func(d time.Duration) time.Duration { return d.Round(100 * time.Millisecond) }
	t.Logf("FIGURES broker restart: egress committed again %v after the broker was back", ms((<-resumed).Sub(back)))
	t.Logf("FIGURES egress through a broker restart under %d frames/s: writer retried %d transactions, last commit %v after the broker was back; "+
		"every at-least-once frame at its device %v after the broker was back (%v after the last commit), %d replayed; "+
		"at-most-once frames: %d of %d delivered, %d twice",
		rate, w.Retries.Load(), ms(lastCommit.Sub(back)), ms(allIn), ms(allIn-lastCommit.Sub(back)), replays,
		amoDelivered, len(atMostOnce), amoDoubled)
}
