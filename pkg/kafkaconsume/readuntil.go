package kafkaconsume

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"
)

// ReadUntil reads partitions of topic with cl (a client consuming them
// directly, kgo.ConsumePartitions, no group) until each partition of until
// has delivered every record below its end offset (exclusive; the map is
// emptied as partitions finish). each sees those records in offset order
// per partition (control records too, if the client keeps them; records at
// or past a partition's end are skipped). After each poll, after (if not
// nil) runs, e.g. to write out a batch. limit (if not nil) bounds the
// records of the next poll (<= 0: no bound).
//
// It is for a bounded read of the log (a rebuild, a new owner reading what
// earlier owners wrote), never a live consumer: a fetch error stops it, as
// does ctx, with an error naming the topic and partition.
func ReadUntil(ctx context.Context, cl *kgo.Client, topic string, until map[int32]int64,
	limit func() int, each func(*kgo.Record), after func() error) error {
	for len(until) > 0 {
		max := 0
		if limit != nil {
			max = limit()
		}
		fetches := cl.PollRecords(ctx, max)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("reading %s: %w", topic, err)
		}
		var ferr error
		fetches.EachError(func(t string, p int32, err error) {
			if ferr == nil {
				ferr = fmt.Errorf("reading %s/%d: %w", t, p, err)
			}
		})
		if ferr != nil {
			return ferr
		}
		fetches.EachRecord(func(r *kgo.Record) {
			end, ok := until[r.Partition]
			if !ok || r.Offset >= end {
				return
			}
			if r.Offset+1 >= end {
				delete(until, r.Partition)
			}
			each(r)
		})
		if after != nil {
			if err := after(); err != nil {
				return err
			}
		}
	}
	return nil
}
