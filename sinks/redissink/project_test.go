package redissink

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/devicestate"
	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/schemas"
)

// TestPlan checks the decoding side of the projection (no Redis needed).
func TestPlan(t *testing.T) {
	reg, err := schemas.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	names := kafkatopics.Default()
	p := NewProjector(nil, devicestate.Keys{Prefix: "t:"}, names, reg)
	enc := func(v any) []byte {
		b, err := reg.Encode(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	at := time.UnixMilli(1_700_000_000_123)

	o, err := p.plan(&kgo.Record{Topic: names.Registry, Key: []byte("SN1")})
	if err != nil || o.keys[0] != "t:dev:SN1" || o.args[1] != "0" {
		t.Fatalf("tombstone: %+v %v", o, err)
	}
	o, err = p.plan(&kgo.Record{Topic: names.Presence, Key: []byte("SN1"),
		Value: enc(&schemas.Presence{SN: "SN1", Online: true, At: at, Seq: 7})})
	if err != nil || o.args[1] != "7" || o.args[2] != "1" || o.args[3] != "1700000000123" {
		t.Fatalf("presence: %+v %v", o, err)
	}
	o, err = p.plan(&kgo.Record{Topic: names.CommandEvents, Key: []byte("SN1"),
		Value: enc(&schemas.CommandEvent{CommandID: "C1", SN: "SN1", State: schemas.CommandFailed, At: at, Seq: 3})})
	if err != nil || o.keys[0] != "t:cmd:C1" || o.keys[2] != "t:dev:SN1:pending" || o.args[3] != "1" || o.args[13] != "t:cmd:C1:events" {
		t.Fatalf("command event: %+v %v", o, err)
	}

	// Registrations: the slow token_hash is projected; an old record's
	// token_sha256 only when it has no token_hash (lower-cased).
	legacy := strings.Repeat("AB", 32)
	for _, c := range []struct {
		reg  schemas.Registration
		want string
	}{
		{schemas.Registration{SN: "SN1", TokenHash: "$pbkdf2-sha256$i=10000$c2FsdA$a2V5", UpdatedAt: at}, "$pbkdf2-sha256$i=10000$c2FsdA$a2V5"},
		{schemas.Registration{SN: "SN1", TokenSHA256: legacy, UpdatedAt: at}, strings.ToLower(legacy)},
	} {
		o, err = p.plan(&kgo.Record{Topic: names.Registry, Key: []byte("SN1"), Value: enc(&c.reg)})
		if err != nil || o.args[1] != "1" || o.args[2] != c.want {
			t.Fatalf("registration %+v: %+v %v", c.reg, o, err)
		}
	}

	// Undecodable, a Presence on the command events topic, an unknown topic:
	// skipped, with the reason.
	for _, r := range []*kgo.Record{
		{Topic: names.Presence, Key: []byte("SN1"), Value: []byte("garbage")},
		{Topic: names.CommandEvents, Key: []byte("SN1"), Value: enc(&schemas.Presence{SN: "SN1", At: at})},
		{Topic: names.Registry, Value: enc(&schemas.Registration{SN: "SN1"})},
		{Topic: "elsewhere", Key: []byte("SN1")},
	} {
		_, err := p.plan(r)
		var se *SkipError
		if !errors.As(err, &se) || se.Topic != r.Topic {
			t.Errorf("%s %q: %v, want a SkipError", r.Topic, r.Value, err)
		}
	}
	// A batch of only skipped records touches no Redis (the client is nil).
	applied, skipped, err := p.Apply(context.Background(), []*kgo.Record{{Topic: "elsewhere"}})
	if applied != 0 || len(skipped) != 1 || err != nil {
		t.Fatalf("Apply: %d %v %v", applied, skipped, err)
	}
}

func TestDataError(t *testing.T) {
	for err, want := range map[error]string{
		replyErr("WRONGTYPE Operation against a key holding the wrong kind of value script: abc"): "redis_wrongtype",
		replyErr("ERR user_script:3: attempt to compare nil with number script: abc"):             "redis_script_error",
		replyErr("LOADING Redis is loading the dataset in memory"):                                "",
		replyErr("ERR max number of clients reached"):                                             "",
		replyErr("NOSCRIPT No matching script"):                                                   "",
		errors.New("dial tcp 127.0.0.1:6379: connect: connection refused"):                        "",
		context.DeadlineExceeded:                                                                  "",
	} {
		if got := DataError(err); got != want {
			t.Errorf("DataError(%v) = %q, want %q", err, got, want)
		}
	}
}

// replyErr is an error reply of Redis (goredis.Error), as the client returns it.
type replyErr string

func (e replyErr) Error() string { return string(e) }
func (replyErr) RedisError()     {}
