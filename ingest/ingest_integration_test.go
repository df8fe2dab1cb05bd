//go:build integration

package ingest_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ivms/ams/pkg/testkit/mqttconform"
	"github.com/ivms/ams/pkg/testkit/testenv"
	"github.com/ivms/ams/schemas"
)

// TestIngestKill9: devices publish a stream of QoS 1 frames; `ams ingest` is
// killed with SIGKILL mid-stream and started again; every frame whose
// PUBACK a device got is in Kafka (duplicates allowed, losses not), and each
// device's frames are in order of first occurrence.
func TestIngestKill9(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h := newIngestHarness(t, 1000)
	rec := mqttconform.Record(t, h.Received())
	h.Start(t)

	devs := make([]string, 200)
	for i := range devs {
		devs[i] = fmt.Sprintf("KILL%012d", i)
	}
	const n = 50
	total := len(devs) * n
	var sent atomic.Int64
	done := make(chan *mqttconform.Acks, 1)
	go func() { done <- mqttconform.Stream(ctx, h, devs, n, 5, 10*time.Millisecond, &sent) }()

	rec.WaitCount(t, total/5, time.Minute)
	h.Crash(t)
	killedAt, sentAtKill := rec.Count(), sent.Load()
	// Let the devices go on publishing to the broker while ingest is dead.
	deadline := time.Now().Add(time.Minute)
	for sent.Load() < min(sentAtKill+int64(total/5), int64(total)) {
		if time.Now().After(deadline) {
			t.Fatalf("the stream stalled at %d frames", sent.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.Start(t)
	acks := <-done
	if missing := acks.Missing(); missing > 0 {
		t.Fatalf("the broker did not acknowledge %d frames", missing)
	}
	rec.WaitAll(t, acks, time.Minute)
	dups := rec.Check(t, acks)
	t.Logf("%d devices x %d frames: SIGKILL when %d frames were in Kafka and %d published; "+
		"after the restart all %d acknowledged frames are in Kafka, with %d duplicates",
		len(devs), n, killedAt, sentAtKill, total, dups)
}

// TestIngestEventsAndRejects: connection events of devices become CONNECTED
// / DISCONNECTED records with their epoch data; events of ams's own clients
// are skipped and counted; refused messages land in ams.rejects with their
// reason.
func TestIngestEventsAndRejects(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h := newIngestHarness(t, 100, "-max-payload", "1000")
	h.Start(t)
	rejects := make(chan schemas.Reject, 100)
	testenv.Consume(t, h.reg, h.names.Rejects, rejects)

	pub := mqttconform.NewDevice(h.broker.URL, "ams-tester")
	defer pub.Close()
	send := func(topic, payload string) {
		t.Helper()
		if errs := pub.Publish(ctx, topic, [][]byte{[]byte(payload)}); errs[0] != nil {
			t.Fatalf("publish %s: %v", topic, errs[0])
		}
	}
	ev := "test/sys/brokers/emqx@10.0.0.1/clients/"
	send(ev+"EVT0001/connected", `{"clientid":"EVT0001","username":"EVT0001","ipaddress":"10.1.1.1","keepalive":60,"proto_ver":4,"connack":0,"ts":1764000000}`)
	send(ev+"EVT0001/disconnected", `{"username":"EVT0001","ts":1764000100123,"reason":"keepalive_timeout","proto_ver":4,"ipaddress":"10.1.1.1","disconnected_at":1764000100120,"connected_at":1764000000000,"clientid":"EVT0001"}`)
	send(ev+"ams-egress-x-0/connected", `{"clientid":"ams-egress-x-0","ts":1764000000}`)
	send(ev+"EVT0002/connected", `{"clientid":"EVT0009","ts":1764000000}`)
	send(ev+"EVT0003/connected", `not json`)
	send("/ivms/pub/EVT0001", ``)
	send("/ivms/pub/EVT0001", strings.Repeat("x", 2000))
	send("/ivms/pub/bad sn", `{}`)
	send("/ivms/pub/EVT0001", `{"iCmdType":2}`)

	var got []schemas.UplinkRaw
	deadline := time.After(time.Minute)
	for len(got) < 3 {
		select {
		case u := <-h.uplinks:
			got = append(got, u)
		case <-deadline:
			t.Fatalf("uplinks: got %d of 3: %+v", len(got), got)
		}
	}
	c, d, f := got[0], got[1], got[2]
	if c.Kind != schemas.UplinkConnected || c.SN != "EVT0001" || c.ClientID != "EVT0001" || c.Username != "EVT0001" ||
		c.Node != "emqx@10.0.0.1" || c.ConnectedAt == nil || !c.ConnectedAt.Equal(time.Unix(1764000000, 0)) ||
		c.BrokerTime == nil || c.IngestTime.IsZero() || c.Ingest == "" {
		t.Errorf("connected record %+v", c)
	}
	if d.Kind != schemas.UplinkDisconnected || d.SN != "EVT0001" || d.Reason != "keepalive_timeout" ||
		d.BrokerTime == nil || !d.BrokerTime.Equal(time.UnixMilli(1764000100120)) ||
		d.ConnectedAt == nil || !d.ConnectedAt.Equal(time.UnixMilli(1764000000000)) {
		t.Errorf("disconnected record %+v", d)
	}
	if f.Kind != schemas.UplinkFrame || f.SN != "EVT0001" || f.Topic != "/ivms/pub/EVT0001" || string(f.Payload) != `{"iCmdType":2}` ||
		f.BrokerTime != nil {
		t.Errorf("frame record %+v", f)
	}

	want := []string{"clientid_mismatch", "bad_event", "empty_payload", "oversize_payload", "bad_topic"}
	var reasons []string
	for len(reasons) < len(want) {
		select {
		case r := <-rejects:
			reasons = append(reasons, r.Reason)
			if r.Stage != schemas.StageIngest || r.Topic == "" || r.RejectID == "" {
				t.Errorf("reject %+v", r)
			}
		case <-deadline:
			t.Fatalf("rejects: got %v, want %v", reasons, want)
		}
	}
	// Rejects are keyed by sn when there is one, so they spread over
	// partitions: compare them as a set.
	slices.Sort(reasons)
	slices.Sort(want)
	if !slices.Equal(reasons, want) {
		t.Errorf("reject reasons %v, want %v", reasons, want)
	}
	m, err := h.proc.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m, `ams_ingest_events_skipped_total{reason="own_client"} 1`) {
		t.Errorf("own client's event not counted as skipped:\n%s", m)
	}
	select {
	case u := <-h.uplinks:
		t.Errorf("unexpected record %+v", u)
	case <-time.After(300 * time.Millisecond):
	}
}
