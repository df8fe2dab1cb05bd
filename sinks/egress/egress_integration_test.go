//go:build integration

package egress_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/testkit/mqttconform"
	"github.com/ivms/ams/pkg/testkit/testenv"
	"github.com/ivms/ams/schemas"
)

// TestEgressReceiptsRejectsAndCommits: every published frame gets a receipt
// (frame id, command id, msg id, sn, egress id), refused frames go to
// ams.rejects with their reason and are not published, and after a graceful
// stop the group's committed offsets are at the end of every partition.
func TestEgressReceiptsRejectsAndCommits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h := newEgressHarness(t)
	rec := mqttconform.Record(t, h.Received())
	h.Start(t)

	devs := []string{"RCPT0001", "RCPT0002", "RCPT0003"}
	acks := mqttconform.NewAcks(devs, 5)
	for _, sn := range devs {
		var ps [][]byte
		for i := range 5 {
			ps = append(ps, mqttconform.Payload(sn, i))
		}
		acks.Set(sn, 0, h.Send(ctx, sn, ps))
	}
	// Refused: the topic is not the sn's, and a value that is not a Downlink.
	bad := h.downlink("RCPT0001", []byte("RCPT0001#999999"))
	var dl schemas.Downlink
	if err := h.reg.Decode(bad.Value, &dl); err != nil {
		t.Fatal(err)
	}
	dl.Topic = "/ivms/sub/SOMEONE-ELSE"
	bad.Value, _ = h.reg.Encode(&dl)
	garbage := &kgo.Record{Topic: h.names.Downlink, Key: []byte("RCPT0002"), Value: []byte("not avro")}
	if err := h.prod.ProduceSync(ctx, bad, garbage).FirstErr(); err != nil {
		t.Fatal(err)
	}
	rec.WaitAll(t, acks, time.Minute)

	receipts := make(chan schemas.DownlinkReceipt, 100)
	rejects := make(chan schemas.Reject, 10)
	testenv.Consume(t, h.reg, h.names.DownlinkReceipts, receipts)
	testenv.Consume(t, h.reg, h.names.Rejects, rejects)
	got := map[string]schemas.DownlinkReceipt{}
	deadline := time.After(time.Minute)
	for len(got) < 15 {
		select {
		case r := <-receipts:
			got[r.FrameID] = r
		case <-deadline:
			t.Fatalf("%d receipts of 15", len(got))
		}
	}
	for id, r := range got {
		if r.CommandID == nil || *r.CommandID != "cmd-"+id || r.MsgID != "m-"+id || r.Egress != "ams-egress-it" ||
			r.PublishedAt.IsZero() || r.SN != id[:8] {
			t.Errorf("receipt %+v", r)
		}
	}
	reasons := map[string]bool{}
	for len(reasons) < 2 {
		select {
		case r := <-rejects:
			reasons[r.Reason] = true
			if r.Stage != schemas.StageSink || r.SourceTopic != h.names.Downlink {
				t.Errorf("reject %+v", r)
			}
		case <-deadline:
			t.Fatalf("rejects: %v", reasons)
		}
	}
	if !reasons["topic_mismatch"] || !reasons["bad_record"] {
		t.Errorf("reject reasons %v", reasons)
	}
	if dups := rec.Check(t, acks); dups != 0 {
		t.Errorf("%d duplicates", dups)
	}

	h.Stop(t)
	adm := kadm.NewClient(testenv.KafkaClient(t))
	ends, err := adm.ListEndOffsets(ctx, h.names.Downlink)
	if err != nil {
		t.Fatal(err)
	}
	committed, err := adm.FetchOffsets(ctx, h.group)
	if err != nil {
		t.Fatal(err)
	}
	ends.Each(func(o kadm.ListedOffset) {
		c, ok := committed.Lookup(o.Topic, o.Partition)
		if o.Offset > 0 && (!ok || c.At != o.Offset) {
			t.Errorf("partition %d: committed %v, end %d", o.Partition, c.At, o.Offset)
		}
	})
}

// TestEgressRebalance: a second instance joins mid-stream and takes half the
// partitions, then the first leaves; every frame reaches its device, in
// order.
func TestEgressRebalance(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Dynamic membership: a graceful stop leaves the group at once (a static
	// member would keep its partitions until its session times out).
	h := newEgressHarness(t, "-kafka-instance-id", "")
	rec := mqttconform.Record(t, h.Received())
	h.Start(t)
	first := h.proc

	devs := make([]string, 20)
	for i := range devs {
		devs[i] = fmt.Sprintf("REB%04d", i)
	}
	const n = 100
	var sent atomic.Int64
	done := make(chan *mqttconform.Acks, 1)
	go func() { done <- mqttconform.Stream(ctx, h, devs, n, 5, 20*time.Millisecond, &sent) }()
	total := len(devs) * n
	rec.WaitCount(t, total/5, time.Minute)

	// The second instance: another egress id, MQTT client ids and member.
	second := mqttconform.StartProcess(t, "egress-second", amsBin, replaceArgs(h.args(), "-egress-id", "ams-egress-it2")...)
	rec.WaitCount(t, total*3/5, time.Minute)
	if err := first.Term(30 * time.Second); err != nil {
		t.Fatalf("first egress did not stop cleanly: %v", err)
	}
	acks := <-done
	rec.WaitAll(t, acks, time.Minute)
	dups := rec.Check(t, acks)
	m, err := second.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	published := grep(m, `ams_egress_frames_total{result="published"}`)
	if published == "" {
		t.Errorf("the second instance published nothing: it never got partitions")
	}
	t.Logf("%d frames, %d duplicates across two rebalances; second instance: %s", total, dups, published)
}

func replaceArgs(args []string, kv ...string) []string {
	out := append([]string(nil), args...)
	for i := 0; i+1 < len(kv); i += 2 {
		for j := 0; j+1 < len(out); j++ {
			if out[j] == kv[i] {
				out[j+1] = kv[i+1]
			}
		}
	}
	return out
}

func grep(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
