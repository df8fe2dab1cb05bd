package kafkatopics_test

import (
	"context"
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/kafkatopics"
)

func TestMinInsyncFor(t *testing.T) {
	for rf, want := range map[int16]int16{1: 1, 2: 1, 3: 2, 5: 4} {
		if got := kafkatopics.MinInsyncFor(rf); got != want {
			t.Errorf("MinInsyncFor(%d) = %d, want %d", rf, got, want)
		}
	}
}

// Ensure tolerates a topic that ListTopics missed but CreateTopic finds
// existing; that relies on CreateTopic returning the topic's error as err.
func TestCreateExistingTopicErr(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx := context.Background()
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, "t"); err != nil {
		t.Fatalf("first create: %v", err)
	}
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, "t"); !errors.Is(err, kerr.TopicAlreadyExists) {
		t.Fatalf("second create: err %v, want TOPIC_ALREADY_EXISTS", err)
	}
}
