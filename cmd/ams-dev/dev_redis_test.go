package main

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/devicestate"
	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/schemas"
	"github.com/ivms/ams/sinks/redissink"
)

// TestMiniredisRunsTheProjection checks that the embedded Redis of `ams-dev`
// (miniredis) runs what sinks/redissink uses: the Lua scripts by EVALSHA in a
// pipeline (with ZADD/ZREM, HSET, RPUSH, SADD, PUBLISH inside), SCRIPT LOAD,
// ZRANGEBYLEX, HGETALL / HMGET in pipelines, and SUBSCRIBE.
func TestMiniredisRunsTheProjection(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	mr := miniredis.RunT(t)
	rdb := goredis.NewClient(&goredis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	reg, err := schemas.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	names := kafkatopics.WithPrefix("")
	keys := devicestate.Keys{Prefix: "ams:"}
	proj := redissink.NewProjector(rdb, keys, names, reg)
	if err := proj.Load(ctx); err != nil {
		t.Fatal(err)
	}
	store := devicestate.NewStore(rdb, keys)
	const sn = "0505050505000001"
	now := time.Now().UTC().Truncate(time.Millisecond)
	rec := func(topic string, v any) *kgo.Record {
		t.Helper()
		b, err := reg.Encode(v)
		if err != nil {
			t.Fatal(err)
		}
		return &kgo.Record{Topic: topic, Key: []byte(sn), Value: b}
	}
	reply := `{"iRet":0}`
	wake, stop, err := store.WatchCommand(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	applied, skipped, err := proj.Apply(ctx, []*kgo.Record{
		rec(names.Registry, &schemas.Registration{SN: sn, TokenSHA256: "ab", Bound: true, Name: "cam", UpdatedAt: now, UpdatedBy: "t"}),
		rec(names.Presence, &schemas.Presence{EventID: "p1", SN: sn, Online: true, Reason: schemas.PresenceConnected, At: now, Seq: 1}),
		rec(names.DeviceEvents, &schemas.DeviceEvent{EventID: "e1", SN: sn, Kind: schemas.EventHeartbeat, Body: "{}", IngestTime: now, ProcessedAt: now}),
		rec(names.CommandEvents, &schemas.CommandEvent{EventID: "c1-1", CommandID: "c1", SN: sn, Kind: "sd_info", State: schemas.CommandAccepted, At: now, Seq: 1}),
		rec(names.CommandEvents, &schemas.CommandEvent{EventID: "c1-2", CommandID: "c1", SN: sn, Kind: "sd_info", State: schemas.CommandSucceeded, At: now, Seq: 2, Reply: &reply}),
	})
	if err != nil || len(skipped) > 0 {
		t.Fatalf("apply: %v, skipped %v", err, skipped)
	}
	if applied == 0 {
		t.Fatalf("nothing applied")
	}
	select {
	case <-wake:
	case <-ctx.Done():
		t.Fatal("no pub/sub wake-up for the command")
	}
	devs, _, err := store.ListDevices(ctx, true, "", 10)
	if err != nil || len(devs) != 1 || devs[0].SN != sn {
		t.Fatalf("online devices = %+v, %v", devs, err)
	}
	d, ok, err := store.Device(ctx, sn)
	if err != nil || !ok {
		t.Fatalf("device: %v %v", ok, err)
	}
	t.Logf("device: %+v", d)
	c, ok, err := store.Command(ctx, "c1")
	if err != nil || !ok || c.State != schemas.CommandSucceeded {
		t.Fatalf("command = %+v %v %v", c, ok, err)
	}
	if h, err := store.TokenHash(ctx, sn); err != nil || h != "ab" {
		t.Fatalf("token hash = %q %v", h, err)
	}
}
