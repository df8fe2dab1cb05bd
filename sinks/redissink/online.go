package redissink

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"

	"github.com/ivms/ams/pkg/devicestate"
)

// FleetCollector exports the size of the read model's presence sets at each
// scrape: ams_devices_online (ZCARD of devices:online) and
// ams_devices_offline (of devices:offline). Every instance of the sink
// reads the same sets, so a rule takes max() over them. When Redis does not
// answer within 2 s the series are left out of that scrape (the readiness
// check and ams_ready report Redis), rather than failing the whole scrape.
type FleetCollector struct {
	rdb     goredis.UniversalClient
	keys    devicestate.Keys
	online  *prometheus.Desc
	offline *prometheus.Desc
}

// NewFleetCollector returns the collector of keys' presence sets.
func NewFleetCollector(rdb goredis.UniversalClient, keys devicestate.Keys) *FleetCollector {
	return &FleetCollector{rdb: rdb, keys: keys,
		online: prometheus.NewDesc("ams_devices_online",
			"Devices online in the Redis read model (devices:online), read at each scrape.", nil, nil),
		offline: prometheus.NewDesc("ams_devices_offline",
			"Devices known offline in the Redis read model (devices:offline), read at each scrape.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *FleetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.online
	ch <- c.offline
}

// Collect implements prometheus.Collector.
func (c *FleetCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	pipe := c.rdb.Pipeline()
	on := pipe.ZCard(ctx, c.keys.Online())
	off := pipe.ZCard(ctx, c.keys.Offline())
	if _, err := pipe.Exec(ctx); err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.online, prometheus.GaugeValue, float64(on.Val()))
	ch <- prometheus.MustNewConstMetric(c.offline, prometheus.GaugeValue, float64(off.Val()))
}
