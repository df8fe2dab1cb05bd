//go:build integration

package main

// TestOpsMetricsExported: every metric and label the alerting rules
// (deploy/prometheus) and the Grafana dashboards (deploy/grafana) name is
// exported by a role. It starts every role as a subprocess, drives each code
// path that creates a labelled series (a fleet with malformed frames and
// stream requests, a command, a bad downlink, a bad event record, a failing
// ClickHouse table, a broker auth call) and scrapes each /metrics.

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/twmb/franz-go/pkg/kgo"

	dashboards "github.com/ivms/ams/deploy/grafana"
	promrules "github.com/ivms/ams/deploy/prometheus"
	"github.com/ivms/ams/pkg/devkit/devicesim"
	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/pkg/testkit/mqttconform"
	"github.com/ivms/ams/pkg/testkit/testenv"
)

// opsForeignMetrics are metrics the rules read that no role exports: up (the
// scrape itself) and kube-state-metrics' pod readiness.
var opsForeignMetrics = map[string]bool{"up": true, "kube_pod_status_ready": true}

// opsTargetLabels are added by Prometheus to every scraped series.
var opsTargetLabels = map[string]bool{"job": true, "instance": true}

func TestOpsMetricsExported(t *testing.T) {
	want, err := promrules.RuleRefs()
	if err != nil {
		t.Fatal(err)
	}
	dash, err := dashboards.Refs()
	if err != nil {
		t.Fatal(err)
	}
	want.Add(dash)

	s := &e2eStack{t: t, procs: map[string]*mqttconform.Process{}}
	s.id = testenv.Unique(t, "opsm")
	s.prefix = s.id + "."
	s.names = kafkatopics.WithPrefix(s.prefix)
	s.redisPrefix = s.id + ":"
	s.chDatabase = s.id
	s.token = hex.EncodeToString(e2eRandomBytes(t, 16))
	t.Cleanup(s.deleteTopics)
	t.Cleanup(s.deleteRedisKeys)
	t.Cleanup(func() {
		if conn, err := s.clickhouse(); err == nil {
			_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+s.chDatabase)
			conn.Close()
		}
	})
	s.kafka = testenv.KafkaClient(t)
	kafkaArgs := []string{"-kafka-brokers", strings.Join(testenv.KafkaBrokers(), ","),
		"-topic-prefix", s.prefix, "-partitions", "2", "-log-level", "info"}
	if out, err := exec.Command(amsBinary, append(append([]string{"migrate"}, kafkaArgs...),
		"-clickhouse-addr", testenv.ClickHouseAddr(), "-clickhouse-database", s.chDatabase)...).CombinedOutput(); err != nil {
		t.Fatalf("ams migrate: %v\n%s", err, out)
	}
	pubPEM, err := os.ReadFile("testdata/cloud_rsa_public.pem")
	if err != nil {
		t.Fatal(err)
	}
	if s.pub, err = protocol.ParsePublicKey(pubPEM); err != nil {
		t.Fatal(err)
	}
	privFile, _ := filepath.Abs("testdata/cloud_rsa_private.pem")
	kekFile := filepath.Join(t.TempDir(), "kek.hex")
	e2eWriteFile(t, kekFile, hex.EncodeToString(e2eRandomBytes(t, 32))+"\n")
	s.broker = mqttconform.StartMosquitto(t, 100)

	roles := map[string]*mqttconform.Process{}
	start := func(name string, args ...string) {
		roles[name] = mqttconform.StartProcess(t, name, amsBinary, append(append(args, kafkaArgs...), "-ops-addr", "127.0.0.1:0")...)
	}
	start("process", "process", "-process-group", s.id+"-process", "-transactional-id-prefix", s.id+"-process-",
		"-instance-id", "p0", "-rsa-private-key-file", privFile, "-kek-file", kekFile,
		"-allow-unregistered") // the fleet below is not registered: this test is about metrics
	start("ingest", "ingest", "-mqtt-url", s.broker.URL, "-mqtt-client-id", "ams-ingest-"+s.id, "-mqtt-share-group", "",
		"-event-connected-filter", "", "-event-disconnected-filter", "", "-instance", "ingest-"+s.id)
	start("egress", "egress", "-mqtt-url", s.broker.URL, "-egress-id", "ams-egress-"+s.id, "-egress-group", s.id+"-egress",
		"-commit-interval", "200ms")
	start("sink-redis", "sink", "redis", "-redis-addr", testenv.RedisAddr(), "-redis-prefix", s.redisPrefix,
		"-sink-group", s.id+"-sink-redis")
	start("sink-clickhouse", "sink", "clickhouse", "-clickhouse-addr", testenv.ClickHouseAddr(),
		"-clickhouse-database", s.chDatabase, "-sink-group", s.id+"-sink-clickhouse", "-batch-interval", "200ms",
		"-retry-max", "500ms")
	roles["api"] = mqttconform.StartProcess(t, "api", amsBinary, append(append([]string{"api"}, kafkaArgs...),
		"-http-addr", "127.0.0.1:0", "-ops-addr", "127.0.0.1:0", "-redis-addr", testenv.RedisAddr(), "-redis-prefix", s.redisPrefix,
		"-api-token", s.token)...)
	s.apiURL = "http://" + roles["api"].APIAddr(t)
	s.apiClient = &http.Client{}

	// A record the ClickHouse sink cannot convert: its rejects counter. Seen
	// before the rejects table goes, since from then on the sink retries its
	// flush (an outage) and converts nothing newer.
	{
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := s.kafka.ProduceSync(ctx, &kgo.Record{Topic: s.names.DeviceEvents, Key: []byte("OPS0000000000001"), Value: []byte("not an event")}).FirstErr()
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		// Its reject comes back through ams.rejects and is inserted: the
		// insert metrics too.
		e2eWaitFor(t, 30*time.Second, "the ClickHouse sink counted the record it could not convert, and inserted its reject", func() (bool, string) {
			text, err := roles["sink-clickhouse"].Metrics()
			if err != nil {
				return false, err.Error()
			}
			for _, m := range []string{"ams_sink_clickhouse_rejects_total{", "ams_sink_clickhouse_rows_inserted_total{", "ams_sink_clickhouse_batch_seconds_bucket{"} {
				if !strings.Contains(text, m) {
					return false, m + " not yet"
				}
			}
			return true, ""
		})
	}

	// Inserts into the rejects table fail from now on: the sink's failure counter.
	conn, err := s.clickhouse()
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Exec(context.Background(), "DROP TABLE "+s.chDatabase+".rejects"); err != nil {
		t.Fatal(err)
	}
	conn.Close()

	// A fleet: handshakes, configurations, heartbeats, stream requests (not
	// configured: unanswered), malformed frames (rejects, by reason).
	prefix := e2eSNPrefix(t)
	f := s.startFleet(devicesim.Config{Devices: 3, SNPrefix: prefix, Heartbeat: time.Second,
		StreamEvery: time.Second, Malformed: 0.3, UplinkQoS: 1})
	waitFleet(t, f, 60*time.Second, "devices ready", func(st devicesim.Stats) (bool, string) {
		return st.Ready == 3, "not yet"
	})
	// A command (command events and inputs), a broker auth decision, bad records
	// for egress and the ClickHouse sink, an empty MQTT payload for ingest.
	s.register(f.sns()[0], e2eRegistration{Bound: true})
	s.waitRegistered(f.sns()[0])
	s.postCommand(f.sns()[0], commandRequest{Kind: "sd_info", Body: []byte(`{"iGetSDInfo":1}`)}, 20*time.Second)
	if code, b := s.apiDo(http.MethodPost, "/v1/emqx/auth", map[string]string{"clientid": "x", "username": "x", "password": "x"}); code >= 500 {
		t.Fatalf("emqx auth: %d %s", code, b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, r := range []*kgo.Record{
		{Topic: s.names.Downlink, Key: []byte(f.sns()[0]), Value: []byte("not a downlink")},
	} {
		if err := s.kafka.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(s.broker.URL).SetClientID("ops-" + s.id))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer pub.Disconnect(100)
	if tok := pub.Publish(protocol.UplinkTopic(f.sns()[0]), 1, false, []byte{}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}

	// Scrape until every wanted series is there (each path above lands
	// asynchronously), then report what is missing.
	var missing []string
	e2eWaitFor(t, 60*time.Second, "every metric and label of the rules and dashboards exported", func() (bool, string) {
		got := map[string]map[string]bool{}
		for name, p := range roles {
			text, err := p.Metrics()
			if err != nil {
				return false, name + ": " + err.Error()
			}
			parser := expfmt.NewTextParser(model.UTF8Validation)
			fams, err := parser.TextToMetricFamilies(strings.NewReader(text))
			if err != nil {
				t.Fatalf("%s: /metrics does not parse: %v", name, err)
			}
			for fname, fam := range fams {
				names := []string{fname}
				if fam.GetType().String() == "HISTOGRAM" {
					names = append(names, fname+"_bucket", fname+"_sum", fname+"_count")
				}
				for _, n := range names {
					if got[n] == nil {
						got[n] = map[string]bool{}
					}
					for _, m := range fam.GetMetric() {
						for _, l := range m.GetLabel() {
							got[n][l.GetName()] = true
						}
						if strings.HasSuffix(n, "_bucket") {
							got[n][model.BucketLabel] = true
						}
					}
				}
			}
		}
		missing = missing[:0]
		for _, m := range want.Metrics() {
			if opsForeignMetrics[m] {
				continue
			}
			ls, ok := got[m]
			if !ok {
				missing = append(missing, m)
				continue
			}
			for l := range want[m] {
				if !ls[l] && !opsTargetLabels[l] {
					missing = append(missing, fmt.Sprintf("%s{%s}", m, l))
				}
			}
		}
		sort.Strings(missing)
		return len(missing) == 0, "not exported by any role: " + strings.Join(missing, ", ")
	})
	t.Logf("%d metrics of the rules and dashboards, all exported", len(want))
}
