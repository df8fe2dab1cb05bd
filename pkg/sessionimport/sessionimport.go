// Package sessionimport carries the cameras' AES sessions over from the old
// Python service at cutover. The old service keeps each camera's session
// key and iv in its Redis (`setex` of RedisKeyConstants.mqtt_aes_key and
// mqtt_aes_iv formatted with the sn, see do_rsa_handshake) and a camera
// keeps using them across reconnects. Import reads every pair and writes it
// into the device processors' changelog (ams.state.devices) sealed under the
// KEK, so a processor restoring the partition answers the camera's next
// frame without a new handshake.
//
// Guarantees: it refuses to run while processors of the group are running
// or once the changelog holds any state (it would overwrite it): it is a
// cutover step, run once before the processors first start. Every pair it
// cannot use is reported with its sn and reason. Keys are never logged.
package sessionimport

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/processors/device"
	"github.com/ivms/ams/schemas"
)

// Config configures an import.
type Config struct {
	Old        *goredis.Client // the old service's Redis
	KeyPattern string          // key of a session's AES key, with {sn}, e.g. "mqtt_aes_key:{sn}"
	IVPattern  string          // key of its iv, with {sn}
	Kafka      *kgo.Client     // producer to the changelog (its default partitioner: the sn's partition)
	Names      kafkatopics.Names
	Group      string // consumer group of the device processors
	Registry   *schemas.Registry
	KEK        [32]byte
	Now        func() time.Time // nil: time.Now
}

// Refusal is a session that was not imported, and why.
type Refusal struct {
	SN     string `json:"sn"`
	Reason string `json:"reason"`
}

// Report is the outcome of an import.
type Report struct {
	Found    int       `json:"found"`    // key entries matching KeyPattern
	Imported int       `json:"imported"` // sessions written to the changelog
	Refused  []Refusal `json:"refused"`
}

// ErrNotFresh is returned when the processors run or already wrote state.
var ErrNotFresh = errors.New("sessionimport: the device processors must not have run")

func split(pattern string) (prefix, suffix string, err error) {
	prefix, suffix, ok := strings.Cut(pattern, "{sn}")
	if !ok || strings.Contains(suffix, "{sn}") {
		return "", "", fmt.Errorf("sessionimport: key pattern %q must hold {sn} once", pattern)
	}
	return prefix, suffix, nil
}

// Import reads every session of the old service and writes it to the
// changelog; see the package documentation.
func Import(ctx context.Context, cfg Config) (Report, error) {
	rep := Report{Refused: []Refusal{}}
	kp, ks, err := split(cfg.KeyPattern)
	if err != nil {
		return rep, err
	}
	ip, is, err := split(cfg.IVPattern)
	if err != nil {
		return rep, err
	}
	now := time.Now
	if cfg.Now != nil {
		now = cfg.Now
	}
	if err := checkFresh(ctx, kadm.NewClient(cfg.Kafka), cfg.Names.StateDevices, cfg.Group); err != nil {
		return rep, err
	}
	iter := cfg.Old.Scan(ctx, 0, globEscape(kp)+"*"+globEscape(ks), 1000).Iterator()
	var recs []*kgo.Record
	for iter.Next(ctx) {
		k := iter.Val()
		if !strings.HasPrefix(k, kp) || !strings.HasSuffix(k, ks) || len(k) < len(kp)+len(ks) {
			continue
		}
		rep.Found++
		sn := k[len(kp) : len(k)-len(ks)]
		if !protocol.ValidSN(sn) {
			rep.Refused = append(rep.Refused, Refusal{SN: sn, Reason: "not a valid serial number"})
			continue
		}
		vals, err := cfg.Old.MGet(ctx, k, ip+sn+is).Result()
		if err != nil {
			return rep, fmt.Errorf("sessionimport: read session of %s: %w", sn, err)
		}
		key, _ := vals[0].(string)
		iv, ok := vals[1].(string)
		if !ok {
			rep.Refused = append(rep.Refused, Refusal{SN: sn, Reason: "no iv (" + ip + sn + is + ") beside the key"})
			continue
		}
		sess, err := protocol.SessionFromStrings(key, iv)
		if err != nil {
			rep.Refused = append(rep.Refused, Refusal{SN: sn, Reason: "unusable key or iv: " + err.Error()})
			continue
		}
		v, err := device.ImportedSessionState(cfg.Registry, cfg.KEK, sn, sess, now())
		if err != nil {
			rep.Refused = append(rep.Refused, Refusal{SN: sn, Reason: err.Error()})
			continue
		}
		recs = append(recs, &kgo.Record{Topic: cfg.Names.StateDevices, Key: []byte(sn), Value: v})
	}
	if err := iter.Err(); err != nil {
		return rep, fmt.Errorf("sessionimport: scan %s*%s: %w", kp, ks, err)
	}
	if err := cfg.Kafka.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return rep, fmt.Errorf("sessionimport: write the changelog: %w", err)
	}
	rep.Imported = len(recs)
	return rep, nil
}

// checkFresh refuses when the processors' group has members or the
// changelog holds any record.
func checkFresh(ctx context.Context, adm *kadm.Client, changelog, group string) error {
	groups, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return fmt.Errorf("sessionimport: describe group %s: %w", group, err)
	}
	if g, ok := groups[group]; ok && len(g.Members) > 0 {
		return fmt.Errorf("%w: group %s has %d running members; stop them first", ErrNotFresh, group, len(g.Members))
	}
	ends, err := adm.ListEndOffsets(ctx, changelog)
	if err != nil {
		return fmt.Errorf("sessionimport: end offsets of %s: %w", changelog, err)
	}
	if err := ends.Error(); err != nil {
		return fmt.Errorf("sessionimport: end offsets of %s: %w", changelog, err)
	}
	var nonEmpty []string
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			nonEmpty = append(nonEmpty, fmt.Sprintf("%d", o.Partition))
		}
	})
	if len(ends) == 0 {
		return fmt.Errorf("sessionimport: changelog %s does not exist (run ams migrate)", changelog)
	}
	if len(nonEmpty) > 0 {
		return fmt.Errorf("%w: changelog %s already holds state (partitions %s); importing would overwrite it",
			ErrNotFresh, changelog, strings.Join(nonEmpty, ","))
	}
	return nil
}

func globEscape(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`, `]`, `\]`)
	return r.Replace(s)
}
