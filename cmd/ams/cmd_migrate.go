package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/kafkatopics"
)

func migrateCommand() command {
	return command{
		name:    "migrate",
		summary: "create or check the Kafka topics (and, when built in, ClickHouse tables)",
		flags: func(fs *flag.FlagSet) func(context.Context, io.Writer, io.Writer) error {
			var k kafkaFlags
			var lf logFlags
			k.register(fs)
			lf.register(fs)
			checkOnly := fs.Bool("check", false, "only check the topics, create nothing")
			retention := fs.Duration("retention", 7*24*time.Hour, "retention of the non-compacted topics")
			return func(ctx context.Context, stdout, stderr io.Writer) error {
				log, err := lf.logger(stderr)
				if err != nil {
					return err
				}
				cl, err := kgo.NewClient(kgo.SeedBrokers(k.seeds()...))
				if err != nil {
					return fmt.Errorf("kafka client: %w", err)
				}
				defer cl.Close()
				adm := kadm.NewClient(cl)
				ctx, cancel := context.WithTimeout(ctx, time.Minute)
				defer cancel()
				names := k.names()
				if *checkOnly {
					if err := kafkatopics.Check(ctx, adm, names, int32(k.partitions)); err != nil {
						return err
					}
				} else {
					layout := kafkatopics.Layout{Partitions: int32(k.partitions), Replication: int16(k.replication), RetentionMs: retention.Milliseconds()}
					if err := kafkatopics.Ensure(ctx, adm, names, layout); err != nil {
						return err
					}
				}
				log.Info("kafka topics ready", "topics", len(names.All()), "partitions", k.partitions)
				fmt.Fprintf(stdout, "kafka: %d topics with %d partitions each\n", len(names.All()), k.partitions)
				return nil
			}
		},
	}
}
