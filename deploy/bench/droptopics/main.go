// Command droptopics deletes the Kafka topics of one benchmark run: the ams
// topics (kafkatopics.WithPrefix) under a topic prefix, or under the topic
// prefix of a namespace. The benchmark scripts (closed-loop.sh, soak.sh,
// fleet50k.sh) call it when they exit, unless AMS_BENCH_KEEP_TOPICS=1.
//
// Why: every run creates its own ten topics of twelve partitions. Left
// behind, they pile up, and a broker holding a couple of thousand idle
// partitions burns a third of a core doing nothing (its scheduler and raft
// threads), which made every figure measured on it 20-40% worse.
//
//	go run ./deploy/bench/droptopics -topic-prefix bench123.
//	go run ./deploy/bench/droptopics -namespace soak123
//
// Only exact ams topic names are deleted, never a pattern, and an empty
// prefix is refused, so a stack's own topics (no prefix) cannot be dropped
// by mistake. It connects like deploy/stack/waitfor, with the stack's
// AMS_KAFKA_* security variables (TLS, SASL). Exit status: 0 when every
// topic is gone or never existed, 1 on a failure, 2 on bad flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/connsec"
	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/namespace"
)

func main() {
	brokers := flag.String("kafka", os.Getenv("AMS_KAFKA_BROKERS"), "comma-separated Kafka bootstrap brokers (default $AMS_KAFKA_BROKERS)")
	prefix := flag.String("topic-prefix", "", "the run's topic prefix, e.g. bench123.")
	ns := flag.String("namespace", "", "the run's namespace (its topic prefix is derived), e.g. soak123")
	timeout := flag.Duration("timeout", 30*time.Second, "how long to try")
	flag.Parse()
	p, err := topicPrefix(*prefix, *ns)
	if err == nil && *brokers == "" {
		err = errors.New("-kafka (or AMS_KAFKA_BROKERS) is required")
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "droptopics: %v\n", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	n, err := drop(ctx, strings.Split(*brokers, ","), kafkatopics.WithPrefix(p).All())
	if err != nil {
		fmt.Fprintf(os.Stderr, "droptopics: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("droptopics: deleted %d topics of prefix %q\n", n, p)
}

// topicPrefix returns the prefix to drop: exactly one of prefix and ns, and
// never an empty prefix.
func topicPrefix(prefix, ns string) (string, error) {
	switch {
	case prefix != "" && ns != "":
		return "", errors.New("give -topic-prefix or -namespace, not both")
	case ns != "":
		if err := namespace.Validate(ns); err != nil {
			return "", err
		}
		prefix = namespace.Derive(ns).TopicPrefix
	}
	if prefix == "" {
		return "", errors.New("a non-empty -topic-prefix or -namespace is required (the stack's own topics are never dropped)")
	}
	return prefix, nil
}

// drop deletes the named topics and returns how many existed.
func drop(ctx context.Context, seeds []string, topics []string) (int, error) {
	sec, err := connsec.KafkaFromEnv(os.Getenv).Opts()
	if err != nil {
		return 0, fmt.Errorf("kafka security options: %w", err)
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seeds...)}, sec...)...)
	if err != nil {
		return 0, fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	res, err := kadm.NewClient(cl).DeleteTopics(ctx, topics...)
	if err != nil {
		return 0, fmt.Errorf("delete topics: %w", err)
	}
	n := 0
	var errs []error
	for _, r := range res.Sorted() {
		switch {
		case r.Err == nil:
			n++
		case errors.Is(r.Err, kerr.UnknownTopicOrPartition):
		default:
			errs = append(errs, fmt.Errorf("%s: %w", r.Topic, r.Err))
		}
	}
	return n, errors.Join(errs...)
}
