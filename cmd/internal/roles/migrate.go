package roles

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
	"github.com/ivms/ams/sinks/chsink"
)

// MigrateOptions configure `ams migrate`: create or check the Kafka topics
// and apply the ClickHouse migrations.
type MigrateOptions struct {
	Output
	Kafka                  Kafka
	Log                    Log
	ClickHouse             ClickHouse
	SkipClickHouse         bool
	Check                  bool
	Retention              time.Duration
	AllowUnsafeReplication bool
}

// DefaultMigrate returns the defaults of `ams migrate`.
func DefaultMigrate() MigrateOptions {
	return MigrateOptions{Kafka: DefaultKafka(), Log: DefaultLog(), ClickHouse: DefaultClickHouse(), Retention: 7 * 24 * time.Hour}
}

// Flags declares the flags of `ams migrate` on o's fields.
func (o *MigrateOptions) Flags(fs *flag.FlagSet) {
	o.Kafka.Flags(fs)
	o.Log.Flags(fs)
	o.ClickHouse.Flags(fs)
	o.ClickHouse.ClusterFlag(fs, "create the ClickHouse tables ON CLUSTER this cluster (of the servers' remote_servers; needs ZooKeeper, <distributed_ddl> and the macros shard and replica): Replicated*MergeTree <table>_local plus a Distributed <table> sharded by sn; empty: one server")
	fs.BoolVar(&o.SkipClickHouse, "skip-clickhouse", o.SkipClickHouse, "leave ClickHouse alone (Kafka topics only)")
	fs.BoolVar(&o.Check, "check", o.Check, "only check the topics, create nothing")
	fs.DurationVar(&o.Retention, "retention", o.Retention, "retention of the non-compacted topics")
	fs.BoolVar(&o.AllowUnsafeReplication, "allow-unsafe-replication", o.AllowUnsafeReplication, "allow -replication 1 (one broker's loss loses data): single-broker dev and test stacks only")
}

// RunMigrate creates (or checks) the topics and migrates ClickHouse.
func RunMigrate(ctx context.Context, o MigrateOptions) error {
	log, err := o.Log.Logger(o.stderr())
	if err != nil {
		return err
	}
	stdout := o.stdout()
	if _, err := names(o.Kafka.Namespace); err != nil {
		return err
	}
	minISR, err := ReplicationPolicy(o.Kafka.Replication, o.AllowUnsafeReplication)
	if err != nil {
		return err
	}
	if o.Kafka.Replication < 2 && !o.Check {
		log.Warn("replication factor 1 allowed by -allow-unsafe-replication: losing the broker loses the data; not for production")
		fmt.Fprintln(stdout, "kafka: replication factor 1 (-allow-unsafe-replication): a single-broker dev/test stack, not for production")
	}
	o.Kafka.LogSecurity(log)
	cl, err := o.Kafka.Client()
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	topics := o.Kafka.Names()
	partitions := o.Kafka.Partitions
	if o.Check {
		if err := kafkatopics.Check(ctx, adm, topics, int32(partitions)); err != nil {
			return err
		}
	} else {
		layout := kafkatopics.Layout{Partitions: int32(partitions), Replication: int16(o.Kafka.Replication),
			RetentionMs: o.Retention.Milliseconds(), MinInsyncReplicas: minISR}
		if err := kafkatopics.Ensure(ctx, adm, topics, layout); err != nil {
			return err
		}
	}
	log.Info("kafka topics ready", "topics", len(topics.All()), "partitions", partitions,
		"replication", o.Kafka.Replication, "min_insync_replicas", minISR)
	fmt.Fprintf(stdout, "kafka: %d topics with %d partitions each (new ones: replication %d, min.insync.replicas %d)\n",
		len(topics.All()), partitions, o.Kafka.Replication, minISR)
	if o.SkipClickHouse {
		return nil
	}
	cho, err := o.ClickHouse.Options()
	if err != nil {
		return err
	}
	return MigrateClickHouse(ctx, cho, o.Check, log, stdout)
}

// ReplicationPolicy checks -replication and returns the min.insync.replicas
// that goes with it (kafkatopics.MinInsyncFor: rf-1, at least 1). A
// replication factor below 1 is an error, and 1 is refused unless
// allowUnsafe: one broker's loss would lose acknowledged records.
func ReplicationPolicy(rf int, allowUnsafe bool) (int16, error) {
	switch {
	case rf < 1 || rf > 32767:
		return 0, fmt.Errorf("-replication %d: want 1 or more (3 in production)", rf)
	case rf == 1 && !allowUnsafe:
		return 0, fmt.Errorf("-replication 1 keeps one copy of every record: refused without -allow-unsafe-replication (single-broker dev and test stacks only; production wants 3)")
	}
	return kafkatopics.MinInsyncFor(int16(rf)), nil
}

// MigrateClickHouse applies the ClickHouse migrations not yet applied (or,
// with checkOnly, only checks that none is missing).
func MigrateClickHouse(ctx context.Context, o chsink.Options, checkOnly bool, log *slog.Logger, stdout io.Writer) error {
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
