// Package namespace derives every name an ams stack owns from one namespace,
// so two stacks (staging and production, two test runs) can share a Kafka
// cluster, an MQTT broker, a Redis and a ClickHouse without touching each
// other's topics, consumer groups, transactional ids, shared subscriptions,
// keys or tables.
//
// Guarantee: for two different valid namespaces (or one namespace and none),
// Derive returns names that differ in every field, and no topic of one is a
// topic of the other (kafkatopics.WithPrefix(TopicPrefix)).
package namespace

import (
	"fmt"
	"regexp"
)

// The names of a stack without a namespace: ams's historical defaults.
const (
	DefaultProcessGroup          = "ams-process-device"
	DefaultTransactionalIDPrefix = "ams-process-device-"
	DefaultEgressGroup           = "ams-egress"
	DefaultSinkRedisGroup        = "ams-sink-redis"
	DefaultSinkClickHouseGroup   = "ams-sink-clickhouse"
	DefaultMQTTShareGroup        = "ams"
	DefaultRedisPrefix           = "ams:"
	DefaultClickHouseDatabase    = "ams"
	DefaultClientIDPrefix        = "ams-"
)

// Names are the names one stack owns.
type Names struct {
	// TopicPrefix precedes every Kafka topic name ("" or "NS.").
	TopicPrefix string
	// Kafka consumer groups and the transactional id prefix of the processor.
	ProcessGroup, TransactionalIDPrefix, EgressGroup, SinkRedisGroup, SinkClickHouseGroup string
	// MQTTShareGroup is ingest's shared-subscription group.
	MQTTShareGroup string
	// ClientIDPrefix starts the MQTT client ids of ams's own clients ("ams-" or
	// "ams-NS-"); it still starts with "ams-", so the broker's rules and
	// ingest's -own-client-prefixes that match "ams-" keep working.
	ClientIDPrefix string
	// RedisPrefix precedes every Redis key.
	RedisPrefix string
	// ClickHouseDatabase holds the ams tables.
	ClickHouseDatabase string
}

var valid = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)

// Validate accepts a namespace usable in every name: a lowercase letter, then
// up to 31 lowercase letters, digits and underscores. "" (no namespace) is valid.
func Validate(ns string) error {
	if ns == "" || valid.MatchString(ns) {
		return nil
	}
	return fmt.Errorf("namespace %q: want a lowercase letter then up to 31 lowercase letters, digits or underscores", ns)
}

// Derive returns the names of namespace ns ("" gives the defaults). It
// panics on an invalid namespace: call Validate on user input first.
func Derive(ns string) Names {
	if err := Validate(ns); err != nil {
		panic(err)
	}
	if ns == "" {
		return Names{
			ProcessGroup: DefaultProcessGroup, TransactionalIDPrefix: DefaultTransactionalIDPrefix,
			EgressGroup: DefaultEgressGroup, SinkRedisGroup: DefaultSinkRedisGroup,
			SinkClickHouseGroup: DefaultSinkClickHouseGroup, MQTTShareGroup: DefaultMQTTShareGroup,
			ClientIDPrefix: DefaultClientIDPrefix, RedisPrefix: DefaultRedisPrefix,
			ClickHouseDatabase: DefaultClickHouseDatabase,
		}
	}
	// Kafka names: "NS." before the default ('.' cannot occur in a namespace,
	// so "a." and "a_b." never prefix each other's names).
	q := func(def string) string { return ns + "." + def }
	return Names{
		TopicPrefix:           ns + ".",
		ProcessGroup:          q(DefaultProcessGroup),
		TransactionalIDPrefix: q(DefaultTransactionalIDPrefix),
		EgressGroup:           q(DefaultEgressGroup),
		SinkRedisGroup:        q(DefaultSinkRedisGroup),
		SinkClickHouseGroup:   q(DefaultSinkClickHouseGroup),
		MQTTShareGroup:        ns + "_" + DefaultMQTTShareGroup,
		ClientIDPrefix:        DefaultClientIDPrefix + ns + "-",
		// ':' cannot occur in a namespace: "a:" never prefixes "a_b:" keys.
		RedisPrefix:        ns + ":" + DefaultRedisPrefix,
		ClickHouseDatabase: ns + "_" + DefaultClickHouseDatabase,
	}
}

// List returns every name, labelled, for logs and tests.
func (n Names) List() [][2]string {
	return [][2]string{
		{"topic prefix", n.TopicPrefix},
		{"process group", n.ProcessGroup},
		{"transactional id prefix", n.TransactionalIDPrefix},
		{"egress group", n.EgressGroup},
		{"redis sink group", n.SinkRedisGroup},
		{"clickhouse sink group", n.SinkClickHouseGroup},
		{"mqtt share group", n.MQTTShareGroup},
		{"mqtt client id prefix", n.ClientIDPrefix},
		{"redis prefix", n.RedisPrefix},
		{"clickhouse database", n.ClickHouseDatabase},
	}
}
