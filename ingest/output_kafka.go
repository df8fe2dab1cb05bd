package ingest

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// KafkaConfig configures the Kafka output.
type KafkaConfig struct {
	Seeds []string
	// Topics must exist at Connect (ams migrate creates them).
	Topics []string
	// Linger is how long the producer waits to fill a batch.
	Linger time.Duration
	// MaxRecordBytes is the producer's limit on one record batch
	// (kgo.ProducerBatchMaxBytes); 0: DefaultMaxRecordBytes. Give the same
	// value to the Converter, which rejects records above it.
	MaxRecordBytes int
	// MaxBuffered caps the records buffered in the producer; keep it above
	// the pipeline's MaxInflight so Write never blocks.
	MaxBuffered int
	// Opts are applied after the defaults (tests, tuning).
	Opts []kgo.Opt
}

// KafkaOutput writes records with franz-go: idempotent, acks=all, retried
// without limit (a record fails only for a fatal reason: a missing topic, a
// record too large, the client closed), partitioned by key with murmur2
// exactly as Kafka's Java default partitioner (kgo.StickyKeyPartitioner(nil)),
// so a device's records land in the same partition as anything else keyed by
// its sn. Records of one partition are written in the order given.
type KafkaOutput struct {
	cfg KafkaConfig
	cl  *kgo.Client
}

// NewKafkaOutput builds the producer (it connects lazily).
func NewKafkaOutput(cfg KafkaConfig) (*KafkaOutput, error) {
	if cfg.MaxBuffered <= 0 {
		cfg.MaxBuffered = 50000
	}
	if cfg.MaxRecordBytes <= 0 {
		cfg.MaxRecordBytes = DefaultMaxRecordBytes
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Seeds...),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.ProducerLinger(cfg.Linger),
		kgo.MaxBufferedRecords(cfg.MaxBuffered), // retries are unbounded by default
		kgo.ProducerBatchCompression(kgo.Lz4Compression(), kgo.NoCompression()),
		kgo.ProducerBatchMaxBytes(int32(cfg.MaxRecordBytes)),
	}
	opts = append(opts, cfg.Opts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	return &KafkaOutput{cfg: cfg, cl: cl}, nil
}

// Client returns the underlying client (readiness checks).
func (o *KafkaOutput) Client() *kgo.Client { return o.cl }

// Connect checks that the brokers answer and the topics exist.
func (o *KafkaOutput) Connect(ctx context.Context) error {
	if len(o.cfg.Topics) == 0 {
		return o.cl.Ping(ctx)
	}
	adm := kadm.NewClient(o.cl)
	for {
		td, err := adm.ListTopics(ctx, o.cfg.Topics...)
		if err == nil {
			for _, t := range o.cfg.Topics {
				d, ok := td[t]
				if !ok || d.Err != nil {
					return fmt.Errorf("kafka topic %s is missing (run `ams migrate`)", t)
				}
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(time.Second):
		}
	}
}

// Write produces rec; done gets the result.
func (o *KafkaOutput) Write(rec *kgo.Record, done func(error)) {
	// Background: a buffered record is never canceled by a shutdown; Flush
	// bounds the wait instead.
	o.cl.Produce(context.Background(), rec, func(_ *kgo.Record, err error) { done(err) })
}

// Flush waits for every buffered record.
func (o *KafkaOutput) Flush(ctx context.Context) error { return o.cl.Flush(ctx) }

// Close flushes and closes the client.
func (o *KafkaOutput) Close(ctx context.Context) error {
	err := o.cl.Flush(ctx)
	o.cl.Close()
	return err
}
