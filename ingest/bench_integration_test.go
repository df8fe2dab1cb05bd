//go:build integration

package ingest_test

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ivms/ams/pkg/testkit/mqttconform"
)

// TestIngestThroughput measures `ams ingest` from MQTT to Kafka: frames/s
// (MQTT in, Kafka acknowledged, PUBACK out), ingest CPU per frame and its
// memory. It is a measurement, not a check, and runs only when asked:
//
//	AMS_BENCH=1 go test -tags integration -count=1 -run TestIngestThroughput -v ./ingest/
//
// AMS_BENCH_FRAMES (default 200000) frames of AMS_BENCH_DEVICES (default
// 10000) distinct devices are published, QoS 1, by AMS_BENCH_PUBLISHERS
// (default 50) connections, each frame on its device's own topic
// /ivms/pub/{sn} (ingest's cost depends on the frames and their topics, not
// on who holds the connection). AMS_BENCH_CONNECTED (default 0) idle device
// connections are held open meanwhile, as a connected fleet would be.
// AMS_BENCH_KIND=events publishes EMQX 5 connected events instead of frames
// (a reconnect storm).
func TestIngestThroughput(t *testing.T) {
	if os.Getenv("AMS_BENCH") == "" {
		t.Skip("set AMS_BENCH=1 to measure ingest throughput")
	}
	frames := envInt("AMS_BENCH_FRAMES", 200000)
	devices := envInt("AMS_BENCH_DEVICES", 10000)
	publishers := envInt("AMS_BENCH_PUBLISHERS", 50)
	connected := envInt("AMS_BENCH_CONNECTED", 0)
	payloadSize := envInt("AMS_BENCH_PAYLOAD", 200)
	events := os.Getenv("AMS_BENCH_KIND") == "events"

	h := newIngestHarness(t, 1000, "-mqtt-share-group", "")
	if connected > 0 {
		holdConnections(t, h.broker.URL, connected)
	}
	h.Start(t)
	pid := h.proc.Pid()

	payload := []byte(strings.Repeat("x", payloadSize))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	pubs := make([]mqtt.Client, publishers)
	for i := range pubs {
		opts := mqtt.NewClientOptions().AddBroker(h.broker.URL).SetClientID(fmt.Sprintf("bench-pub-%d", i)).
			SetCleanSession(true).SetAutoReconnect(false).SetWriteTimeout(time.Minute)
		pubs[i] = mqtt.NewClient(opts)
		if tok := pubs[i].Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publisher connect: %v", tok.Error())
		}
		defer pubs[i].Disconnect(0)
	}

	cpu0, _ := procCPU(pid)
	start := time.Now()
	var wg sync.WaitGroup
	per := frames / publishers
	for i, c := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			const window = 500
			toks := make([]mqtt.Token, 0, window)
			for j := range per {
				sn := fmt.Sprintf("BENCH%011d", (i*per+j)%devices)
				if events {
					ev := fmt.Sprintf(`{"username":"%s","ts":1764000000123,"sockport":1883,"proto_ver":4,"proto_name":"MQTT",`+
						`"keepalive":60,"ipaddress":"10.1.2.3","expiry_interval":0,"connected_at":1764000000120,"connack":0,"clientid":"%s","clean_start":true}`, sn, sn)
					toks = append(toks, c.Publish("test/sys/brokers/n1/clients/"+sn+"/connected", 1, false, ev))
				} else {
					toks = append(toks, c.Publish("/ivms/pub/"+sn, 1, false, payload))
				}
				if len(toks) == window {
					for _, tok := range toks {
						tok.Wait()
					}
					toks = toks[:0]
				}
			}
			for _, tok := range toks {
				tok.Wait()
			}
		}()
	}
	total := per * publishers
	published := make(chan time.Duration, 1)
	go func() { wg.Wait(); published <- time.Since(start) }()

	var pubDur time.Duration
	for {
		acked, err := ackedTotal(h.proc)
		if err != nil {
			t.Fatal(err)
		}
		if acked >= float64(total) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("only %v of %d frames acknowledged", acked, total)
		}
		select {
		case pubDur = <-published:
		case <-time.After(20 * time.Millisecond):
		}
	}
	elapsed := time.Since(start)
	if pubDur == 0 {
		pubDur = <-published
	}
	cpu1, _ := procCPU(pid)
	rss, hwm := procMem(pid)
	cpuSec := (cpu1 - cpu0) / 100 // clock ticks
	what := fmt.Sprintf("frames (%d B payload)", payloadSize)
	if events {
		what = "EMQX 5 connected events"
	}
	t.Logf("ingest: %d %s of %d devices over %d publishers, %d idle connected devices",
		total, what, devices, publishers, connected)
	t.Logf("ingest: %.0f frames/s end to end (published in %v, all in Kafka and acknowledged after %v)",
		float64(total)/elapsed.Seconds(), pubDur.Round(time.Millisecond), elapsed.Round(time.Millisecond))
	t.Logf("ingest: CPU %.2f s = %.1f µs per frame (%.0f%% of one core); memory RSS %d MiB, peak %d MiB",
		cpuSec, cpuSec/float64(total)*1e6, cpuSec/elapsed.Seconds()*100, rss>>10, hwm>>10)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

var ackedLine = regexp.MustCompile(`(?m)^ams_ingest_acked_total (\S+)$`)

func ackedTotal(p *mqttconform.Process) (float64, error) {
	m, err := p.Metrics()
	if err != nil {
		return 0, err
	}
	sm := ackedLine.FindStringSubmatch(m)
	if sm == nil {
		return 0, nil
	}
	return strconv.ParseFloat(sm[1], 64)
}

// procCPU returns utime+stime of pid in clock ticks.
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(fields[11], 64)
	st, _ := strconv.ParseFloat(fields[12], 64)
	return ut + st, nil
}

// procMem returns VmRSS and VmHWM of pid in KiB.
func procMem(pid int) (rss, hwm int) {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "VmRSS:":
			rss = v
		case "VmHWM:":
			hwm = v
		}
	}
	return rss, hwm
}

// holdConnections opens n idle device connections (client id = username = sn)
// until the test ends.
func holdConnections(t *testing.T, url string, n int) {
	t.Helper()
	var mu sync.Mutex
	var clients []mqtt.Client
	var wg sync.WaitGroup
	sem := make(chan struct{}, 200)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			sn := fmt.Sprintf("IDLE%012d", i)
			c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID(sn).SetUsername(sn).
				SetKeepAlive(5 * time.Minute).SetAutoReconnect(false))
			if tok := c.Connect(); tok.WaitTimeout(30*time.Second) && tok.Error() == nil {
				mu.Lock()
				clients = append(clients, c)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(clients) < n {
		t.Fatalf("only %d of %d idle devices connected", len(clients), n)
	}
	t.Cleanup(func() {
		for _, c := range clients {
			c.Disconnect(0)
		}
	})
}
