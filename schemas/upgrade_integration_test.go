//go:build integration

package schemas_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/devicestate"
	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/testkit/testenv"
	"github.com/ivms/ams/schemas"
	"github.com/ivms/ams/sinks/chsink"
	"github.com/ivms/ams/sinks/redissink"
)

// TestSchemaUpgradeSideBySide is the rollout of step 2 of a schema upgrade
// on one real topic: a step-1 writer (today's DeviceEvent) and a step-2
// writer (with the new optional field) produce to the same
// ams.device.events at the same time, for the same devices. A step-1
// reader and a step-2 reader each decode every record (step 2 sees the
// new field on its records and null on the old ones), and the ClickHouse
// and Redis sinks of both releases take every record, none rejected.
func TestSchemaUpgradeSideBySide(t *testing.T) {
	t.Parallel()
	r := newUpgradeReleases(t)
	names := kafkatopics.WithPrefix(testenv.Unique(t, "upg") + ".")
	admin := testenv.KafkaClient(t)
	testenv.CreateTopics(t, admin, 4, names.All()...)

	const perWriter, devices = 400, 20
	at := time.Now().UTC().Add(-time.Hour).Truncate(time.Millisecond)
	type written struct {
		today schemas.DeviceEvent
		fw    *string // the new field as written; nil for step-1 records
	}
	want := map[string]written{}
	lastSeen := map[string]time.Time{}
	var oldRecs, newRecs []*kgo.Record
	for i := range 2 * perWriter {
		sn := fmt.Sprintf("SN%04d", i%devices)
		fw := fmt.Sprintf("V2.%d", i%7)
		oldEv, newEv := eventPair(fmt.Sprintf("upg-%d", i), sn, fw, at.Add(time.Duration(i)*time.Millisecond))
		if at := oldEv.IngestTime; at.After(lastSeen[sn]) {
			lastSeen[sn] = at
		}
		if i%2 == 0 {
			b, err := r.step1.Encode(oldEv)
			if err != nil {
				t.Fatal(err)
			}
			oldRecs = append(oldRecs, &kgo.Record{Topic: names.DeviceEvents, Key: []byte(sn), Value: b})
			want[oldEv.EventID] = written{today: *oldEv}
		} else {
			b, err := r.step2.Encode(newEv)
			if err != nil {
				t.Fatal(err)
			}
			newRecs = append(newRecs, &kgo.Record{Topic: names.DeviceEvents, Key: []byte(sn), Value: b})
			want[newEv.EventID] = written{today: asToday(newEv), fw: newEv.FirmwareVersion}
		}
	}

	// Both writers at once, each with its own producer, in small batches so
	// their records interleave in every partition.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, recs := range [][]*kgo.Record{oldRecs, newRecs} {
		cl := testenv.KafkaClient(t, kgo.ProducerLinger(0))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < len(recs); i += 20 {
				if err := cl.ProduceSync(ctx, recs[i:min(i+20, len(recs))]...).FirstErr(); err != nil {
					t.Errorf("produce: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	// Readers of both releases decode every record.
	cl := testenv.KafkaClient(t, kgo.ConsumeTopics(names.DeviceEvents), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var values [][]byte
	for len(values) < len(want) && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(rec *kgo.Record) { values = append(values, rec.Value) })
	}
	if len(values) != len(want) {
		t.Fatalf("read %d records, want %d", len(values), len(want))
	}
	interleaved := 0
	for i, v := range values {
		var a schemas.DeviceEvent
		if err := r.step1.Decode(v, &a); err != nil {
			t.Fatalf("step-1 reader, record %d: %v", i, err)
		}
		w := want[a.EventID]
		if !equalEvent(a, w.today) {
			t.Fatalf("step-1 reader: %+v\nwant %+v", a, w.today)
		}
		var b DeviceEvent
		if err := r.step2.Decode(v, &b); err != nil {
			t.Fatalf("step-2 reader, record %d: %v", i, err)
		}
		if !equalEvent(asToday(&b), w.today) || (b.FirmwareVersion == nil) != (w.fw == nil) || (w.fw != nil && *b.FirmwareVersion != *w.fw) {
			t.Fatalf("step-2 reader: %+v (firmware %v), want firmware %v", b, b.FirmwareVersion, w.fw)
		}
		if i > 0 && (string(v[:schemas.HeaderLen]) != string(values[i-1][:schemas.HeaderLen])) {
			interleaved++
		}
	}
	if interleaved == 0 {
		t.Fatal("the two writers' records did not interleave")
	}

	// The sinks of both releases.
	for name, reg := range map[string]*schemas.Registry{"step1": r.step1, "step2": r.step2Sinks} {
		t.Run("clickhouse-"+name, func(t *testing.T) { upgradeClickHouseSink(t, names, reg, len(want)) })
		t.Run("redis-"+name, func(t *testing.T) { upgradeRedisSink(t, names, reg, len(want), lastSeen) })
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// upgradeClickHouseSink runs a ClickHouse sink with reg into a new database
// and waits for every event, none rejected.
func upgradeClickHouseSink(t *testing.T, names kafkatopics.Names, reg *schemas.Registry, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s := testenv.ClickHouseSettings()
	o := chsink.Options{Addr: s.Addr, Database: testenv.Unique(t, "upg"), Username: s.Username, Password: s.Password, TLS: s.TLS}
	conn, err := chsink.Open(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+o.Database); _ = conn.Close() })
	if _, err := chsink.Migrate(ctx, conn, o.Database, quiet()); err != nil {
		t.Fatal(err)
	}
	preg := prometheus.NewRegistry()
	sink, err := chsink.New(chsink.Config{Seeds: testenv.KafkaBrokers(), Names: names, Group: testenv.Unique(t, "upg-ch"),
		ClickHouse: o, BatchInterval: 200 * time.Millisecond, ExtraKafkaOpts: testenv.KafkaOpts(),
		Schemas: reg, Log: quiet(), Metrics: preg})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sink.Run(rctx) }()
	var got uint64
	for ctx.Err() == nil {
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+o.Database+".device_events FINAL").Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got >= uint64(n) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		t.Errorf("sink: %v", err)
	}
	if got != uint64(n) {
		t.Fatalf("device_events has %d rows, want %d", got, n)
	}
	if rej := metricSum(t, preg, "ams_sink_clickhouse_rejects_total", "", ""); rej != 0 {
		t.Fatalf("the sink rejected %v records", rej)
	}
}

// upgradeRedisSink runs a Redis sink with reg into a new prefix, waits for
// every event and checks each device's last_seen, none rejected.
func upgradeRedisSink(t *testing.T, names kafkatopics.Names, reg *schemas.Registry, n int, lastSeen map[string]time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	rdb := goredis.NewClient(testenv.RedisOptions())
	t.Cleanup(func() { _ = rdb.Close() })
	keys := devicestate.Keys{Prefix: testenv.Unique(t, "upg") + ":"}
	t.Cleanup(func() {
		if ks, _ := rdb.Keys(context.Background(), keys.Prefix+"*").Result(); len(ks) > 0 {
			rdb.Del(context.Background(), ks...)
		}
	})
	preg := prometheus.NewRegistry()
	sink, err := redissink.NewSink(redissink.SinkConfig{Seeds: testenv.KafkaBrokers(), Group: testenv.Unique(t, "upg-redis"), KafkaOpts: testenv.KafkaOpts(),
		Projector: redissink.NewProjector(rdb, keys, names, reg), Redis: rdb, Log: quiet(), Metrics: preg})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sink.Run(rctx) }()
	for sink.Consumed() < int64(n) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		t.Errorf("sink: %v", err)
	}
	if sink.Consumed() != int64(n) {
		t.Fatalf("the sink consumed %d records, want %d", sink.Consumed(), n)
	}
	if rej := metricSum(t, preg, "ams_redis_sink_records_total", "outcome", "rejected"); rej != 0 {
		t.Fatalf("the sink rejected %v records", rej)
	}
	st := devicestate.NewStore(rdb, keys)
	for sn, at := range lastSeen {
		d, ok, err := st.Device(ctx, sn)
		if err != nil || !ok || d.LastSeen == nil || !d.LastSeen.Equal(at) {
			t.Fatalf("%s: %+v ok=%v err=%v, want last_seen %v", sn, d, ok, err, at)
		}
	}
}

// metricSum sums the counters named name, of the series whose label has
// value (any series when label is "").
func metricSum(t *testing.T, g prometheus.Gatherer, name, label, value string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				match := label == ""
				for _, lp := range m.GetLabel() {
					match = match || (lp.GetName() == label && lp.GetValue() == value)
				}
				if match {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}
