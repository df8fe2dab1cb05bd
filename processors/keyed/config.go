package keyed

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Config declares a keyed processor's topology (goka-style: inputs, state
// table, outputs) and how it runs. The runtime checks the declaration against
// the cluster at start-up and refuses to run when it does not hold.
type Config struct {
	// Name names the processor in logs and metrics (label "processor").
	Name string
	// Brokers are the Kafka seed brokers.
	Brokers []string
	// Group is the consumer group; every instance of the processor uses
	// the same one. Kafka fences a stale instance's transactions through
	// this group (KIP-447).
	Group string
	// Inputs are the consumed topics. They must all have the same
	// partition count as the changelog (co-partitioning): partition p of
	// every input belongs to partition p's state.
	Inputs []string
	// Changelog is the compacted state topic: key = state key, value =
	// Handler.EncodeState, nil value = tombstone. Record p of it belongs
	// to partition p of the inputs.
	Changelog string
	// Outputs are the topics the Handler may produce to; they must exist.
	// An Output to any other topic is a Handler bug and stops the runner.
	Outputs []string

	// TransactionalIDPrefix and InstanceID make this process's Kafka
	// transactional id (prefix + InstanceID). Live processes must have
	// different ids (the same id fences the older process). Fencing of a
	// stale instance does not depend on the id (see Runner), so a random
	// InstanceID (the default) is correct; a stable one (pod name) lets a
	// restarted process abort its predecessor's open transaction at once
	// instead of after TransactionTimeout.
	TransactionalIDPrefix string
	InstanceID            string
	// StaticMembership makes the group member static, with InstanceID as
	// its group.instance.id: a crashed instance restarted with the same
	// InstanceID takes its partitions back at once (within the session
	// timeout), without a rebalance. Only with a stable, unique InstanceID.
	StaticMembership bool
	// TransactionTimeout bounds how long a crashed instance's open
	// transaction can hold back readers of the topics it wrote (default
	// 20s). Every transaction of the runner is short: one batch.
	TransactionTimeout time.Duration

	// MaxRecords bounds the input records of one transaction (default
	// 1000), and, per partition, the timers fired in one transaction.
	MaxRecords int
	// MaxLinger is how long a transaction may keep polling to fill up to
	// MaxRecords after its first record (default 0: one poll).
	MaxLinger time.Duration
	// TimerTick is how often due timers are looked for when no input
	// arrives, and the worst extra delay of a timer (default 100ms).
	TimerTick time.Duration

	// SkipCorruptState: when a key's latest changelog record does not
	// decode at restore, keep the key's last good state (its latest
	// record that decodes; none: no state) and record the skip (log and
	// ams_keyed_restore_skipped_total) instead of stopping the partition
	// (the default). An undecodable record that a later record of its key
	// supersedes never stops a restore. Turn it on only to recover a
	// corrupt changelog (docs/OPERATIONS.md): with a KEK missing from the
	// configuration it would drop every session sealed under it.
	SkipCorruptState bool

	// Clock is the handlers' "now" and the timers' clock (default
	// time.Now). Tests pass a fake one.
	Clock func() time.Time
	// Logger receives the runner's logs (default slog.Default()).
	Logger *slog.Logger
	// Registerer receives the runner's metrics; nil registers nowhere.
	Registerer prometheus.Registerer
	// KafkaOpts are extra franz-go options for the runner's clients, applied
	// last (for example kgo.SessionTimeout). Options that would break the
	// runner's guarantees (balancer, isolation level, transactional id,
	// partitioner, callbacks) are overridden.
	KafkaOpts []kgo.Opt
}

func (c Config) withDefaults() (Config, error) {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("no brokers"))
	}
	if c.Group == "" {
		errs = append(errs, errors.New("no consumer group"))
	}
	if len(c.Inputs) == 0 {
		errs = append(errs, errors.New("no input topics"))
	}
	if c.Changelog == "" {
		errs = append(errs, errors.New("no changelog topic"))
	}
	if slices.Contains(c.Inputs, c.Changelog) || slices.Contains(c.Outputs, c.Changelog) {
		errs = append(errs, fmt.Errorf("changelog %s is also an input or output", c.Changelog))
	}
	if c.TransactionalIDPrefix == "" {
		errs = append(errs, errors.New("no transactional id prefix"))
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("keyed config: %w", errors.Join(errs...))
	}
	if c.Name == "" {
		c.Name = c.Group
	}
	if c.InstanceID == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		c.InstanceID = hex.EncodeToString(b[:])
	}
	if c.TransactionTimeout <= 0 {
		c.TransactionTimeout = 20 * time.Second
	}
	if c.MaxRecords <= 0 {
		c.MaxRecords = 1000
	}
	if c.TimerTick <= 0 {
		c.TimerTick = 100 * time.Millisecond
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// TransactionalID is the Kafka transactional id this process uses.
func (c Config) TransactionalID() string { return c.TransactionalIDPrefix + c.InstanceID }
