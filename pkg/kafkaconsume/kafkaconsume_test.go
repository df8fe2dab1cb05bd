package kafkaconsume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestNewNeedsGroupAndTopics(t *testing.T) {
	if _, err := New(Config{Name: "x", Topics: []string{"t"}}); err == nil {
		t.Error("no group accepted")
	}
	if _, err := New(Config{Name: "x", Group: "g"}); err == nil {
		t.Error("no topics accepted")
	}
	c, err := New(Config{Name: "x", Group: "g", Topics: []string{"t"}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Client() != nil {
		t.Error("New created a client")
	}
	if err := c.Ping(context.Background()); err == nil {
		t.Error("Ping before Run succeeded")
	}
}

func TestBackoff(t *testing.T) {
	var b Backoff
	var got []time.Duration
	for range 8 {
		got = append(got, b.Next())
	}
	want := "[100ms 200ms 400ms 800ms 1.6s 3.2s 5s 5s]"
	if fmt.Sprint(got) != want {
		t.Errorf("zero Backoff waits %v, want %s", got, want)
	}
	b.Reset()
	if d := b.Next(); d != 100*time.Millisecond {
		t.Errorf("after Reset: %v", d)
	}
	b2 := Backoff{Min: time.Second, Max: 3 * time.Second}
	got = nil
	for range 3 {
		got = append(got, b2.Next())
	}
	if fmt.Sprint(got) != "[1s 2s 3s]" {
		t.Errorf("Backoff{1s,3s} waits %v", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := (&Backoff{Min: time.Hour}).Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait on a done ctx = %v", err)
	}
}

func TestSetLag(t *testing.T) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lag"}, []string{"topic", "partition"})
	SetLag(g, kgo.FetchTopicPartition{Topic: "a", FetchPartition: kgo.FetchPartition{Partition: 3, HighWatermark: 10,
		Records: []*kgo.Record{{Offset: 4}, {Offset: 6}}}})
	if v := testutil.ToFloat64(g.WithLabelValues("a", "3")); v != 3 {
		t.Errorf("lag = %v, want 3 (offsets 7, 8, 9 behind)", v)
	}
	SetLag(g, kgo.FetchTopicPartition{Topic: "a", FetchPartition: kgo.FetchPartition{Partition: 3, HighWatermark: 12}})
	if v := testutil.ToFloat64(g.WithLabelValues("a", "3")); v != 3 {
		t.Errorf("an empty fetch changed the lag to %v", v)
	}
}

func TestLogFetchErrorsSkipsStops(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	fetches := kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: "a", Partitions: []kgo.FetchPartition{
		{Partition: 0, Err: context.Canceled},
		{Partition: 1, Err: context.DeadlineExceeded},
		{Partition: 2, Err: kgo.ErrClientClosed},
		{Partition: 3, Err: errors.New("broker says no")},
	}}}}}
	LogFetchErrors(log, "sink", fetches)
	out := buf.String()
	if strings.Count(out, "fetch error") != 1 || !strings.Contains(out, "broker says no") || !strings.Contains(out, "sink: fetch error") {
		t.Errorf("logged:\n%s", out)
	}
}
