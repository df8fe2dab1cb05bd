package testenv

import (
	"github.com/twmb/franz-go/pkg/kgo"
)

// KafkaOpts returns the franz-go options, beyond the seed brokers, that a test client or an
// in-process role needs to reach the stack's Kafka (TLS and SASL once the stack runs secure).
// Every Kafka client an integration test builds, directly or inside a role's config
// (KafkaOpts fields), appends these.
func KafkaOpts() []kgo.Opt { return nil }

// KafkaSeedOpts returns kgo.SeedBrokers(KafkaBrokers()...) followed by KafkaOpts().
func KafkaSeedOpts() []kgo.Opt {
	return append([]kgo.Opt{kgo.SeedBrokers(KafkaBrokers()...)}, KafkaOpts()...)
}
