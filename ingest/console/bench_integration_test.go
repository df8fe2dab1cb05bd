//go:build integration

package console

// BenchmarkConsolePages: each page's whole request (the Redis and ClickHouse
// reads behind it, and rendering) for a fleet of 10,000 cameras, on the
// shared Redis and ClickHouse with a private prefix and database.
//
//	go test -tags integration -run '^$' -bench BenchmarkConsolePages -benchtime 200x ./ingest/console

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	goredis "github.com/redis/go-redis/v9"

	"github.com/ivms/ams/pkg/devicestate"
	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/testkit/testenv"
	"github.com/ivms/ams/schemas"
	"github.com/ivms/ams/sinks/chsink"
)

const benchFleet = 10000

func benchSN(i int) string { return fmt.Sprintf("BENCH%011d", i) }

// seedRedis writes the projection of benchFleet cameras (9 in 10 online).
func seedRedis(b *testing.B, rdb *goredis.Client, keys devicestate.Keys) {
	ctx := context.Background()
	now := time.Now().UnixMilli()
	for start := 0; start < benchFleet; start += 1000 {
		pipe := rdb.Pipeline()
		for i := start; i < start+1000; i++ {
			sn := benchSN(i)
			online := i%10 != 0
			cfg := fmt.Sprintf(`{"sDeviceSn":"%s","sHwVersion":"V1.2","sModelName":"IPC-AI-4M-SIM","sIpAddr":"10.0.%d.%d","sMacAddr":"02:00:5e:00:00:01","sVPNIpAddr":"172.16.0.1","sFwVersion":"V2.3.%d build 231012","sAlphaVer":"A1.0.3","sAiModelVer":"M5.2.0","sIEVer":"IE1.4","iChnCnt":1,"iAlarmIn":1,"iAlarmOut":1,"iNetMethod":0,"iTFCardState":6,"iTFCardCapacitySize":30436,"iTFCardUseSize":%d}`,
				sn, i/256%256, i%256, i%7, i)
			on := "0"
			set := keys.Offline()
			if online {
				on, set = "1", keys.Online()
			}
			pipe.HSet(ctx, keys.Device(sn), "online", on, "since", now-int64(i)*1000, "last_seen", now-int64(i%997)*100,
				"session", on, "config", cfg, "config_at", now-3600000, "registered", "1", "bound", "1",
				"name", fmt.Sprintf("camera %d", i), "reg_updated_at", now-86400000, "reg_updated_by", "bench")
			pipe.ZAdd(ctx, set, goredis.Z{Member: sn})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.Cleanup(func() {
		iter := rdb.Scan(ctx, 0, keys.Prefix+"*", 1000).Iterator()
		var ks []string
		for iter.Next(ctx) {
			ks = append(ks, iter.Val())
		}
		for len(ks) > 0 {
			n := min(len(ks), 500)
			rdb.Del(ctx, ks[:n]...)
			ks = ks[n:]
		}
	})
}

// seedClickHouse writes a week of history of benchFleet cameras, generated
// inside ClickHouse: 20 presence transitions, 50 frames, 2 commands of 4
// states and 1 reject per camera.
func seedClickHouse(b *testing.B, conn driver.Conn, db string) {
	ctx := context.Background()
	now := time.Now().Unix()
	stmts := []string{
		// presence: 20 transitions per camera, alternating, over the last 7 days.
		fmt.Sprintf(`INSERT INTO %[1]s.presence (event_id, sn, online, reason, detail, at, at_ms, since_ms, interval_ms, epoch, seq)
			SELECT concat('p', toString(number)), concat('BENCH', substring(toString(100000000000 + intDiv(number, 20)), 2)),
				toUInt8(number %% 2 = 0), 'heartbeat', '', toDateTime(%[2]d - 604800 + (number %% 20) * 30000),
				toUInt64(%[2]d - 604800 + (number %% 20) * 30000) * 1000,
				if(number %% 20 = 0, toUInt64(0), toUInt64(%[2]d - 604800 + (number %% 20 - 1) * 30000) * 1000), 30000000, 1, toInt64(number %% 20 + 1)
			FROM numbers(%[3]d)`, db, now, benchFleet*20),
		fmt.Sprintf(`INSERT INTO %[1]s.device_events (event_id, sn, kind, cmd_type, sub_type, msg_id, ingest_time, ingest_time_ms, config_ok, fw_version, model_name)
			SELECT concat('e', toString(number)), concat('BENCH', substring(toString(100000000000 + intDiv(number, 50)), 2)),
				arrayElement(['HEARTBEAT', 'CONFIGURATION', 'HANDSHAKE', 'CONNECTION'], number %% 4 + 1), toInt32(number %% 4 + 1), 0, toString(number),
				toDateTime(%[2]d - (number %% 50) * 1700), toUInt64(%[2]d - (number %% 50) * 1700) * 1000, 1,
				concat('V2.3.', toString(intDiv(number, 50) %% 7), ' build 231012'), 'IPC-AI-4M-SIM'
			FROM numbers(%[3]d)`, db, now, benchFleet*50),
		fmt.Sprintf(`INSERT INTO %[1]s.commands (event_id, command_id, sn, kind, code, state, at, at_ms, reason, has_reply, reply, seq)
			SELECT concat('c', toString(number)), concat('cmd', toString(intDiv(number, 4))), concat('BENCH', substring(toString(100000000000 + intDiv(number, 8)), 2)),
				'reboot', 101, arrayElement(['ACCEPTED', 'SENT', 'DELIVERED', 'SUCCEEDED'], number %% 4 + 1),
				toDateTime(%[2]d - 1800 + number %% 4), toUInt64(%[2]d - 1800 + number %% 4) * 1000, '', toUInt8(number %% 4 = 3), '{"iResult":0}', toInt32(number %% 4 + 1)
			FROM numbers(%[3]d)`, db, now, benchFleet*8),
		fmt.Sprintf(`INSERT INTO %[1]s.rejects (reject_id, stage, reason, detail, sn, topic, payload, source_topic, source_partition, source_offset, at, at_ms)
			SELECT concat('r', toString(number)), 'ingest', arrayElement(['bad_frame', 'bad_json', 'unknown_device'], number %% 3 + 1), 'detail',
				concat('BENCH', substring(toString(100000000000 + number), 2)), '/ivms/pub/x', '', 'ams.uplink.raw', 0, toInt64(number),
				toDateTime(%[2]d - number %% 3600), toUInt64(%[2]d - number %% 3600) * 1000
			FROM numbers(%[3]d)`, db, now, benchFleet),
	}
	for _, s := range stmts {
		if err := conn.Exec(ctx, s); err != nil {
			b.Fatalf("seed: %v\n%s", err, s)
		}
	}
}

func BenchmarkConsolePages(b *testing.B) {
	ctx := context.Background()
	id := testenv.Unique(b, "console_bench")
	keys := devicestate.Keys{Prefix: id + ":"}
	rdb := goredis.NewClient(testenv.RedisOptions())
	b.Cleanup(func() { rdb.Close() })
	seedRedis(b, rdb, keys)

	chOpts := chsink.Options{Addr: []string{testenv.ClickHouseAddr()}, Database: id}
	conn, err := chsink.Open(ctx, chOpts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+id)
		conn.Close()
	})
	if _, err := chsink.Migrate(ctx, conn, id, slog.New(slog.DiscardHandler)); err != nil {
		b.Fatal(err)
	}
	seedClickHouse(b, conn, id)

	hist, err := NewHistory(id, func(ctx context.Context) (driver.Conn, error) { return chsink.Open(ctx, chOpts) })
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { hist.Close() })
	reg, err := schemas.NewRegistry()
	if err != nil {
		b.Fatal(err)
	}
	auth, _ := NewTokens(Token{Name: "bench", Scope: ScopeRead, Secret: "bench-token"})
	s, err := New(Config{Names: kafkatopics.WithPrefix(id + "."), Keys: keys},
		Deps{Auth: auth, Redis: rdb, Producer: noProducer{}, Encoder: reg, History: hist})
	if err != nil {
		b.Fatal(err)
	}
	cold, err := New(Config{Names: kafkatopics.WithPrefix(id + "."), Keys: keys, HistoryCache: -1},
		Deps{Auth: auth, Redis: rdb, Producer: noProducer{}, Encoder: reg, History: hist})
	if err != nil {
		b.Fatal(err)
	}
	h, hCold := s.Handler(), cold.Handler()
	cookie := &http.Cookie{Name: sessionCookie, Value: url.QueryEscape("bench-token")}

	pages := []struct {
		name, path, want string
		cold             bool
	}{
		{"fleet_uncached", "/ui/", "9000</span> online", true},
		{"fleet", "/ui/", "9000</span> online", false},
		{"cameras", "/ui/cameras", "10000 cameras", false},
		{"cameras_search", "/ui/cameras?prefix=BENCH0000000012&online=true", "cameras", false},
		{"cameras_firmware_sorted", "/ui/cameras?firmware=V2.3.4&sort=last_seen_asc&page=3", "cameras", false},
		{"camera", "/ui/cameras/" + benchSN(1234), "Online in the last 7 days", false},
		{"command_form", "/ui/cameras/" + benchSN(1234) + "/command?kind=osd", "sOsdName", false},
	}
	for _, p := range pages {
		b.Run(p.name, func(b *testing.B) {
			do := func() *httptest.ResponseRecorder {
				req := httptest.NewRequest(http.MethodGet, p.path, nil)
				req.AddCookie(cookie)
				rec := httptest.NewRecorder()
				if p.cold {
					hCold.ServeHTTP(rec, req)
				} else {
					h.ServeHTTP(rec, req)
				}
				return rec
			}
			rec := do() // warm, and check the page is the real one
			if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), p.want) {
				b.Fatalf("%s: %d, want %q in:\n%.3000s", p.path, rec.Code, p.want, rec.Body.String())
			}
			if strings.Contains(rec.Body.String(), "history unavailable") {
				b.Fatalf("%s: %s", p.path, rec.Body.String()[strings.Index(rec.Body.String(), "history unavailable"):][:300])
			}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				t0 := time.Now()
				rec := do()
				lat = append(lat, time.Since(t0))
				if rec.Code != http.StatusOK {
					b.Fatalf("%s: %d", p.path, rec.Code)
				}
			}
			b.StopTimer()
			slices.Sort(lat)
			q := func(f float64) float64 {
				return float64(lat[min(int(f*float64(len(lat))), len(lat)-1)].Microseconds()) / 1000
			}
			b.ReportMetric(q(0.5), "p50_ms")
			b.ReportMetric(q(0.99), "p99_ms")
			b.ReportMetric(q(0.999), "p999_ms")
		})
	}
}

type noProducer struct{}

func (noProducer) ProduceSync(context.Context, string, []byte, []byte) error { return nil }
