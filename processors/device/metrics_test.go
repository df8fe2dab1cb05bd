package device

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// counterValue returns the value of the counter name{labels}, -1 if absent.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue metric
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return -1
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := testConfig(t, nil)
	cfg.Metrics = reg
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg); err == nil {
		t.Error("registering the metrics twice succeeded")
	}
	f := &feeder{tb: t, p: p}
	s, _ := run(t, p, testT0, nil, f.frame(vectors.SN, vectors.Handshake.Request, testT0))
	hb, _ := vectorFrame(t, "heartbeat")
	run(t, p, testT0, s, f.frame(vectors.SN, hb, testT0))
	run(t, p, testT0, nil, f.frame(vectors.SN, hb, testT0)) // no session
	req, _ := vectorFrame(t, "stream url request")
	run(t, p, testT0, s, f.frame(vectors.SN, req, testT0)) // unbound

	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"ams_device_events_total", map[string]string{"kind": "HANDSHAKE"}, 1},
		{"ams_device_events_total", map[string]string{"kind": "HEARTBEAT"}, 1},
		{"ams_device_events_total", map[string]string{"kind": "STREAM_REQUEST"}, 1},
		{"ams_device_rejects_total", map[string]string{"reason": "no_session"}, 1},
		{"ams_device_downlinks_total", map[string]string{"purpose": "handshake_reply"}, 1},
		{"ams_device_downlinks_total", map[string]string{"purpose": "heartbeat_reply"}, 1},
		{"ams_device_requests_unanswered_total", map[string]string{"request": "stream_url", "reason": "unbound"}, 1},
		{"ams_device_presence_transitions_total", map[string]string{"online": "true", "reason": "first_frame"}, 1},
	} {
		if got := counterValue(t, reg, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}
