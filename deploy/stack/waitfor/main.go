// Command waitfor blocks until a Kafka cluster answers a real metadata request (at least one
// broker and an active controller), or fails after a timeout. deploy/stack/up.sh uses it to
// tell when the local broker is ready:
//
//	go run ./deploy/stack/waitfor -kafka 127.0.0.1:9092 -timeout 90s
//
// TLS and SASL come from the same AMS_KAFKA_TLS_* and AMS_KAFKA_SASL_* variables as ams's
// flags (the stack's env file sets them on a secure stack).
//
// It exits 0 when ready, 1 on timeout (printing the last error), 2 on bad flags.
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
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/connsec"
)

func main() {
	brokers := flag.String("kafka", "127.0.0.1:9092", "comma-separated Kafka bootstrap brokers")
	timeout := flag.Duration("timeout", 90*time.Second, "how long to wait in total")
	quiet := flag.Bool("q", false, "print nothing on success")
	flag.Parse()

	seeds := strings.Split(*brokers, ",")
	sec, err := connsec.KafkaFromEnv(os.Getenv).Opts()
	if err != nil {
		fmt.Fprintf(os.Stderr, "waitfor: %v\n", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	desc, err := waitKafka(ctx, seeds, sec)
	if err != nil {
		fmt.Fprintf(os.Stderr, "waitfor: kafka %s not ready after %s: %v\n", *brokers, *timeout, err)
		os.Exit(1)
	}
	if !*quiet {
		fmt.Println(desc)
	}
}

// waitKafka retries a metadata request until it names at least one broker and a controller.
func waitKafka(ctx context.Context, seeds []string, sec []kgo.Opt) (string, error) {
	var last error
	for {
		desc, err := probeKafka(ctx, seeds, sec)
		if err == nil {
			return desc, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return "", last
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func probeKafka(parent context.Context, seeds []string, sec []kgo.Opt) (string, error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(seeds...),
		kgo.DialTimeout(2 * time.Second),
		kgo.RequestRetries(0),
	}, sec...)...)
	if err != nil {
		return "", fmt.Errorf("new client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	ctx, cancel := context.WithTimeout(parent, 3*time.Second)
	defer cancel()
	md, err := adm.BrokerMetadata(ctx)
	if err != nil {
		return "", fmt.Errorf("metadata: %w", err)
	}
	if len(md.Brokers) == 0 {
		return "", errors.New("metadata lists no broker")
	}
	if md.Controller < 0 {
		return "", errors.New("metadata names no controller")
	}
	return fmt.Sprintf("kafka ready: cluster %s, %d broker(s), controller %d", md.Cluster, len(md.Brokers), md.Controller), nil
}
