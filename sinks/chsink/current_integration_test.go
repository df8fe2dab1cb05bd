//go:build integration

package chsink_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/ivms/ams/pkg/testkit/testenv"
	"github.com/ivms/ams/sinks/chsink"
)

// chdbVersion is the current engine deploy/stack/chdb.sh installs (chdb-core, pinned).
const chdbVersion = "26.9.0"

// chdbPython returns the Python of the venv deploy/stack/chdb.sh made:
// AMS_CHDB_PYTHON, else ${AMS_STACK_DIR:-<repo>/.stack}/chdb/venv/bin/python.
func chdbPython(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("AMS_CHDB_PYTHON"); p != "" {
		return p
	}
	stack := os.Getenv("AMS_STACK_DIR")
	if stack == "" {
		stack = filepath.Join("..", "..", ".stack")
	}
	p := filepath.Join(stack, "chdb", "venv", "bin", "python")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("no chdb venv at %s: run `bash deploy/stack/chdb.sh` (make test does) or set AMS_CHDB_PYTHON", p)
	}
	return p
}

// checkQueries are the queries compared between the engines: README.md's
// example queries, every view read whole, and each table counted through FINAL.
func checkQueries(t *testing.T, db string) [][2]string {
	t.Helper()
	var out [][2]string
	rq := readmeQueries(t)
	for _, title := range keys(rq) {
		out = append(out, [2]string{"readme: " + title, strings.ReplaceAll(rq[title], "ams.", db+".")})
	}
	for view, order := range map[string]string{
		"presence_intervals":    "sn, start_ms",
		"presence_daily_uptime": "sn, day",
		"command_summary":       "command_id",
		"device_config_latest":  "sn",
		"rejects_by_reason":     "hour, stage, reason",
		"presence_now":          "sn",
		"heartbeats_per_hour":   "sn, hour",
	} {
		out = append(out, [2]string{"view: " + view, fmt.Sprintf("SELECT * FROM %s.%s ORDER BY %s", db, view, order)})
	}
	for _, table := range []string{"device_events", "presence", "commands", "rejects", "uplink_raw"} {
		out = append(out, [2]string{"count: " + table, fmt.Sprintf("SELECT count() FROM %s.%s FINAL", db, table)})
	}
	return out
}

// clockColumns depend on now() (open intervals end at now()): the two
// engines run seconds apart, so these may differ by up to a minute.
var clockColumns = map[string]float64{"end_ms": 60_000, "online_ms": 60_000, "uptime_ratio": 1e-3}

type result struct {
	Meta []struct {
		Name string `json:"name"`
		Type string `json:"type"`
	} `json:"meta"`
	Data [][]any `json:"data"`
}

// TestCurrentClickHouse loads the migrations into the shared ClickHouse 18.16
// and into the current engine (chdb, in-process in Python), inserts the same
// generated fleet twice into both, runs every documented query and view on
// both and compares the answers cell by cell.
func TestCurrentClickHouse(t *testing.T) {
	t.Parallel()
	py := chdbPython(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	now := time.Now().Unix()
	fleetSQL, err := os.ReadFile("testdata/fleet.sql")
	if err != nil {
		t.Fatal(err)
	}
	fleet := func(db string) []string {
		var out []string
		for _, s := range chsink.SplitStatements(string(fleetSQL)) {
			s = strings.ReplaceAll(s, "{db}", db)
			out = append(out, strings.ReplaceAll(s, "{now}", strconv.FormatInt(now, 10)))
		}
		return append(out, out...) // twice: a replay must not change any answer
	}

	// ClickHouse 18.16: ams migrate, then the fleet, then the queries.
	oldDB := testenv.Unique(t, "chcur")
	conn, err := chsink.Open(ctx, chsink.Options{Addr: []string{testenv.ClickHouseAddr()}, Database: oldDB})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+oldDB)
		_ = conn.Close()
	})
	var oldVersion string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&oldVersion); err != nil {
		t.Fatal(err)
	}
	if _, err := chsink.Migrate(ctx, conn, oldDB, quietLog()); err != nil {
		t.Fatalf("migrate on %s: %v", oldVersion, err)
	}
	for i, s := range fleet(oldDB) {
		if err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("fleet statement %d on %s: %v", i+1, oldVersion, err)
		}
	}
	oldRes := map[string]result{}
	for _, q := range checkQueries(t, oldDB) {
		r, err := queryGeneric(ctx, conn, q[1])
		if err != nil {
			t.Fatalf("%s on ClickHouse %s: %v\n%s", q[0], oldVersion, err, q[1])
		}
		oldRes[q[0]] = r
	}

	// The current engine: the statements ams migrate runs on that version.
	const newDB = "ams_current"
	stmts, err := chsink.MigrationStatements(newDB, chdbVersion)
	if err != nil {
		t.Fatal(err)
	}
	// The variant for current servers (0004_retention) ran: every raw table has a TTL.
	ttlTables := [][2]string{{"current: tables with TTL", "SELECT name FROM system.tables WHERE database = '" + newDB +
		"' AND engine_full LIKE '% TTL %' ORDER BY name"}}
	req := map[string]any{"statements": append(stmts, fleet(newDB)...), "queries": checkQueries(t, newDB), "current_only": ttlTables}
	in, _ := json.Marshal(req)
	cmd := exec.CommandContext(ctx, py, "testdata/chdb_check.py")
	cmd.Env = append(os.Environ(), "TZ=UTC")
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("current ClickHouse (chdb): %v\n%s", err, stderr.String())
	}
	var cur struct {
		Version string            `json:"version"`
		Results map[string]result `json:"results"`
	}
	if err := json.Unmarshal(out, &cur); err != nil {
		t.Fatalf("chdb output: %v\n%.2000s", err, out)
	}
	if !strings.HasPrefix(cur.Version, strings.TrimSuffix(chdbVersion, ".0")) {
		t.Errorf("chdb engine version %s, want %s", cur.Version, chdbVersion)
	}
	t.Logf("ClickHouse %s vs current engine %s", oldVersion, cur.Version)
	var withTTL []string
	for _, row := range cur.Results["current: tables with TTL"].Data {
		withTTL = append(withTTL, cellString(row[0]))
	}
	if want := "[commands device_events heartbeats_hourly presence rejects uplink_raw]"; fmt.Sprint(withTTL) != want {
		t.Errorf("tables with a TTL on %s: %v, want %s", cur.Version, withTTL, want)
	}

	for _, q := range checkQueries(t, oldDB) {
		name := q[0]
		o, c := oldRes[name], cur.Results[name]
		if len(o.Data) == 0 {
			t.Errorf("%s: no rows on %s (the fleet should give some)", name, oldVersion)
		}
		if len(o.Meta) != len(c.Meta) {
			t.Errorf("%s: %d columns on %s, %d on %s", name, len(o.Meta), oldVersion, len(c.Meta), cur.Version)
			continue
		}
		for i := range o.Meta {
			if o.Meta[i].Name != c.Meta[i].Name {
				t.Errorf("%s: column %d is %s on %s, %s on %s", name, i, o.Meta[i].Name, oldVersion, c.Meta[i].Name, cur.Version)
			}
		}
		if len(o.Data) != len(c.Data) {
			t.Errorf("%s: %d rows on %s, %d on %s", name, len(o.Data), oldVersion, len(c.Data), cur.Version)
			continue
		}
		bad := 0
		for r := range o.Data {
			for i := range o.Meta {
				if !sameCell(o.Data[r][i], c.Data[r][i], clockColumns[o.Meta[i].Name]) && bad < 5 {
					bad++
					t.Errorf("%s: row %d %s = %v on %s, %v on %s", name, r, o.Meta[i].Name, o.Data[r][i], oldVersion, c.Data[r][i], cur.Version)
				}
			}
		}
	}
}

// sameCell compares two values as text, or as numbers (within tol, and a
// relative 1e-9 for floats) when both are numeric.
func sameCell(a, b any, tol float64) bool {
	as, bs := cellString(a), cellString(b)
	if as == bs {
		return true
	}
	x, errA := strconv.ParseFloat(as, 64)
	y, errB := strconv.ParseFloat(bs, 64)
	if errA != nil || errB != nil {
		return false
	}
	d := math.Abs(x - y)
	return d <= tol || d <= 1e-9*math.Max(math.Abs(x), math.Abs(y))
}

func cellString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case nil:
		return "NULL"
	}
	return fmt.Sprint(v)
}

// queryGeneric runs q and returns its columns and rows as the JSONCompact
// format shows them: times as UTC text, every other value as itself.
func queryGeneric(ctx context.Context, conn driver.Conn, q string) (result, error) {
	var r result
	rows, err := conn.Query(ctx, q)
	if err != nil {
		return r, err
	}
	defer rows.Close()
	cts := rows.ColumnTypes()
	for _, ct := range cts {
		r.Meta = append(r.Meta, struct {
			Name string `json:"name"`
			Type string `json:"type"`
		}{ct.Name(), ct.DatabaseTypeName()})
	}
	for rows.Next() {
		ptrs := make([]any, len(cts))
		for i, ct := range cts {
			ptrs[i] = reflect.New(ct.ScanType()).Interface()
		}
		if err := rows.Scan(ptrs...); err != nil {
			return r, err
		}
		row := make([]any, len(cts))
		for i, p := range ptrs {
			v := reflect.ValueOf(p).Elem().Interface()
			if tm, ok := v.(time.Time); ok {
				if cts[i].DatabaseTypeName() == "Date" {
					v = tm.UTC().Format("2006-01-02")
				} else {
					v = tm.UTC().Format("2006-01-02 15:04:05")
				}
			}
			row[i] = v
		}
		r.Data = append(r.Data, row)
	}
	return r, rows.Err()
}
