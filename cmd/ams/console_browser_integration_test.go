//go:build integration

package main

// The fleet console (ingest/console) in a real browser: headless Chromium
// driven by chromedp against the real pipeline (the e2e stack: Kafka, Redis,
// a private Mosquitto, ClickHouse) with simulated cameras. The console runs
// in this test process over the stack's Redis prefix, topics and ClickHouse
// database, with two tokens: one of scope command, one of scope read.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/cmd/internal/roles"
	"github.com/ivms/ams/ingest/api"
	"github.com/ivms/ams/ingest/console"
	"github.com/ivms/ams/pkg/devicestate"
	"github.com/ivms/ams/pkg/devkit/devicesim"
	"github.com/ivms/ams/pkg/testkit/testenv"
	"github.com/ivms/ams/schemas"
	"github.com/ivms/ams/sinks/chsink"
)

// chromiumPath finds Debian's chromium (installed by deploy/stack/up.sh).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{os.Getenv("AMS_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium on PATH: run `bash deploy/stack/up.sh` (make up) to install it, or set AMS_CHROMIUM")
	return ""
}

// screenshotDir is $AMS_CONSOLE_SCREENSHOTS, or a new temporary directory
// that is kept (its path is logged) so the screenshots can be looked at.
func screenshotDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("AMS_CONSOLE_SCREENSHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	d, err := os.MkdirTemp("", "ams-console-screenshots-")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

type consoleRig struct {
	t      *testing.T
	url    string
	ctx    context.Context
	shots  string
	axe    string
	redis  *goredis.Client
	prefix string
}

func TestConsoleInBrowser(t *testing.T) {
	chrome := chromiumPath(t)
	axe, err := os.ReadFile("../../ingest/console/testdata/axe-core/axe.min.js")
	if err != nil {
		t.Fatal(err)
	}
	const heartbeatTimeout = 5 * time.Second
	s := startStack(t, stackOptions{clickhouse: true, heartbeatTimeout: heartbeatTimeout})

	// The fleet: n cameras that stay and one that vanishes.
	const n = 4
	prefix := e2eSNPrefix(t)
	var sns []string
	for i := range n + 1 {
		sn := simSN(prefix, i)
		r := e2eRegistration{Bound: i == 0}
		if i == 0 {
			r.Name = "front-door"
		}
		s.register(sn, r)
		sns = append(sns, sn)
	}
	s.waitRegistered(sns...)
	stay := s.startFleet(devicesim.Config{Devices: n, SNPrefix: prefix, Heartbeat: time.Second, UplinkQoS: 1})
	leaver := s.startFleet(devicesim.Config{Devices: 1, SNPrefix: prefix, FirstIndex: n, Heartbeat: time.Second, UplinkQoS: 1})
	vanishSN := leaver.Device(0).SN()

	// The console, in process, over the stack's state.
	rdb := goredis.NewClient(testenv.RedisOptions())
	t.Cleanup(func() { rdb.Close() })
	cl := testenv.KafkaClient(t, kgo.RequiredAcks(kgo.AllISRAcks()))
	chc := testenv.ClickHouseSettings()
	chOpts := chsink.Options{Addr: chc.Addr, Database: s.chDatabase, Username: chc.Username, Password: chc.Password, TLS: chc.TLS}
	hist, err := console.NewHistory(s.chDatabase, func(ctx context.Context) (driver.Conn, error) { return chsink.Open(ctx, chOpts) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hist.Close() })
	const cmdToken, readToken = "console-command-token-0123456789", "console-read-token-0123456789"
	// The API's own named, scoped tokens, through the adapter `ams api` uses.
	tokensFile := filepath.Join(t.TempDir(), "api.tokens")
	e2eWriteFile(t, tokensFile, "ops-alice command "+cmdToken+"\nviewer-bob read "+readToken+"\n")
	apiTokens, err := api.NewTokens(tokensFile, "")
	if err != nil {
		t.Fatal(err)
	}
	auth := roles.ConsoleAuth{Tokens: apiTokens}
	con, err := console.New(console.Config{Names: s.names, Keys: devicestate.Keys{Prefix: s.redisPrefix}, Tick: 250 * time.Millisecond},
		console.Deps{Auth: auth, Redis: rdb, Producer: api.KafkaProducer{Client: cl}, Encoder: s.reg, History: hist})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(con.Handler())
	t.Cleanup(srv.Close)

	// The browser.
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.Flag("headless", "new"), chromedp.NoSandbox, chromedp.WindowSize(1280, 800))...)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(cancelBrowser)
	ctx, cancel := context.WithTimeout(bctx, 150*time.Second)
	t.Cleanup(cancel)
	rig := &consoleRig{t: t, url: srv.URL, ctx: ctx, shots: screenshotDir(t), axe: string(axe), redis: rdb, prefix: s.redisPrefix}
	t.Logf("screenshots in %s", rig.shots)

	waitFleet(t, stay, 60*time.Second, "the staying cameras ready", func(st devicesim.Stats) (bool, string) {
		return st.Ready == n, fmt.Sprintf("ready %d of %d", st.Ready, n)
	})
	waitFleet(t, leaver, 60*time.Second, "the leaving camera ready", func(st devicesim.Stats) (bool, string) {
		return st.Ready == 1, "not ready"
	})

	// Sign in (command scope); the fleet page shows every camera online.
	rig.signIn(cmdToken)
	rig.run(chromedp.WaitVisible(chromedp.CSS("#who")))
	if who := rig.text("#who"); !strings.Contains(who, "ops-alice") {
		t.Fatalf("signed in as %q, want ops-alice", who)
	}
	rig.waitText("#online-count", fmt.Sprint(n+1), 30*time.Second)
	rig.waitText("#offline-count", "0", 10*time.Second)
	rig.audit("fleet")
	rig.shoot("fleet")

	// A camera vanishes: the open page shows it offline, without a reload.
	rig.run(chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Evaluate[bool](`window.amsNoReload = true`)(ctx, t)
		return err
	}))
	rig.waitAttr("[data-sse]", "data-sse-state", "open", 10*time.Second)
	gone := time.Now()
	leaver.stop()
	rig.waitText("#online-count", fmt.Sprint(n), heartbeatTimeout+20*time.Second)
	rig.waitText("#offline-count", "1", 5*time.Second)
	t.Logf("page showed %s offline %v after it vanished (heartbeat timeout %v)", vanishSN, time.Since(gone).Round(10*time.Millisecond), heartbeatTimeout)
	if !rig.evalBool(`window.amsNoReload === true`) {
		t.Fatal("the fleet page was reloaded; it must update live")
	}
	rig.shoot("fleet_live")

	// Cameras: the search finds the fleet; one camera's page.
	rig.nav("/ui/cameras?prefix=" + prefix)
	if got := rig.text("#found"); !strings.HasPrefix(got, fmt.Sprintf("%d cameras", n+1)) {
		t.Fatalf("cameras search: %q, want %d cameras", got, n+1)
	}
	rig.audit("cameras")
	rig.shoot("cameras")
	rig.nav("/ui/cameras/" + sns[0])
	rig.waitText("#presence", "online", 10*time.Second)
	if got := rig.text("#reg-name"); got != "front-door" {
		t.Fatalf("registration name %q, want front-door", got)
	}
	rig.audit("camera")
	rig.shoot("camera")

	// A bad body is refused in the form, naming the field; nothing is sent.
	rig.nav("/ui/cameras/" + sns[0] + "/command?kind=log_upload")
	rig.run(chromedp.SendKeys(chromedp.CSS("#f-iReqUploadZlog"), "-1"), chromedp.Click(chromedp.CSS("#send")))
	rig.waitVisible("#client-errors", 5*time.Second)
	if got := rig.text("#client-errors"); !strings.Contains(got, "body.iReqUploadZlog") {
		t.Fatalf("bad body error %q does not name body.iReqUploadZlog", got)
	}
	if loc := rig.location(); !strings.Contains(loc, "/command") {
		t.Fatalf("left the form for %s after a bad body", loc)
	}
	rig.keyboardReachable()
	rig.audit("command_form")
	rig.shoot("command_form_error")

	// A command from the form reaches SUCCEEDED on screen; reboot asks for confirmation first.
	rig.nav("/ui/cameras/" + sns[0] + "/command?kind=reboot")
	rig.run(chromedp.Click(chromedp.CSS("#send")))
	rig.waitVisible("#form-errors", 10*time.Second)
	if got := rig.text("#form-errors"); !strings.Contains(got, "confirm") {
		t.Fatalf("reboot without confirmation: %q, want a confirm error", got)
	}
	rig.run(chromedp.Click(chromedp.CSS("#confirm")), chromedp.Click(chromedp.CSS("#send")))
	rig.waitText("#cmd-state", "SUCCEEDED", 60*time.Second)
	loc := rig.location()
	id := loc[strings.LastIndex(loc, "/")+1:]
	c, ok := s.command(id)
	if !ok || c.State != "SUCCEEDED" || c.Kind != "reboot" {
		t.Fatalf("command %s in the API: %+v", id, c)
	}
	var requestedBy string
	for _, cmd := range decodeAll[schemas.Command](s, s.names.Commands) {
		if cmd.ID == id {
			requestedBy = cmd.RequestedBy
		}
	}
	if requestedBy != "ops-alice" {
		t.Fatalf("command %s requested_by %q, want ops-alice", id, requestedBy)
	}
	history := rig.text("#cmd-history")
	for _, st := range []string{"ACCEPTED", "SENT", "SUCCEEDED"} {
		if !strings.Contains(history, st) {
			t.Errorf("command page history %q lacks %s", history, st)
		}
	}
	rig.audit("command")
	rig.shoot("command")

	// Sign out; a read token views but cannot send.
	rig.run(chromedp.Click(chromedp.CSS(".signout button")))
	rig.waitVisible("#token", 10*time.Second)
	rig.signIn(readToken)
	rig.nav("/ui/cameras/" + sns[1] + "/command?kind=sd_info")
	rig.waitVisible("#cannot-send", 5*time.Second)
	if !rig.evalBool(`document.getElementById('send').disabled`) {
		t.Fatal("the send button is enabled for a read token")
	}
	// Even a forced submit is refused by the server.
	rig.evalBool(`document.getElementById('send').disabled = false; document.getElementById('cmdform').submit(); true`)
	rig.waitVisible("#page-error", 10*time.Second)
	if got := rig.text("#page-error"); !strings.Contains(got, "not send") {
		t.Fatalf("read token send: %q, want a refusal", got)
	}
	pending, err := rdb.SCard(context.Background(), s.redisPrefix+"dev:"+sns[1]+":pending").Result()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	for _, cmd := range decodeAll[schemas.Command](s, s.names.Commands) {
		if cmd.SN == sns[1] {
			t.Fatalf("a command for %s was written by the read token: %+v", sns[1], cmd)
		}
	}
	if pending != 0 {
		t.Fatalf("%d pending commands on %s after a read token's attempt", pending, sns[1])
	}
}

func (r *consoleRig) run(actions ...chromedp.Action[chromedp.Void]) {
	r.t.Helper()
	if err := chromedp.Do(r.ctx, actions...); err != nil {
		r.t.Fatalf("browser: %v", err)
	}
}

func (r *consoleRig) evalBool(expr string) bool {
	r.t.Helper()
	v, err := chromedp.Run(r.ctx, chromedp.Evaluate[bool](expr))
	if err != nil {
		r.t.Fatalf("browser: %s: %v", expr, err)
	}
	return v
}

func (r *consoleRig) evalString(expr string, opts ...chromedp.EvaluateOption) string {
	r.t.Helper()
	v, err := chromedp.Run(r.ctx, chromedp.Evaluate[string](expr, opts...))
	if err != nil {
		r.t.Fatalf("browser: %.80s: %v", expr, err)
	}
	return v
}

func (r *consoleRig) nav(path string) {
	r.t.Helper()
	r.run(chromedp.Navigate(r.url+path), chromedp.WaitReady(chromedp.CSS("body")))
}

func (r *consoleRig) signIn(token string) {
	r.t.Helper()
	r.nav("/ui/signin")
	r.run(chromedp.WaitVisible(chromedp.CSS("#token")), chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Submit(chromedp.CSS("#token")), chromedp.WaitVisible(chromedp.CSS("#who")))
}

func (r *consoleRig) text(sel string) string {
	r.t.Helper()
	js, _ := json.Marshal(sel)
	return strings.TrimSpace(r.evalString(fmt.Sprintf(`(function(){var e=document.querySelector(%s);return e ? e.textContent : ''})()`, js)))
}

func (r *consoleRig) location() string {
	r.t.Helper()
	s, err := chromedp.Run(r.ctx, chromedp.Location())
	if err != nil {
		r.t.Fatalf("browser: %v", err)
	}
	return s
}

// waitJS polls a boolean JavaScript expression until it is true.
func (r *consoleRig) waitJS(expr, what string, timeout time.Duration) {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if ok, err := chromedp.Run(r.ctx, chromedp.Evaluate[bool](expr)); err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			body, _ := chromedp.Run(r.ctx, chromedp.Evaluate[string](`document.querySelector('main') ? document.querySelector('main').innerText : ''`))
			r.t.Fatalf("timed out after %v waiting for %s; page:\n%s", timeout, what, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (r *consoleRig) waitText(sel, want string, timeout time.Duration) {
	r.t.Helper()
	js, _ := json.Marshal(sel)
	w, _ := json.Marshal(want)
	r.waitJS(fmt.Sprintf(`(function(){var e=document.querySelector(%s);return !!e && e.textContent.trim()===%s})()`, js, w),
		fmt.Sprintf("%s to read %q", sel, want), timeout)
}

func (r *consoleRig) waitAttr(sel, attr, want string, timeout time.Duration) {
	r.t.Helper()
	js, _ := json.Marshal(sel)
	a, _ := json.Marshal(attr)
	w, _ := json.Marshal(want)
	r.waitJS(fmt.Sprintf(`(function(){var e=document.querySelector(%s);return !!e && e.getAttribute(%s)===%s})()`, js, a, w),
		fmt.Sprintf("%s[%s] to be %q", sel, attr, want), timeout)
}

func (r *consoleRig) waitVisible(sel string, timeout time.Duration) {
	r.t.Helper()
	js, _ := json.Marshal(sel)
	r.waitJS(fmt.Sprintf(`(function(){var e=document.querySelector(%s);return !!e && !e.hidden && e.offsetParent!==null})()`, js),
		sel+" to be visible", timeout)
}

// audit runs axe-core in the page and fails on serious or critical findings.
func (r *consoleRig) audit(name string) {
	r.t.Helper()
	if _, err := chromedp.Run(r.ctx, chromedp.Evaluate[bool](r.axe+";true")); err != nil {
		r.t.Fatalf("load axe-core: %v", err)
	}
	out := r.evalString(`axe.run(document, {resultTypes: ['violations']}).then(function (res) {
		return JSON.stringify(res.violations.filter(function (v) { return v.impact === 'serious' || v.impact === 'critical'; })
			.map(function (v) { return {id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(function (n) { return n.target.join(' '); })}; }));
	})`, chromedp.EvalAwaitPromise)
	if out != "[]" {
		r.t.Errorf("axe-core on the %s page: serious/critical findings: %s", name, out)
	}
}

// keyboardReachable tabs through the page and checks that every control
// (links, buttons, inputs, selects, textareas, summaries) gets the focus.
func (r *consoleRig) keyboardReachable() {
	r.t.Helper()
	controls, err := chromedp.Run(r.ctx, chromedp.Evaluate[[]string](`(function(){
		var n = 0;
		document.querySelectorAll('a[href], button, input:not([type=hidden]), select, textarea, summary').forEach(function (e) {
			if (e.disabled || !e.checkVisibility()) { return; }
			e.setAttribute('data-kb', 'c' + (n++));
		});
		document.activeElement && document.activeElement.blur();
		return Array.from(document.querySelectorAll('[data-kb]')).map(function (e) { return e.getAttribute('data-kb'); });
	})()`))
	if err != nil {
		r.t.Fatalf("browser: %v", err)
	}
	seen := map[string]bool{}
	for range len(controls) + 5 {
		r.run(chromedp.KeyEvent(kb.Tab))
		seen[r.evalString(`document.activeElement ? (document.activeElement.getAttribute('data-kb') || '') : ''`)] = true
	}
	for _, c := range controls {
		if !seen[c] {
			desc := r.evalString(fmt.Sprintf(`document.querySelector('[data-kb=%q]').outerHTML`, c))
			r.t.Errorf("not reachable with Tab: %s", desc)
		}
	}
}

// shoot saves the page at 1280x800 and 390x844.
func (r *consoleRig) shoot(name string) {
	r.t.Helper()
	for _, sz := range []struct {
		w, h   int64
		mobile bool
	}{{1280, 800, false}, {390, 844, true}} {
		opts := []chromedp.EmulateViewportOption{}
		if sz.mobile {
			opts = append(opts, chromedp.EmulateMobile, chromedp.EmulateTouch)
		}
		r.run(chromedp.EmulateViewport(sz.w, sz.h, opts...), chromedp.Sleep(150*time.Millisecond))
		png, err := chromedp.Run(r.ctx, chromedp.CaptureScreenshot())
		if err != nil {
			r.t.Fatalf("screenshot: %v", err)
		}
		if err := os.WriteFile(filepath.Join(r.shots, fmt.Sprintf("%s-%dx%d.png", name, sz.w, sz.h)), png, 0o644); err != nil {
			r.t.Fatal(err)
		}
	}
	r.run(chromedp.EmulateReset())
}
