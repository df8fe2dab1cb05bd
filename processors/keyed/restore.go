package keyed

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ivms/ams/processors/keyed/internal/store"
)

// changelogReader reads one changelog partition from an offset to the end,
// read-committed.
//
// It issues Fetch requests itself (decoded with kgo.ProcessFetchPartition)
// instead of running a kgo consumer, because it must know its exact position:
// the end of the changelog is often invisible to a consumer — a commit or
// abort marker, records of an aborted transaction, or a batch whose records
// compaction removed — so "the last record I saw is at the high watermark"
// can wait forever, while ProcessFetchPartition returns the next offset to
// ask for, past all of those.
type changelogReader struct {
	cl    *kgo.Client
	topic string
	dec   kgo.Decompressor
	// maxWait bounds one fetch that waits for data (an open transaction
	// holds the last stable offset back).
	maxWait time.Duration
}

// errPositionGone is returned when reading must start before the log start
// offset (retention or DeleteRecords removed it): state consistent up to that
// position cannot be caught up and must be rebuilt from the start.
var errPositionGone = errors.New("changelog position before the log start")

// errRestoreFailed wraps errors that are not worth retrying: the state
// cannot be decoded.
var errRestoreFailed = errors.New("restore failed")

// read applies every committed record of partition p from offset from up to
// the partition's high watermark, as it is when read begins, to apply, and
// returns the offset after the last one read. Reading to the high watermark
// rather than the last stable offset means a transaction still open when
// the read begins (the previous owner's last batch) is waited for and then
// applied or skipped, like the offsets its consumer side commits (which a
// new owner fetches with RequireStable).
//
// Compacted-away offsets and a log start moved by retention are skipped. An
// error from apply is returned wrapped in errRestoreFailed; network and
// leadership errors are retried until ctx is done.
func (c *changelogReader) read(ctx context.Context, p int32, from int64, apply func(key string, value []byte) error) (int64, int, error) {
	return c.readAt(ctx, p, from, func(_ int64, key string, value []byte) error { return apply(key, value) })
}

// readAt is read with each record's offset passed to apply.
func (c *changelogReader) readAt(ctx context.Context, p int32, from int64, apply func(offset int64, key string, value []byte) error) (int64, int, error) {
	var (
		leader  int32 = -1
		topicID [16]byte
		target  int64 = -1
		pos           = from
		n       int
		backoff = 50 * time.Millisecond
	)
	retry := func(err error) error {
		leader = -1
		select {
		case <-ctx.Done():
			return fmt.Errorf("changelog %s/%d at %d: %w (last error: %v)", c.topic, p, pos, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
		return nil
	}
	for {
		if leader < 0 {
			var err error
			if leader, topicID, err = c.leader(ctx, p); err != nil {
				if rerr := retry(err); rerr != nil {
					return pos, n, rerr
				}
				continue
			}
		}
		if target < 0 {
			start, end, err := c.bounds(ctx, leader, p)
			if err != nil {
				if rerr := retry(err); rerr != nil {
					return pos, n, rerr
				}
				continue
			}
			target = end
			if pos < start {
				if pos > 0 {
					return pos, n, fmt.Errorf("changelog %s/%d: offset %d, log start %d: %w", c.topic, p, pos, start, errPositionGone)
				}
				pos = start
			}
		}
		if pos >= target {
			return pos, n, nil
		}

		req := kmsg.NewPtrFetchRequest()
		req.ReplicaID = -1
		req.MaxWaitMillis = int32(c.maxWait.Milliseconds())
		req.MinBytes = 1
		req.MaxBytes = 64 << 20
		req.IsolationLevel = 1
		req.SessionEpoch = -1
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = c.topic
		rt.TopicID = topicID
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition = p
		rp.FetchOffset = pos
		rp.LogStartOffset = -1
		rp.PartitionMaxBytes = 16 << 20
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, c.cl.Broker(int(leader)))
		if err == nil {
			err = kerr.ErrorForCode(resp.ErrorCode)
		}
		if err != nil {
			if rerr := retry(err); rerr != nil {
				return pos, n, rerr
			}
			continue
		}
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			if rerr := retry(errors.New("fetch response without the partition")); rerr != nil {
				return pos, n, rerr
			}
			continue
		}
		part := &resp.Topics[0].Partitions[0]
		if err := kerr.ErrorForCode(part.ErrorCode); err != nil {
			if errors.Is(err, kerr.OffsetOutOfRange) {
				target = -1 // re-read the bounds; pos moves to the log start
				continue
			}
			if rerr := retry(err); rerr != nil {
				return pos, n, rerr
			}
			continue
		}
		backoff = 50 * time.Millisecond
		fp, next := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{
			Offset:         pos,
			IsolationLevel: kgo.ReadCommitted(),
			Topic:          c.topic,
			Partition:      p,
		}, part, c.dec, nil)
		if fp.Err != nil {
			if rerr := retry(fp.Err); rerr != nil {
				return pos, n, rerr
			}
			continue
		}
		for _, r := range fp.Records {
			if err := apply(r.Offset, string(r.Key), r.Value); err != nil {
				return pos, n, fmt.Errorf("%w: changelog %s/%d offset %d: %w", errRestoreFailed, c.topic, p, r.Offset, err)
			}
			n++
		}
		if next > pos {
			pos = next
		}
	}
}

// leader finds partition p's leader and the topic's id.
func (c *changelogReader) leader(ctx context.Context, p int32) (int32, [16]byte, error) {
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(c.topic)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, c.cl)
	if err != nil {
		return -1, [16]byte{}, err
	}
	for _, t := range resp.Topics {
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
			return -1, [16]byte{}, fmt.Errorf("metadata of %s: %w", c.topic, err)
		}
		for _, tp := range t.Partitions {
			if tp.Partition == p {
				if err := kerr.ErrorForCode(tp.ErrorCode); err != nil {
					return -1, [16]byte{}, fmt.Errorf("metadata of %s/%d: %w", c.topic, p, err)
				}
				return tp.Leader, t.TopicID, nil
			}
		}
	}
	return -1, [16]byte{}, fmt.Errorf("metadata of %s: no partition %d", c.topic, p)
}

// bounds lists partition p's log start offset and high watermark.
func (c *changelogReader) bounds(ctx context.Context, leader, p int32) (start, end int64, err error) {
	list := func(ts int64) (int64, error) {
		req := kmsg.NewPtrListOffsetsRequest()
		req.ReplicaID = -1
		req.IsolationLevel = 0 // the high watermark, not the last stable offset
		rt := kmsg.NewListOffsetsRequestTopic()
		rt.Topic = c.topic
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition = p
		rp.Timestamp = ts
		rp.CurrentLeaderEpoch = -1
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, c.cl.Broker(int(leader)))
		if err != nil {
			return 0, err
		}
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			return 0, errors.New("list offsets response without the partition")
		}
		rp2 := resp.Topics[0].Partitions[0]
		if err := kerr.ErrorForCode(rp2.ErrorCode); err != nil {
			return 0, err
		}
		return rp2.Offset, nil
	}
	if start, err = list(-2); err != nil {
		return 0, 0, fmt.Errorf("log start of %s/%d: %w", c.topic, p, err)
	}
	if end, err = list(-1); err != nil {
		return 0, 0, fmt.Errorf("high watermark of %s/%d: %w", c.topic, p, err)
	}
	return start, end, nil
}

// undecodable is a changelog record whose value the Handler could not
// decode (DecodeState failed): corrupt, or sealed under a key no longer
// configured.
type undecodable struct {
	offset int64
	err    error
}

// stateLoader applies a partition's changelog records to its store during a
// restore. A record that does not decode does not stop the restore at once:
// it only matters if it is its key's latest record. A later record of the
// same key (a re-sealed state after a KEK rotation, whose superseded records
// compaction has not removed yet) replaces it, and the restore goes on.
// What is left at the end is the key's current state, and finish decides:
// stop the partition (the default), or, with Config.SkipCorruptState, keep
// the key's last good state (the latest record that decoded; none: the key
// has no state) and record each skipped record (log, metric).
type stateLoader[S any] struct {
	load   func(key string, value []byte) error
	failed map[string]undecodable
}

func newStateLoader[S any](load func(key string, value []byte) error) *stateLoader[S] {
	return &stateLoader[S]{load: load, failed: map[string]undecodable{}}
}

func (l *stateLoader[S]) apply(offset int64, key string, value []byte) error {
	if err := l.load(key, value); err != nil {
		l.failed[key] = undecodable{offset: offset, err: err}
		return nil
	}
	delete(l.failed, key)
	return nil
}

// restore reads p's changelog from p.pos into p.st (from the start when that
// position is gone), then applies the undecodable-record policy.
func (r *Runner[S]) restore(ctx context.Context, p *partition[S]) (from, pos int64, n int, err error) {
	from = p.pos
	l := newStateLoader[S](p.st.Load)
	pos, n, err = r.reader.readAt(ctx, p.id, from, l.apply)
	if errors.Is(err, errPositionGone) {
		// The parked state's position was deleted: start over.
		r.log.Warn("changelog position gone; restoring from the start", "partition", p.id, "from", from)
		p.st = store.New[S, Input, Output](r.h)
		from = 0
		l = newStateLoader[S](p.st.Load)
		pos, n, err = r.reader.readAt(ctx, p.id, 0, l.apply)
	}
	if err != nil {
		return from, pos, n, err
	}
	return from, pos, n, r.finishRestore(p.id, l)
}

// finishRestore applies the policy of stateLoader to the keys whose latest
// changelog record did not decode.
func (r *Runner[S]) finishRestore(id int32, l *stateLoader[S]) error {
	if len(l.failed) == 0 {
		return nil
	}
	keys := slices.Sorted(maps.Keys(l.failed))
	if !r.cfg.SkipCorruptState {
		first := l.failed[keys[0]]
		return fmt.Errorf("%w: changelog %s/%d: the latest record of %d keys does not decode (first: key %q at offset %d: %w); "+
			"fix the configuration (a KEK missing from the previous KEKs?), or restart with SkipCorruptState (ams process -restore-skip-corrupt) to keep their last good state",
			errRestoreFailed, r.cfg.Changelog, id, len(keys), keys[0], first.offset, first.err)
	}
	for _, k := range keys {
		u := l.failed[k]
		r.log.Error("restore: skipped an undecodable changelog record; the key keeps its last good state",
			"partition", id, "key", k, "offset", u.offset, "reason", reasonOf(u.err), "err", u.err)
	}
	r.m.restoreSkipped.Add(float64(len(keys)))
	return nil
}

// reasonOf shortens a decode error to the reason logged with a skipped
// record.
func reasonOf(err error) string {
	if s := err.Error(); strings.Contains(s, "KEK") {
		return "sealed_unopenable"
	}
	return "undecodable"
}
