package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/kafkatopics"
	chsink "github.com/ivms/ams/sinks/clickhouse"
)

func migrateCommand() command {
	return command{
		name:    "migrate",
		summary: "create or check the Kafka topics and apply the ClickHouse migrations",
		flags: func(fs *flag.FlagSet) func(context.Context, io.Writer, io.Writer) error {
			var k kafkaFlags
			var lf logFlags
			var ch clickHouseFlags
			k.register(fs)
			lf.register(fs)
			ch.register(fs)
			skipCH := fs.Bool("skip-clickhouse", false, "leave ClickHouse alone (Kafka topics only)")
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
				if *skipCH {
					return nil
				}
				return migrateClickHouse(ctx, ch.options(), *checkOnly, log, stdout)
			}
		},
	}
}

// migrateClickHouse applies the ClickHouse migrations not yet applied (or,
// with checkOnly, only checks that none is missing).
func migrateClickHouse(ctx context.Context, o chsink.Options, checkOnly bool, log *slog.Logger, stdout io.Writer) error {
	conn, err := chsink.Open(ctx, o)
	if err != nil {
		return err
	}
	defer conn.Close()
	if checkOnly {
		if err := chsink.CheckMigrated(ctx, conn, o.Database); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "clickhouse: database %s is migrated\n", o.Database)
		return nil
	}
	applied, err := chsink.Migrate(ctx, conn, o.Database, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "clickhouse: database %s: %d migrations applied now\n", o.Database, len(applied))
	return nil
}
