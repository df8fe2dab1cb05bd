package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/ivms/ams/pkg/connsec"
	"github.com/ivms/ams/pkg/kafkagroup"
	"github.com/ivms/ams/pkg/opshttp"
	"github.com/ivms/ams/schemas"
	chsink "github.com/ivms/ams/sinks/clickhouse"
)

// sinkKind is one sink `ams sink NAME` can run. flags declares its flags on
// fs and returns the function that runs it once they are parsed.
type sinkKind struct {
	name    string
	summary string
	flags   func(fs *flag.FlagSet) func(ctx context.Context, stdout, stderr io.Writer) error
}

// sinkKinds lists the sinks, one entry each.
func sinkKinds() []sinkKind {
	return []sinkKind{
		{name: "clickhouse", summary: "copy the event topics into ClickHouse tables (history)", flags: clickhouseSinkFlags},
		{name: "redis", summary: "project presence, devices and command states into Redis (current state)", flags: redisSinkFlags},
	}
}

// sinkCommand is `ams sink NAME [flags]`: the first argument picks the sink,
// the flags after it are that sink's (each also read from its AMS_*
// environment variable).
func sinkCommand() command {
	return command{
		name:    "sink",
		summary: "run a sink: ams sink {" + sinkNames() + "} [flags]",
		flags: func(fs *flag.FlagSet) func(context.Context, io.Writer, io.Writer) error {
			return func(ctx context.Context, stdout, stderr io.Writer) error {
				args := fs.Args()
				if len(args) == 0 {
					return fmt.Errorf("name the sink: ams sink {%s} [flags]", sinkNames())
				}
				for _, k := range sinkKinds() {
					if k.name != args[0] {
						continue
					}
					sfs := flag.NewFlagSet("ams sink "+k.name, flag.ContinueOnError)
					sfs.SetOutput(stderr)
					exec := k.flags(sfs)
					sfs.Usage = func() {
						fmt.Fprintf(stderr, "ams sink %s: %s\n\nFlags (each also read from its environment variable):\n", k.name, k.summary)
						usageFlags(stderr, sfs)
					}
					if err := parseFlags(sfs, args[1:], os.Getenv); err != nil {
						if errors.Is(err, flag.ErrHelp) {
							return nil
						}
						return err
					}
					return exec(ctx, stdout, stderr)
				}
				return fmt.Errorf("unknown sink %q (have: %s)", args[0], sinkNames())
			}
		},
	}
}

func sinkNames() string {
	var names []string
	for _, k := range sinkKinds() {
		names = append(names, k.name)
	}
	sort.Strings(names)
	return strings.Join(names, "|")
}

// clickHouseFlags are the flags of every role that talks to ClickHouse.
type clickHouseFlags struct {
	addr     string
	database string
	username string
	password string
	sec      clickHouseSecurityFlags
	cluster  string // -clickhouse-cluster (migrate and the sink only)
}

// registerCluster adds -clickhouse-cluster (for `ams migrate` and `ams sink clickhouse`).
func (c *clickHouseFlags) registerCluster(fs *flag.FlagSet, usage string) {
	fs.StringVar(&c.cluster, "clickhouse-cluster", "", usage)
}

func (c *clickHouseFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.addr, "clickhouse-addr", "127.0.0.1:9000", "ClickHouse native-protocol addresses, comma-separated")
	fs.StringVar(&c.database, "clickhouse-database", "ams", "ClickHouse database of the ams tables")
	fs.StringVar(&c.username, "clickhouse-username", "default", "ClickHouse user")
	fs.StringVar(&c.password, "clickhouse-password", "", "ClickHouse password (prefer -clickhouse-password-file; never logged)")
	c.sec.register(fs)
}

func (c *clickHouseFlags) options() (chsink.Options, error) {
	pass, err := connsec.Secret("clickhouse password", c.password, c.sec.passwordFile)
	if err != nil {
		return chsink.Options{}, err
	}
	tc, err := c.sec.tls.config()
	if err != nil {
		return chsink.Options{}, err
	}
	return chsink.Options{Addr: splitList(c.addr), Database: c.database, Username: c.username, Password: pass, TLS: tc, Cluster: c.cluster}, nil
}

func clickhouseSinkFlags(fs *flag.FlagSet) func(context.Context, io.Writer, io.Writer) error {
	var k kafkaFlags
	var lf logFlags
	var ch clickHouseFlags
	k.register(fs)
	lf.register(fs)
	ch.register(fs)
	ch.registerCluster(fs, "ClickHouse cluster the tables were migrated for (ams migrate -clickhouse-cluster): inserts into its Distributed tables return once written to a replica of each shard; empty: one server")
	opsAddr := fs.String("ops-addr", ":9104", "listen address of /healthz, /readyz and /metrics (empty: off)")
	group := fs.String("sink-group", "ams-sink-clickhouse", "Kafka consumer group of the ClickHouse sink instances")
	batchRows := fs.Int("batch-rows", 10000, "insert when this many rows are buffered")
	batchInterval := fs.Duration("batch-interval", time.Second, "insert at the latest this long after the first buffered record")
	retryMax := fs.Duration("retry-max", 5*time.Second, "longest backoff between failed inserts (they are retried forever)")
	instanceID := fs.String("instance-id", "", "this instance's stable name (the pod name), unique among live instances: its Kafka group.instance.id (static membership: restarted after a crash, it takes its partitions back at once); empty: dynamic membership")
	session := fs.Duration("kafka-session-timeout", kafkagroup.DefaultSessionTimeout, "Kafka group session timeout: how long the partitions of a crashed instance that is not restarted with its -instance-id wait before they move")
	shutdown := fs.Duration("shutdown-timeout", 10*time.Second, "at shutdown, how long the last insert may take")
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		log, err := lf.logger(stderr)
		if err != nil {
			return err
		}
		if _, err := applyNamespace(fs); err != nil {
			return err
		}
		cho, err := ch.options()
		if err != nil {
			return err
		}
		kopts, err := k.opts()
		if err != nil {
			return err
		}
		k.logSecurity(log)
		reg, err := schemas.NewRegistry()
		if err != nil {
			return err
		}
		ops := opshttp.New(log)
		s, err := chsink.New(chsink.Config{
			Seeds:           k.seeds(),
			Names:           k.names(),
			Group:           *group,
			ClickHouse:      cho,
			BatchRows:       *batchRows,
			BatchInterval:   *batchInterval,
			RetryMax:        *retryMax,
			ShutdownTimeout: *shutdown,
			SessionTimeout:  *session,
			ExtraKafkaOpts:  kopts,
			InstanceID:      *instanceID,
			Schemas:         reg,
			Log:             log,
			Metrics:         ops.Registry,
		})
		if err != nil {
			return err
		}
		ops.AddCheck("clickhouse", s.Ready)
		log.Info("clickhouse sink starting", "clickhouse", ch.addr, "database", ch.database, "cluster", ch.cluster, "group", *group, "clickhouse_tls", cho.TLS != nil)
		return runWithOps(ctx, ops, *opsAddr, s.Run)
	}
}
