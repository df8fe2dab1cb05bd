//go:build integration

package api_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/ingest/api"
	"github.com/ivms/ams/pkg/deviceauth"
	"github.com/ivms/ams/pkg/devicestate"
	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/testkit/testenv"
	"github.com/ivms/ams/schemas"
	"github.com/ivms/ams/sinks/redissink"
)

// TestAPIEndToEnd runs the API over real Kafka and Redis with the Redis sink
// projecting beside it: PUT writes a Registration to ams.registry, POST an
// Avro Command to ams.commands, and ?wait= is woken by the projection of the
// command's final state.
func TestAPIEndToEnd(t *testing.T) {
	names := kafkatopics.WithPrefix(testenv.Unique(t, "it_api") + ".")
	cl := testenv.KafkaClient(t, kgo.RequiredAcks(kgo.AllISRAcks()))
	testenv.CreateTopics(t, cl, 3, names.Commands, names.Registry, names.Presence, names.DeviceEvents, names.CommandEvents)
	rdb := goredis.NewClient(testenv.RedisOptions())
	t.Cleanup(func() { rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("redis %s unreachable: %v", testenv.RedisAddr(), err)
	}
	prefix := testenv.Unique(t, "it_api") + ":"
	t.Cleanup(func() {
		if keys, _ := rdb.Keys(context.Background(), prefix+"*").Result(); len(keys) > 0 {
			rdb.Del(context.Background(), keys...)
		}
	})
	reg, err := schemas.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	keys := devicestate.Keys{Prefix: prefix}

	sink, err := redissink.NewSink(redissink.SinkConfig{Seeds: testenv.KafkaBrokers(), Group: testenv.Unique(t, "it_api_g"), KafkaOpts: testenv.KafkaOpts(),
		Projector: redissink.NewProjector(rdb, keys, names, reg), Redis: rdb, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	sinkCtx, stopSink := context.WithCancel(ctx)
	sinkDone := make(chan error, 1)
	go func() { sinkDone <- sink.Run(sinkCtx) }()
	defer func() {
		stopSink()
		if err := <-sinkDone; err != nil {
			t.Error(err)
		}
	}()

	srv, err := api.New(api.Config{Token: "tok", Names: names}, devicestate.NewStore(rdb, keys), api.KafkaProducer{Client: cl}, reg, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(api.ValidatingHandler(t, srv.Handler(), srv.OpenAPI()))
	defer hs.Close()
	do := func(method, path, body string, hdr ...string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, hs.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer tok")
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}

	if code, _ := do("POST", "/v1/devices/SNE/commands", `{"kind":"reboot"}`); code != http.StatusNotFound {
		t.Fatalf("command to an unregistered device: %d", code)
	}
	if code, body := do("PUT", "/v1/devices/SNE", `{"token":"device-token-0001","name":"gate"}`); code != http.StatusCreated {
		t.Fatalf("PUT: %d %v", code, body)
	}
	var regRec schemas.Registration
	readOne(t, ctx, names.Registry, reg, &regRec)
	if regRec.SN != "SNE" || regRec.TokenSHA256 != "" || !deviceauth.VerifyToken(regRec.TokenHash, "device-token-0001") || regRec.Name != "gate" {
		t.Fatalf("registration %+v", regRec)
	}
	// The projection makes the device known.
	for {
		code, body := do("GET", "/v1/devices/SNE", "")
		if code == http.StatusOK && body["registered"] == true {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("device not projected: %d %v", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The broker's login check reads the projected slow hash from Redis.
	for pw, want := range map[string]string{"device-token-0001": "allow", "device-token-0002": "deny"} {
		code, body := do("POST", "/v1/emqx/auth", `{"clientid":"SNE","username":"SNE","password":"`+pw+`"}`)
		if code != http.StatusOK || body["result"] != want {
			t.Fatalf("broker login with %s: %d %v, want %s", pw, code, body, want)
		}
	}

	code, body := do("POST", "/v1/devices/SNE/commands", `{"kind":"reboot","timeout":"5s"}`)
	if code != http.StatusAccepted {
		t.Fatalf("POST: %d %v", code, body)
	}
	var cmd schemas.Command
	readOne(t, ctx, names.Commands, reg, &cmd)
	if cmd.ID != body["id"] || cmd.SN != "SNE" || cmd.Kind != "reboot" || cmd.Body != `{"iReboot":1}` || cmd.TimeoutMs != 5000 {
		t.Fatalf("command %+v, answer %v", cmd, body)
	}

	// ?wait: the "processors" (this test) accept and complete the command
	// while the request waits; the projection's PUBLISH wakes it.
	start := time.Now()
	go func() {
		time.Sleep(300 * time.Millisecond)
		reply := `{"iResult":0}`
		for _, ev := range []*schemas.CommandEvent{
			{EventID: "K1/1", CommandID: "K1", SN: "SNE", Kind: "reboot", State: schemas.CommandAccepted, At: time.Now(), Seq: 1},
			{EventID: "K1/2", CommandID: "K1", SN: "SNE", Kind: "reboot", State: schemas.CommandSucceeded, At: time.Now(), Reply: &reply, Seq: 2},
		} {
			v, _ := reg.Encode(ev)
			_ = cl.ProduceSync(ctx, &kgo.Record{Topic: names.CommandEvents, Key: []byte("SNE"), Value: v}).FirstErr()
			t.Logf("produced %s at %s consumed=%d", ev.EventID, time.Since(start), sink.Consumed())
		}
	}()
	code, body = do("POST", "/v1/devices/SNE/commands?wait=30s", `{"kind":"reboot"}`, api.IdempotencyHeader, "K1")
	if code != http.StatusOK || body["state"] != schemas.CommandSucceeded || len(body["history"].([]any)) != 2 {
		t.Fatalf("POST ?wait: %d %v", code, body)
	}
	t.Logf("wait answered after %s", time.Since(start))
	if code, body := do("GET", "/v1/commands/K1", ""); code != http.StatusOK || body["final"] != true {
		t.Fatalf("GET command: %d %v", code, body)
	}
}

// readOne reads the first record of topic and decodes it into v.
func readOne(t *testing.T, ctx context.Context, topic string, reg *schemas.Registry, v any) {
	t.Helper()
	c := testenv.KafkaClient(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	for {
		fs := c.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("nothing on %s", topic)
		}
		if recs := fs.Records(); len(recs) > 0 {
			if err := reg.Decode(recs[0].Value, v); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
}
