// Command kafkalag samples the consumer lag of Kafka consumer groups for the
// benchmark scripts (soak.sh, fleet50k.sh): every -interval it appends one
// tab-separated line to stdout, the seconds since start and, per group of
// -groups, the group's summed lag (log end offset minus committed offset,
// over every partition the group has committed). It connects like
// deploy/stack/waitfor, with the stack's AMS_KAFKA_* security variables
// (TLS, SASL), and runs until interrupted.
//
// Under transactions a caught-up group still shows about one record per
// partition written since its last commit (the commit marker counts as an
// offset), so read the lag as "records behind, give or take one per partition".
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/connsec"
)

func main() {
	brokers := flag.String("kafka", os.Getenv("AMS_KAFKA_BROKERS"), "comma-separated Kafka bootstrap brokers (default $AMS_KAFKA_BROKERS)")
	groups := flag.String("groups", "", "comma-separated consumer groups, in column order (required)")
	interval := flag.Duration("interval", 30*time.Second, "sampling interval")
	header := flag.Bool("header", true, "print a header line first")
	flag.Parse()
	if *groups == "" || *brokers == "" {
		fmt.Fprintln(os.Stderr, "kafkalag: -groups and -kafka (or AMS_KAFKA_BROKERS) are required")
		os.Exit(2)
	}
	if err := run(*brokers, strings.Split(*groups, ","), *interval, *header); err != nil {
		fmt.Fprintf(os.Stderr, "kafkalag: %v\n", err)
		os.Exit(1)
	}
}

func run(brokers string, groups []string, interval time.Duration, header bool) error {
	sec, err := connsec.KafkaFromEnv(os.Getenv).Opts()
	if err != nil {
		return fmt.Errorf("kafka security options: %w", err)
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(strings.Split(brokers, ",")...)}, sec...)...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if header {
		fmt.Printf("t_s\t%s\n", strings.Join(groups, "\t"))
	}
	t0 := time.Now()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		line := []string{fmt.Sprintf("%.0f", time.Since(t0).Seconds())}
		rctx, cancel := context.WithTimeout(ctx, interval)
		lags, err := adm.Lag(rctx, groups...)
		cancel()
		for _, g := range groups {
			l, ok := lags[g]
			switch {
			case err != nil:
				line = append(line, "err")
			case !ok || l.Error() != nil:
				line = append(line, "?")
			default:
				line = append(line, fmt.Sprintf("%d", l.Lag.Total()))
			}
		}
		fmt.Println(strings.Join(line, "\t"))
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
