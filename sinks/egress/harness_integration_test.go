//go:build integration

package egress_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/pkg/testkit/mqttconform"
	"github.com/ivms/ams/pkg/testkit/testenv"
	"github.com/ivms/ams/schemas"
)

// amsBin is the ams binary built once for this test binary by TestMain.
var amsBin string

func TestMain(m *testing.M) { os.Exit(mqttconform.MainWithAMS(m, &amsBin)) }

func testTopics(t *testing.T, prefix string) kafkatopics.Names {
	t.Helper()
	names := kafkatopics.WithPrefix(testenv.Unique(t, prefix) + ".")
	testenv.CreateTopics(t, testenv.KafkaClient(t), 4, names.Downlink, names.DownlinkReceipts, names.Rejects)
	return names
}

// egressHarness runs `ams egress` as a subprocess between private Kafka
// topics and a private Mosquitto; the devices are one subscriber with a
// persistent session on /ivms/sub/+.
type egressHarness struct {
	t      *testing.T
	broker *mqttconform.Mosquitto
	names  kafkatopics.Names
	group  string
	reg    *schemas.Registry
	prod   *kgo.Client
	sub    *mqttconform.Subscriber
	proc   *mqttconform.Process
	starts int
	extra  []string
}

func newEgressHarness(t *testing.T, extra ...string) *egressHarness {
	reg, err := schemas.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	h := &egressHarness{t: t, reg: reg, extra: extra}
	h.broker = mqttconform.StartMosquitto(t, 100)
	h.names = testTopics(t, "egress")
	h.group = testenv.Unique(t, "egress")
	h.prod = testenv.KafkaClient(t, kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)), kgo.ProducerLinger(time.Millisecond))
	h.sub = mqttconform.NewSubscriber(t, h.broker.URL, "devices-"+testenv.Unique(t, "sub"), protocol.DownlinkPrefix+"+",
		func(topic string, payload []byte) (mqttconform.Frame, bool) {
			sn, ok := strings.CutPrefix(topic, protocol.DownlinkPrefix)
			return mqttconform.Frame{SN: sn, Payload: payload}, ok
		})
	return h
}

func (h *egressHarness) args() []string {
	a := []string{"egress",
		"-kafka-brokers", strings.Join(testenv.KafkaBrokers(), ","),
		"-topic-prefix", strings.TrimSuffix(h.names.Downlink, "ams.downlink"),
		"-mqtt-url", h.broker.URL,
		"-egress-id", "ams-egress-it",
		"-egress-group", h.group,
		"-kafka-instance-id", "egress-it-0",
		"-mqtt-connections", "3",
		"-mqtt-keepalive", "5s",
		"-window", "64",
		"-publish-timeout", "5s",
		"-drain-timeout", "8s",
		"-commit-interval", "200ms",
		"-ops-addr", "127.0.0.1:0",
	}
	return append(a, h.extra...)
}

func (h *egressHarness) Start(t testing.TB) {
	h.starts++
	h.proc = mqttconform.StartProcess(t, fmt.Sprintf("egress-%d", h.starts), amsBin, h.args()...)
}

func (h *egressHarness) Stop(t testing.TB) {
	if err := h.proc.Term(30 * time.Second); err != nil {
		t.Fatalf("egress did not stop cleanly: %v", err)
	}
}

func (h *egressHarness) Crash(testing.TB) { h.proc.Kill() }

func (h *egressHarness) RestartBroker(t testing.TB) { h.broker.Restart(t) }

// downlink builds the record of one frame, as a processor would write it.
func (h *egressHarness) downlink(sn string, payload []byte) *kgo.Record {
	frameID := string(payload)
	cmdID := "cmd-" + frameID
	b, err := h.reg.Encode(&schemas.Downlink{
		FrameID:   frameID,
		SN:        sn,
		Topic:     protocol.DownlinkTopic(sn),
		Payload:   payload,
		CmdType:   3,
		SubType:   313,
		MsgID:     "m-" + frameID,
		CommandID: &cmdID,
		Purpose:   "command",
		CreatedAt: time.Now().UTC(),
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return &kgo.Record{Topic: h.names.Downlink, Key: []byte(sn), Value: b}
}

func (h *egressHarness) Send(ctx context.Context, sn string, payloads [][]byte) []error {
	errs := make([]error, len(payloads))
	done := make(chan struct{}, len(payloads))
	for i, p := range payloads {
		h.prod.Produce(ctx, h.downlink(sn, p), func(_ *kgo.Record, err error) {
			errs[i] = err
			done <- struct{}{}
		})
	}
	for range payloads {
		<-done
	}
	return errs
}

func (h *egressHarness) Received() <-chan mqttconform.Frame { return h.sub.Frames() }

func TestEgressConformance(t *testing.T) {
	mqttconform.Run(t, func(t *testing.T) mqttconform.Harness { return newEgressHarness(t) })
}
