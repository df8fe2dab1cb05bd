//go:build integration

package chsink_test

import (
	"context"
	"fmt"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/ivms/ams/pkg/testkit/mqttconform"
	"github.com/ivms/ams/pkg/testkit/testenv"
)

// groupPosition returns the sum over topic's partitions of the group's
// committed offsets and of the end offsets.
func groupPosition(ctx context.Context, adm *kadm.Client, group, topic string) (committed, end int64, err error) {
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, 0, err
	}
	ends.Each(func(o kadm.ListedOffset) { end += o.Offset })
	offs, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		return 0, 0, err
	}
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic && o.Err == nil && o.At > 0 {
			committed += o.At
		}
	})
	return committed, end, nil
}

// TestBackPressureClickHouseDown measures what the ClickHouse sink (the
// ams binary) does while ClickHouse is down and events keep coming at a
// steady rate: its memory stays flat (it holds one batch and stops
// fetching), the backlog waits in Kafka (lag grows by the production rate),
// and after ClickHouse returns it catches up with nothing lost and nothing
// doubled. The figures (rate, lag, RSS, catch-up rate) are logged for
// docs/OPERATIONS.md; only the behaviour is asserted.
func TestBackPressureClickHouseDown(t *testing.T) {
	t.Parallel()
	const (
		rate    = 1000 // events per second
		tick    = 100 * time.Millisecond
		upFirst = 5 * time.Second
		outage  = 20 * time.Second
		after   = 5 * time.Second // production continues this long after ClickHouse is back
	)
	ch := startPrivateClickHouse(t)
	e := newEnv(t, ch.addr)
	run := testenv.Unique(t, "bp")
	total := int(rate * (upFirst + outage + after) / time.Second)
	events := deviceEvents(run, total, 300, time.Now().UTC().Add(-time.Hour))
	group := testenv.Unique(t, "bp-sink")
	opsPort := freePort(t)

	// The sink, as in production: the ams binary, against the private
	// ClickHouse (no password, no TLS: its AMS_CLICKHOUSE_* are not passed).
	cmd := exec.Command(amsBin, "sink", "clickhouse",
		"-kafka-brokers", testenv.KafkaBrokers()[0], "-topic-prefix", e.prefix,
		"-clickhouse-addr", ch.addr, "-clickhouse-database", e.db, "-sink-group", group,
		"-ops-addr", fmt.Sprintf("127.0.0.1:%d", opsPort), "-batch-interval", "200ms", "-retry-max", "1s")
	cmd.Env = mqttconform.EnvWithout("AMS_CLICKHOUSE_")
	mqttconform.StartLogged(t, "sink", cmd, 4000)

	// Steady production.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var produced atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		per := int(rate * tick / time.Second)
		next := time.Now()
		for i := 0; i < total; i += per {
			e.produce(e.names.DeviceEvents, events[i:min(i+per, total)]...)
			produced.Add(int64(min(per, total-i)))
			next = next.Add(tick)
			time.Sleep(time.Until(next))
		}
	}()

	adm := kadm.NewClient(testenv.KafkaClient(t))
	type sample struct {
		at             time.Duration
		rss            int64
		committed, end int64
	}
	start := time.Now()
	measure := func() sample {
		c, en, err := groupPosition(ctx, adm, group, e.names.DeviceEvents)
		if err != nil {
			t.Logf("offsets: %v", err)
		}
		return sample{at: time.Since(start), rss: mqttconform.RSSKB(cmd.Process.Pid), committed: c, end: en}
	}
	time.Sleep(upFirst)
	before := measure()

	ch.stop()
	down := time.Now()
	var maxRSS int64
	var last sample
	for time.Since(down) < outage {
		time.Sleep(time.Second)
		last = measure()
		maxRSS = max(maxRSS, last.rss)
	}
	outageRSS := maxRSS
	ch.start()
	up := time.Now()
	backlog := last.end - last.committed
	atUp := measure()

	// Catch-up: until the group is at the end and production is over.
	var caught sample
	for {
		caught = measure()
		maxRSS = max(maxRSS, caught.rss)
		if produced.Load() == int64(total) && caught.committed == caught.end {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("not caught up: %+v", caught)
		}
		time.Sleep(200 * time.Millisecond)
	}
	catchUp := time.Since(up)
	wg.Wait()

	if n := e.count("SELECT count() FROM {db}.device_events FINAL"); n != uint64(total) {
		t.Errorf("device_events FINAL = %d, want %d (lost?)", n, total)
	}
	if n := e.count("SELECT uniqExact(event_id) FROM {db}.device_events"); n != uint64(total) {
		t.Errorf("distinct event ids %d, want %d", n, total)
	}
	if backlog < int64(rate*outage/time.Second/2) {
		t.Errorf("backlog at the end of the outage %d, want about %d: did the sink keep inserting?", backlog, rate*outage/time.Second)
	}
	raw := e.count("SELECT count() FROM {db}.device_events")
	inserted := caught.committed - atUp.committed
	t.Logf("FIGURES ClickHouse down %v at %d events/s: sink RSS %d kB before, max %d kB during the outage, max %d kB including the catch-up; lag at the end of the outage %d records (%.0f s of production); "+
		"caught up %v after ClickHouse returned: %d records committed, %.0f records/s; raw rows %d for %d events (%d inserted twice)",
		outage, rate, before.rss, outageRSS, maxRSS, backlog, float64(backlog)/rate, catchUp.Round(100*time.Millisecond), inserted,
		float64(inserted)/catchUp.Seconds(), raw, total, int64(raw)-int64(total))
}
