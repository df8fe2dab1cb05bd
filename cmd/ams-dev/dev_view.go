package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/cmd/internal/roles"
	"github.com/ivms/ams/pkg/devicestate"
	"github.com/ivms/ams/pkg/devkit/devbroker"
	"github.com/ivms/ams/pkg/devkit/devicesim"
	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/schemas"
)

// devHints is what `ams-dev` prints once everything runs.
type devHints struct {
	api, token, tokenFile, mqtt, sn string
	chHost, chPort, chDB            string
	media                           string // the dev media server (startDevNginx)
	devices                         int
	logs                            string
	started                         time.Duration
}

func printDevHints(w io.Writer, h devHints) {
	fmt.Fprintf(w, "Console: %s/ui/   sign in with token %s\n", h.api, h.token)
	fmt.Fprintf(w, `
ams-dev is up (%.1fs): every role in this process, on embedded Kafka, Redis and MQTT.
  API         %s   (token: %s, also in %s)
  MQTT        %s   (devices log in with client id = username = sn)
  ClickHouse  %s:%s, database %s
  streams     %s
  logs        %s
`, h.started.Seconds(), h.api, h.token, h.tokenFile, h.mqtt, h.chHost, h.chPort, h.chDB, h.media, h.logs)
	if h.devices > 0 {
		fmt.Fprintf(w, "  fleet       %d simulated devices, %s to %s%0*d\n", h.devices, h.sn, devSNPrefix, 16-len(devSNPrefix), h.devices)
	}
	fmt.Fprintf(w, `
Send a command (and wait for the device's reply):
  curl -s -H 'Authorization: Bearer %[1]s' -X POST -d '{"kind":"sd_info"}' \
       '%[2]s/v1/devices/%[3]s/commands?wait=15s'
A device's state, and the devices online:
  curl -s -H 'Authorization: Bearer %[1]s' %[2]s/v1/devices/%[3]s
  curl -s -H 'Authorization: Bearer %[1]s' '%[2]s/v1/devices?online=true&limit=5'
The history:
  clickhouse-client --host %[4]s --port %[5]s --query 'SELECT kind, count() FROM %[6]s.device_events FINAL GROUP BY kind'
  clickhouse-client --host %[4]s --port %[5]s --query 'SELECT sn, online, reason, at FROM %[6]s.presence FINAL ORDER BY at DESC LIMIT 10'

Ctrl-C stops everything.

`, h.token, h.api, h.sn, h.chHost, h.chPort, h.chDB)
}

// devViewConfig says where the live view reads from.
type devViewConfig struct {
	seeds     []string
	redisAddr string
	fleet     *devicesim.Fleet // nil without a fleet
	broker    *devbroker.Broker
	devices   int
	started   time.Time // when ams-dev started
	api       string    // the API's URL
	log       *slog.Logger
}

// devView is the live view: devices online (Redis projection), uplinks per
// second (ams.uplink.raw), commands by latest state and rejects by reason
// (read from ams.command.events and ams.rejects), and the consumer lag of
// each group.
type devView struct {
	cfg   devViewConfig
	names kafkatopics.Names

	mu       sync.Mutex
	cmdState map[string]string
	rejects  map[string]int64
}

func newDevView(cfg devViewConfig) *devView {
	return &devView{cfg: cfg, names: kafkatopics.WithPrefix(""), cmdState: map[string]string{}, rejects: map[string]int64{}}
}

// devGroups are the consumer groups whose lag the view shows.
var devGroups = []struct{ label, group string }{
	{"process", "ams-process-device"},
	{"egress", "ams-egress"},
	{"sink redis", "ams-sink-redis"},
	{"sink clickhouse", "ams-sink-clickhouse"},
}

// start runs the view on w every interval until ctx is done or the
// returned function is called (which waits for the last refresh).
func (v *devView) start(ctx context.Context, w io.Writer, every time.Duration) func() {
	if every <= 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	cons, err := kgo.NewClient(kgo.SeedBrokers(v.cfg.seeds...), kgo.ConsumeTopics(v.names.CommandEvents, v.names.Rejects),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		v.cfg.log.Warn("live view: kafka client", "err", err)
		cancel()
		return func() {}
	}
	admCl, err := kgo.NewClient(kgo.SeedBrokers(v.cfg.seeds...))
	if err != nil {
		cons.Close()
		cancel()
		return func() {}
	}
	adm := kadm.NewClient(admCl)
	rdb := goredis.NewClient(&goredis.Options{Addr: v.cfg.redisAddr})
	reg, _ := schemas.NewRegistry()
	wg.Go(func() { v.consume(ctx, cons, reg) })
	wg.Go(func() {
		tty := roles.IsTerminal(w)
		t := time.NewTicker(every)
		defer t.Stop()
		start := v.cfg.started
		var prevUp int64 = -1
		prevAt := time.Now()
		shown := 0
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			qctx, qcancel := context.WithTimeout(ctx, every)
			lines, up := v.render(qctx, adm, rdb, start, prevUp, prevAt)
			qcancel()
			if ctx.Err() != nil {
				return
			}
			prevUp, prevAt = up, time.Now()
			if tty {
				var b strings.Builder
				if shown > 0 {
					fmt.Fprintf(&b, "\x1b[%dA", shown)
				}
				// A line longer than the terminal would wrap and break
				// the cursor-up; cut it instead.
				width := termWidth(w)
				if width <= 0 {
					width = 80
				}
				for _, l := range lines {
					if len(l) >= width {
						l = l[:width-1]
					}
					b.WriteString("\r\x1b[2K" + l + "\n")
				}
				shown = len(lines)
				fmt.Fprint(w, b.String())
			} else {
				fmt.Fprintln(w, strings.Join(lines, " | "))
			}
		}
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			cons.Close()
			admCl.Close()
			rdb.Close()
		})
	}
}

// consume keeps the latest state of every command and counts the rejects.
func (v *devView) consume(ctx context.Context, cl *kgo.Client, reg *schemas.Registry) {
	for ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) {
			switch r.Topic {
			case v.names.CommandEvents:
				var ev schemas.CommandEvent
				if reg.Decode(r.Value, &ev) == nil && ev.CommandID != "" {
					v.mu.Lock()
					v.cmdState[ev.CommandID] = ev.State
					v.mu.Unlock()
				}
			case v.names.Rejects:
				var rj schemas.Reject
				if reg.Decode(r.Value, &rj) == nil {
					v.mu.Lock()
					v.rejects[strings.ToLower(rj.Stage)+"/"+rj.Reason]++
					v.mu.Unlock()
				}
			}
		})
	}
}

// render returns the view's lines and the uplink count it saw.
func (v *devView) render(ctx context.Context, adm *kadm.Client, rdb *goredis.Client, start time.Time, prevUp int64, prevAt time.Time) ([]string, int64) {
	keys := devicestate.Keys{Prefix: devicestate.DefaultPrefix}
	online, err := rdb.ZCard(ctx, keys.Online()).Result()
	onlineS := fmt.Sprint(online)
	if err != nil {
		onlineS = "?"
	}
	devLine := fmt.Sprintf("devices   online %s/%d   broker clients %d", onlineS, v.cfg.devices, v.cfg.broker.Connected())
	var fleetS devicesim.Stats
	if v.cfg.fleet != nil {
		fleetS = v.cfg.fleet.Stats()
		devLine += fmt.Sprintf("   fleet connected %d", fleetS.Connected)
	}

	var up int64 = -1
	if offs, err := adm.ListEndOffsets(ctx, v.names.UplinkRaw); err == nil {
		up = 0
		offs.Each(func(o kadm.ListedOffset) { up += o.Offset })
	}
	frames := "frames    in ?"
	if up >= 0 {
		rate := 0.0
		if prevUp >= 0 {
			if dt := time.Since(prevAt).Seconds(); dt > 0 {
				rate = float64(up-prevUp) / dt
			}
		}
		frames = fmt.Sprintf("frames    in %.0f/s, %d in all", rate, up)
	}
	if v.cfg.fleet != nil {
		frames += fmt.Sprintf("   fleet sent %d, received %d", fleetS.SentTotal, fleetS.ReceivedTotal)
	}

	v.mu.Lock()
	byState := map[string]int64{}
	for _, s := range v.cmdState {
		byState[s]++
	}
	rejects := map[string]int64{}
	for r, n := range v.rejects {
		rejects[r] = n
	}
	v.mu.Unlock()

	var lagParts []string
	if lags, err := adm.Lag(ctx, groupNames()...); err == nil {
		for _, g := range devGroups {
			l, ok := lags[g.group]
			if !ok || l.Error() != nil {
				lagParts = append(lagParts, g.label+" -")
				continue
			}
			lagParts = append(lagParts, fmt.Sprintf("%s %d", g.label, v.records(l.Lag)))
		}
	} else {
		lagParts = append(lagParts, "?")
	}
	lag := "lag       " + strings.Join(lagParts, "  ")
	return []string{
		fmt.Sprintf("ams-dev   up %s   api %s   mqtt %s", time.Since(start).Truncate(time.Second), v.cfg.api, v.cfg.broker.URL()),
		devLine,
		frames,
		"commands  " + countsLine(byState, "none yet"),
		"rejects   " + countsLine(rejects, "none"),
		lag,
	}, up
}

// records is a group's lag in records: a read-committed consumer that is
// caught up on a partition written in transactions stays one offset (the
// commit marker) behind its end, which is not a record to read.
func (v *devView) records(l kadm.GroupLag) int64 {
	plain := map[string]bool{v.names.UplinkRaw: true, v.names.Commands: true, v.names.Registry: true, v.names.DownlinkReceipts: true}
	var n int64
	for topic, ps := range l {
		for _, p := range ps {
			switch {
			case p.Lag <= 0:
			case plain[topic]:
				n += p.Lag
			default:
				n += p.Lag - 1
			}
		}
	}
	return n
}

func groupNames() []string {
	var out []string
	for _, g := range devGroups {
		out = append(out, g.group)
	}
	return out
}

// countsLine formats counts by name, largest first.
func countsLine(m map[string]int64, empty string) string {
	if len(m) == 0 {
		return empty
	}
	type kv struct {
		k string
		v int64
	}
	var s []kv
	for k, v := range m {
		s = append(s, kv{k, v})
	}
	sort.Slice(s, func(i, j int) bool { return s[i].v > s[j].v || (s[i].v == s[j].v && s[i].k < s[j].k) })
	var parts []string
	for _, x := range s {
		parts = append(parts, fmt.Sprintf("%s %d", x.k, x.v))
	}
	return strings.Join(parts, "  ")
}
