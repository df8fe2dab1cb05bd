package roles

import (
	"flag"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/ivms/ams/ingest"
	"github.com/ivms/ams/processors/cmdlife"
	"github.com/ivms/ams/processors/presence"
	"github.com/ivms/ams/sinks/egress"
)

// flagged is what every role's Options does.
type flagged interface{ Flags(*flag.FlagSet) }

// TestFlagsOnlyFillTheStruct: for every role, declaring the flags and
// parsing none leaves the Options exactly at its defaults (the flags'
// defaults are the struct's, so `ams config` prints the values in force),
// and a flag given lands in its field.
func TestFlagsOnlyFillTheStruct(t *testing.T) {
	ingestO, egressO, processO := DefaultIngest(), DefaultEgress(), DefaultProcess()
	sinkCH, sinkR, apiO := DefaultSinkClickHouse(), DefaultSinkRedis(), DefaultAPI()
	hook, gw, mig := DefaultMediaHook(), DefaultUploadGateway(), DefaultMigrate()
	roles := map[string]struct {
		o   flagged
		def any
	}{
		"ingest": {&ingestO, DefaultIngest()}, "egress": {&egressO, DefaultEgress()}, "process": {&processO, DefaultProcess()},
		"sink clickhouse": {&sinkCH, DefaultSinkClickHouse()}, "sink redis": {&sinkR, DefaultSinkRedis()}, "api": {&apiO, DefaultAPI()},
		"media-hook": {&hook, DefaultMediaHook()}, "upload-gateway": {&gw, DefaultUploadGateway()}, "migrate": {&mig, DefaultMigrate()},
	}
	for name, r := range roles {
		fs := flag.NewFlagSet(name, flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		r.o.Flags(fs)
		if err := fs.Parse(nil); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := reflect.ValueOf(r.o).Elem().Interface(); !reflect.DeepEqual(got, r.def) {
			t.Errorf("%s: parsing no flag changed the options:\n got %+v\nwant %+v", name, got, r.def)
		}
		if fs.Lookup("log-level") == nil {
			t.Errorf("%s has no -log-level", name)
		}
	}

	fs := flag.NewFlagSet("egress", flag.ContinueOnError)
	o := DefaultEgress()
	o.Flags(fs)
	if err := fs.Parse([]string{"-publish-timeout", "3s", "-kafka-brokers", "k:1", "-mqtt-url", "ssl://m:8883", "-kafka-sasl-username", "u"}); err != nil {
		t.Fatal(err)
	}
	if o.PublishTimeout != 3*time.Second || o.Kafka.Brokers != "k:1" || o.MQTT.URL != "ssl://m:8883" || o.Kafka.Security.Username != "u" {
		t.Errorf("flags did not fill the struct: %+v", o)
	}
}

// TestDefaultsAreTheValuesInForce: no default means "0 = the package's
// default"; each is the package's own constant, so flag, struct and package
// agree.
func TestDefaultsAreTheValuesInForce(t *testing.T) {
	p := DefaultProcess()
	if p.HeartbeatTimeout != presence.DefaultHeartbeatTimeout || p.CommandMaxInFlight != cmdlife.DefaultMaxInFlight ||
		p.CommandReplyTimeout != cmdlife.DefaultReplyTimeout || p.CommandQueueTTL != cmdlife.DefaultQueueTTL ||
		p.CommandMaxListBytes != cmdlife.DefaultMaxListBytes {
		t.Errorf("process defaults differ from the packages': %+v", p)
	}
	for name, v := range map[string]int64{"heartbeat-timeout": int64(p.HeartbeatTimeout), "command-max-inflight": int64(p.CommandMaxInFlight),
		"handshake-burst": int64(p.HandshakeBurst), "frame-burst": int64(p.FrameBurst), "handshake-every": int64(p.HandshakeEvery),
		"frame-every": int64(p.FrameEvery), "upload-credential-ttl": int64(p.Upload.CredentialTTL), "command-max-list-bytes": int64(p.CommandMaxListBytes)} {
		if v == 0 {
			t.Errorf("process -%s defaults to 0 (a package default that `ams config` would not show)", name)
		}
	}
	if e := DefaultEgress(); e.PublishTimeout != egress.DefaultPublishTimeout {
		t.Errorf("egress publish timeout %s, package %s", e.PublishTimeout, egress.DefaultPublishTimeout)
	}
	if i := DefaultIngest(); i.Queue != ingest.DefaultQueueSize {
		t.Errorf("ingest queue %d, package %d", i.Queue, ingest.DefaultQueueSize)
	}
}
