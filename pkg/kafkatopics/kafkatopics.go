// Package kafkatopics names ams's Kafka topics, says how each is configured,
// and creates or checks them.
//
// Every ams topic has the same partition count and is keyed by device serial
// number with Kafka's default murmur2 partitioner, so a processor that owns
// partition p of one topic owns every record of the same devices in every
// other topic (co-partitioning). Check refuses a cluster where that does not
// hold.
package kafkatopics

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// Names holds the name of every topic. Production uses Default(); tests use
// WithPrefix to get a private set.
type Names struct {
	UplinkRaw        string
	Commands         string
	Registry         string
	DeviceEvents     string
	Presence         string
	CommandEvents    string
	Downlink         string
	DownlinkReceipts string
	Rejects          string
	StateDevices     string
}

// Default returns the production topic names of DESIGN.md.
func Default() Names {
	return Names{
		UplinkRaw:        "ams.uplink.raw",
		Commands:         "ams.commands",
		Registry:         "ams.registry",
		DeviceEvents:     "ams.device.events",
		Presence:         "ams.presence",
		CommandEvents:    "ams.command.events",
		Downlink:         "ams.downlink",
		DownlinkReceipts: "ams.downlink.receipts",
		Rejects:          "ams.rejects",
		StateDevices:     "ams.state.devices",
	}
}

// WithPrefix returns the default names, each preceded by prefix (for example
// "it-3f2a." gives "it-3f2a.ams.uplink.raw"). An empty prefix gives Default().
func WithPrefix(prefix string) Names {
	n := Default()
	for _, p := range n.ptrs() {
		*p = prefix + *p
	}
	return n
}

func (n *Names) ptrs() []*string {
	return []*string{&n.UplinkRaw, &n.Commands, &n.Registry, &n.DeviceEvents, &n.Presence,
		&n.CommandEvents, &n.Downlink, &n.DownlinkReceipts, &n.Rejects, &n.StateDevices}
}

// Spec is how one topic is configured.
type Spec struct {
	Name      string
	Compacted bool // cleanup.policy=compact: the latest value per key is kept
}

// Specs lists every topic with its configuration.
func (n Names) Specs() []Spec {
	return []Spec{
		{Name: n.UplinkRaw},
		{Name: n.Commands},
		{Name: n.Registry, Compacted: true},
		{Name: n.DeviceEvents},
		{Name: n.Presence},
		{Name: n.CommandEvents},
		{Name: n.Downlink},
		{Name: n.DownlinkReceipts},
		{Name: n.Rejects},
		{Name: n.StateDevices, Compacted: true},
	}
}

// All returns every topic name.
func (n Names) All() []string {
	specs := n.Specs()
	out := make([]string, len(specs))
	for i, s := range specs {
		out[i] = s.Name
	}
	return out
}

// Layout is the shape the topics must have.
type Layout struct {
	Partitions  int32
	Replication int16
	// Retention of the non-compacted topics, in ms; 0 leaves the broker default.
	RetentionMs int64
	// MinInsyncReplicas is set as min.insync.replicas on every topic created
	// (see MinInsyncFor); 0 leaves the broker default.
	MinInsyncReplicas int16
}

// MinInsyncFor returns the min.insync.replicas ams sets with replication
// factor rf: rf-1, at least 1. With rf 3 (the production default) a write
// acknowledged by acks=all is on at least two brokers, and one broker may be
// down (a rolling restart) without stopping writes; min = rf would stop every
// producer whenever one broker restarts.
func MinInsyncFor(rf int16) int16 {
	if rf <= 2 {
		return 1
	}
	return rf - 1
}

func (s Spec) configs(l Layout) map[string]*string {
	c := map[string]*string{}
	if s.Compacted {
		c["cleanup.policy"] = kadm.StringPtr("compact")
		// Keep tombstones for a day so a restoring processor sees deletes.
		c["delete.retention.ms"] = kadm.StringPtr("86400000")
	} else if l.RetentionMs > 0 {
		c["retention.ms"] = kadm.StringPtr(fmt.Sprint(l.RetentionMs))
	}
	if l.MinInsyncReplicas > 0 {
		c["min.insync.replicas"] = kadm.StringPtr(fmt.Sprint(l.MinInsyncReplicas))
	}
	return c
}

// Ensure creates every missing topic with the layout, then Checks them all.
// Existing topics are left as they are (partition counts are never changed:
// that would move devices between partitions).
func Ensure(ctx context.Context, adm *kadm.Client, n Names, l Layout) error {
	existing, err := adm.ListTopics(ctx, n.All()...)
	if err != nil {
		return fmt.Errorf("list topics: %w", err)
	}
	for _, s := range n.Specs() {
		if existing.Has(s.Name) {
			continue
		}
		// CreateTopic returns the topic's own error as err. Already
		// existing is fine: ListTopics can miss a topic created a moment
		// ago (a rerun while the brokers' metadata catches up).
		if _, err := adm.CreateTopic(ctx, l.Partitions, l.Replication, s.configs(l), s.Name); err != nil &&
			!errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", s.Name, err)
		}
	}
	// A new topic's metadata reaches every broker shortly after CreateTopics
	// answers: retry the check for a while before calling it a failure.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err = Check(ctx, adm, n, l.Partitions)
		if err == nil || !errors.Is(err, ErrLayout) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up waiting: %w)", err, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ErrLayout is returned (wrapped) by Check when the topics are missing, not
// co-partitioned, or a changelog is not compacted.
var ErrLayout = errors.New("kafka topic layout")

// Check verifies that every topic exists, that all have the same partition
// count (want, or any common count when want is 0), and that the compacted
// ones are compacted. Every problem found is reported, joined.
func Check(ctx context.Context, adm *kadm.Client, n Names, want int32) error {
	details, err := adm.ListTopics(ctx, n.All()...)
	if err != nil {
		return fmt.Errorf("list topics: %w", err)
	}
	var problems []error
	counts := map[int32][]string{}
	for _, s := range n.Specs() {
		d, ok := details[s.Name]
		if !ok || d.Err != nil {
			problems = append(problems, fmt.Errorf("%w: topic %s is missing (run `ams migrate`)", ErrLayout, s.Name))
			continue
		}
		counts[int32(len(d.Partitions))] = append(counts[int32(len(d.Partitions))], s.Name)
	}
	if len(counts) > 1 || (want > 0 && len(counts) == 1 && counts[want] == nil) {
		var parts []string
		for c, names := range counts {
			parts = append(parts, fmt.Sprintf("%d: %s", c, strings.Join(names, ",")))
		}
		sort.Strings(parts)
		problems = append(problems, fmt.Errorf("%w: topics are not co-partitioned (want %d partitions each; have %s)", ErrLayout, want, strings.Join(parts, "; ")))
	}
	var compacted []string
	for _, s := range n.Specs() {
		if s.Compacted && details.Has(s.Name) {
			compacted = append(compacted, s.Name)
		}
	}
	if len(compacted) > 0 {
		cfgs, err := adm.DescribeTopicConfigs(ctx, compacted...)
		if err != nil {
			return fmt.Errorf("describe topic configs: %w", err)
		}
		for _, rc := range cfgs {
			if rc.Err != nil {
				problems = append(problems, fmt.Errorf("describe %s: %w", rc.Name, rc.Err))
				continue
			}
			ok := false
			for _, c := range rc.Configs {
				if c.Key == "cleanup.policy" && c.Value != nil && strings.Contains(*c.Value, "compact") {
					ok = true
				}
			}
			if !ok {
				problems = append(problems, fmt.Errorf("%w: changelog topic %s is not compacted", ErrLayout, rc.Name))
			}
		}
	}
	return errors.Join(problems...)
}
