//go:build integration

package chsink_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/testkit/testenv"
	"github.com/ivms/ams/schemas"
	"github.com/ivms/ams/sinks/chsink"
)

// zookeeperJar is Debian's ZooKeeper (deploy/stack/tools.sh clickhouse-cluster);
// its manifest names the jars it needs.
const zookeeperJar = "/usr/share/java/zookeeper.jar"

// startZooKeeper runs a standalone ZooKeeper server of the test's own on a
// free loopback port, its data in a temp dir, and returns its address.
func startZooKeeper(t *testing.T) string {
	t.Helper()
	java, err := exec.LookPath("java")
	if err != nil {
		t.Fatalf("java not found (Debian's zookeeper package brings it: bash deploy/stack/tools.sh clickhouse-cluster): %v", err)
	}
	if _, err := os.Stat(zookeeperJar); err != nil {
		t.Fatalf("ZooKeeper not installed (bash deploy/stack/tools.sh clickhouse-cluster): %v", err)
	}
	dir := t.TempDir()
	port := freePort(t)
	// tickTime 500 ms: sessions may be as short as 1 s, so a killed replica's
	// session (4 s, below) expires soon and it becomes active again quickly.
	cfg := fmt.Sprintf("tickTime=500\ndataDir=%s/data\nclientPort=%d\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\nmaxClientCnxns=0\n4lw.commands.whitelist=ruok\n", dir, port)
	if err := os.WriteFile(filepath.Join(dir, "zoo.cfg"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(filepath.Join(dir, "zookeeper.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(java, "-Xmx256m", "-cp", zookeeperJar, "org.apache.zookeeper.server.ZooKeeperServerMain", filepath.Join(dir, "zoo.cfg"))
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start zookeeper: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "zookeeper.log"))
			t.Logf("zookeeper log:\n%s", tail(string(b), 2000))
		}
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			_ = c.SetDeadline(time.Now().Add(time.Second))
			_, _ = c.Write([]byte("ruok"))
			b := make([]byte, 4)
			n, _ := c.Read(b)
			_ = c.Close()
			if string(b[:n]) == "imok" {
				return addr
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("zookeeper on %s did not answer in 30s", addr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// startCluster starts ZooKeeper and two clickhouse-servers, the two replicas
// of the one shard of cluster name.
func startCluster(t *testing.T, name string) [2]*privateClickHouse {
	t.Helper()
	zk := startZooKeeper(t)
	zkHost, zkPort, _ := net.SplitHostPort(zk)
	tcp := [2]int{freePort(t), freePort(t)}
	var nodes [2]*privateClickHouse
	for i := range nodes {
		extra := fmt.Sprintf(`
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <interserver_http_port>%[1]d</interserver_http_port>
  <remote_servers><%[2]s><shard><internal_replication>true</internal_replication>
    <replica><host>127.0.0.1</host><port>%[3]d</port></replica>
    <replica><host>127.0.0.1</host><port>%[4]d</port></replica>
  </shard></%[2]s></remote_servers>
  <zookeeper><node><host>%[5]s</host><port>%[6]s</port></node><session_timeout_ms>4000</session_timeout_ms></zookeeper>
  <macros><shard>01</shard><replica>r%[7]d</replica></macros>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>`,
			freePort(t), name, tcp[0], tcp[1], zkHost, zkPort, i+1)
		nodes[i] = startPrivateClickHouseWith(t, tcp[i], extra)
	}
	return nodes
}

// TestClickHouseCluster migrates a cluster of two replicas (one shard) with
// `ams migrate -clickhouse-cluster` (again through both nodes: nothing applied
// twice), runs `ams sink clickhouse -clickhouse-cluster` with both nodes'
// addresses, SIGKILLs the replica the sink writes to while records stream in
// and restarts it, then checks that each replica holds every record exactly
// once and that every documented query, view and count answers the same
// from either node.
func TestClickHouseCluster(t *testing.T) {
	t.Parallel()
	const cluster = "ams_test"
	nodes := startCluster(t, cluster)
	ctx := context.Background()

	e := &env{t: t, chAddr: nodes[0].addr + "," + nodes[1].addr, db: testenv.Unique(t, "chcluster")}
	var conns [2]*clusterConn
	for i, n := range nodes {
		conns[i] = openClusterConn(t, n.addr, e.db)
	}
	e.prefix = testenv.Unique(t, "chcluster") + "."
	e.names = kafkatopics.WithPrefix(e.prefix)
	admin := testenv.KafkaClient(t)
	sinkTopics := []string{e.names.DeviceEvents, e.names.Presence, e.names.CommandEvents, e.names.Rejects, e.names.UplinkRaw}
	testenv.CreateTopics(t, admin, testPartitions, sinkTopics...) // deleted at the end by testenv
	t.Cleanup(func() {                                            // the other topics `ams migrate` creates
		var others []string
		for _, n := range e.names.All() {
			if !slices.Contains(sinkTopics, n) {
				others = append(others, n)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := kadm.NewClient(admin).DeleteTopics(ctx, others...); err != nil {
			t.Logf("delete topics: %v", err)
		}
	})
	var err error
	if e.reg, err = schemas.NewRegistry(); err != nil {
		t.Fatal(err)
	}
	e.prod = testenv.KafkaClient(t, kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(200_000))

	// Migrate through node 1, again through node 1 and through node 2.
	migrate := func(addr string) string {
		t.Helper()
		cmd := exec.Command(amsBin, "migrate", "-kafka-brokers", testenv.KafkaBrokers()[0], "-topic-prefix", e.prefix,
			"-partitions", fmt.Sprint(testPartitions), "-replication", "1", "-allow-unsafe-replication",
			"-clickhouse-addr", addr, "-clickhouse-database", e.db, "-clickhouse-cluster", cluster,
			"-clickhouse-username", "default", "-clickhouse-password", "")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("ams migrate -clickhouse-cluster via %s: %v\n%s", addr, err, out)
		}
		return string(out)
	}
	t0 := time.Now()
	if out := migrate(nodes[0].addr); !strings.Contains(out, "on cluster "+cluster+": ") || strings.Contains(out, ": 0 migrations applied now") {
		t.Fatalf("first migrate applied nothing:\n%s", out)
	}
	t.Logf("migrated the cluster in %v", time.Since(t0).Round(100*time.Millisecond))
	for _, addr := range []string{nodes[0].addr, nodes[1].addr} {
		if out := migrate(addr); !strings.Contains(out, ": 0 migrations applied now") {
			t.Errorf("migrate again via %s applied something:\n%s", addr, out)
		}
	}
	for i, c := range conns {
		for table, engine := range map[string]string{"device_events": "Distributed", "device_events_local": "ReplicatedReplacingMergeTree",
			"heartbeats_hourly_local": "ReplicatedAggregatingMergeTree", "heartbeats_hourly_mv": "MaterializedView", "presence_now": "View",
			"schema_migrations": "ReplicatedMergeTree"} {
			if got := c.str("SELECT engine FROM system.tables WHERE database = '{db}' AND name = '" + table + "'"); got != engine {
				t.Errorf("node %d: %s is %q, want %s", i+1, table, got, engine)
			}
		}
		if err := chsink.CheckMigrated(ctx, c.conn, e.db); err != nil {
			t.Errorf("node %d: %v", i+1, err)
		}
	}

	// The sink, through both nodes (it writes to the first that answers).
	e.startSinkProc(testenv.Unique(t, "chcluster"), "-clickhouse-cluster", cluster, "-batch-interval", "200ms", "-retry-max", "1s")

	run := testenv.Unique(t, "c")
	now := time.Now().UTC()
	f := genFleet(e, run, now)
	wantRows := map[string]uint64{}
	for _, topic := range []string{e.names.Presence, e.names.CommandEvents, e.names.Rejects} {
		e.produce(topic, f.records[topic]...)
	}
	const chunks, perChunk = 8, 4000
	beats := deviceEvents(run+"-hb", chunks*perChunk, 500, now.Add(-30*time.Minute))
	for i, v := range beats {
		if i%10 == 0 { // keep the configurations of the fleet alone in device_config_latest
			ev := v.(*schemas.DeviceEvent)
			ev.Kind, ev.CmdType, ev.Body = schemas.EventHeartbeat, 2, `{"iHeartBeat":1}`
		}
	}
	e.produce(e.names.DeviceEvents, f.records[e.names.DeviceEvents]...)
	wantRows["device_events"] = uint64(len(f.records[e.names.DeviceEvents]) + len(beats))
	wantRows["presence"] = uint64(len(f.records[e.names.Presence]))
	wantRows["commands"] = uint64(len(f.records[e.names.CommandEvents]))
	wantRows["rejects"] = uint64(len(f.records[e.names.Rejects]))

	var killedAt time.Time
	for c := range chunks {
		switch c {
		case 3:
			// Wait until node 1 holds some heartbeats: the sink is writing through it.
			conns[0].waitAtLeast("SELECT count() FROM {db}.device_events_local WHERE kind = 'HEARTBEAT'", 1, 60*time.Second)
			nodes[0].kill()
			killedAt = time.Now()
			t.Logf("node 1 SIGKILLed mid-stream (%d of %d heartbeats produced)", c*perChunk, len(beats))
		case 6:
			// The sink went on through node 2 while node 1 was down.
			conns[1].waitAtLeast("SELECT count() FROM {db}.device_events_local WHERE kind = 'HEARTBEAT'", uint64(c*perChunk), 60*time.Second)
			nodes[0].start()
			t.Logf("node 1 restarted after %v", time.Since(killedAt).Round(100*time.Millisecond))
			conns[0] = openClusterConn(t, nodes[0].addr, e.db)
		}
		e.produce(e.names.DeviceEvents, beats[c*perChunk:(c+1)*perChunk]...)
		time.Sleep(500 * time.Millisecond)
	}

	// Every replica holds every record once (local tables, FINAL).
	for i, c := range conns {
		for table, want := range wantRows {
			c.waitAtLeast("SELECT count() FROM {db}."+table+"_local FINAL", want, 90*time.Second)
			if got := c.count("SELECT count() FROM {db}." + table + "_local FINAL"); got != want {
				t.Errorf("node %d: %s_local FINAL = %d, want %d", i+1, table, got, want)
			}
		}
		// The rollups count as inserted: a batch inserted twice would count twice here.
		c.waitAtLeast("SELECT toUInt64(sum(heartbeats)) FROM {db}.heartbeats_per_hour", uint64(len(beats)), 60*time.Second)
		if got := c.count("SELECT toUInt64(sum(heartbeats)) FROM {db}.heartbeats_per_hour"); got != uint64(len(beats)) {
			t.Errorf("node %d: heartbeats_per_hour sums %d heartbeats, want %d (doubled by a re-inserted batch?)", i+1, got, len(beats))
		}
		t.Logf("node %d: raw device_events_local rows %d (FINAL %d)", i+1,
			c.count("SELECT count() FROM {db}.device_events_local"), wantRows["device_events"])
	}
	if got := conns[0].count("SELECT toUInt64(count()) FROM {db}.presence_now WHERE online = 0"); got != uint64(len(f.offline)) {
		t.Errorf("presence_now: %d devices offline, want %d", got, len(f.offline))
	}

	// Every documented query, view and count answers the same from either node.
	for _, q := range checkQueries(t, e.db) {
		var res [2]result
		for i, c := range conns {
			qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			r, err := queryGeneric(qctx, c.conn, q[1])
			cancel()
			if err != nil {
				t.Fatalf("%s on node %d: %v", q[0], i+1, err)
			}
			res[i] = r
		}
		if len(res[0].Data) != len(res[1].Data) {
			t.Errorf("%s: %d rows on node 1, %d on node 2", q[0], len(res[0].Data), len(res[1].Data))
			continue
		}
		if len(res[0].Data) == 0 {
			t.Errorf("%s: no rows", q[0])
		}
		bad := 0
		for r := range res[0].Data {
			for i, col := range res[0].Meta {
				if !sameCell(res[0].Data[r][i], res[1].Data[r][i], clockColumns[col.Name]) && bad < 5 {
					bad++
					t.Errorf("%s: row %d %s = %v on node 1, %v on node 2", q[0], r, col.Name, res[0].Data[r][i], res[1].Data[r][i])
				}
			}
		}
	}
	t.Logf("%d records, %d heartbeats through the cluster; %d documented queries, views and counts agree on both nodes",
		wantRows["device_events"]+wantRows["presence"]+wantRows["commands"]+wantRows["rejects"], len(beats), len(checkQueries(t, e.db)))
}

// kill stops the server with SIGKILL (no shutdown) and reaps it.
func (c *privateClickHouse) kill() {
	c.t.Helper()
	if err := c.cmd.Process.Kill(); err != nil {
		c.t.Fatalf("kill clickhouse: %v", err)
	}
	_ = c.cmd.Wait()
}

// clusterConn is a connection to one node, for reading its tables.
type clusterConn struct {
	t    *testing.T
	db   string
	conn driver.Conn
}

func openClusterConn(t *testing.T, addr, db string) *clusterConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := chsink.Open(ctx, chsink.Options{Addr: []string{addr}, Database: db})
	if err != nil {
		t.Fatalf("clickhouse %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &clusterConn{t: t, db: db, conn: conn}
}

func (c *clusterConn) row(q string, dest any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return c.conn.QueryRow(ctx, strings.ReplaceAll(q, "{db}", c.db)).Scan(dest)
}

// count runs q, which returns one UInt64.
func (c *clusterConn) count(q string) uint64 {
	c.t.Helper()
	var n uint64
	if err := c.row(q, &n); err != nil {
		c.t.Fatalf("query %q: %v", q, err)
	}
	return n
}

// str runs q, which returns one String.
func (c *clusterConn) str(q string) string {
	c.t.Helper()
	var s string
	if err := c.row(q, &s); err != nil {
		c.t.Fatalf("query %q: %v", q, err)
	}
	return s
}

// waitAtLeast polls q (one UInt64) until it returns want or more, through
// errors (a node restarting), failing after timeout.
func (c *clusterConn) waitAtLeast(q string, want uint64, timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var n uint64
	var err error
	for time.Now().Before(deadline) {
		if err = c.row(q, &n); err == nil && n >= want {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	c.t.Fatalf("%s = %d (err %v) after %v, want %d", q, n, err, timeout, want)
}
