//go:build integration

package chsink_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ivms/ams/pkg/testkit/testenv"
	"github.com/ivms/ams/schemas"
	"github.com/ivms/ams/sinks/chsink"
)

// TestSinkIsolatesBadRecord: a command event whose insert the server
// refuses for its data (a server-side check, here a DEFAULT column that
// throws for one reason, ClickHouse code 395) no longer stalls the sink:
// the batch is split until the record is found, that record goes to
// ams.rejects with the server's error, and every other row is inserted.
// Before the fix the whole batch was retried forever.
func TestSinkIsolatesBadRecord(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testenv.ClickHouseAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.conn.Exec(ctx, "ALTER TABLE "+e.db+".commands ADD COLUMN checked UInt8 DEFAULT throwIf(reason = 'poison')"); err != nil {
		t.Fatalf("add the server-side check: %v", err)
	}
	run := testenv.Unique(t, "r")
	now := time.Now().UTC().Truncate(time.Millisecond)
	const n = 200
	var evs []any
	for i := range n {
		reason := ""
		if i == 137 {
			reason = "poison"
		}
		evs = append(evs, &schemas.CommandEvent{EventID: fmt.Sprintf("%s-%d", run, i), CommandID: fmt.Sprintf("%s-c%d", run, i),
			SN: fmt.Sprintf("SN%03d", i%20), Kind: "reboot", Code: 9, State: schemas.CommandAccepted, At: now, Reason: reason, Seq: 1})
	}
	e.produce(e.names.CommandEvents, evs...)
	rejects := make(chan schemas.Reject, 10)
	testenv.Consume(t, e.reg, e.names.Rejects, rejects)

	e.runSink(testenv.Unique(t, "g"), func(c *chsink.Config) { c.BatchRows = 1000; c.BatchInterval = time.Second })
	e.waitCount("SELECT count() FROM {db}.commands", n-1, 20*time.Second)
	select {
	case rj := <-rejects:
		if rj.Reason != "clickhouse_data" || rj.SN != "SN017" || rj.SourceTopic != e.names.CommandEvents ||
			!strings.Contains(rj.Detail, "395") || !strings.Contains(rj.Detail, "throwIf") || len(rj.Payload) == 0 {
			t.Fatalf("reject: %+v", rj)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no reject for the bad record")
	}
	if got := e.count("SELECT count() FROM {db}.commands WHERE reason = 'poison'"); got != 0 {
		t.Fatalf("the bad record was inserted %d times", got)
	}
	// The reject itself reaches the rejects table, and later records still flow.
	e.waitCount("SELECT count() FROM {db}.rejects WHERE reason = 'clickhouse_data'", 1, 20*time.Second)
	e.produce(e.names.CommandEvents, &schemas.CommandEvent{EventID: run + "-late", CommandID: run + "-late", SN: "SN999",
		Kind: "reboot", State: schemas.CommandAccepted, At: now, Seq: 1})
	e.waitCount("SELECT count() FROM {db}.commands", n, 20*time.Second)
}
