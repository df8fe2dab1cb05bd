//go:build integration

package redissink

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	goredis "github.com/redis/go-redis/v9"

	"github.com/ivms/ams/pkg/devicestate"
	"github.com/ivms/ams/pkg/testkit/testenv"
)

// TestFleetCollector: ams_devices_online / ams_devices_offline are the sizes
// of the read model's presence sets at each scrape; with Redis gone the
// series are left out and the scrape still succeeds.
func TestFleetCollector(t *testing.T) {
	ctx := context.Background()
	rdb := goredis.NewClient(testenv.RedisOptions())
	defer rdb.Close()
	keys := devicestate.Keys{Prefix: testenv.Unique(t, "it_fleet") + ":"}
	t.Cleanup(func() { rdb.Del(context.Background(), keys.Online(), keys.Offline()) })
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewFleetCollector(rdb, keys))
	for _, sn := range []string{"A", "B", "C"} {
		if err := rdb.ZAdd(ctx, keys.Online(), goredis.Z{Member: sn}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	rdb.ZAdd(ctx, keys.Offline(), goredis.Z{Member: "D"})
	if n, err := testutil.GatherAndCount(reg, "ams_devices_online", "ams_devices_offline"); err != nil || n != 2 {
		t.Fatalf("series: %d %v", n, err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		got[mf.GetName()] = mf.GetMetric()[0].GetGauge().GetValue()
	}
	if got["ams_devices_online"] != 3 || got["ams_devices_offline"] != 1 {
		t.Fatalf("gauges %v, want online 3, offline 1", got)
	}
	rdb.ZRem(ctx, keys.Online(), "C")
	rdb.ZAdd(ctx, keys.Offline(), goredis.Z{Member: "C"})
	mfs, _ = reg.Gather()
	for _, mf := range mfs {
		got[mf.GetName()] = mf.GetMetric()[0].GetGauge().GetValue()
	}
	if got["ams_devices_online"] != 2 || got["ams_devices_offline"] != 2 {
		t.Fatalf("gauges after a transition %v, want 2 and 2", got)
	}

	// Redis gone: no series, no scrape error.
	dead := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	defer dead.Close()
	reg2 := prometheus.NewRegistry()
	reg2.MustRegister(NewFleetCollector(dead, keys))
	if n, err := testutil.GatherAndCount(reg2); err != nil || n != 0 {
		t.Fatalf("with Redis down: %d series, %v", n, err)
	}
}
