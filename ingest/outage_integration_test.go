//go:build integration

package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/pkg/testkit/mqttconform"
	"github.com/ivms/ams/schemas"
)

// TestKafkaOutageBackPressure: while Kafka refuses every produce (a
// retriable error, as a cluster without enough replicas does), ingest
// acknowledges nothing, stops reading at MaxInflight unacknowledged messages
// and blocks paho (the broker keeps the rest), and drops nothing: when Kafka
// comes back every frame is written, in per-device order, and acknowledged.
//
// The broker is a real (private) Mosquitto; Kafka is kfake, whose produce
// path the test can break. The pipeline runs in the test process so its
// gauges can be read.
func TestKafkaOutageBackPressure(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	names := kafkatopics.WithPrefix("outage.")
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, names.UplinkRaw, names.Rejects))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	var down atomic.Bool
	down.Store(true)
	kc.ControlKey(int16(kmsg.Produce), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		kc.KeepControl()
		if !down.Load() {
			return nil, nil, false
		}
		req := kreq.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.NotEnoughReplicas.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})

	broker := mqttconform.StartMosquitto(t, 1000)
	reg, err := schemas.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	m := NewMetrics(nil)
	out, err := NewKafkaOutput(KafkaConfig{Seeds: kc.ListenAddrs(), Topics: []string{names.UplinkRaw, names.Rejects},
		Linger: time.Millisecond, MaxBuffered: 1000})
	if err != nil {
		t.Fatal(err)
	}
	in := NewMQTTInput(MQTTConfig{URL: broker.URL, ClientID: "ams-ingest-outage", QueueSize: 10, KeepAlive: 30 * time.Second}, log, m)
	conv := NewConverter(ConverterConfig{Names: names, IngestID: "outage", MaxPayload: 1 << 16}, reg)
	const maxInflight = 50
	p := NewPipeline(in, out, conv, Config{MaxInflight: maxInflight, DrainTimeout: 5 * time.Second}, log, m)
	runCtx, stop := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- p.Run(runCtx) }()
	select {
	case <-in.Subscribed():
	case <-time.After(30 * time.Second):
		t.Fatal("ingest did not subscribe")
	}

	// Kafka is down: devices publish 20 x 50 frames; the broker acknowledges them.
	devs := make([]string, 20)
	for i := range devs {
		devs[i] = fmt.Sprintf("OUT%04d", i)
	}
	const n = 50
	acks := mqttconform.NewAcks(devs, n)
	for _, sn := range devs {
		d := mqttconform.NewDevice(broker.URL, sn)
		defer d.Close()
		var ps [][]byte
		for i := range n {
			ps = append(ps, mqttconform.Payload(sn, i))
		}
		acks.Set(sn, 0, d.Publish(ctx, protocol.UplinkTopic(sn), ps))
	}
	if missing := acks.Missing(); missing > 0 {
		t.Fatalf("the broker did not acknowledge %d frames", missing)
	}
	waitFor(t, "ingest to fill its in-flight window", func() bool { return value(m.inflight) == maxInflight })
	time.Sleep(500 * time.Millisecond) // and stay there
	if v := value(m.inflight); v != maxInflight {
		t.Fatalf("in flight %v while Kafka is down, want the cap %d", v, maxInflight)
	}
	if v := value(m.acked); v != 0 {
		t.Fatalf("%v messages acknowledged while Kafka refused every record", v)
	}
	if v := value(m.handlerBlocked); v == 0 {
		t.Errorf("the MQTT handler never blocked, though the broker window (1000) exceeds max-inflight + queue")
	}

	// Kafka is back: everything is written and acknowledged.
	down.Store(false)
	rec := mqttconform.Record(t, consumeFrames(t, kc.ListenAddrs(), names.UplinkRaw, reg))
	rec.WaitAll(t, acks, time.Minute)
	waitFor(t, "every message acknowledged", func() bool { return value(m.acked) >= float64(len(devs)*n) })
	if dups := rec.Check(t, acks); dups != 0 {
		t.Logf("%d duplicates", dups)
	}
	stop()
	if err := <-errc; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func consumeFrames(t *testing.T, seeds []string, topic string, reg *schemas.Registry) <-chan mqttconform.Frame {
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan mqttconform.Frame, 1<<16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done; cl.Close() })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
				var u schemas.UplinkRaw
				if err := reg.Decode(r.Value, &u); err == nil {
					ch <- mqttconform.Frame{SN: u.SN, Payload: u.Payload}
				}
			})
		}
	}()
	return ch
}

// value reads a gauge or counter.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		return -1
	}
	if d.Gauge != nil {
		return d.Gauge.GetValue()
	}
	return d.Counter.GetValue()
}
