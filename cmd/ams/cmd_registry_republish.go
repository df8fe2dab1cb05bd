package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/cmd/internal/roles"
	"github.com/ivms/ams/pkg/registryrepublish"
)

// registryRepublishFlags is `ams registry republish`: the recovery of a lost
// changelog partition (docs/OPERATIONS.md, "Recover"): the latest
// registration of every device of the given partitions is written to
// ams.registry again, so the processor registers the devices whose state it
// lost (pkg/registryrepublish).
func registryRepublishFlags(fs *flag.FlagSet) func(context.Context, io.Writer, io.Writer) error {
	k := roles.DefaultKafka()
	if fs.Lookup("kafka-brokers") == nil { // the registry flag set already has them (import-sessions)
		k.Flags(fs)
	}
	parts := fs.String("republish-partitions", "", "partitions of ams.registry to republish, comma-separated (the processor's lost changelog partitions; empty: all)")
	return func(ctx context.Context, stdout, _ io.Writer) error {
		var ps []int32
		for _, s := range roles.SplitList(*parts) {
			p, err := strconv.ParseInt(s, 10, 32)
			if err != nil || p < 0 {
				return fmt.Errorf("republish-partitions: %q is not a partition number", s)
			}
			ps = append(ps, int32(p))
		}
		cl, err := k.Client(kgo.RecordPartitioner(kgo.ManualPartitioner()))
		if err != nil {
			return fmt.Errorf("kafka client: %w", err)
		}
		defer cl.Close()
		rep, err := registryrepublish.Republish(ctx, registryrepublish.Config{Kafka: cl, Topic: k.Names().Registry, Partitions: ps})
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if werr := enc.Encode(rep); werr != nil {
			return errors.Join(err, fmt.Errorf("write report: %w", werr))
		}
		return err
	}
}
