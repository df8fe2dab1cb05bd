package api

import (
	"context"

	"github.com/twmb/franz-go/pkg/kgo"
)

// KafkaProducer is a Producer over a franz-go client. Build the client with
// kgo.RequiredAcks(kgo.AllISRAcks()) (the default, with idempotent writes)
// so that an answer is given only after every in-sync replica has the record.
type KafkaProducer struct {
	Client *kgo.Client
}

// ProduceSync writes one record keyed by key and waits for its acknowledgement.
func (p KafkaProducer) ProduceSync(ctx context.Context, topic string, key, value []byte) error {
	return p.Client.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: key, Value: value}).FirstErr()
}
