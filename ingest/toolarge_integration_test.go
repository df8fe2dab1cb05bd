//go:build integration

package ingest

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/testkit/testenv"
	"github.com/ivms/ams/schemas"
)

// TestFrameTooLargeForProducer: with a payload limit above what the
// producer can send (the start-up check refuses this configuration; here it
// is bypassed to show the per-frame guard), a frame whose record would
// exceed the producer's max record bytes becomes a too_large reject on
// ams.rejects (with a truncated payload, so the reject fits) and the frames
// of the other devices after it still reach ams.uplink.raw. Before the fix
// the record failed with MESSAGE_TOO_LARGE and the pipeline stopped.
func TestFrameTooLargeForProducer(t *testing.T) {
	const maxRecord = 64 << 10
	if err := CheckLimits(1<<20, maxRecord, "it"); err == nil {
		t.Fatal("CheckLimits accepts a payload limit above the record limit")
	}
	names := kafkatopics.WithPrefix(testenv.Unique(t, "it_toolarge") + ".")
	admin := testenv.KafkaClient(t)
	testenv.CreateTopics(t, admin, 2, names.UplinkRaw, names.Rejects)
	reg, err := schemas.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	out, err := NewKafkaOutput(KafkaConfig{Seeds: testenv.KafkaBrokers(), Topics: []string{names.UplinkRaw, names.Rejects},
		Linger: time.Millisecond, MaxRecordBytes: maxRecord, Opts: testenv.KafkaOpts()})
	if err != nil {
		t.Fatal(err)
	}
	conv := NewConverter(ConverterConfig{Names: names, IngestID: "it", MaxPayload: 1 << 20, MaxRecordBytes: maxRecord}, reg)
	in := newFakeInput()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := NewPipeline(in, out, conv, Config{MaxInflight: 100, DrainTimeout: 5 * time.Second}, log, NewMetrics(nil))
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("pipeline: %v", err)
		}
	}()

	big := bytes.Repeat([]byte("A"), maxRecord) // payload alone is the record limit
	in.add("/ivms/pub/BIG1", string(big))
	for _, sn := range []string{"OK1", "OK2", "OK3"} {
		in.add("/ivms/pub/"+sn, "frame of "+sn)
	}

	frames := make(chan schemas.UplinkRaw, 10)
	rejects := make(chan schemas.Reject, 10)
	testenv.Consume(t, reg, names.UplinkRaw, frames)
	testenv.Consume(t, reg, names.Rejects, rejects)
	timeout := time.After(20 * time.Second)
	got := map[string]bool{}
	for len(got) < 3 {
		select {
		case f := <-frames:
			got[f.SN] = true
		case <-timeout:
			t.Fatalf("frames after the large one: got %v", got)
		}
	}
	select {
	case rj := <-rejects:
		if rj.Reason != ReasonTooLarge || rj.SN != "BIG1" || len(rj.Payload) == 0 || len(rj.Payload) > maxRecord/4 {
			t.Fatalf("reject: reason %q sn %q payload %d bytes, detail %q", rj.Reason, rj.SN, len(rj.Payload), rj.Detail)
		}
	case <-timeout:
		t.Fatal("no too_large reject")
	}
	if got["BIG1"] {
		t.Fatal("the too-large frame reached ams.uplink.raw")
	}
}
