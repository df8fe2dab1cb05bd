//go:build integration

package chsink_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ivms/ams/pkg/testkit/testenv"
	"github.com/ivms/ams/schemas"
)

// readmeQueries returns the ```sql blocks of README.md's "Example queries"
// section by their first line ("-- title").
func readmeQueries(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Example queries\n")
	if !ok {
		t.Fatal("README.md has no Example queries section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	out := map[string]string{}
	for _, part := range strings.Split(section, "```sql\n")[1:] {
		q, _, _ := strings.Cut(part, "```")
		title, _, _ := strings.Cut(q, "\n")
		out[strings.TrimSpace(strings.TrimPrefix(title, "--"))] = q
	}
	return out
}

// fleet is what a simulated fleet did, and what the example queries must say.
type fleet struct {
	records map[string][]any // topic -> records
	offline []string
	uptime  map[string]float64 // fw -> ratio
	devices map[string]uint64  // fw -> devices
	cmds    map[string]cmdStats
	rejects map[string]uint64 // stage/reason -> count in the last hour
}

type cmdStats struct {
	n         uint64
	succeeded uint64
	latencies []int64
}

// genFleet builds the fleet's records relative to now: 30 devices with
// three firmware versions, presence intervals over the last 8 days, commands
// of three kinds, rejects inside and outside the last hour.
func genFleet(e *env, run string, now time.Time) *fleet {
	f := &fleet{records: map[string][]any{}, uptime: map[string]float64{}, devices: map[string]uint64{},
		cmds: map[string]cmdStats{}, rejects: map[string]uint64{}}
	add := func(topic string, v any) { f.records[topic] = append(f.records[topic], v) }
	y, m, d := now.AddDate(0, 0, -6).Date()
	window := time.Date(y, m, d, 0, 0, 0, 0, time.UTC) // today() - 6 at 00:00 UTC
	online := map[string]time.Duration{}
	const devices = 30
	for i := range devices {
		sn := fmt.Sprintf("%s-SN%02d", run, i)
		fw := []string{"V1.0", "V1.1", "V2.0"}[i%3]
		// An older configuration with another firmware, then the current one.
		add(e.names.DeviceEvents, &schemas.DeviceEvent{EventID: sn + "-cfg0", SN: sn, Kind: schemas.EventConfiguration, CmdType: 1,
			Body: configBody(sn, "V0.9", false), IngestTime: now.Add(-9 * 24 * time.Hour), ProcessedAt: now.Add(-9 * 24 * time.Hour)})
		add(e.names.DeviceEvents, &schemas.DeviceEvent{EventID: sn + "-cfg1", SN: sn, Kind: schemas.EventConfiguration, CmdType: 1,
			Body: configBody(sn, fw, i%2 == 0), IngestTime: now.Add(-time.Duration(i) * time.Minute), ProcessedAt: now})
		f.devices[fw]++

		t0 := now.Add(-8*24*time.Hour + time.Duration(i)*time.Hour)
		type iv struct{ from, to time.Time }
		ivs := []iv{
			{t0, t0.Add(time.Duration(10+i) * time.Hour)},
			{t0.Add(2 * 24 * time.Hour), t0.Add(2*24*time.Hour + 30*time.Hour)},
			{t0.Add(5 * 24 * time.Hour), t0.Add(5*24*time.Hour + time.Duration(12+i)*time.Hour + 17*time.Minute)},
		}
		open := i%4 == 0
		if open {
			ivs[2].to = now
		} else {
			f.offline = append(f.offline, sn)
		}
		seq := int64(0)
		for k, v := range ivs {
			seq++
			add(e.names.Presence, &schemas.Presence{EventID: fmt.Sprintf("%s-p%d", sn, seq), SN: sn, Online: true, Reason: schemas.PresenceConnected, At: v.from, Seq: seq})
			if k == len(ivs)-1 && open {
				break
			}
			seq++
			from := v.from
			add(e.names.Presence, &schemas.Presence{EventID: fmt.Sprintf("%s-p%d", sn, seq), SN: sn, Online: false, Reason: schemas.PresenceHeartbeatTimeout,
				At: v.to, Since: &from, IntervalMs: v.to.Sub(v.from).Milliseconds(), Seq: seq})
		}
		for _, v := range ivs {
			from := max(v.from.UnixMilli(), window.UnixMilli())
			if to := v.to.UnixMilli(); to > from {
				online[fw] += time.Duration(to-from) * time.Millisecond
			}
		}
	}
	for fw, n := range f.devices {
		f.uptime[fw] = online[fw].Seconds() / (float64(n) * now.Truncate(time.Second).Sub(window).Seconds())
	}

	// Commands: per kind, some succeed with a known latency, some time out,
	// one is still in flight (not finished, not counted).
	for k, kind := range []string{"get_sd_info", "reboot", "set_osd"} {
		st := cmdStats{}
		for j := range 40 + 10*k {
			id := fmt.Sprintf("%s-%s-%d", run, kind, j)
			sn := fmt.Sprintf("%s-SN%02d", run, j%devices)
			at := now.Add(-time.Duration(j+1) * time.Minute)
			seq := int32(0)
			ev := func(state string, dt time.Duration, reply *string) {
				seq++
				add(e.names.CommandEvents, &schemas.CommandEvent{EventID: fmt.Sprintf("%s-%d", id, seq), CommandID: id, SN: sn, Kind: kind,
					Code: int32(300 + k), State: state, At: at.Add(dt), Reply: reply, Seq: seq})
			}
			ev(schemas.CommandAccepted, 0, nil)
			ev(schemas.CommandSent, 3*time.Millisecond, nil)
			ev(schemas.CommandDelivered, 9*time.Millisecond, nil)
			switch {
			case j == 0:
				continue // in flight
			case j%5 == 0:
				ev(schemas.CommandTimedOut, 10*time.Second, nil)
			default:
				lat := time.Duration(50+(j*37)%400+100*k) * time.Millisecond
				reply := `{"ok":1}`
				ev(schemas.CommandSucceeded, lat, &reply)
				st.succeeded++
				st.latencies = append(st.latencies, lat.Milliseconds())
			}
			st.n++
		}
		f.cmds[kind] = st
	}

	// Rejects: within the last hour and older.
	for j, r := range []struct {
		stage, reason string
		n             int
		ago           time.Duration
	}{
		{schemas.StageIngest, "bad_hex", 7, 10 * time.Minute},
		{schemas.StageProcessor, "no_session", 3, 50 * time.Minute},
		{schemas.StageProcessor, "decrypt_failed", 5, 20 * time.Minute},
		{schemas.StageIngest, "bad_hex", 4, 2 * time.Hour},
	} {
		for i := range r.n {
			add(e.names.Rejects, &schemas.Reject{RejectID: fmt.Sprintf("%s-rj-%d-%d", run, j, i), Stage: r.stage, Reason: r.reason,
				SN: fmt.Sprintf("%s-SN%02d", run, i), At: now.Add(-r.ago)})
		}
		if r.ago < time.Hour {
			f.rejects[r.stage+"/"+r.reason] += uint64(r.n)
		}
	}
	sort.Strings(f.offline)
	return f
}

// TestExampleQueries runs README.md's example queries on a generated fleet
// (events built in Go, not by the simulator), inserted twice through two
// consumer groups, and compares each answer with what the fleet did.
func TestExampleQueries(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testenv.ClickHouseAddr())
	now := time.Now().UTC().Truncate(time.Millisecond)
	f := genFleet(e, testenv.Unique(t, "f"), now)
	total := 0
	for topic, recs := range f.records {
		e.produce(topic, recs...)
		total += len(recs)
	}
	// Insert twice: a second group replays everything.
	for _, g := range []string{"q1", "q2"} {
		s := e.runSink(testenv.Unique(t, g))
		s.waitInserted(t, total, 60*time.Second)
		s.stop()
	}
	queries := readmeQueries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	query := func(title string) string {
		q, ok := queries[title]
		if !ok {
			t.Fatalf("README.md has no query %q (have %v)", title, keys(queries))
		}
		return strings.ReplaceAll(q, "ams.", e.db+".")
	}

	t.Run("devices offline now", func(t *testing.T) {
		rows, err := e.conn.Query(ctx, query("devices offline now"))
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var got []string
		for rows.Next() {
			var sn, reason string
			var since time.Time
			if err := rows.Scan(&sn, &since, &reason); err != nil {
				t.Fatal(err)
			}
			got = append(got, sn)
		}
		if !slices.Equal(got, f.offline) {
			t.Errorf("offline now = %v\nwant %v", got, f.offline)
		}
	})

	t.Run("uptime over the last 7 days by firmware version", func(t *testing.T) {
		rows, err := e.conn.Query(ctx, query("uptime over the last 7 days by firmware version"))
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		n := 0
		for rows.Next() {
			var fw string
			var devices uint64
			var ratio float64
			if err := rows.Scan(&fw, &devices, &ratio); err != nil {
				t.Fatal(err)
			}
			n++
			t.Logf("%s: %d devices, uptime %.4f (want %.4f)", fw, devices, ratio, f.uptime[fw])
			if devices != f.devices[fw] || math.Abs(ratio-f.uptime[fw]) > 1e-3 {
				t.Errorf("%s: %d devices, uptime %.5f; want %d, %.5f", fw, devices, ratio, f.devices[fw], f.uptime[fw])
			}
		}
		if n != len(f.devices) {
			t.Errorf("%d firmware versions, want %d", n, len(f.devices))
		}
	})

	t.Run("command success rate and p95 latency by kind", func(t *testing.T) {
		rows, err := e.conn.Query(ctx, query("command success rate and p95 latency by kind"))
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		n := 0
		for rows.Next() {
			var kind string
			var commands uint64
			var p95 int64 // latency_ms is replied_ms - issued_ms: Int64
			var rate float64
			if err := rows.Scan(&kind, &commands, &rate, &p95); err != nil {
				t.Fatal(err)
			}
			n++
			st := f.cmds[kind]
			lat := slices.Clone(st.latencies)
			slices.Sort(lat)
			wantP95 := lat[int(0.95*float64(len(lat)))] // quantileExact: the element at floor(level*n)
			wantRate := float64(st.succeeded) / float64(st.n)
			t.Logf("%s: %d commands, success %.3f, p95 %d ms", kind, commands, rate, p95)
			if commands != st.n || math.Abs(rate-wantRate) > 1e-9 || p95 != wantP95 {
				t.Errorf("%s: %d commands, rate %.4f, p95 %d; want %d, %.4f, %d", kind, commands, rate, p95, st.n, wantRate, wantP95)
			}
		}
		if n != len(f.cmds) {
			t.Errorf("%d kinds, want %d", n, len(f.cmds))
		}
	})

	t.Run("reject reasons in the last hour", func(t *testing.T) {
		rows, err := e.conn.Query(ctx, query("reject reasons in the last hour"))
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		got := map[string]uint64{}
		for rows.Next() {
			var stage, reason string
			var n uint64
			if err := rows.Scan(&stage, &reason, &n); err != nil {
				t.Fatal(err)
			}
			got[stage+"/"+reason] = n
		}
		if fmt.Sprint(got) != fmt.Sprint(f.rejects) {
			t.Errorf("rejects last hour = %v, want %v", got, f.rejects)
		}
	})
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
