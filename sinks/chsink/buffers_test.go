package chsink

import (
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/schemas"
)

func TestSplitStatements(t *testing.T) {
	got := SplitStatements("-- comment\nCREATE TABLE a (x UInt8)\n;\n\n  ;  \nCREATE VIEW b AS\nSELECT 1;\n-- trailing\n")
	want := []string{"CREATE TABLE a (x UInt8)", "CREATE VIEW b AS\nSELECT 1;"}
	if !slices.Equal(got, want) {
		t.Fatalf("SplitStatements = %q, want %q", got, want)
	}
}

func TestMigrationsParse(t *testing.T) {
	ms, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) < 2 || ms[0].Version != 1 || ms[0].Name != "tables" || ms[1].Version != 2 {
		t.Fatalf("migrations = %+v", ms)
	}
	banned := regexp.MustCompile(`\b(DateTime64|LowCardinality|Map\(|JSON|TTL|CODEC\()`)
	// Idempotent forms: IF NOT EXISTS, dropping a view to recreate it, MODIFY TTL (same TTL again), and the
	// backfill of presence_latest (argMax/max states: a row twice is once).
	idempotent := regexp.MustCompile(`IF NOT EXISTS|DROP TABLE IF EXISTS \{db\}\.presence_intervals$|MODIFY TTL|^INSERT INTO \{db\}\.presence_latest\b`)
	gated := 0
	for _, m := range ms {
		if m.MinVersion != "" {
			gated++
			if m.AppliesTo("18.16.1") || !m.AppliesTo("26.9.2.1") || !m.AppliesTo(m.MinVersion) {
				t.Errorf("migration %d requires %s: AppliesTo is wrong", m.Version, m.MinVersion)
			}
		}
		for _, s := range m.Statements {
			if !idempotent.MatchString(s) {
				t.Errorf("migration %d statement is not idempotent: %.60s", m.Version, s)
			}
			if w := banned.FindString(s); w != "" && m.MinVersion == "" {
				t.Errorf("migration %d uses %s, which ClickHouse 18.16 lacks (add a \"-- requires ClickHouse >= X\" line)", m.Version, w)
			}
		}
	}
	if gated == 0 {
		t.Error("no migration for current servers only (0004_retention)")
	}
}

// TestColumnsMatchDDL checks that every table buffer names exactly the
// columns of its CREATE TABLE, in order.
func TestColumnsMatchDDL(t *testing.T) {
	ms, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	ddl := map[string][]string{}
	create := regexp.MustCompile(`(?s)CREATE TABLE IF NOT EXISTS \{db\}\.(\w+) \((.*)\) ENGINE`)
	for _, s := range ms[0].Statements {
		m := create.FindStringSubmatch(s)
		if m == nil {
			continue
		}
		for _, line := range strings.Split(m[2], "\n") {
			if f := strings.Fields(strings.TrimSpace(line)); len(f) >= 2 {
				ddl[m[1]] = append(ddl[m[1]], f[0])
			}
		}
	}
	b, err := newBuffers("db", kafkatopics.Default())
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range b.tables {
		var names []string
		for _, c := range tb.cols {
			names = append(names, c.colName())
		}
		if !slices.Equal(names, ddl[tb.name]) {
			t.Errorf("table %s: Go columns %v\nDDL columns %v", tb.name, names, ddl[tb.name])
		}
	}
}

func TestBuffersRouteAndReject(t *testing.T) {
	reg, err := schemas.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	n := kafkatopics.Default()
	b, err := newBuffers("db", n)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	enc := func(v any) []byte {
		x, err := reg.Encode(v)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	cfg := `{"sDeviceSn":"S1","sFwVersion":"V3","iChnCnt":2,"iTFCardCapacitySize":123456789012,"sSSID":"w","iWifiStrength":-50}`
	recs := []*kgo.Record{
		{Topic: n.DeviceEvents, Value: enc(&schemas.DeviceEvent{EventID: "e1", SN: "S1", Kind: schemas.EventConfiguration, Body: cfg, IngestTime: now})},
		{Topic: n.DeviceEvents, Value: enc(&schemas.DeviceEvent{EventID: "e2", SN: "S1", Kind: schemas.EventConfiguration, Body: "{not json", IngestTime: now})},
		{Topic: n.Presence, Value: enc(&schemas.Presence{EventID: "p1", SN: "S1", Online: true, At: now})},
		{Topic: n.UplinkRaw, Partition: 3, Offset: 77, Value: enc(&schemas.UplinkRaw{SN: "S1", IngestTime: now})},
	}
	for _, r := range recs {
		if reason, err := b.add(reg, r); err != nil {
			t.Fatalf("add %s: %s %v", r.Topic, reason, err)
		}
	}
	if b.rows() != 4 {
		t.Fatalf("rows = %d, want 4", b.rows())
	}
	ev := &b.devEv
	if ev.ConfigOK.v[0] != 1 || ev.FwVersion.v[0] != "V3" || ev.ChnCnt.v[0] != 2 || ev.TFCardCapacitySize.v[0] != 123456789012 ||
		ev.SSID.v[0] != "w" || ev.WifiStrength.v[0] != -50 || ev.IngestTimeMs.v[0] != uint64(now.UnixMilli()) {
		t.Errorf("configuration columns wrong: ok=%d fw=%q chn=%d cap=%d ssid=%q wifi=%d", ev.ConfigOK.v[0], ev.FwVersion.v[0],
			ev.ChnCnt.v[0], ev.TFCardCapacitySize.v[0], ev.SSID.v[0], ev.WifiStrength.v[0])
	}
	if ev.ConfigOK.v[1] != 0 || ev.FwVersion.v[1] != "" || ev.Body.v[1] != "{not json" {
		t.Errorf("a bad configuration body: ok=%d fw=%q body=%q", ev.ConfigOK.v[1], ev.FwVersion.v[1], ev.Body.v[1])
	}
	if b.up.SrcPartition.v[0] != 3 || b.up.SrcOffset.v[0] != 77 {
		t.Errorf("uplink position = %d/%d", b.up.SrcPartition.v[0], b.up.SrcOffset.v[0])
	}
	for _, c := range []struct {
		rec    *kgo.Record
		reason string
	}{
		{&kgo.Record{Topic: n.DeviceEvents, Value: []byte("garbage value")}, "not_single_object"},
		{&kgo.Record{Topic: n.DeviceEvents, Value: nil}, "short_value"},
		{&kgo.Record{Topic: n.CommandEvents, Value: enc(&schemas.Presence{SN: "x", At: now})}, "wrong_record_type"},
		{&kgo.Record{Topic: n.Rejects, Value: append([]byte{0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8}, 1)}, "unknown_schema"},
		{&kgo.Record{Topic: "elsewhere", Value: nil}, "unknown_topic"},
	} {
		reason, err := b.add(reg, c.rec)
		if err == nil || reason != c.reason {
			t.Errorf("add %s %q: reason %q err %v; want %s", c.rec.Topic, c.rec.Value, reason, err, c.reason)
		}
	}
	if b.rows() != 4 {
		t.Errorf("rows after rejects = %d, want 4", b.rows())
	}
	for _, tb := range b.tables {
		tb.reset()
	}
	if b.rows() != 0 || len(b.devEv.EventID.v) != 0 {
		t.Errorf("reset left rows")
	}
}
