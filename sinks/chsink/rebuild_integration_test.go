//go:build integration

package chsink_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/testkit/testenv"
	"github.com/ivms/ams/schemas"
	"github.com/ivms/ams/sinks/chsink"
)

// tableChecksum is the row count and a checksum of every column of table
// (read through FINAL, in no particular order: a sum of row hashes).
func (e *env) tableChecksum(table string) (rows, sum uint64) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := e.conn.Query(ctx, "SELECT name FROM system.columns WHERE database = ? AND table = ?", e.db, table)
	if err != nil {
		e.t.Fatalf("columns of %s: %v", table, err)
	}
	var cols []string
	for r.Next() {
		var c string
		if err := r.Scan(&c); err != nil {
			e.t.Fatal(err)
		}
		cols = append(cols, c)
	}
	_ = r.Close()
	sort.Strings(cols)
	if len(cols) == 0 {
		e.t.Fatalf("table %s.%s has no columns", e.db, table)
	}
	q := fmt.Sprintf("SELECT count(), sum(cityHash64(%s)) FROM %s.%s FINAL", strings.Join(cols, ", "), e.db, table)
	if err := e.conn.QueryRow(ctx, q).Scan(&rows, &sum); err != nil {
		e.t.Fatalf("%s: %v", q, err)
	}
	return rows, sum
}

// rollupChecksum sums and hashes the heartbeats_per_hour view (the rollup
// heartbeats_hourly that device_events' materialized view fills).
func (e *env) rollupChecksum() (heartbeats, sum uint64) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q := fmt.Sprintf("SELECT sum(heartbeats), sum(cityHash64(sn, hour, heartbeats, first_ms, last_ms)) FROM %s.heartbeats_per_hour", e.db)
	if err := e.conn.QueryRow(ctx, q).Scan(&heartbeats, &sum); err != nil {
		e.t.Fatalf("%s: %v", q, err)
	}
	return heartbeats, sum
}

// produceTxn produces values in one transaction and commits it (commit
// true) or aborts it, so the topic holds transaction markers as the
// processors' output does.
func (e *env) produceTxn(topic string, commit bool, values ...any) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := testenv.KafkaClient(e.t, kgo.TransactionalID(testenv.Unique(e.t, "rebuild-txn")))
	if err := cl.BeginTransaction(); err != nil {
		e.t.Fatal(err)
	}
	recs := make([]*kgo.Record, 0, len(values))
	for _, v := range values {
		b, err := e.reg.Encode(v)
		if err != nil {
			e.t.Fatal(err)
		}
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(snOf(v)), Value: b})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		e.t.Fatalf("produce in transaction: %v", err)
	}
	if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
		e.t.Fatalf("end transaction: %v", err)
	}
	cl.Close()
}

// TestRebuildTable is the Day-2 procedure "rebuild a ClickHouse table":
// the sink fills device_events (plain records, a committed and an aborted
// transaction), is stopped, and `ams rebuild -table device_events` wipes
// the table and its rollup and refills them from the topic. Row count and
// a checksum of every column are equal before and after, for the table and
// the heartbeats rollup; the restarted sink continues after the replay
// without counting a heartbeat twice. Rebuild refuses while the sink runs
// and when retention has deleted the start of a topic.
func TestRebuildTable(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testenv.ClickHouseAddr())
	run := testenv.Unique(t, "rb")
	events := deviceEvents(run, 3150, 100, time.Now().UTC().Add(-2*time.Hour))
	e.produce(e.names.DeviceEvents, events[:2000]...)
	e.produceTxn(e.names.DeviceEvents, true, events[2000:3000]...)
	e.produceTxn(e.names.DeviceEvents, false, events[3000:3100]...) // aborted: never in ClickHouse
	group := testenv.Unique(t, "rb-sink")
	s := e.runSink(group)
	e.waitCount("SELECT count() FROM {db}.device_events FINAL", 3000, 60*time.Second)

	// Refused while the sink is running.
	reg, err := schemas.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	cfg := chsink.RebuildConfig{
		Seeds: testenv.KafkaBrokers(), KafkaOpts: testenv.KafkaOpts(), Names: e.names,
		ClickHouse: chOptions(e.chAddr, e.db), Table: "device_events", Group: group,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := chsink.Rebuild(ctx, cfg, reg, testLog(t)); !errors.Is(err, chsink.ErrSinkRunning) {
		t.Fatalf("rebuild with the sink running: %v, want ErrSinkRunning", err)
	}
	s.stop()

	rowsBefore, sumBefore := e.tableChecksum("device_events")
	hbBefore, hbSumBefore := e.rollupChecksum()
	if rowsBefore != 3000 || hbBefore == 0 {
		t.Fatalf("before: %d rows, %d heartbeats", rowsBefore, hbBefore)
	}

	// The one command.
	var out, stderr bytes.Buffer
	cmd := exec.Command(amsBin, "rebuild",
		"-kafka-brokers", testenv.KafkaBrokers()[0],
		"-topic-prefix", e.prefix,
		"-clickhouse-addr", e.chAddr,
		"-clickhouse-database", e.db,
		"-sink-group", group,
		"-table", "device_events",
		"-batch-rows", "700")
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ams rebuild: %v\nstdout %s\nstderr %s", err, out.String(), stderr.String())
	}
	var res chsink.RebuildResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("report %q: %v", out.String(), err)
	}
	t.Logf("rebuild report: records %d rows %d rejected %d truncated %v took %s", res.Records, res.Rows, res.Rejected, res.Truncated, res.Took)
	if res.Records != 3000 || res.Rows != 3000 || res.Rejected != 0 || len(res.Warnings) != 0 {
		t.Errorf("report: %+v, want 3000 records and rows (the aborted 100 skipped), no rejects or warnings", res)
	}
	if strings.Join(res.Truncated, ",") != "device_events,heartbeats_hourly" {
		t.Errorf("truncated %v, want device_events and its rollup heartbeats_hourly", res.Truncated)
	}
	rowsAfter, sumAfter := e.tableChecksum("device_events")
	hbAfter, hbSumAfter := e.rollupChecksum()
	if rowsAfter != rowsBefore || sumAfter != sumBefore {
		t.Errorf("device_events after the rebuild: %d rows checksum %d; before %d rows checksum %d", rowsAfter, sumAfter, rowsBefore, sumBefore)
	}
	if hbAfter != hbBefore || hbSumAfter != hbSumBefore {
		t.Errorf("heartbeats rollup after the rebuild: %d checksum %d; before %d checksum %d", hbAfter, hbSumAfter, hbBefore, hbSumBefore)
	}
	if raw := e.count("SELECT count() FROM {db}.device_events"); raw != 3000 {
		t.Errorf("device_events holds %d raw rows after the rebuild, want 3000 (wiped, then each row once)", raw)
	}

	// The sink, started again, continues after the replay: new rows arrive,
	// the replayed ones are not inserted again (the rollup would count them).
	e.produce(e.names.DeviceEvents, events[3100:]...)
	s = e.runSink(group)
	e.waitCount("SELECT count() FROM {db}.device_events FINAL", 3050, 60*time.Second)
	s.stop()
	wantHB := e.count("SELECT count() FROM {db}.device_events FINAL WHERE kind = 'HEARTBEAT'")
	if hb, _ := e.rollupChecksum(); hb != wantHB {
		t.Errorf("heartbeats rollup %d after the sink resumed, want %d (replayed rows inserted twice?)", hb, wantHB)
	}

	// Refused when retention deleted the start of the topic.
	e.produce(e.names.Presence, &schemas.Presence{EventID: run + "-p1", SN: "SN00001", Online: true, Reason: schemas.PresenceConnected, At: time.Now().UTC()},
		&schemas.Presence{EventID: run + "-p2", SN: "SN00001", Online: false, Reason: schemas.PresenceDisconnected, At: time.Now().UTC()})
	adm := kadm.NewClient(testenv.KafkaClient(t))
	ends, err := adm.ListEndOffsets(ctx, e.names.Presence)
	if err != nil {
		t.Fatal(err)
	}
	var del kadm.Offsets
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			del.AddOffset(o.Topic, o.Partition, 1, -1)
		}
	})
	if resp, err := adm.DeleteRecords(ctx, del); err != nil || resp.Error() != nil {
		t.Fatalf("delete records: %v %v", err, resp.Error())
	}
	cfg.Table = "presence"
	if _, err := chsink.Rebuild(ctx, cfg, reg, testLog(t)); !errors.Is(err, chsink.ErrLogTruncated) {
		t.Fatalf("rebuild of a truncated topic: %v, want ErrLogTruncated", err)
	}
	cfg.Table = "no_such_table"
	if _, err := chsink.Rebuild(ctx, cfg, reg, testLog(t)); err == nil {
		t.Fatal("rebuild of an unknown table succeeded")
	}
}
