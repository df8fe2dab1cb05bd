package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kadm"

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
			ch.registerCluster(fs, "create the ClickHouse tables ON CLUSTER this cluster (of the servers' remote_servers; needs ZooKeeper, <distributed_ddl> and the macros shard and replica): Replicated*MergeTree <table>_local plus a Distributed <table> sharded by sn; empty: one server")
			skipCH := fs.Bool("skip-clickhouse", false, "leave ClickHouse alone (Kafka topics only)")
			checkOnly := fs.Bool("check", false, "only check the topics, create nothing")
			retention := fs.Duration("retention", 7*24*time.Hour, "retention of the non-compacted topics")
			allowUnsafe := fs.Bool("allow-unsafe-replication", false, "allow -replication 1 (one broker's loss loses data): single-broker dev and test stacks only")
			return func(ctx context.Context, stdout, stderr io.Writer) error {
				log, err := lf.logger(stderr)
				if err != nil {
					return err
				}
				if _, err := applyNamespace(fs); err != nil {
					return err
				}
				minISR, err := replicationPolicy(k.replication, *allowUnsafe)
				if err != nil {
					return err
				}
				if k.replication < 2 && !*checkOnly {
					log.Warn("replication factor 1 allowed by -allow-unsafe-replication: losing the broker loses the data; not for production")
					fmt.Fprintln(stdout, "kafka: replication factor 1 (-allow-unsafe-replication): a single-broker dev/test stack, not for production")
				}
				k.logSecurity(log)
				cl, err := k.client()
				if err != nil {
					return err
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
					layout := kafkatopics.Layout{Partitions: int32(k.partitions), Replication: int16(k.replication),
						RetentionMs: retention.Milliseconds(), MinInsyncReplicas: minISR}
					if err := kafkatopics.Ensure(ctx, adm, names, layout); err != nil {
						return err
					}
				}
				log.Info("kafka topics ready", "topics", len(names.All()), "partitions", k.partitions,
					"replication", k.replication, "min_insync_replicas", minISR)
				fmt.Fprintf(stdout, "kafka: %d topics with %d partitions each (new ones: replication %d, min.insync.replicas %d)\n",
					len(names.All()), k.partitions, k.replication, minISR)
				if *skipCH {
					return nil
				}
				cho, err := ch.options()
				if err != nil {
					return err
				}
				return migrateClickHouse(ctx, cho, *checkOnly, log, stdout)
			}
		},
	}
}

// replicationPolicy checks -replication and returns the min.insync.replicas
// that goes with it (kafkatopics.MinInsyncFor: rf-1, at least 1). A
// replication factor below 1 is an error, and 1 is refused unless
// allowUnsafe: one broker's loss would lose acknowledged records.
func replicationPolicy(rf int, allowUnsafe bool) (int16, error) {
	switch {
	case rf < 1 || rf > 32767:
		return 0, fmt.Errorf("-replication %d: want 1 or more (3 in production)", rf)
	case rf == 1 && !allowUnsafe:
		return 0, fmt.Errorf("-replication 1 keeps one copy of every record: refused without -allow-unsafe-replication (single-broker dev and test stacks only; production wants 3)")
	}
	return kafkatopics.MinInsyncFor(int16(rf)), nil
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
	migrate := chsink.Migrate
	if o.Cluster != "" {
		migrate = func(ctx context.Context, conn driver.Conn, db string, log *slog.Logger) ([]chsink.Migration, error) {
			return chsink.MigrateCluster(ctx, conn, db, o.Cluster, log)
		}
	}
	applied, err := migrate(ctx, conn, o.Database, log)
	if err != nil {
		return err
	}
	if o.Cluster != "" {
		fmt.Fprintf(stdout, "clickhouse: database %s on cluster %s: %d migrations applied now\n", o.Database, o.Cluster, len(applied))
		return nil
	}
	fmt.Fprintf(stdout, "clickhouse: database %s: %d migrations applied now\n", o.Database, len(applied))
	return nil
}
