//go:build integration

package main

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/testkit/testenv"
)

// TestDrop, on the stack's Kafka (with its TLS and SASL settings): drop
// deletes exactly the ams topics of one prefix; a topic under the same
// prefix that is not an ams topic and the topics of another prefix stay; a
// second drop finds nothing and does not fail.
func TestDrop(t *testing.T) {
	cl := testenv.KafkaClient(t)
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	mine := testenv.Unique(t, "drop") + "."
	other := testenv.Unique(t, "keep") + "."
	doomed := kafkatopics.WithPrefix(mine).All()
	if _, err := adm.CreateTopics(ctx, 1, 1, nil, doomed...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = adm.DeleteTopics(context.Background(), doomed...) })
	kept := append(kafkatopics.WithPrefix(other).All()[:2], mine+"not-ams")
	testenv.CreateTopics(t, cl, 1, kept...)

	n, err := drop(ctx, testenv.KafkaBrokers(), doomed)
	if err != nil || n != len(doomed) {
		t.Fatalf("drop: %d topics, %v; want %d", n, err, len(doomed))
	}
	for {
		topics, err := adm.ListTopics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range kept {
			if !topics.Has(k) {
				t.Fatalf("topic %s was deleted too", k)
			}
		}
		if !slices.ContainsFunc(doomed, topics.Has) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the dropped topics are still listed")
		case <-time.After(100 * time.Millisecond):
		}
	}
	if n, err := drop(ctx, testenv.KafkaBrokers(), doomed); err != nil || n != 0 {
		t.Fatalf("second drop: %d topics, %v; want 0, nil", n, err)
	}
}
