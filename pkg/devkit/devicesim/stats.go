package devicesim

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Kinds of frames the devices send, as they appear in Stats.Sent.
const (
	SentHandshake     = "handshake"     // iCmdType 0
	SentConfiguration = "configuration" // iCmdType 1
	SentHeartbeat     = "heartbeat"     // iCmdType 2
	SentStreamURL     = "stream_url"    // iCmdType 7 / 702
	SentUploadParams  = "upload_params" // iCmdType 7 / 703
	SentCommandReply  = "command_reply" // iCmdType 6
	SentControlReply  = "control_reply" // iCmdType 7 / 704, 705
	SentMalformed     = "malformed"     // see MalformedKinds
	SentCustom        = "custom"        // Device.Send, Device.SendFrame
	sentKinds         = 9
)

var sentNames = [sentKinds]string{SentHandshake, SentConfiguration, SentHeartbeat, SentStreamURL,
	SentUploadParams, SentCommandReply, SentControlReply, SentMalformed, SentCustom}

type sentKind int

const (
	sHandshake sentKind = iota
	sConfiguration
	sHeartbeat
	sStreamURL
	sUploadParams
	sCommandReply
	sControlReply
	sMalformed
	sCustom
)

// Kinds of frames the devices receive, as they appear in Stats.Received.
const (
	RecvHandshake     = "handshake"      // iCmdType 0
	RecvHeartbeat     = "heartbeat"      // iCmdType 2
	RecvCommand       = "command"        // iCmdType 3
	RecvStreamURL     = "stream_url"     // iCmdType 7 / 702
	RecvUploadParams  = "upload_params"  // iCmdType 7 / 703
	RecvStreamControl = "stream_control" // iCmdType 7 / 704
	RecvUploadControl = "upload_control" // iCmdType 7 / 705
	RecvOther         = "other"          // anything else, including frames that do not decode
	recvKinds         = 8
)

var recvNames = [recvKinds]string{RecvHandshake, RecvHeartbeat, RecvCommand, RecvStreamURL,
	RecvUploadParams, RecvStreamControl, RecvUploadControl, RecvOther}

type recvKind int

const (
	rHandshake recvKind = iota
	rHeartbeat
	rCommand
	rStreamURL
	rUploadParams
	rStreamControl
	rUploadControl
	rOther
)

// Requests whose replies are timed, as they appear in Stats.Latency and
// Stats.Unanswered.
const (
	ReqHandshake     = "handshake"     // iCmdType 0 up -> 0 down
	ReqConfiguration = "configuration" // iCmdType 1 up -> 3/301 down
	ReqHeartbeat     = "heartbeat"     // iCmdType 2 up -> 2 down
	ReqStreamURL     = "stream_url"    // 702 up -> 702 down (only bound devices get one)
	ReqUploadParams  = "upload_params" // 703 up -> 703 down
	reqKinds         = 5
)

var reqNames = [reqKinds]string{ReqHandshake, ReqConfiguration, ReqHeartbeat, ReqStreamURL, ReqUploadParams}

type reqKind int

const (
	qHandshake reqKind = iota
	qConfiguration
	qHeartbeat
	qStreamURL
	qUploadParams
)

// Failure reasons of the simulator's own checks, beside protocol.Reason
// values (bad_hex, bad_padding, bad_md5, ...), as they appear in
// Stats.Failures.
const (
	// FailNoSession: an encrypted frame arrived before the device had a session.
	FailNoSession = "no_session"
	// FailUnexpectedKind: a frame kind a device never receives (iCmdType 1,
	// 6, 4, 5, 8..16, or an unknown iAmsCmdType).
	FailUnexpectedKind = "unexpected_kind"
	// FailUnexpectedHandshake: a handshake reply when no handshake was sent
	// on this connection.
	FailUnexpectedHandshake = "unexpected_handshake"
	// FailMissingMsgID: a command (iCmdType 3, or 704/705) without sMsgId;
	// it is not answered.
	FailMissingMsgID = "missing_msg_id"
	// FailBadValue: the body decodes but holds a wrong value (a heartbeat
	// reply whose iOnline is not 1, a 301 with iGetconfig not 1).
	FailBadValue = "bad_value"
	// FailUnsolicited: a heartbeat reply when no heartbeat of this
	// connection awaits one (e.g. the cloud answered a malformed heartbeat).
	FailUnsolicited = "unsolicited_reply"
	// FailUnmatchedReply: a 702/703 reply whose index matches no request
	// the device ever sent.
	FailUnmatchedReply = "unmatched_reply"
)

// counters are the fleet's live counters; all atomic.
type counters struct {
	connected, ready, bound                    atomic.Int64 // gauges
	unansweredBound                            atomic.Int64
	connects, connectFailures, connectionsLost atomic.Int64
	storms, stormDisconnects, vanished         atomic.Int64
	handshakes, handshakeRetries, lateHS       atomic.Int64
	duplicateHS, resumed, configured           atomic.Int64
	replies, publishFailures, lateReplies      atomic.Int64
	staleFrames                                atomic.Int64
	sent                                       [sentKinds]atomic.Int64
	received                                   [recvKinds]atomic.Int64
	unanswered                                 [reqKinds]atomic.Int64
	malformed                                  [malformedKinds]atomic.Int64
	latency                                    [reqKinds]histogram
	loop                                       histogram    // closed-loop heartbeat round trips after Warmup
	loopFrom                                   atomic.Int64 // unix ns: start of the closed-loop measurement

	failMu   sync.Mutex
	failures map[string]int64
}

func (c *counters) fail(reason string) {
	c.failMu.Lock()
	if c.failures == nil {
		c.failures = map[string]int64{}
	}
	c.failures[reason]++
	c.failMu.Unlock()
}

// Stats is a snapshot of the fleet's counters. Counters only grow, except
// the gauges Connected and Ready. Each field is read atomically, but the
// snapshot as a whole is not: a frame counted in Received may not yet show
// in Latency.
type Stats struct {
	// Elapsed is the time since Run started.
	Elapsed time.Duration `json:"-"`
	// ElapsedS is Elapsed in seconds (for JSON).
	ElapsedS float64 `json:"elapsed_s"`
	// Devices is the size of the fleet.
	Devices int `json:"devices"`
	// Connected is the number of devices with an MQTT connection now.
	Connected int64 `json:"connected"`
	// Ready is the number of connected devices whose handshake is done.
	Ready int64 `json:"ready"`
	// Bound is the number of devices whose last 301 said they are bound to
	// a user (only those get a 702 reply).
	Bound int64 `json:"bound"`

	Connects        int64 `json:"connects"`         // MQTT connections established (subscribed)
	ConnectFailures int64 `json:"connect_failures"` // connection attempts that failed
	ConnectionsLost int64 `json:"connections_lost"` // connections that dropped under a device (not storms, not vanishes)
	Storms          int64 `json:"storms"`           // reconnect storms started
	StormReconnects int64 `json:"storm_reconnects"` // devices disconnected by a storm
	Vanished        int64 `json:"vanished"`         // devices that dropped their connection without DISCONNECT

	Handshakes       int64 `json:"handshakes"`        // handshakes completed (reply verified)
	HandshakeRetries int64 `json:"handshake_retries"` // handshakes re-sent after a timeout
	HandshakeLate    int64 `json:"handshake_late"`    // valid replies to an earlier, superseded handshake
	HandshakeDups    int64 `json:"handshake_dups"`    // further valid replies to a completed handshake
	Resumed          int64 `json:"resumed"`           // reconnects that kept the old session (no handshake)
	Configured       int64 `json:"configured"`        // 301 received after a configuration upload

	Sent          map[string]int64 `json:"sent"`
	SentTotal     int64            `json:"sent_total"`
	Received      map[string]int64 `json:"received"`
	ReceivedTotal int64            `json:"received_total"`
	// Replies counts commands answered (iCmdType 6, and 7 for 704/705).
	Replies int64 `json:"replies"`
	// PublishFailures counts publishes paho refused or did not complete.
	PublishFailures int64 `json:"publish_failures"`

	// Failures counts received frames that failed a check, by reason.
	Failures      map[string]int64 `json:"failures"`
	FailuresTotal int64            `json:"failures_total"`
	// Unanswered counts requests with no reply within the reply timeout
	// (a 702 is answered only for a bound device: not a failure).
	Unanswered map[string]int64 `json:"unanswered"`
	// UnansweredBoundStreamURL counts the 702 requests in Unanswered that
	// bound devices sent: those should have had a reply.
	UnansweredBoundStreamURL int64 `json:"unanswered_bound_stream_url"`
	// LateReplies counts replies (heartbeat, 301, 702, 703) that arrived
	// after their request was counted unanswered (and 702/703 replies that
	// came twice); not failures.
	LateReplies int64 `json:"late_replies"`
	// StaleFrames counts frames of an ended connection, not handled and not
	// failures: delivered by its MQTT client after the device had moved on
	// to a new one, or sent by the cloud under the session a new handshake
	// replaced, within the reply timeout of the change.
	StaleFrames int64 `json:"stale_frames"`
	// Malformed counts malformed frames sent on purpose, by kind.
	Malformed      map[string]int64 `json:"malformed"`
	MalformedTotal int64            `json:"malformed_total"`

	// Latency of each request kind: from sending it to receiving its reply.
	Latency map[string]Latency `json:"latency"`
	// ClosedLoop is the closed-loop measurement (Config.ClosedLoop): the
	// heartbeat round trips received after Config.Warmup; nil otherwise.
	ClosedLoop *ClosedLoop `json:"closed_loop,omitempty"`

	Process Process `json:"process"`
}

// ClosedLoop is the closed-loop measurement: heartbeat replies received
// from the end of the warm-up until the snapshot, their rate, and their
// round trips (heartbeat sent to reply received).
type ClosedLoop struct {
	Replies     int64   `json:"replies"`
	Seconds     float64 `json:"seconds"`
	RepliesPerS float64 `json:"replies_per_s"`
	Latency     Latency `json:"latency"`
}

// Process describes the simulator process (zero where unknown).
type Process struct {
	RSSBytes    int64   `json:"rss_bytes"`     // resident set now
	MaxRSSBytes int64   `json:"max_rss_bytes"` // peak resident set
	CPUUserS    float64 `json:"cpu_user_s"`
	CPUSysS     float64 `json:"cpu_sys_s"`
	Goroutines  int     `json:"goroutines"`
}

func (c *counters) snapshot(devices int, elapsed time.Duration, closedLoop bool) Stats {
	s := Stats{
		Elapsed:                  elapsed,
		ElapsedS:                 elapsed.Seconds(),
		Devices:                  devices,
		Connected:                c.connected.Load(),
		Ready:                    c.ready.Load(),
		Bound:                    c.bound.Load(),
		Connects:                 c.connects.Load(),
		ConnectFailures:          c.connectFailures.Load(),
		ConnectionsLost:          c.connectionsLost.Load(),
		Storms:                   c.storms.Load(),
		StormReconnects:          c.stormDisconnects.Load(),
		Vanished:                 c.vanished.Load(),
		Handshakes:               c.handshakes.Load(),
		HandshakeRetries:         c.handshakeRetries.Load(),
		HandshakeLate:            c.lateHS.Load(),
		HandshakeDups:            c.duplicateHS.Load(),
		Resumed:                  c.resumed.Load(),
		Configured:               c.configured.Load(),
		Replies:                  c.replies.Load(),
		PublishFailures:          c.publishFailures.Load(),
		LateReplies:              c.lateReplies.Load(),
		StaleFrames:              c.staleFrames.Load(),
		UnansweredBoundStreamURL: c.unansweredBound.Load(),
		Sent:                     map[string]int64{},
		Received:                 map[string]int64{},
		Failures:                 map[string]int64{},
		Unanswered:               map[string]int64{},
		Malformed:                map[string]int64{},
		Latency:                  map[string]Latency{},
	}
	for i, n := range sentNames {
		v := c.sent[i].Load()
		s.Sent[n] = v
		s.SentTotal += v
	}
	for i, n := range recvNames {
		v := c.received[i].Load()
		s.Received[n] = v
		s.ReceivedTotal += v
	}
	for i, n := range reqNames {
		s.Unanswered[n] = c.unanswered[i].Load()
		s.Latency[n] = c.latency[i].Snapshot()
	}
	for i, k := range MalformedKinds {
		v := c.malformed[i].Load()
		s.Malformed[string(k)] = v
		s.MalformedTotal += v
	}
	c.failMu.Lock()
	for r, v := range c.failures {
		s.Failures[r] = v
		s.FailuresTotal += v
	}
	c.failMu.Unlock()
	if from := c.loopFrom.Load(); closedLoop && from != 0 {
		l := c.loop.Snapshot()
		cl := &ClosedLoop{Replies: l.Count, Latency: l}
		if secs := float64(time.Now().UnixNano()-from) / 1e9; secs > 0 {
			cl.Seconds = secs
			cl.RepliesPerS = float64(l.Count) / secs
		}
		s.ClosedLoop = cl
	}
	s.Process = readProcess()
	return s
}

func readProcess() Process {
	p := Process{Goroutines: runtime.NumGoroutine()}
	readRusage(&p)
	// Linux: /proc/self/statm holds sizes in pages; the second is resident.
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			if pages, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				p.RSSBytes = pages * int64(os.Getpagesize())
			}
		}
	}
	return p
}

// ProgressLine formats a one-line view of s for a live progress display;
// prev (the previous snapshot, or a zero Stats) gives the rates.
func ProgressLine(s, prev Stats) string {
	dt := (s.Elapsed - prev.Elapsed).Seconds()
	rate := func(cur, old int64) float64 {
		if dt <= 0 {
			return 0
		}
		return float64(cur-old) / dt
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%5.0fs conn %d/%d ready %d | sent %d (%.0f/s) recv %d (%.0f/s) | replies %d | fail %d unans %d",
		s.Elapsed.Seconds(), s.Connected, s.Devices, s.Ready,
		s.SentTotal, rate(s.SentTotal, prev.SentTotal), s.ReceivedTotal, rate(s.ReceivedTotal, prev.ReceivedTotal),
		s.Replies, s.FailuresTotal, sumValues(s.Unanswered))
	if s.MalformedTotal > 0 {
		fmt.Fprintf(&b, " mal %d", s.MalformedTotal)
	}
	if l := s.Latency[ReqHeartbeat]; l.Count > 0 {
		fmt.Fprintf(&b, " | hb p50 %s p99 %s", fmtMS(l.P50MS), fmtMS(l.P99MS))
	}
	if s.Process.RSSBytes > 0 {
		fmt.Fprintf(&b, " | rss %dMB", s.Process.RSSBytes>>20)
	}
	return b.String()
}

// Report writes a multi-line human-readable summary of s.
func Report(s Stats) string {
	var b strings.Builder
	fmt.Fprintf(&b, "devices %d over %.1fs: %d connected, %d ready at the end, %d bound\n", s.Devices, s.ElapsedS, s.Connected, s.Ready, s.Bound)
	fmt.Fprintf(&b, "connections: %d established, %d failed attempts, %d lost, %d storm reconnects (%d storms), %d vanished\n",
		s.Connects, s.ConnectFailures, s.ConnectionsLost, s.StormReconnects, s.Storms, s.Vanished)
	fmt.Fprintf(&b, "handshakes: %d done, %d retries, %d late, %d duplicate replies, %d resumed sessions; %d configured\n",
		s.Handshakes, s.HandshakeRetries, s.HandshakeLate, s.HandshakeDups, s.Resumed, s.Configured)
	fmt.Fprintf(&b, "sent %d: %s\n", s.SentTotal, fmtMap(s.Sent))
	fmt.Fprintf(&b, "received %d: %s\n", s.ReceivedTotal, fmtMap(s.Received))
	fmt.Fprintf(&b, "commands answered %d, publish failures %d, late replies %d, stale frames %d\n", s.Replies, s.PublishFailures, s.LateReplies, s.StaleFrames)
	fmt.Fprintf(&b, "failures %d: %s\n", s.FailuresTotal, fmtMap(s.Failures))
	fmt.Fprintf(&b, "unanswered %d: %s (stream_url of bound devices: %d)\n",
		sumValues(s.Unanswered), fmtMap(s.Unanswered), s.UnansweredBoundStreamURL)
	if s.MalformedTotal > 0 {
		fmt.Fprintf(&b, "malformed sent %d: %s\n", s.MalformedTotal, fmtMap(s.Malformed))
	}
	b.WriteString("latency (ms)      count      mean       p50       p90       p99      p999       max\n")
	for _, n := range reqNames {
		l := s.Latency[n]
		fmt.Fprintf(&b, "  %-14s %8d %9.2f %9.2f %9.2f %9.2f %9.2f %9.2f\n", n, l.Count, l.MeanMS, l.P50MS, l.P90MS, l.P99MS, l.P999MS, l.MaxMS)
	}
	if cl := s.ClosedLoop; cl != nil {
		l := cl.Latency
		fmt.Fprintf(&b, "closed loop: %d replies in %.1fs after warm-up = %.0f replies/s; round trip p50 %.2f ms, p99 %.2f ms, p999 %.2f ms, max %.2f ms\n",
			cl.Replies, cl.Seconds, cl.RepliesPerS, l.P50MS, l.P99MS, l.P999MS, l.MaxMS)
	}
	p := s.Process
	fmt.Fprintf(&b, "process: rss %.1f MB (peak %.1f MB", float64(p.RSSBytes)/(1<<20), float64(p.MaxRSSBytes)/(1<<20))
	if s.Devices > 0 && p.RSSBytes > 0 {
		fmt.Fprintf(&b, ", %d B/device", p.RSSBytes/int64(s.Devices))
	}
	fmt.Fprintf(&b, "), cpu user %.1fs sys %.1fs, %d goroutines\n", p.CPUUserS, p.CPUSysS, p.Goroutines)
	return b.String()
}

func fmtMS(ms float64) string {
	if ms < 10 {
		return strconv.FormatFloat(ms, 'f', 2, 64) + "ms"
	}
	return strconv.FormatFloat(ms, 'f', 0, 64) + "ms"
}

func fmtMap(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if v != 0 {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return "-"
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + strconv.FormatInt(m[k], 10)
	}
	return strings.Join(parts, " ")
}

func sumValues(m map[string]int64) int64 {
	var t int64
	for _, v := range m {
		t += v
	}
	return t
}
