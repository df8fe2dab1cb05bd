package registryrepublish

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestRepublish: the latest value of every key of the chosen partitions is
// produced again to its partition; tombstoned keys and other partitions are
// not.
func TestRepublish(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 2, 1, nil, "reg"); err != nil {
		t.Fatal(err)
	}
	put := func(p int32, k, v string) {
		r := &kgo.Record{Topic: "reg", Partition: p, Key: []byte(k)}
		if v != "" {
			r.Value = []byte(v)
		}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	put(0, "a", "a1")
	put(0, "b", "b1")
	put(0, "a", "a2")
	put(0, "b", "") // tombstone
	put(0, "c", "c1")
	put(1, "d", "d1")

	rep, err := Republish(ctx, Config{Kafka: cl, Topic: "reg", Partitions: []int32{0}, Idle: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Read != 5 || rep.Republished != 2 || len(rep.Partitions) != 1 {
		t.Fatalf("report %+v: want 5 read, 2 republished, partition 0", rep)
	}
	rd, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"reg": {0: kgo.NewOffset().At(5), 1: kgo.NewOffset().At(1)}}))
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	got := map[string]string{}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for len(got) < 2 && pctx.Err() == nil {
		rd.PollFetches(pctx).EachRecord(func(r *kgo.Record) {
			if r.Partition != 0 {
				t.Errorf("record %s in partition %d", r.Key, r.Partition)
			}
			got[string(r.Key)] = string(r.Value)
		})
	}
	if len(got) != 2 || got["a"] != "a2" || got["c"] != "c1" {
		t.Fatalf("republished %v, want a=a2 c=c1", got)
	}
	// Every partition, twice: the same again.
	rep, err = Republish(ctx, Config{Kafka: cl, Topic: "reg", Idle: 500 * time.Millisecond})
	if err != nil || rep.Republished != 3 {
		t.Fatalf("all partitions: %+v %v, want 3 (a, c, d)", rep, err)
	}
	if _, err := Republish(ctx, Config{Kafka: cl, Topic: "reg", Partitions: []int32{7}}); err == nil {
		t.Fatal("an unknown partition was accepted")
	}
}
