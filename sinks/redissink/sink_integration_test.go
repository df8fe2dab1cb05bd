//go:build integration

package redissink

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/devicestate"
	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/testkit/testenv"
	"github.com/ivms/ams/schemas"
)

type fixture struct {
	t     *testing.T
	names kafkatopics.Names
	cl    *kgo.Client
	rdb   *goredis.Client
	reg   *schemas.Registry
	n     int // records produced
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	names := kafkatopics.WithPrefix(testenv.Unique(t, "it_redis") + ".")
	cl := testenv.KafkaClient(t, kgo.RequiredAcks(kgo.AllISRAcks()))
	testenv.CreateTopics(t, cl, 3, names.Registry, names.Presence, names.DeviceEvents, names.CommandEvents, names.Rejects)
	rdb := goredis.NewClient(testenv.RedisOptions())
	t.Cleanup(func() { rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("redis %s unreachable: %v", testenv.RedisAddr(), err)
	}
	reg, err := schemas.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, names: names, cl: cl, rdb: rdb, reg: reg}
}

func (f *fixture) prefix() string {
	p := testenv.Unique(f.t, "it_redis") + ":"
	f.t.Cleanup(func() {
		ctx := context.Background()
		keys, _ := f.rdb.Keys(ctx, p+"*").Result()
		if len(keys) > 0 {
			f.rdb.Del(ctx, keys...)
		}
	})
	return p
}

func (f *fixture) produce(topic, key string, v any) {
	f.t.Helper()
	var value []byte
	switch v := v.(type) {
	case nil:
	case []byte:
		value = v
	default:
		b, err := f.reg.Encode(v)
		if err != nil {
			f.t.Fatal(err)
		}
		value = b
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte(key), Value: value}).FirstErr(); err != nil {
		f.t.Fatal(err)
	}
	f.n++
}

// start runs a sink with a new group over prefix; stop stops it and
// returns its error.
func (f *fixture) start(prefix string) (sink *Sink, stop func() error) {
	f.t.Helper()
	sink, err := NewSink(SinkConfig{Seeds: testenv.KafkaBrokers(), Group: testenv.Unique(f.t, "it_redis_g"), KafkaOpts: testenv.KafkaOpts(),
		Projector: NewProjector(f.rdb, devicestate.Keys{Prefix: prefix}, f.names, f.reg), Redis: f.rdb, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sink.Run(ctx) }()
	return sink, func() error { cancel(); return <-done }
}

// run consumes every produced record into prefix with a new group, then
// stops the sink.
func (f *fixture) run(prefix string) {
	f.t.Helper()
	sink, stop := f.start(prefix)
	deadline := time.Now().Add(60 * time.Second)
	for sink.Consumed() < int64(f.n) {
		if time.Now().After(deadline) {
			_ = stop()
			f.t.Fatalf("sink consumed %d of %d records", sink.Consumed(), f.n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := stop(); err != nil {
		f.t.Fatal(err)
	}
}

// snapshot reads every key under prefix, as prefix-less key -> contents.
func (f *fixture) snapshot(prefix string) map[string]string {
	f.t.Helper()
	ctx := context.Background()
	keys, err := f.rdb.Keys(ctx, prefix+"*").Result()
	if err != nil {
		f.t.Fatal(err)
	}
	out := map[string]string{}
	for _, k := range keys {
		var v string
		switch typ := f.rdb.Type(ctx, k).Val(); typ {
		case "hash":
			h := f.rdb.HGetAll(ctx, k).Val()
			for _, field := range slices.Sorted(maps.Keys(h)) {
				v += field + "=" + h[field] + "\n"
			}
		case "zset":
			v = fmt.Sprint(f.rdb.ZRangeWithScores(ctx, k, 0, -1).Val())
		case "set":
			m := f.rdb.SMembers(ctx, k).Val()
			slices.Sort(m)
			v = fmt.Sprint(m)
		case "list":
			v = strings.Join(f.rdb.LRange(ctx, k, 0, -1).Val(), "\n")
		default:
			f.t.Fatalf("key %s has type %s", k, typ)
		}
		out[strings.TrimPrefix(k, prefix)] = v
	}
	return out
}

// slowHash is a registration's token_hash (its content is not checked here).
const slowHash = "$pbkdf2-sha256$i=10000$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5"

func ts(sec int) time.Time { return time.Unix(1_700_000_000+int64(sec), 0).UTC() }

func (f *fixture) produceLog() {
	n := f.names
	reg := func(sn, name string) *schemas.Registration {
		return &schemas.Registration{SN: sn, TokenSHA256: strings.Repeat("ab", 32), Name: name, Bound: true, UpdatedAt: ts(0), UpdatedBy: "test"}
	}
	f.produce(n.Registry, "SN1", reg("SN1", "cam1"))
	reg2 := reg("SN2", "cam2") // written since token_hash: no sha256
	reg2.TokenSHA256, reg2.TokenHash = "", slowHash
	f.produce(n.Registry, "SN2", reg2)
	f.produce(n.Registry, "SN3", reg("SN3", "cam3"))
	f.produce(n.Registry, "SN3", nil) // tombstone
	f.produce(n.Registry, "SN4", reg("SN4", "never-seen"))
	pres := func(sn string, seq int64, online bool) *schemas.Presence {
		return &schemas.Presence{EventID: fmt.Sprintf("%s/%d", sn, seq), SN: sn, Online: online, Reason: "connected", At: ts(int(seq) * 10), Seq: seq}
	}
	f.produce(n.Presence, "SN1", pres("SN1", 1, true))
	f.produce(n.Presence, "SN1", pres("SN1", 2, false))
	f.produce(n.Presence, "SN1", pres("SN1", 3, true))
	f.produce(n.Presence, "SN1", pres("SN1", 2, false)) // redelivered, older: ignored
	f.produce(n.Presence, "SN2", pres("SN2", 1, true))
	f.produce(n.Presence, "SN2", pres("SN2", 2, false))
	f.produce(n.Presence, "SN1", []byte("not avro")) // skipped
	dev := func(sn, kind, body string, sec int, conn *schemas.Connection) *schemas.DeviceEvent {
		return &schemas.DeviceEvent{EventID: fmt.Sprintf("%s/%s/%d", sn, kind, sec), SN: sn, Kind: kind, Body: body,
			Connection: conn, IngestTime: ts(sec), ProcessedAt: ts(sec)}
	}
	f.produce(n.DeviceEvents, "SN1", dev("SN1", schemas.EventHandshake, "", 31, nil))
	f.produce(n.DeviceEvents, "SN1", dev("SN1", schemas.EventConfiguration, `{"iVer":2}`, 32, nil))
	f.produce(n.DeviceEvents, "SN2", dev("SN2", schemas.EventConnection, "", 25, &schemas.Connection{Connected: false, Reason: "keepalive_timeout"}))
	reply := `{"iResult":0}`
	cev := func(id, sn, state string, seq int32, reply *string) *schemas.CommandEvent {
		return &schemas.CommandEvent{EventID: fmt.Sprintf("%s/%d", id, seq), CommandID: id, SN: sn, Kind: "reboot", Code: 9,
			State: state, At: ts(40 + int(seq)), Reply: reply, Seq: seq}
	}
	f.produce(n.CommandEvents, "SN1", cev("C1", "SN1", schemas.CommandAccepted, 1, nil))
	f.produce(n.CommandEvents, "SN1", cev("C1", "SN1", schemas.CommandSent, 2, nil))
	f.produce(n.CommandEvents, "SN1", cev("C1", "SN1", schemas.CommandSent, 2, nil)) // duplicate
	f.produce(n.CommandEvents, "SN1", cev("C1", "SN1", schemas.CommandSucceeded, 3, &reply))
	f.produce(n.CommandEvents, "SN2", cev("C2", "SN2", schemas.CommandAccepted, 1, nil))
	f.produce(n.CommandEvents, "SN2", cev("C2", "SN2", schemas.CommandQueued, 2, nil))
}

// TestSinkReplay projects a log into Redis, checks the state, then replays
// it from scratch into a fresh prefix and again over the first prefix: the
// keys are identical each time.
func TestSinkReplay(t *testing.T) {
	f := newFixture(t)
	f.produceLog()
	pa := f.prefix()
	f.run(pa)
	a := f.snapshot(pa)

	ctx := context.Background()
	st := devicestate.NewStore(f.rdb, devicestate.Keys{Prefix: pa})
	d1, ok, err := st.Device(ctx, "SN1")
	if err != nil || !ok || !d1.Online || !d1.Session || string(d1.Config) != `{"iVer":2}` || d1.Registration.Name != "cam1" ||
		len(d1.Pending) != 0 || !d1.LastSeen.Equal(ts(32)) || !d1.Since.Equal(ts(30)) {
		t.Fatalf("SN1: %+v ok=%v err=%v", d1, ok, err)
	}
	d2, _, _ := st.Device(ctx, "SN2")
	if d2.Online || d2.Session || len(d2.Pending) != 1 || d2.Pending[0].ID != "C2" || d2.Pending[0].State != schemas.CommandQueued {
		t.Fatalf("SN2: %+v", d2)
	}
	if _, ok, _ := st.Device(ctx, "SN3"); ok {
		t.Fatalf("SN3 (deleted, never seen) still has state: %v", a)
	}
	if h, _ := st.TokenHash(ctx, "SN1"); h != strings.Repeat("ab", 32) {
		t.Fatalf("legacy token hash %q", h)
	}
	if h, _ := st.TokenHash(ctx, "SN2"); h != slowHash {
		t.Fatalf("token hash %q", h)
	}
	if _, h, ok, err := st.RegistrationOf(ctx, "SN2"); !ok || err != nil || h != slowHash {
		t.Fatalf("registration of SN2: hash %q %v %v", h, ok, err)
	}
	on, next, err := st.ListDevices(ctx, true, "", 10)
	if err != nil || len(on) != 1 || on[0].SN != "SN1" || next != "" {
		t.Fatalf("online: %+v %q %v", on, next, err)
	}
	off, next, _ := st.ListDevices(ctx, false, "", 1)
	if len(off) != 1 || off[0].SN != "SN2" || next != "SN2" {
		t.Fatalf("offline page 1: %+v %q", off, next)
	}
	off, next, _ = st.ListDevices(ctx, false, next, 1)
	if len(off) != 1 || off[0].SN != "SN4" || next != "" {
		t.Fatalf("offline page 2: %+v %q", off, next)
	}
	c1, ok, err := st.Command(ctx, "C1")
	if err != nil || !ok || c1.State != schemas.CommandSucceeded || !c1.Final || len(c1.History) != 3 || string(c1.Reply) != `{"iResult":0}` {
		t.Fatalf("C1: %+v %v %v", c1, ok, err)
	}
	for i, ev := range c1.History {
		if ev.Seq != int32(i+1) {
			t.Fatalf("C1 history: %+v", c1.History)
		}
	}

	pb := f.prefix()
	f.run(pb)
	if b := f.snapshot(pb); !maps.Equal(a, b) {
		t.Fatalf("replay into a fresh prefix differs:\nfirst  %v\nreplay %v", a, b)
	}
	f.run(pa)
	if again := f.snapshot(pa); !maps.Equal(a, again) {
		t.Fatalf("replay over the same prefix changed it:\nbefore %v\nafter  %v", a, again)
	}
}

// TestWatchWakes: a subscriber of a command's channel is woken by the
// projection of the command's event; a final-only subscriber
// (WatchCommandFinal, the API's ?wait=) sleeps through the interim event
// and is woken by the final one, after which the state read is final.
func TestWatchWakes(t *testing.T) {
	f := newFixture(t)
	p := f.prefix()
	st := devicestate.NewStore(f.rdb, devicestate.Keys{Prefix: p})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wake, stopWatch, err := st.WatchCommand(ctx, "C9")
	if err != nil {
		t.Fatal(err)
	}
	defer stopWatch()
	final, stopFinal, err := st.WatchCommandFinal(ctx, "C9")
	if err != nil {
		t.Fatal(err)
	}
	defer stopFinal()
	f.produce(f.names.CommandEvents, "SN9", &schemas.CommandEvent{EventID: "C9/1", CommandID: "C9", SN: "SN9", Kind: "reboot",
		State: schemas.CommandAccepted, At: ts(1), Seq: 1})
	_, stop := f.start(p)
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	select {
	case <-wake:
		if c, ok, err := st.Command(ctx, "C9"); err != nil || !ok || c.State != schemas.CommandAccepted {
			t.Fatalf("after wake-up: %+v %v %v", c, ok, err)
		}
	case <-ctx.Done():
		t.Fatal("not woken")
	}
	select {
	case <-final:
		t.Fatal("the final-only waiter was woken by ACCEPTED")
	case <-time.After(300 * time.Millisecond):
	}
	f.produce(f.names.CommandEvents, "SN9", &schemas.CommandEvent{EventID: "C9/2", CommandID: "C9", SN: "SN9", Kind: "reboot",
		State: schemas.CommandSucceeded, At: ts(2), Seq: 2})
	select {
	case <-final:
		if c, ok, err := st.Command(ctx, "C9"); err != nil || !ok || c.State != schemas.CommandSucceeded || !c.Final {
			t.Fatalf("after the final wake-up: %+v %v %v", c, ok, err)
		}
	case <-ctx.Done():
		t.Fatal("the final-only waiter was not woken by SUCCEEDED")
	}
}

// TestSinkNoStall: names that used to collide (the pending set of "X" is
// the hash of a device named "X:pending") both project; a record that
// fails on its data (its key already holds another type: WRONGTYPE) and a
// record that does not decode go to ams.rejects with their reasons; and
// the registrations after them are still projected, so authentication
// sees them. Before the fix the sink retried the WRONGTYPE batch forever.
func TestSinkNoStall(t *testing.T) {
	f := newFixture(t)
	p := f.prefix()
	ctx := context.Background()
	// A key left by a foreign writer (or an older layout) with another type.
	if err := f.rdb.Set(ctx, p+"dev:POISON", "a string", 0).Err(); err != nil {
		t.Fatal(err)
	}
	n := f.names
	reg := func(sn string) *schemas.Registration {
		return &schemas.Registration{SN: sn, TokenSHA256: strings.Repeat("cd", 32), Name: sn, Bound: true, UpdatedAt: ts(0), UpdatedBy: "test"}
	}
	f.produce(n.CommandEvents, "X", &schemas.CommandEvent{EventID: "X:1/1", CommandID: "X:1", SN: "X", Kind: "reboot",
		State: schemas.CommandQueued, At: ts(1), Seq: 1})
	f.produce(n.Registry, "X:pending", reg("X:pending"))
	f.produce(n.CommandEvents, "Y", &schemas.CommandEvent{EventID: "X/1", CommandID: "X", SN: "Y", Kind: "reboot",
		State: schemas.CommandQueued, At: ts(1), Seq: 1})
	f.produce(n.Registry, "POISON", reg("POISON"))
	f.produce(n.Presence, "SN5", []byte("not avro"))
	for i := range 5 {
		f.produce(n.Registry, fmt.Sprintf("AFTER%d", i), reg(fmt.Sprintf("AFTER%d", i)))
	}
	rejects := make(chan schemas.Reject, 10)
	testenv.Consume(t, f.reg, n.Rejects, rejects)

	sink, stop := f.start(p)
	deadline := time.Now().Add(20 * time.Second)
	for sink.Consumed() < int64(f.n) {
		if time.Now().After(deadline) {
			_ = stop()
			t.Fatalf("sink stalled: consumed %d of %d records", sink.Consumed(), f.n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	st := devicestate.NewStore(f.rdb, devicestate.Keys{Prefix: p})
	for i := range 5 {
		if h, err := st.TokenHash(ctx, fmt.Sprintf("AFTER%d", i)); err != nil || h != strings.Repeat("cd", 32) {
			t.Fatalf("AFTER%d not projected: %q %v", i, h, err)
		}
	}
	if ok, err := st.Registered(ctx, "X:pending"); err != nil || !ok {
		t.Fatalf("X:pending: %v %v", ok, err)
	}
	if d, ok, err := st.Device(ctx, "X"); err != nil || !ok || len(d.Pending) != 1 || d.Pending[0].ID != "X:1" || d.Pending[0].State != schemas.CommandQueued {
		t.Fatalf("X: %+v %v %v", d, ok, err)
	}
	if c, ok, err := st.Command(ctx, "X"); err != nil || !ok || c.SN != "Y" {
		t.Fatalf("command X: %+v %v %v", c, ok, err)
	}
	if c, ok, err := st.Command(ctx, "X:1"); err != nil || !ok || c.SN != "X" {
		t.Fatalf("command X:1: %+v %v %v", c, ok, err)
	}
	got := map[string]schemas.Reject{}
	timeout := time.After(15 * time.Second)
	for len(got) < 2 {
		select {
		case rj := <-rejects:
			got[rj.SN] = rj
		case <-timeout:
			t.Fatalf("rejects: got %+v, want POISON and SN5", got)
		}
	}
	if rj := got["POISON"]; rj.Reason != "redis_wrongtype" || rj.Stage != schemas.StageSink || rj.SourceTopic != n.Registry ||
		!strings.Contains(rj.Detail, "WRONGTYPE") || len(rj.Payload) == 0 {
		t.Fatalf("POISON reject: %+v", rj)
	}
	if rj := got["SN5"]; rj.Reason != "short_value" || rj.SourceTopic != n.Presence || string(rj.Payload) != "not avro" {
		t.Fatalf("SN5 reject: %+v", rj)
	}
}
