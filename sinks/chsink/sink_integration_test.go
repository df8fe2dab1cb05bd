//go:build integration

package chsink_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/testkit/testenv"
	"github.com/ivms/ams/schemas"
	"github.com/ivms/ams/sinks/chsink"
)

func TestMigrateIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := newEnv(t, testenv.ClickHouseAddr()) // migrated once
	all, err := chsink.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	applied, err := chsink.Migrate(ctx, e.conn, e.db, quietLog())
	if err != nil || len(applied) != 0 {
		t.Fatalf("second Migrate applied %d migrations, err %v; want none", len(applied), err)
	}
	version, err := chsink.ServerVersion(ctx, e.conn)
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, m := range all {
		if m.AppliesTo(version) {
			want++
		}
	}
	if want == len(all) {
		t.Logf("ClickHouse %s runs every migration (none skipped)", version)
	}
	if n := e.count("SELECT count() FROM {db}.schema_migrations"); n != uint64(want) {
		t.Fatalf("schema_migrations holds %d rows, want %d (of %d migrations, those for ClickHouse %s)", n, want, len(all), version)
	}
	if err := chsink.CheckMigrated(ctx, e.conn, e.db); err != nil {
		t.Fatalf("CheckMigrated: %v", err)
	}
	if err := chsink.CheckMigrated(ctx, e.conn, e.db+"_absent"); !errors.Is(err, chsink.ErrNotMigrated) {
		t.Fatalf("CheckMigrated on a missing database = %v, want ErrNotMigrated", err)
	}
	// Every view answers.
	for _, v := range []string{"presence_intervals", "presence_daily_uptime", "command_summary", "device_config_latest", "rejects_by_reason", "presence_now", "heartbeats_per_hour"} {
		e.count("SELECT count() FROM {db}." + v)
	}
}

// TestSinkAllTopics sends records of every topic plus undecodable ones, then
// replays everything with a second consumer group: every table and view
// still reads each record once.
func TestSinkAllTopics(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testenv.ClickHouseAddr())
	run := testenv.Unique(t, "r")
	now := time.Now().UTC().Truncate(time.Millisecond)
	const nEv = 3000
	e.produce(e.names.DeviceEvents, deviceEvents(run, nEv, 50, now.Add(-time.Hour))...)
	connAt := now.Add(-2 * time.Hour)
	e.produce(e.names.DeviceEvents, &schemas.DeviceEvent{EventID: run + "-conn", SN: "SN00001", Kind: schemas.EventConnection,
		Connection: &schemas.Connection{Connected: true, Reason: "hello", ClientID: "c1", ConnectedAt: &connAt}, IngestTime: now, ProcessedAt: now})
	since := now.Add(-30 * time.Minute)
	e.produce(e.names.Presence,
		&schemas.Presence{EventID: run + "-p1", SN: "SN00001", Online: true, Reason: schemas.PresenceConnected, At: since, Seq: 1},
		&schemas.Presence{EventID: run + "-p2", SN: "SN00001", Online: false, Reason: schemas.PresenceHeartbeatTimeout, At: now, Since: &since, IntervalMs: now.Sub(since).Milliseconds(), Seq: 2})
	reply := `{"iReboot":1}`
	e.produce(e.names.CommandEvents,
		&schemas.CommandEvent{EventID: run + "-c1", CommandID: "cmd1", SN: "SN00001", Kind: "reboot", Code: 313, State: schemas.CommandAccepted, At: now, Seq: 1},
		&schemas.CommandEvent{EventID: run + "-c2", CommandID: "cmd1", SN: "SN00001", Kind: "reboot", Code: 313, State: schemas.CommandSucceeded, At: now.Add(250 * time.Millisecond), Reply: &reply, Seq: 2})
	e.produce(e.names.Rejects, &schemas.Reject{RejectID: run + "-rj1", Stage: schemas.StageIngest, Reason: "bad_hex", SN: "SN00002", Payload: []byte("zz"), At: now})
	bt := now.Add(-time.Second)
	e.produce(e.names.UplinkRaw, &schemas.UplinkRaw{Kind: schemas.UplinkFrame, SN: "SN00001", Topic: "/ivms/pub/SN00001", Payload: []byte(`{"x":1}`), BrokerTime: &bt, IngestTime: now, Ingest: "i1"})
	// Undecodable: garbage, a presence on the device events topic, an empty value.
	presence, _ := e.reg.Encode(&schemas.Presence{EventID: "x", SN: "SN9", At: now})
	ctx := context.Background()
	e.produceRaw(ctx,
		&kgo.Record{Topic: e.names.DeviceEvents, Key: []byte("SN9"), Value: []byte("not avro at all")},
		&kgo.Record{Topic: e.names.DeviceEvents, Key: []byte("SN9"), Value: presence},
		&kgo.Record{Topic: e.names.CommandEvents, Key: []byte("SN9"), Value: nil})

	check := func(label string) {
		t.Helper()
		e.waitCount("SELECT uniqExact(reject_id) FROM {db}.rejects", 4, 30*time.Second)
		e.waitCount("SELECT count() FROM {db}.uplink_raw FINAL", 1, 30*time.Second)
		for q, want := range map[string]uint64{
			"SELECT count() FROM {db}.device_events FINAL":                                   nEv + 1,
			"SELECT uniqExact(event_id) FROM {db}.device_events":                             nEv + 1,
			"SELECT count() FROM {db}.device_events FINAL WHERE config_ok = 1":               nEv / 10,
			"SELECT count() FROM {db}.device_events FINAL WHERE ssid = 'home'":               nEv / 20,
			"SELECT count() FROM {db}.device_events FINAL WHERE conn_connected = 1":          1,
			"SELECT count() FROM {db}.device_config_latest":                                  5,
			"SELECT count() FROM {db}.presence FINAL":                                        2,
			"SELECT count() FROM {db}.presence_intervals":                                    1,
			"SELECT count() FROM {db}.commands FINAL":                                        2,
			"SELECT count() FROM {db}.command_summary WHERE latency_ms = 250":                1,
			"SELECT count() FROM {db}.rejects FINAL":                                         4,
			"SELECT count() FROM {db}.rejects FINAL WHERE stage = 'SINK'":                    3,
			"SELECT sum(rejects) FROM {db}.rejects_by_reason":                                4,
			"SELECT count() FROM {db}.rejects FINAL WHERE reason = 'not_single_object'":      1,
			"SELECT count() FROM {db}.rejects FINAL WHERE reason = 'wrong_record_type'":      1,
			"SELECT count() FROM {db}.rejects FINAL WHERE reason = 'short_value'":            1,
			"SELECT count() FROM {db}.uplink_raw FINAL":                                      1,
			"SELECT count() FROM {db}.device_config_latest WHERE fw_version NOT LIKE 'V1.%'": 0,
		} {
			e.waitCount(q, want, 30*time.Second)
			if n := e.count(q); n != want {
				t.Errorf("%s: %s = %d, want %d", label, q, n, want)
			}
		}
	}
	// Rows: the device events, 2 presence, 2 commands, 4 rejects (1 + 3 by the sink), 1 uplink.
	const rows = nEv + 1 + 2 + 2 + 4 + 1
	s := e.runSink(testenv.Unique(t, "g1"))
	s.waitInserted(t, rows, 60*time.Second)
	check("first pass")
	s.stop()

	// Replay: a new group reads everything again (and re-produces the same
	// three SINK rejects, same ids).
	s = e.runSink(testenv.Unique(t, "g2"))
	s.waitInserted(t, rows+3, 60*time.Second)
	check("after replay")
	s.stop()
	t.Logf("device_events raw rows after replay: %d (each event twice), deduplicated: %d",
		e.count("SELECT count() FROM {db}.device_events"), e.count("SELECT count() FROM {db}.device_events FINAL"))
	var cfg struct {
		fw, ssid string
		strength int32
		capacity int64
	}
	if err := e.conn.QueryRow(ctx, fmt.Sprintf("SELECT fw_version, ssid, wifi_strength, tf_card_capacity_size FROM %s.device_config_latest WHERE sn = 'SN00000'", e.db)).
		Scan(&cfg.fw, &cfg.ssid, &cfg.strength, &cfg.capacity); err != nil {
		t.Fatal(err)
	}
	// SN00000's last configuration is event 2950: firmware V1.1, no Wi-Fi.
	if cfg.fw != "V1.1" || cfg.ssid != "" || cfg.strength != 0 || cfg.capacity != 30000 {
		t.Errorf("latest config of SN00000 = %+v", cfg)
	}
}
