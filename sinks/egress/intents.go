package egress

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/kafkaconsume"
	"github.com/ivms/ams/schemas"
)

// At most once (README.md, "At most once"): before publishing an
// at_most_once frame a worker writes its intent (a receipt with status
// publishing) and waits for Kafka's acknowledgement. The next owner of the
// partition, before it publishes its first at_most_once frame, reads the
// receipts written since the first uncommitted frame was produced
// (scanReceipts) and, for each at_most_once frame it meets:
//
//   - an outcome is recorded (published, delivery_unknown,
//     expired_before_publish): the frame is done, nothing is published or
//     written again;
//   - only the intent is recorded: the earlier owner stopped between the
//     intent and the outcome, the device may have the frame, so it is not
//     published again: a receipt delivery_unknown is written instead (the
//     processor makes the command FAILED delivery_unknown);
//   - nothing is recorded: it is published (intent first).

// scanReceipts returns frame_id -> receipt status of the command frames on
// ams.downlink.receipts written at or after since, in the receipts
// partition that holds the frames of downlink partition partition (the
// same number when both topics have as many partitions, as `ams migrate`
// creates them; otherwise every partition). A published, delivery_unknown
// or expired_before_publish status wins over an intent.
func (e *Egress) scanReceipts(ctx context.Context, partition int32, since time.Time) (map[string]string, error) {
	topic := e.cfg.Names.DownlinkReceipts
	adm := kadm.NewClient(e.cl.Load())
	td, err := adm.ListTopics(ctx, e.cfg.Names.Downlink, topic)
	if err != nil {
		return nil, fmt.Errorf("list topics: %w", err)
	}
	parts := []int32{partition}
	if len(td[topic].Partitions) != len(td[e.cfg.Names.Downlink].Partitions) {
		parts = td[topic].Partitions.Numbers()
	}
	starts, err := adm.ListOffsetsAfterMilli(ctx, since.UnixMilli(), topic)
	if err != nil {
		return nil, fmt.Errorf("list offsets of %s after %v: %w", topic, since, err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("list end offsets of %s: %w", topic, err)
	}
	from := map[int32]kgo.Offset{}
	want := map[int32]int64{} // end offset (exclusive) per partition
	for _, p := range parts {
		s, ok1 := starts.Lookup(topic, p)
		en, ok2 := ends.Lookup(topic, p)
		if !ok1 || !ok2 || s.Err != nil || en.Err != nil {
			return nil, fmt.Errorf("offsets of %s/%d: %v %v", topic, p, s.Err, en.Err)
		}
		if s.Offset >= 0 && s.Offset < en.Offset {
			from[p] = kgo.NewOffset().At(s.Offset)
			want[p] = en.Offset
		}
	}
	out := map[string]string{}
	if len(want) == 0 {
		return out, nil
	}
	opts := append([]kgo.Opt{kgo.SeedBrokers(e.cfg.Seeds...)}, e.cfg.KafkaOpts...)
	opts = append(opts, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}), kgo.FetchMaxWait(250*time.Millisecond))
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	n := 0
	err = kafkaconsume.ReadUntil(ctx, cl, topic, want, nil, func(r *kgo.Record) {
		var rc schemas.DownlinkReceipt
		if r.Value == nil || e.codec.Decode(r.Value, &rc) != nil || rc.CommandID == nil {
			return
		}
		n++
		if cur := out[rc.FrameID]; cur == "" || cur == schemas.ReceiptPublishing {
			out[rc.FrameID] = rc.Status
		}
	}, nil)
	if err != nil {
		return nil, err
	}
	e.log.Info("egress: read the receipts of earlier owners", "partition", partition, "since", since, "command_receipts", n)
	return out, nil
}
