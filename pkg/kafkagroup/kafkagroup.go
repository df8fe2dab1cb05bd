// Package kafkagroup holds what every consumer of ams needs for static
// group membership (KIP-345): the session timeout chosen for it and an
// explicit leave at a graceful stop.
//
// A static member (kgo.InstanceID) keeps its partitions while it is away,
// until its session times out: a crashed instance restarted with the same
// instance id takes them back at once, with no rebalance and no wait.
// franz-go never sends LeaveGroup for a static member, so without Leave a
// graceful stop (scale-in, a handover in a test) would also leave its
// partitions unowned for a whole session timeout.
package kafkagroup

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// DefaultSessionTimeout is the group session timeout of every ams
// consumer. With static membership it no longer bounds a crash that is
// restarted (the restart takes the partitions back at once); it bounds a
// crash that is not restarted with the same instance id (a lost node, a
// pod rescheduled under another name), after which the partitions move.
// 30 s covers an in-place container restart with its first back-offs and
// keeps the cost of a lost instance below the former 45 s.
const DefaultSessionTimeout = 30 * time.Second

// Opts returns the group options of a member: static membership with
// instanceID (none when empty) and the session timeout (franz-go's default
// when zero).
func Opts(instanceID string, session time.Duration) []kgo.Opt {
	var opts []kgo.Opt
	if instanceID != "" {
		opts = append(opts, kgo.InstanceID(instanceID))
	}
	if session > 0 {
		opts = append(opts, kgo.SessionTimeout(session))
	}
	return opts
}

// Leave removes the static member instanceID from group, as an admin
// would (LeaveGroup v3+ with the instance id and an unknown member id), so
// the group rebalances now instead of after the session timeout. Call it
// after the member's own client is closed (a live client would rejoin).
// cl is any client of the cluster that is not a member of group, or nil to
// build one from opts (seeds and security options). A member that is
// already gone is not an error. With no instance id it does nothing:
// franz-go's Close leaves a dynamic member itself.
func Leave(ctx context.Context, cl *kgo.Client, opts []kgo.Opt, group, instanceID string) error {
	if instanceID == "" {
		return nil
	}
	if cl == nil {
		c, err := kgo.NewClient(opts...)
		if err != nil {
			return fmt.Errorf("leave group %s: client: %w", group, err)
		}
		defer c.Close()
		cl = c
	}
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Group = group
	m := kmsg.NewLeaveGroupRequestMember()
	m.InstanceID = &instanceID
	reason := "graceful stop"
	m.Reason = &reason
	req.Members = append(req.Members, m)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("leave group %s as %s: %w", group, instanceID, err)
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return fmt.Errorf("leave group %s as %s: %w", group, instanceID, err)
	}
	for _, mr := range resp.Members {
		if err := kerr.ErrorForCode(mr.ErrorCode); err != nil && !errors.Is(err, kerr.UnknownMemberID) {
			return fmt.Errorf("leave group %s as %s: %w", group, instanceID, err)
		}
	}
	return nil
}
