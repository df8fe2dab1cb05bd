package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/ivms/ams/cmd/internal/roles"
	"github.com/ivms/ams/schemas"
	"github.com/ivms/ams/sinks/chsink"
)

// rebuildCommand is `ams rebuild -table NAME`: wipe one ClickHouse table
// (and the rollups derived from it) and fill it again from its topic, then
// exit with a JSON report (docs/OPERATIONS.md, Day 2).
func rebuildCommand() command {
	return command{
		name:    "rebuild",
		summary: "wipe one ClickHouse table and rebuild it from its Kafka topic (stop `ams sink clickhouse` first)",
		flags: func(fs *flag.FlagSet) func(context.Context, io.Writer, io.Writer) error {
			k, lf, ch := roles.DefaultKafka(), roles.DefaultLog(), roles.DefaultClickHouse()
			k.Flags(fs)
			lf.Flags(fs)
			ch.Flags(fs)
			ch.ClusterFlag(fs, "ClickHouse cluster of the tables: rebuild refuses cluster mode (not supported); empty: one server")
			table := fs.String("table", "", "the ClickHouse table to rebuild: device_events, presence, commands, rejects or uplink_raw (required)")
			group := fs.String("sink-group", "ams-sink-clickhouse", "Kafka consumer group of the ClickHouse sink: rebuild refuses while it has members, and moves it past the replayed records")
			allowPartial := fs.Bool("allow-partial", false, "rebuild even though retention deleted the start of the topic (the table then lacks the rows older than the topic's retention)")
			batchRows := fs.Int("batch-rows", 10000, "rows per insert")
			return func(ctx context.Context, stdout, stderr io.Writer) error {
				log, err := lf.Logger(stderr)
				if err != nil {
					return err
				}
				if err := roles.ApplyNamespace(fs); err != nil {
					return err
				}
				if *table == "" {
					return errors.New("rebuild: name the table with -table")
				}
				cho, err := ch.Options()
				if err != nil {
					return err
				}
				kopts, err := k.ClientOpts()
				if err != nil {
					return err
				}
				k.LogSecurity(log)
				reg, err := schemas.NewRegistry()
				if err != nil {
					return err
				}
				res, err := chsink.Rebuild(ctx, chsink.RebuildConfig{
					Seeds:        k.Seeds(),
					KafkaOpts:    kopts,
					Names:        k.Names(),
					ClickHouse:   cho,
					Table:        *table,
					Group:        *group,
					AllowPartial: *allowPartial,
					BatchRows:    *batchRows,
				}, reg, log)
				if res != nil {
					b, jerr := json.MarshalIndent(res, "", "  ")
					if jerr != nil {
						return fmt.Errorf("rebuild report: %w", jerr)
					}
					fmt.Fprintln(stdout, string(b))
				}
				return err
			}
		},
	}
}
