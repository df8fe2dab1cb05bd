// Package registryrepublish writes the registrations of ams.registry again,
// so that the device processor registers, once more, devices whose state it
// lost (a lost or truncated changelog partition: docs/OPERATIONS.md,
// "Recover").
//
// Republish reads the registry topic read-committed from its start (the topic
// is compacted, so it keeps every device's latest registration) up to its
// last stable offsets as they are when it starts, keeps the latest value of
// each sn (a tombstone removes it) and produces each one again, unchanged,
// to the partition it was read from. The processor handles the copies like
// any registration: an identical one leaves a device's state as it is, so
// republishing is safe while the processors run and safe to repeat. It is
// not safe while registrations are being changed: a registration written
// while Republish runs can be followed by an older copy, which then wins
// until the device's next registration.
package registryrepublish

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Config configures Republish.
type Config struct {
	// Kafka is the client to read and produce with. It must partition
	// records manually (kgo.ManualPartitioner): each copy goes back to the
	// partition it was read from.
	Kafka *kgo.Client
	// Topic is the registry topic (ams.registry with its prefix).
	Topic string
	// Partitions limits the copy to these partitions (the processor's lost
	// ones); empty means every partition.
	Partitions []int32
	// Idle is how long a poll may bring nothing before the read counts as
	// caught up (default 2s): the end of a partition can be a transaction
	// marker, which no record reaches.
	Idle time.Duration
}

// Report is what Republish did.
type Report struct {
	Topic       string  `json:"topic"`
	Partitions  []int32 `json:"partitions"`
	Read        int     `json:"records_read"`
	Republished int     `json:"republished"`
}

// Republish copies the latest registration of every device of the chosen
// partitions back into the registry topic (see the package comment).
func Republish(ctx context.Context, cfg Config) (Report, error) {
	rep := Report{Topic: cfg.Topic}
	if cfg.Idle <= 0 {
		cfg.Idle = 2 * time.Second
	}
	adm := kadm.NewClient(cfg.Kafka)
	ends, err := adm.ListCommittedOffsets(ctx, cfg.Topic)
	if err != nil {
		return rep, fmt.Errorf("last stable offsets of %s: %w", cfg.Topic, err)
	}
	if err := ends.Error(); err != nil {
		return rep, fmt.Errorf("last stable offsets of %s: %w", cfg.Topic, err)
	}
	starts, err := adm.ListStartOffsets(ctx, cfg.Topic)
	if err != nil {
		return rep, fmt.Errorf("log start offsets of %s: %w", cfg.Topic, err)
	}
	target := map[int32]int64{}
	assign := map[int32]kgo.Offset{}
	var unknown []int32
	for _, p := range cfg.Partitions {
		if _, ok := ends.Lookup(cfg.Topic, p); !ok {
			unknown = append(unknown, p)
		}
	}
	if len(unknown) > 0 {
		return rep, fmt.Errorf("%s has no partitions %v", cfg.Topic, unknown)
	}
	ends.Each(func(o kadm.ListedOffset) {
		if len(cfg.Partitions) > 0 && !slices.Contains(cfg.Partitions, o.Partition) {
			return
		}
		rep.Partitions = append(rep.Partitions, o.Partition)
		start := int64(0)
		if s, ok := starts.Lookup(cfg.Topic, o.Partition); ok {
			start = s.Offset
		}
		if o.Offset > start {
			target[o.Partition] = o.Offset
			assign[o.Partition] = kgo.NewOffset().At(start)
		}
	})
	slices.Sort(rep.Partitions)

	type latest struct {
		part  int32
		value []byte
	}
	regs := map[string]latest{}
	var order []string
	if len(assign) > 0 {
		rd, err := kgo.NewClient(append(cfg.Kafka.Opts(),
			kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{cfg.Topic: assign}),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
		if err != nil {
			return rep, fmt.Errorf("reader: %w", err)
		}
		defer rd.Close()
		done := func() bool { return len(target) == 0 }
		for !done() {
			pctx, cancel := context.WithTimeout(ctx, cfg.Idle)
			fs := rd.PollFetches(pctx)
			cancel()
			if err := ctx.Err(); err != nil {
				return rep, fmt.Errorf("reading %s: %w", cfg.Topic, err)
			}
			var ferr error
			fs.EachError(func(t string, p int32, err error) {
				if !errors.Is(err, context.DeadlineExceeded) && ferr == nil {
					ferr = fmt.Errorf("reading %s/%d: %w", t, p, err)
				}
			})
			if ferr != nil {
				return rep, ferr
			}
			if fs.NumRecords() == 0 {
				break // idle: what is left before the targets is markers or aborted records
			}
			fs.EachRecord(func(r *kgo.Record) {
				end, ok := target[r.Partition]
				if !ok || r.Offset >= end {
					return
				}
				rep.Read++
				k := string(r.Key)
				if r.Value == nil {
					delete(regs, k)
				} else {
					if _, seen := regs[k]; !seen {
						order = append(order, k)
					}
					regs[k] = latest{part: r.Partition, value: r.Value}
				}
				if r.Offset+1 >= end {
					delete(target, r.Partition)
				}
			})
		}
	}
	var recs []*kgo.Record
	for _, k := range order {
		l, ok := regs[k]
		if !ok {
			continue
		}
		recs = append(recs, &kgo.Record{Topic: cfg.Topic, Partition: l.part, Key: []byte(k), Value: l.value})
		delete(regs, k) // a key re-added after a tombstone is listed twice in order
	}
	if len(recs) > 0 {
		if err := cfg.Kafka.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			return rep, fmt.Errorf("republish to %s: %w", cfg.Topic, err)
		}
	}
	rep.Republished = len(recs)
	return rep, nil
}
