package chsink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/kafkaconsume"
	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/schemas"
)

// RebuildConfig is what Rebuild needs: the same Kafka and ClickHouse
// settings as the sink, the table to rebuild and the live sink's group.
type RebuildConfig struct {
	Seeds      []string
	KafkaOpts  []kgo.Opt // security options of the Kafka client (cmd/ams kafkaFlags)
	Names      kafkatopics.Names
	ClickHouse Options
	// Table is the ClickHouse table to rebuild: one the sink fills from a
	// topic (device_events, presence, commands, rejects, uplink_raw).
	Table string
	// Group is the consumer group of the live ClickHouse sink (default
	// ams-sink-clickhouse). Rebuild refuses while it has members, and at
	// the end commits the replayed end offsets of the table's topic to it,
	// so that the sink, started again, does not insert the replayed
	// records a second time.
	Group string
	// AllowPartial rebuilds even though retention already deleted the
	// start of the topic (the rebuilt table then lacks those rows).
	AllowPartial bool
	// BatchRows is the insert size (default 10000).
	BatchRows int
}

// RebuildResult is what one Rebuild did.
type RebuildResult struct {
	Table     string          `json:"table"`
	Topic     string          `json:"topic"`
	Truncated []string        `json:"truncated"` // the table and the rollups its materialized views fill
	From      map[int32]int64 `json:"from"`      // first offset replayed, per partition
	To        map[int32]int64 `json:"to"`        // end offset (exclusive) replayed, per partition
	Records   int64           `json:"records"`   // data records read
	Rows      int64           `json:"rows"`      // rows inserted
	Rejected  int64           `json:"rejected"`  // records that did not convert (produced to ams.rejects again, same reject ids)
	Committed map[int32]int64 `json:"committed"` // offsets committed to the live sink's group
	Took      string          `json:"took"`
	Warnings  []string        `json:"warnings,omitempty"`
}

// Errors of Rebuild, for errors.Is.
var (
	// ErrSinkRunning: the live sink's group has members; stop the sink first.
	ErrSinkRunning = errors.New("the clickhouse sink is running")
	// ErrLogTruncated: retention deleted the start of the topic, so the log
	// no longer holds every row the table holds.
	ErrLogTruncated = errors.New("the topic no longer holds the whole log")
)

// mvSource matches the FROM of a materialized view's SELECT.
var mvSource = regexp.MustCompile(`\bFROM \{db\}\.([A-Za-z0-9_]+)\b`)

// DerivedTables returns the tables that materialized views fill from
// inserts into table (e.g. device_events -> heartbeats_hourly), from the
// migrations. A rebuild truncates them too, since the replay inserts every
// row into them again.
func DerivedTables(table string) ([]string, error) {
	all, err := Migrations()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range all {
		for _, s := range m.Statements {
			mv := createMVStmt.FindStringSubmatch(s)
			if mv == nil {
				continue
			}
			if src := mvSource.FindStringSubmatch(mv[3]); src != nil && src[1] == table && !slices.Contains(out, mv[2]) {
				out = append(out, mv[2])
			}
		}
	}
	return out, nil
}

// Rebuild wipes one ClickHouse table (and the rollups derived from it) and
// fills it again from its Kafka topic, from the start of the log to the end
// offsets it finds after the wipe, with the same row conversion as the sink.
// It refuses while the live sink (cfg.Group) has members, so nothing else
// writes the table meanwhile, and (unless AllowPartial) when retention has
// already deleted the start of the topic. At the end it commits the end
// offsets to the live sink's group for that topic where the group is
// behind them, so the restarted sink continues after the replay. Records
// that do not convert go to ams.rejects as the sink sends them (same reject
// ids, so ClickHouse's rejects table keeps one row each).
//
// ClickHouse cluster mode is not supported (it refuses): the Distributed
// tables would need TRUNCATE ... ON CLUSTER of every _local table.
func Rebuild(ctx context.Context, cfg RebuildConfig, reg *schemas.Registry, log *slog.Logger) (*RebuildResult, error) {
	start := time.Now()
	if cfg.Group == "" {
		cfg.Group = "ams-sink-clickhouse"
	}
	if cfg.BatchRows <= 0 {
		cfg.BatchRows = 10000
	}
	if cfg.ClickHouse.Cluster != "" {
		return nil, errors.New("rebuild: ClickHouse cluster mode is not supported: truncate the _local tables ON CLUSTER and replay with a new -sink-group")
	}
	db := cfg.ClickHouse.Database
	buf, err := newBuffers(db, cfg.Names)
	if err != nil {
		return nil, err
	}
	var topic string
	var tbl *table
	for tp, rt := range buf.byTopic {
		if rt.t.name == cfg.Table {
			topic, tbl = tp, rt.t
		}
	}
	if tbl == nil {
		var names []string
		for _, t := range buf.tables {
			names = append(names, t.name)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("rebuild: table %q is not one the sink fills (have: %v)", cfg.Table, names)
	}
	derived, err := DerivedTables(cfg.Table)
	if err != nil {
		return nil, err
	}

	ch, err := Open(ctx, cfg.ClickHouse)
	if err != nil {
		return nil, err
	}
	defer ch.Close()
	if err := CheckMigrated(ctx, ch, db); err != nil {
		return nil, err
	}

	opts := append([]kgo.Opt{kgo.SeedBrokers(cfg.Seeds...)}, cfg.KafkaOpts...)
	admCl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	if err := checkGroupEmpty(ctx, adm, cfg.Group); err != nil {
		return nil, err
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("rebuild: start offsets of %s: %w", topic, err)
	}
	if err := starts.Error(); err != nil {
		return nil, fmt.Errorf("rebuild: start offsets of %s: %w", topic, err)
	}
	res := &RebuildResult{Table: cfg.Table, Topic: topic, From: map[int32]int64{}, To: map[int32]int64{}, Committed: map[int32]int64{}}
	var truncated error
	starts.Each(func(o kadm.ListedOffset) {
		res.From[o.Partition] = o.Offset
		if o.Offset > 0 && !cfg.AllowPartial && truncated == nil {
			truncated = fmt.Errorf("rebuild: %w: %s partition %d starts at offset %d (retention); the rebuilt %s would lack those rows (allow it with AllowPartial / -allow-partial)",
				ErrLogTruncated, topic, o.Partition, o.Offset, cfg.Table)
		}
	})
	if truncated != nil {
		return nil, truncated
	}

	res.Truncated = append([]string{cfg.Table}, derived...)
	for _, t := range res.Truncated {
		if err := ch.Exec(ctx, "TRUNCATE TABLE IF EXISTS "+db+"."+t); err != nil {
			return nil, fmt.Errorf("rebuild: truncate %s.%s: %w", db, t, err)
		}
		log.Info("rebuild: truncated", "table", db+"."+t)
	}
	// The end offsets after the wipe: with the sink stopped, everything the
	// table held came from records before them.
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("rebuild: end offsets of %s: %w", topic, err)
	}
	if err := ends.Error(); err != nil {
		return nil, fmt.Errorf("rebuild: end offsets of %s: %w", topic, err)
	}
	from := map[int32]kgo.Offset{}
	want := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		res.To[o.Partition] = o.Offset
		if o.Offset > res.From[o.Partition] {
			from[o.Partition] = kgo.NewOffset().At(res.From[o.Partition])
			want[o.Partition] = o.Offset
		}
	})

	s := &Sink{cfg: Config{Names: cfg.Names, RetryMin: 200 * time.Millisecond, RetryMax: 5 * time.Second},
		ch: ch, reg: reg, log: log, m: NewMetrics(nil), buf: buf, cl: admCl}
	if len(want) > 0 {
		// Control records (transaction markers) are kept so that the replay
		// sees every offset up to the end, including a trailing commit marker.
		ropts := append(slices.Clone(opts),
			kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			kgo.KeepControlRecords(),
			kgo.FetchMaxWait(250*time.Millisecond))
		rcl, err := kgo.NewClient(ropts...)
		if err != nil {
			return nil, fmt.Errorf("kafka client: %w", err)
		}
		defer rcl.Close()
		err = kafkaconsume.ReadUntil(ctx, rcl, topic, want,
			func() int { return cfg.BatchRows - tbl.rows },
			func(r *kgo.Record) {
				if r.Attrs.IsControl() {
					return
				}
				res.Records++
				if reason, err := buf.add(reg, r); err != nil {
					res.Rejected++
					s.reject(r, reason, err)
				}
			},
			func() error {
				if tbl.rows >= cfg.BatchRows || (len(want) == 0 && tbl.rows > 0) {
					n := tbl.rows
					if err := s.insertRows(ctx, tbl, 0, n); err != nil {
						return err
					}
					res.Rows += int64(n)
					tbl.reset()
				}
				if len(s.rejects) > 0 {
					if err := rcl.ProduceSync(ctx, s.rejects...).FirstErr(); err != nil {
						return fmt.Errorf("produce rejects: %w", err)
					}
					s.rejects = s.rejects[:0]
				}
				return nil
			})
		if err != nil {
			return res, fmt.Errorf("rebuild: %w", err)
		}
	}

	// Move the live group past the replay where it is behind, so the sink
	// does not insert the replayed records again (the raw table would
	// deduplicate them, the countState rollups would count them twice).
	if err := checkGroupEmpty(ctx, adm, cfg.Group); err != nil {
		res.Warnings = append(res.Warnings, "offsets not committed: "+err.Error())
	} else {
		committed, err := adm.FetchOffsets(ctx, cfg.Group)
		if err != nil {
			res.Warnings = append(res.Warnings, "offsets not committed: "+err.Error())
		} else {
			var commit kadm.Offsets
			for p, end := range res.To {
				if c, ok := committed.Lookup(topic, p); ok && c.Err == nil && c.At >= end {
					continue
				}
				commit.AddOffset(topic, p, end, -1)
				res.Committed[p] = end
			}
			if len(commit) > 0 {
				resp, err := adm.CommitOffsets(ctx, cfg.Group, commit)
				if err == nil {
					err = resp.Error()
				}
				if err != nil {
					res.Warnings = append(res.Warnings, "offsets not committed: "+err.Error())
					res.Committed = map[int32]int64{}
				}
			}
		}
	}
	res.Took = time.Since(start).Round(time.Millisecond).String()
	log.Info("rebuild: done", "table", cfg.Table, "topic", topic, "records", res.Records, "rows", res.Rows, "rejected", res.Rejected, "took", res.Took)
	return res, nil
}

// checkGroupEmpty fails with ErrSinkRunning when group has members.
func checkGroupEmpty(ctx context.Context, adm *kadm.Client, group string) error {
	groups, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return fmt.Errorf("rebuild: describe group %s: %w", group, err)
	}
	g, ok := groups[group]
	if !ok {
		return nil
	}
	if g.Err != nil {
		return fmt.Errorf("rebuild: describe group %s: %w", group, g.Err)
	}
	if len(g.Members) > 0 {
		return fmt.Errorf("rebuild: %w: group %s has %d members (state %s); stop every `ams sink clickhouse` of it first", ErrSinkRunning, group, len(g.Members), g.State)
	}
	return nil
}
