package keyed

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/ivms/ams/pkg/kafkatopics"
)

// CheckTopology verifies the declared topics against the cluster, like
// kafkatopics.Check does for the ams topic set: every input, the changelog
// and every output exist; the inputs and the changelog have the same
// partition count (co-partitioning); the changelog is compacted. It returns
// the partition count. Every problem found is reported, joined, each wrapping
// kafkatopics.ErrLayout.
func CheckTopology(ctx context.Context, adm *kadm.Client, cfg Config) (int32, error) {
	all := slices.Concat(cfg.Inputs, []string{cfg.Changelog}, cfg.Outputs)
	details, err := adm.ListTopics(ctx, all...)
	if err != nil {
		return 0, fmt.Errorf("list topics: %w", err)
	}
	var problems []error
	for _, t := range all {
		if d, ok := details[t]; !ok || d.Err != nil {
			problems = append(problems, fmt.Errorf("%w: topic %s is missing", kafkatopics.ErrLayout, t))
		}
	}
	var parts int32 = -1
	var counts []string
	mismatch := false
	for _, t := range slices.Concat(cfg.Inputs, []string{cfg.Changelog}) {
		d, ok := details[t]
		if !ok || d.Err != nil {
			continue
		}
		n := int32(len(d.Partitions))
		counts = append(counts, fmt.Sprintf("%s=%d", t, n))
		if parts >= 0 && n != parts {
			mismatch = true
		}
		parts = n
	}
	if mismatch {
		problems = append(problems, fmt.Errorf("%w: inputs and changelog are not co-partitioned (%s)", kafkatopics.ErrLayout, strings.Join(counts, ", ")))
	}
	if d, ok := details[cfg.Changelog]; ok && d.Err == nil {
		cfgs, err := adm.DescribeTopicConfigs(ctx, cfg.Changelog)
		if err != nil {
			return 0, fmt.Errorf("describe topic configs: %w", err)
		}
		rc, err := cfgs.On(cfg.Changelog, nil)
		switch {
		case err != nil:
			problems = append(problems, fmt.Errorf("describe %s: %w", cfg.Changelog, err))
		case rc.Err != nil:
			problems = append(problems, fmt.Errorf("describe %s: %w", cfg.Changelog, rc.Err))
		default:
			compacted := false
			for _, c := range rc.Configs {
				if c.Key == "cleanup.policy" && c.Value != nil && strings.Contains(*c.Value, "compact") {
					compacted = true
				}
			}
			if !compacted {
				problems = append(problems, fmt.Errorf("%w: changelog topic %s is not compacted", kafkatopics.ErrLayout, cfg.Changelog))
			}
		}
	}
	if err := errors.Join(problems...); err != nil {
		return 0, err
	}
	return parts, nil
}
