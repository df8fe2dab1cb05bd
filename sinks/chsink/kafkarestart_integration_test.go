//go:build integration

package chsink_test

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/devicestate"
	"github.com/ivms/ams/pkg/testkit/kafkabroker"
	"github.com/ivms/ams/pkg/testkit/mqttconform"
	"github.com/ivms/ams/pkg/testkit/testenv"
	"github.com/ivms/ams/schemas"
)

// TestBackPressureKafkaRestart restarts the broker under the ClickHouse
// and Redis sinks (the ams binary) while a transactional writer (as the
// processors write) keeps producing: the writer retries its transaction,
// the sinks reconnect and resume from their committed offsets, ClickHouse
// ends with every event exactly once (FINAL and distinct ids) and Redis with
// every device's latest event. Figures (broker down time, time to catch up)
// are logged for docs/OPERATIONS.md.
func TestBackPressureKafkaRestart(t *testing.T) {
	t.Parallel()
	const (
		rate  = 500
		tick  = 100 * time.Millisecond
		total = 5000
	)
	k := kafkabroker.Start(t)
	e := newEnv(t, testenv.ClickHouseAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	admCl, err := kgo.NewClient(kgo.SeedBrokers(k.Addr))
	if err != nil {
		t.Fatal(err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	if _, err := adm.CreateTopics(ctx, 4, 1, nil, e.names.DeviceEvents, e.names.Presence, e.names.CommandEvents, e.names.Rejects, e.names.UplinkRaw, e.names.Registry); err != nil {
		t.Fatal(err)
	}
	events := deviceEvents(testenv.Unique(t, "kr"), total, 300, time.Now().UTC().Add(-time.Hour))
	group := testenv.Unique(t, "kr-sink")

	cmd := exec.Command(amsBin, "sink", "clickhouse", "-kafka-brokers", k.Addr, "-topic-prefix", e.prefix,
		"-clickhouse-addr", e.chAddr, "-clickhouse-database", e.db, "-sink-group", group, "-ops-addr", "",
		"-batch-interval", "200ms", "-retry-max", "1s")
	cmd.Env = mqttconform.EnvWithout("AMS_KAFKA_") // the private broker is plaintext
	exited := mqttconform.StartLogged(t, "sink", cmd, 4000)

	// The Redis sink too (the stack's Redis), into a prefix of its own. Its
	// keys are deleted after it is killed (cleanups run last-in first-out).
	redisPrefix := testenv.Unique(t, "kr") + ":"
	redisGroup := testenv.Unique(t, "kr-redis")
	rdb := goredis.NewClient(testenv.RedisOptions())
	t.Cleanup(func() {
		if ks, _ := rdb.Keys(context.Background(), redisPrefix+"*").Result(); len(ks) > 0 {
			rdb.Del(context.Background(), ks...)
		}
		_ = rdb.Close()
	})
	rcmd := exec.Command(amsBin, "sink", "redis", "-kafka-brokers", k.Addr, "-topic-prefix", e.prefix,
		"-redis-prefix", redisPrefix, "-sink-group", redisGroup, "-ops-addr", "")
	rcmd.Env = cmd.Env
	rexited := mqttconform.StartLogged(t, "redis-sink", rcmd, 6000)

	// The writer: one transaction per tick, retried (abort, same records)
	// until it commits, as a processor redoes its batch.
	recs := make([]*kgo.Record, 0, total)
	for _, v := range events {
		b, err := e.reg.Encode(v)
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		recs = append(recs, &kgo.Record{Topic: e.names.DeviceEvents, Key: []byte(snOf(v)), Value: b})
	}
	w := k.WriteTxns(ctx, t, testenv.Unique(t, "kr-txn"), recs, int(rate*tick/time.Second), tick)
	stopped, back := k.RestartAfter(ctx, w, total/3, 2*time.Second)
	chResumed := kafkabroker.Resumed(ctx, adm, group, e.names.DeviceEvents)
	redisResumed := kafkabroker.Resumed(ctx, adm, redisGroup, e.names.DeviceEvents)
	// From now on, wait for the Redis sink to show every device's latest
	// event (the read model caught up), concurrently with the checks below.
	lastSeen := map[string]time.Time{}
	for _, v := range events {
		ev := v.(*schemas.DeviceEvent)
		if ev.IngestTime.After(lastSeen[ev.SN]) {
			lastSeen[ev.SN] = ev.IngestTime
		}
	}
	var redisUp time.Time
	redisAt := make(chan error, 1)
	go func() {
		st := devicestate.NewStore(rdb, devicestate.Keys{Prefix: redisPrefix})
		var behind string
		for ctx.Err() == nil {
			select {
			case <-rexited:
				redisAt <- errors.New("the redis sink exited")
				return
			default:
			}
			behind = ""
			for sn, at := range lastSeen {
				d, ok, err := st.Device(ctx, sn)
				if err != nil || !ok || d.LastSeen == nil || d.LastSeen.UnixMilli() != at.UnixMilli() {
					behind = fmt.Sprintf("%s: %+v ok=%v err=%v, want last_seen %v", sn, d, ok, err, at)
					break
				}
			}
			if behind == "" {
				redisUp = time.Now()
				redisAt <- nil
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		redisAt <- fmt.Errorf("redis sink not caught up: %s", behind)
	}()
	t.Logf("broker down %v (from the start of its controlled shutdown to answering again, 2 s stopped)", back.Sub(stopped).Round(100*time.Millisecond))

	lastCommit := w.Wait()
	if n := w.Produced.Load(); n != total {
		t.Fatalf("the writer produced %d of %d", n, total)
	}
	writerDone := lastCommit.Sub(back)
	var caughtUp time.Duration
	for {
		select {
		case <-exited:
			t.Fatal("the sink exited")
		default:
		}
		if e.count("SELECT uniqExact(event_id) FROM {db}.device_events") >= total {
			caughtUp = time.Since(back)
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("ClickHouse holds %d of %d events", e.count("SELECT uniqExact(event_id) FROM {db}.device_events"), total)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := e.count("SELECT count() FROM {db}.device_events FINAL"); n != total {
		t.Errorf("device_events FINAL = %d, want %d", n, total)
	}

	// The Redis sink: every device's last_seen is its latest event (waited
	// for since the broker came back, see redisAt), and its group committed
	// every partition through its last record.
	if err := <-redisAt; err != nil {
		t.Fatal(err)
	}
	redisCaughtUp := redisUp.Sub(back)
	ends, err := adm.ListEndOffsets(ctx, e.names.DeviceEvents)
	if err != nil {
		t.Fatal(err)
	}
	offs, err := adm.FetchOffsets(ctx, redisGroup)
	if err != nil {
		t.Fatal(err)
	}
	ends.Each(func(o kadm.ListedOffset) {
		c, _ := offs.Lookup(o.Topic, o.Partition)
		// The end offset counts the last transaction's commit marker, which
		// a consumer skips: the group commits past the last record, one
		// short of the end (franz-go commits what it returned).
		if o.Offset > 0 && (c.Err != nil || c.At < o.Offset-1) {
			t.Errorf("redis sink group: %s/%d committed %d (%v), end %d", o.Topic, o.Partition, c.At, c.Err, o.Offset)
		}
	})
	raw := e.count("SELECT count() FROM {db}.device_events")
	ms := func(d time.Duration) time.Duration { return d.Round(100 * time.Millisecond) }
	t.Logf("FIGURES broker restart: the ClickHouse sink committed again %v after the broker was back, the Redis sink %v",
		ms((<-chResumed).Sub(back)), ms((<-redisResumed).Sub(back)))
	t.Logf("FIGURES broker restart under %d events/s: writer retried %d transactions, last commit %v after the broker was back; "+
		"ClickHouse held every event %v after the broker was back (%v after the last commit), raw rows %d for %d events; "+
		"Redis showed every device's latest event %v after the broker was back (%v after the last commit), its group committed through the last record",
		rate, w.Retries.Load(), ms(writerDone), ms(caughtUp), ms(caughtUp-writerDone), raw, total, ms(redisCaughtUp), ms(redisCaughtUp-writerDone))
}
