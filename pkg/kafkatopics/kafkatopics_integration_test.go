//go:build integration

package kafkatopics_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/testkit/testenv"
)

func TestEnsureAndCheck(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	adm := kadm.NewClient(testenv.KafkaClient(t))
	names := kafkatopics.WithPrefix(testenv.Unique(t, "topics") + ".")
	t.Cleanup(func() { _, _ = adm.DeleteTopics(context.Background(), names.All()...) })

	if err := kafkatopics.Check(ctx, adm, names, 3); !errors.Is(err, kafkatopics.ErrLayout) {
		t.Fatalf("Check before Ensure = %v, want ErrLayout", err)
	}
	layout := kafkatopics.Layout{Partitions: 3, Replication: 1, MinInsyncReplicas: kafkatopics.MinInsyncFor(1)}
	if err := kafkatopics.Ensure(ctx, adm, names, layout); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	// Every topic carries min.insync.replicas as a topic config (not the broker default).
	cfgs, err := adm.DescribeTopicConfigs(ctx, names.All()...)
	if err != nil {
		t.Fatal(err)
	}
	for _, rc := range cfgs {
		if rc.Err != nil {
			t.Fatalf("describe %s: %v", rc.Name, rc.Err)
		}
		found := false
		for _, c := range rc.Configs {
			if c.Key == "min.insync.replicas" {
				found = true
				if c.Value == nil || *c.Value != "1" || c.Source != kmsg.ConfigSourceDynamicTopicConfig {
					t.Errorf("%s: min.insync.replicas = %v (source %v), want 1 set on the topic", rc.Name, c.MaybeValue(), c.Source)
				}
			}
		}
		if !found {
			t.Errorf("%s: no min.insync.replicas config", rc.Name)
		}
	}
	if err := kafkatopics.Ensure(ctx, adm, names, layout); err != nil {
		t.Fatalf("second Ensure (idempotent): %v", err)
	}
	// A consumer expecting another partition count is refused.
	err = kafkatopics.Check(ctx, adm, names, 4)
	if !errors.Is(err, kafkatopics.ErrLayout) || !strings.Contains(err.Error(), "co-partitioned") {
		t.Fatalf("Check(4) = %v, want a co-partitioning error", err)
	}
	// One topic grown apart from the others breaks co-partitioning.
	if _, err := adm.UpdatePartitions(ctx, 5, names.Presence); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err = kafkatopics.Check(ctx, adm, names, 0)
		if err != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !errors.Is(err, kafkatopics.ErrLayout) || !strings.Contains(err.Error(), names.Presence) {
		t.Fatalf("Check after growing %s = %v, want a co-partitioning error naming it", names.Presence, err)
	}
}
