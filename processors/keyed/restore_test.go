package keyed

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestChangelogReader(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	seeds := c.ListenAddrs()
	ctx := context.Background()
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 2, 1, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}, "cl"); err != nil {
		t.Fatal(err)
	}
	txn := func(id string) *kgo.Client {
		tc, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.TransactionalID(id), kgo.DefaultProduceTopic("cl"),
			kgo.RecordPartitioner(kgo.ManualPartitioner()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(tc.Close)
		return tc
	}
	write := func(tc *kgo.Client, end *kgo.TransactionEndTry, kv ...string) {
		t.Helper()
		if err := tc.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(kv); i += 2 {
			var v []byte
			if kv[i+1] != "" {
				v = []byte(kv[i+1])
			}
			if err := tc.ProduceSync(ctx, &kgo.Record{Partition: 1, Key: []byte(kv[i]), Value: v}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if end != nil {
			if err := tc.EndTransaction(ctx, *end); err != nil {
				t.Fatal(err)
			}
		}
	}
	commit, abort := kgo.TryCommit, kgo.TryAbort
	p1 := txn("p1")
	write(p1, &commit, "a", "1", "b", "1", "c", "1")
	write(p1, &commit, "a", "2", "b", "") // b deleted
	write(p1, &abort, "a", "bad", "d", "bad")

	rd := &changelogReader{cl: cl, topic: "cl", dec: kgo.DefaultDecompressor(), maxWait: 100 * time.Millisecond}
	read := func(from int64) (map[string]string, int64) {
		t.Helper()
		got := map[string]string{}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		pos, _, err := rd.read(rctx, 1, from, func(k string, v []byte) error {
			if v == nil {
				delete(got, k)
			} else {
				got[k] = string(v)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		return got, pos
	}
	// The log ends with an aborted transaction and its marker: invisible
	// to a consumer, but the read must still end.
	got, pos := read(0)
	if len(got) != 2 || got["a"] != "2" || got["c"] != "1" {
		t.Fatalf("state: %v", got)
	}
	end, _ := kadm.NewClient(cl).ListEndOffsets(ctx, "cl")
	if hw, _ := end.Lookup("cl", 1); pos != hw.Offset {
		t.Fatalf("position %d, high watermark %d", pos, hw.Offset)
	}
	// An empty partition reads nothing and ends at once.
	if p0, n, err := rd.read(ctx, 0, 0, func(string, []byte) error { return nil }); p0 != 0 || n != 0 || err != nil {
		t.Fatalf("empty partition: pos %d, %d records, %v", p0, n, err)
	}

	// A transaction open when the read starts (the previous owner's last
	// batch) is waited for, then applied.
	p2 := txn("p2")
	write(p2, nil, "e", "1")
	done := make(chan map[string]string)
	go func() {
		g, _ := read(pos)
		done <- g
	}()
	select {
	case g := <-done:
		t.Fatalf("read ended before the open transaction did: %v", g)
	case <-time.After(500 * time.Millisecond):
	}
	if err := p2.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	select {
	case g := <-done:
		if g["e"] != "1" || len(g) != 1 {
			t.Fatalf("catch-up from %d: %v", pos, g)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("read did not end after the transaction committed")
	}

	// After compaction the same state comes back.
	c.Compact()
	got, _ = read(0)
	if len(got) != 3 || got["a"] != "2" || got["c"] != "1" || got["e"] != "1" {
		t.Fatalf("state after compaction: %v", got)
	}
}
