//go:build integration

package egress_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/schemas"
)

// TestEgressAtMostOnceCost measures what the intent receipt of an
// at_most_once command frame costs: command frames are produced at a steady
// AMS_BENCH_RATE (default 200/s) for AMS_BENCH_SECONDS (default 10 s) over
// 200 devices, once plain (at-least-once) and once at_most_once, and the
// latency from the produce acknowledgement to the device subscriber is
// reported (p50/p99/p999). It runs only when asked:
//
//	AMS_BENCH=1 go test -tags integration -count=1 -run TestEgressAtMostOnceCost -v ./sinks/egress/
func TestEgressAtMostOnceCost(t *testing.T) {
	if os.Getenv("AMS_BENCH") == "" {
		t.Skip("set AMS_BENCH=1 to measure the at-most-once cost")
	}
	rate := envInt("AMS_BENCH_RATE", 200)
	seconds := envInt("AMS_BENCH_SECONDS", 10)
	for _, atMostOnce := range []bool{false, true} {
		t.Run(fmt.Sprintf("at_most_once=%v", atMostOnce), func(t *testing.T) {
			h := newEgressHarness(t, "-commit-interval", "1s")
			h.Start(t)
			n := rate * seconds
			sent := make([]time.Time, n)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			go func() {
				tick := time.NewTicker(time.Second / time.Duration(rate))
				defer tick.Stop()
				for i := range n {
					<-tick.C
					sn := fmt.Sprintf("AMO%05d", i%200)
					id := fmt.Sprintf("c%06d", i)
					deadline := time.Now().Add(time.Hour)
					b, err := h.reg.Encode(&schemas.Downlink{FrameID: "command/" + id, SN: sn, Topic: protocol.DownlinkTopic(sn),
						Payload: []byte(id), CmdType: 3, SubType: 313, MsgID: "m" + id, CommandID: &id, Purpose: "command",
						CreatedAt: time.Now().UTC(), Deadline: &deadline, AtMostOnce: atMostOnce})
					if err != nil {
						t.Error(err)
						return
					}
					sent[i] = time.Now()
					h.prod.Produce(ctx, &kgo.Record{Topic: h.names.Downlink, Key: []byte(sn), Value: b}, func(_ *kgo.Record, err error) {
						if err != nil {
							t.Error(err)
						}
					})
				}
			}()
			// The first second is warm-up (group assignment, connections):
			// only the frames after it are measured.
			lat := make([]time.Duration, 0, n)
			timeout := time.After(3 * time.Minute)
			for got := 0; got < n; got++ {
				select {
				case f := <-h.Received():
					var i int
					if _, err := fmt.Sscanf(string(f.Payload), "c%06d", &i); err != nil {
						t.Fatalf("payload %q", f.Payload)
					}
					if i >= rate {
						lat = append(lat, time.Since(sent[i]))
					}
				case <-timeout:
					t.Fatalf("%d of %d frames received", got, n)
				}
			}
			slices.Sort(lat)
			q := func(p float64) time.Duration {
				return lat[min(len(lat)-1, int(p*float64(len(lat))))].Round(10 * time.Microsecond)
			}
			t.Logf("at_most_once=%v: %d command frames at %d/s over 200 devices (%d after the first second measured), produce to device: p50 %v p99 %v p999 %v max %v",
				atMostOnce, n, rate, len(lat), q(0.5), q(0.99), q(0.999), lat[len(lat)-1].Round(10*time.Microsecond))
		})
	}
}
