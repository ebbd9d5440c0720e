package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/keelmq/keel/wal"
)

// Hostile strings a client chooses: the console must show them as text.
const (
	hostileID   = `<script>window.__pwned=1</script>"'&<img src=x onerror="window.__pwned=2">`
	hostileUser = `<b onmouseover="window.__pwned=3">eve</b>'"`
	// hostileTopic is retained; '#' and '+' are not allowed in a topic.
	hostileTopic = `r/<img src=x onerror="window.__pwned=4">/"&amp;`
)

// The console's files and headers, without a browser: the CSP forbids
// inline script, the HTML has none, the JS never writes markup, and only
// loopback peers are served.
func TestConsoleServedSafely(t *testing.T) {
	a := testAdmin(t)
	base := "http://" + a.addr

	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Request.URL.Path != "/console/" {
		t.Errorf("GET / ended at %s, want a redirect to /console/", resp.Request.URL.Path)
	}
	for _, path := range []string{"/console/", "/console/console.js", "/console/console.css"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET %s: %d, want 200", path, resp.StatusCode)
		}
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self';") || strings.Contains(csp, "unsafe") || !strings.Contains(csp, "default-src 'none'") {
			t.Errorf("GET %s: Content-Security-Policy %q, want default-src 'none' and script-src 'self' without unsafe-*", path, csp)
		}
		if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("GET %s: X-Content-Type-Options %q, want nosniff", path, got)
		}
	}

	html, _ := consoleFiles.ReadFile("console/index.html")
	if m := regexp.MustCompile(`(?i)<script(?:[^>]*)>`).FindAllString(string(html), -1); len(m) != 1 || !strings.Contains(m[0], `src="console.js"`) {
		t.Errorf("index.html scripts %q, want only <script src=\"console.js\">", m)
	}
	if m := regexp.MustCompile(`(?i)\son[a-z]+\s*=|style\s*=|javascript:`).FindAllString(string(html), -1); len(m) > 0 {
		t.Errorf("index.html has inline handlers or styles %q", m)
	}
	js, _ := consoleFiles.ReadFile("console/console.js")
	code := regexp.MustCompile(`(?m)^\s*//.*$`).ReplaceAllString(string(js), "") // not the comments that name them
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"} {
		if strings.Contains(code, bad) {
			t.Errorf("console.js uses %s: strings from clients must go in as text", bad)
		}
	}

	// Not from a peer off loopback.
	req := httptest.NewRequest("GET", "/console/", nil)
	req.RemoteAddr = "192.0.2.7:4000"
	rec := httptest.NewRecorder()
	a.srv.Handler.ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden {
		t.Errorf("/console/ from 192.0.2.7: %d, want 403", rec.Code)
	}
}

// needChromium returns the path of Debian's chromium, or skips (fails
// under CI) where it is missing.
func needChromium(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		msg := fmt.Sprintf("chromium is not on PATH (apt-get install chromium): %v", err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + "; .ci/run installs it")
		}
		t.Skip(msg + "; with CI=true this is a failure")
	}
	return path
}

// browser starts headless Chromium with a fresh profile; it is stopped
// when the test ends.
func browser(t *testing.T) context.Context {
	t.Helper()
	path := needChromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// The first Run starts the browser; it lives as long as ctx.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// step runs one browser action with a deadline.
func step[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(c, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// waitView waits until the console has drawn view with data from the API.
func waitView(t *testing.T, ctx context.Context, view string) {
	t.Helper()
	step(t, ctx, "wait for the "+view+" view", chromedp.Poll[bool](
		fmt.Sprintf(`document.body.getAttribute("data-view") === %q && document.body.hasAttribute("data-loaded")`, view)))
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png := step(t, ctx, "screenshot", chromedp.FullScreenshot(100))
	path := filepath.Join(t.ArtifactDir(), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (keep it with go test -artifacts)", path)
}

// sessionRows is the sessions table as the page shows it: one map of
// column to text per row, and the row's link.
const sessionRowsJS = `[...document.querySelectorAll("table.sessions tbody tr")].map(tr => {
	const row = Object.fromEntries([...tr.cells].map(td => [td.dataset.col, td.textContent]));
	row.href = tr.querySelector("a").getAttribute("href");
	return row;
})`

// The console in headless Chromium against a real keel with sessions made
// by Paho: the tables show what the API says, hostile client ids, usernames
// and topics are text, and the CSP stops inline script.
func TestConsoleInChromium(t *testing.T) {
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	for i, u := range []string{"alice", hostileUser} {
		args := []string{"passwd", "-b", passwd, u, "pw"}
		if i == 0 {
			args = []string{"passwd", "-c", "-b", passwd, u, "pw"}
		}
		if code, _, errOut := runKeel(t, args...); code != 0 {
			t.Fatalf("keel passwd -b %q: exit %d: %s", u, code, errOut)
		}
	}
	conf := writeConfig(t, "data = "+filepath.Join(dir, "data")+"\nadmin = 127.0.0.1:0\npassword_file = "+passwd+"\n\n"+
		"[listener tcp]\nlisten = 127.0.0.1:0\n\n[listener ws]\nlisten = 127.0.0.1:0\nprotocol = websockets\n")
	k := startKeel(t, "serve", "--config", conf)
	admin := "http://" + k.metrics

	// Two offline persistent sessions with queues (meter-a 7 entries, the
	// hostile one 3), one online session that has acknowledged everything.
	connect := func(id, user string, clean bool) mqtt.Client {
		o := mqtt.NewClientOptions().AddBroker("tcp://" + k.addr).SetClientID(id).SetUsername(user).SetPassword("pw").
			SetCleanSession(clean).SetProtocolVersion(4).SetAutoReconnect(false)
		c := mqtt.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("connect %q: %v", id, tok.Error())
		}
		return c
	}
	subscribe := func(c mqtt.Client, filter string) {
		if tok := c.Subscribe(filter, 1, func(mqtt.Client, mqtt.Message) {}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe %s: %v", filter, tok.Error())
		}
	}
	a := connect("meter-a", "alice", false)
	subscribe(a, "m/#")
	a.Disconnect(250)
	h := connect(hostileID, hostileUser, false)
	subscribe(h, "m/h")
	h.Disconnect(250)
	b := connect("meter-b", "alice", false)
	subscribe(b, "m/b")
	defer b.Disconnect(250)
	p := connect("publisher", "alice", true)
	defer p.Disconnect(250)
	publish := func(topic string, retain bool) {
		if tok := p.Publish(topic, 1, retain, "reading"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", topic, tok.Error())
		}
	}
	for range 4 {
		publish("m/x", false)
	}
	for range 3 {
		publish("m/h", false)
	}
	publish(hostileTopic, true)

	// What the API says, once both offline sessions are stored as
	// disconnected with their queues.
	var api sessionsView
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := get(t, admin+"/api/sessions")
		api = sessionsView{}
		if err := json.Unmarshal([]byte(body), &api); err != nil {
			t.Fatalf("/api/sessions: %v: %s", err, body)
		}
		depth := map[string]int64{}
		offline := 0
		for _, s := range api.Sessions {
			depth[s.ClientID] = s.Queue.Entries
			if !s.Connected {
				offline++
			}
		}
		if depth["meter-a"] == 7 && depth[hostileID] == 3 && offline == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/api/sessions never showed the queues (meter-a 7, hostile 3, two offline): %s", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(api.Sessions) != 3 {
		t.Fatalf("/api/sessions: %d sessions, want 3 (meter-a, meter-b, the hostile one): %+v", len(api.Sessions), api.Sessions)
	}

	// The API fields the console reads beyond keel inspect's.
	var st statsView
	_, body := get(t, admin+"/api/stats")
	if err := json.Unmarshal([]byte(body), &st); err != nil || st.Broker == nil {
		t.Fatalf("/api/stats: %v: %s", err, body)
	}
	if b := st.Broker; b.ClientsConnected != 2 || b.SessionsPersistent != 3 || b.SessionsOffline != 2 || b.QueuedMessages != 10 ||
		b.QueuedBytes <= 0 || b.Retained != 1 || b.StoreBytes == 0 || !hasKeys(b.Refused, "store_failed", "not_authorized", "keep_alive", "queue_full", "topic_limits", "publish_rate", "disk_low", "retained_full") ||
		len(b.Dropped) != 10 || !hasKeys(b.Dropped, "queue_full", "queue_full_oldest", "memory_queue_full", "disk_low", "retained_full") ||
		b.DiskTotalBytes == 0 || b.DiskMinFreeBytes == 0 || b.RetainedBytes <= 0 || b.Fsync.Count == 0 || b.Fsync.Count != b.StoreSyncs || b.Fsync.P50Seconds <= 0 || b.Fsync.P99Seconds < b.Fsync.P50Seconds {
		t.Errorf("/api/stats broker %+v: want 2 clients, 3 sessions (2 offline), 10 queued, 1 retained, every reason, an fsync summary", b)
	}
	var lv listenersView
	_, body = get(t, admin+"/api/listeners")
	if err := json.Unmarshal([]byte(body), &lv); err != nil {
		t.Fatalf("/api/listeners: %v: %s", err, body)
	}
	addrs := k.listenerAddrs(t)
	if len(lv.Listeners) != 2 || lv.Listeners[0].Name != "tcp" || lv.Listeners[0].Addr != addrs["tcp"] || lv.Listeners[0].Open != 2 ||
		lv.Listeners[0].Accepted != 4 || lv.Listeners[1].Transport != "ws" || lv.Listeners[1].WebSocketPath != "/mqtt" ||
		len(lv.Listeners[1].Refused) == 0 {
		t.Errorf("/api/listeners: %s; want tcp (%s, 2 open, 4 accepted) and ws on /mqtt", body, addrs["tcp"])
	}

	ctx := browser(t)

	// The sessions table, by client id: every session the API has, with
	// its owner, queue and link, and the hostile strings as text.
	step(t, ctx, "open the console", chromedp.Navigate(admin+"/console/#/sessions"))
	waitView(t, ctx, "sessions")
	rows := step(t, ctx, "read the sessions table", chromedp.Evaluate[[]map[string]string](sessionRowsJS))
	if len(rows) != len(api.Sessions) {
		t.Fatalf("sessions table has %d rows, want %d: %v", len(rows), len(api.Sessions), rows)
	}
	for i, s := range api.Sessions {
		r := rows[i]
		want := map[string]string{"client_id": s.ClientID, "owner": *s.Owner, "protocol": "3.1.1",
			"queue": fmt.Sprint(s.Queue.Entries), "inflight": fmt.Sprint(s.Queue.Inflight)}
		for col, w := range want {
			if r[col] != w {
				t.Errorf("sessions row %d column %s: got %q, want %q", i, col, r[col], w)
			}
		}
		if c := r["connected"]; s.Connected != (c == "yes") {
			t.Errorf("sessions row %s connected: got %q, want connected %t", s.ClientID, c, s.Connected)
		}
		if want := "#/session/" + urlComponent(s.ClientID); r["href"] != want {
			t.Errorf("sessions row %s link: got %q, want %q", s.ClientID, r["href"], want)
		}
	}
	safe := `window.__pwned === undefined && document.querySelectorAll("script").length === 1 &&
		document.querySelectorAll("img, b, main script").length === 0`
	if !step(t, ctx, "check nothing ran", chromedp.Evaluate[bool](safe)) {
		t.Errorf("a client's string became markup in the sessions table")
	}
	screenshot(t, ctx, "console-sessions.png")
	step(t, ctx, "a phone's screen", chromedp.EmulateViewport(390, 844))
	screenshot(t, ctx, "console-sessions-phone.png")
	step(t, ctx, "back to a desktop's", chromedp.EmulateViewport(1280, 900))

	// Sorted by queue depth: meter-a (7), the hostile one (3), meter-b (0).
	step(t, ctx, "sort by queue", chromedp.Click(chromedp.CSS(`th button[data-sort="queue"]`)))
	rows = step(t, ctx, "read the sorted table", chromedp.Evaluate[[]map[string]string](sessionRowsJS))
	var order []string
	for _, r := range rows {
		order = append(order, r["client_id"]+"="+r["queue"])
	}
	if got, want := strings.Join(order, " "), "meter-a=7 "+hostileID+"=3 meter-b=0"; got != want {
		t.Errorf("sorted by queue depth: %s, want %s", got, want)
	}

	// Filtered by a prefix typed into the page.
	step(t, ctx, "type a prefix", chromedp.SendKeys(chromedp.ID("prefix"), "meter-"))
	step(t, ctx, "wait for the filter", chromedp.Poll[bool](`(() => {
		const ids = [...document.querySelectorAll("table.sessions tbody td[data-col=client_id]")].map(td => td.textContent);
		return ids.length === 2 && ids.every(id => id.startsWith("meter-"));
	})()`))
	if h := step(t, ctx, "read the location", chromedp.Evaluate[string](`location.hash`)); !strings.Contains(h, "prefix=meter-") {
		t.Errorf("location after filtering: %q, want the prefix in it", h)
	}

	// A session's page, reached by its link from the table.
	step(t, ctx, "clear the prefix", chromedp.Evaluate[chromedp.Void](`location.hash = "#/sessions"`))
	waitView(t, ctx, "sessions")
	step(t, ctx, "click the hostile session", chromedp.Evaluate[chromedp.Void](
		`[...document.querySelectorAll("table.sessions a")].find(a => a.textContent.startsWith("<script>")).click()`))
	waitView(t, ctx, "session")
	detail := step(t, ctx, "read the session page", chromedp.Evaluate[map[string]string](`(() => {
		const out = {title: document.querySelector("h2.session-id").textContent};
		for (const dd of document.querySelectorAll("[data-field]")) out[dd.dataset.field] = dd.textContent;
		out.filters = [...document.querySelectorAll("table.subscriptions td[data-col=filter]")].map(td => td.textContent).join(",");
		return out;
	})()`))
	for k, want := range map[string]string{"title": hostileID, "owner": hostileUser, "queue_entries": "3", "queue_queued": "3",
		"protocol": "3.1.1", "filters": "m/h"} {
		if detail[k] != want {
			t.Errorf("session page %s: got %q, want %q", k, detail[k], want)
		}
	}
	if !step(t, ctx, "check nothing ran", chromedp.Evaluate[bool](safe)) {
		t.Errorf("a client's string became markup on the session page")
	}
	screenshot(t, ctx, "console-session.png")

	// A session that is not there says so.
	step(t, ctx, "open a missing session", chromedp.Evaluate[chromedp.Void](`location.hash = "#/session/nobody%2Fhere"`))
	waitView(t, ctx, "session")
	if got := step(t, ctx, "read it", chromedp.Evaluate[string](`document.getElementById("view").textContent`)); got != "nobody/hereNo such session (it may have expired or ended)." {
		t.Errorf("a missing session's page: %q", got)
	}

	// The overview shows the broker's own counts, as the API has them.
	step(t, ctx, "open the overview", chromedp.Evaluate[chromedp.Void](`location.hash = "#/"`))
	waitView(t, ctx, "overview")
	st = statsView{}
	_, body = get(t, admin+"/api/stats")
	if err := json.Unmarshal([]byte(body), &st); err != nil || st.Broker == nil {
		t.Fatalf("/api/stats: %v: %s", err, body)
	}
	fields := step(t, ctx, "read the overview", chromedp.Evaluate[map[string]string](`(() => {
		const out = {text: document.getElementById("view").textContent};
		for (const v of document.querySelectorAll("[data-field]")) out[v.dataset.field] = v.textContent;
		out.queues = [...document.querySelectorAll("table.queues td[data-col=client_id]")].map(td => td.textContent).join(" | ");
		out.refused = [...document.querySelectorAll("table.refused td[data-col=reason]")].map(td => td.textContent).join(",");
		return out;
	})()`))
	if f := fields["disk_free"]; st.Broker.DiskTotalBytes == 0 || !strings.HasSuffix(f, "B") {
		t.Errorf("overview disk_free: got %q, want the free bytes the API has (%d of %d)", f, st.Broker.DiskFreeBytes, st.Broker.DiskTotalBytes)
	}
	for k, want := range map[string]string{
		"clients_connected":   fmt.Sprint(st.Broker.ClientsConnected), // meter-b and the publisher
		"sessions_persistent": fmt.Sprint(st.Broker.SessionsPersistent),
		"queued_messages":     fmt.Sprint(st.Broker.QueuedMessages),
		"retained":            fmt.Sprint(st.Broker.Retained),
		"queues":              "meter-a | " + hostileID,
		"refused":             strings.Join(slices.Sorted(maps.Keys(st.Broker.Refused)), ","), // every reason, zero or not
	} {
		if fields[k] != want {
			t.Errorf("overview %s: got %q, want %q (API: %s)", k, fields[k], want, body)
		}
	}
	if strings.Contains(fields["text"], "null") || strings.Contains(fields["text"], "undefined") {
		t.Errorf("the overview shows null or undefined: %s", fields["text"])
	}

	// It refreshes by itself: two more messages for meter-a show up, and
	// with a second reading come the rates.
	publish("m/x", false)
	publish("m/x", false)
	step(t, ctx, "wait for the refresh", chromedp.Poll[bool](`(() => {
		const f = n => document.querySelector("[data-field=" + n + "]").textContent;
		return f("queued_messages") === "12" && /\/s$/.test(f("messages_in"));
	})()`, chromedp.WithPollingInterval(100*time.Millisecond)))
	screenshot(t, ctx, "console-overview.png")

	// Retained topics and listeners.
	step(t, ctx, "open retained", chromedp.Evaluate[chromedp.Void](`location.hash = "#/retained"`))
	waitView(t, ctx, "retained")
	topics := step(t, ctx, "read retained", chromedp.Evaluate[[]string](
		`[...document.querySelectorAll("table.retained td[data-col=topic]")].map(td => td.textContent)`))
	if len(topics) != 1 || topics[0] != hostileTopic {
		t.Errorf("retained topics %q, want [%q]", topics, hostileTopic)
	}
	step(t, ctx, "open listeners", chromedp.Evaluate[chromedp.Void](`location.hash = "#/listeners"`))
	waitView(t, ctx, "listeners")
	ls := step(t, ctx, "read listeners", chromedp.Evaluate[[]string](
		`[...document.querySelectorAll("table.listeners tbody tr")].map(tr => [...tr.cells].map(td => td.textContent).join(" "))`))
	// tcp: meter-b and the publisher open, four clients accepted.
	want := []string{"tcp " + addrs["tcp"] + " tcp 2 4 none 0", "ws " + addrs["ws"] + " ws /mqtt 0 0 none 0"}
	if strings.Join(ls, "\n") != strings.Join(want, "\n") {
		t.Errorf("listeners %q, want %q", ls, want)
	}

	// Had markup slipped in, the CSP would stop its inline handler: the
	// browser reports the violation and nothing runs.
	directive := step(t, ctx, "inject an inline handler", chromedp.Evaluate[string](`new Promise(resolve => {
		document.addEventListener("securitypolicyviolation", e => resolve(e.effectiveDirective), {once: true});
		const d = document.createElement("div");
		d.innerHTML = '<img src="nothing.png" onerror="window.__pwned = 5">';
		document.body.append(d);
	})`, chromedp.EvalAwaitPromise))
	if !strings.HasPrefix(directive, "script-src") {
		t.Errorf("an injected inline handler: violation of %q, want script-src", directive)
	}
	if step(t, ctx, "check the handler did not run", chromedp.Evaluate[bool](`window.__pwned !== undefined`)) {
		t.Errorf("an injected inline handler ran despite the CSP")
	}

	// A session page's actions, each confirmed (confirm answers yes
	// here): meter-b, connected, is disconnected and shows offline; then
	// its session is deleted, and the API and keel's log agree.
	step(t, ctx, "open meter-b", chromedp.Evaluate[chromedp.Void](`window.confirm = () => true; location.hash = "#/session/meter-b"`))
	waitView(t, ctx, "session")
	poll := func(what, cond string) {
		t.Helper()
		step(t, ctx, what, chromedp.Poll[bool](cond, chromedp.WithPollingInterval(50*time.Millisecond)))
	}
	poll("wait for its buttons", `document.querySelector("button[data-action=disconnect]") !== null`)
	step(t, ctx, "click disconnect", chromedp.Evaluate[chromedp.Void](`document.querySelector("button[data-action=disconnect]").click()`))
	poll("wait for it to show offline", `(() => {
		const d = document.querySelector("[data-field=connected]");
		return d !== null && d.textContent.startsWith("no, since") && document.querySelector("button[data-action=disconnect]") === null;
	})()`)
	screenshot(t, ctx, "console-session-actions.png")
	k.waitLog(t, `msg="admin: disconnect" component=admin client=meter-b`)
	step(t, ctx, "click delete", chromedp.Evaluate[chromedp.Void](`document.querySelector("button[data-action=delete]").click()`))
	poll("wait for it to be gone", `document.getElementById("view").textContent.includes("No such session")`)
	if code, body := get(t, admin+"/api/sessions/meter-b"); code != 404 {
		t.Errorf("GET /api/sessions/meter-b after the console deleted it: %d %s, want 404", code, body)
	}
	k.waitLog(t, `msg="admin: delete_session" component=admin client=meter-b`)
}

// urlComponent is JavaScript's encodeURIComponent.
func urlComponent(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_.!~*'()", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// The fsync summary names the bucket bounds that hold the median and the
// 99th percentile.
func TestFsyncSummary(t *testing.T) {
	ms := time.Millisecond
	h := wal.Histogram{Bounds: []time.Duration{ms, 2 * ms, 5 * ms}, Counts: []uint64{0, 0, 0, 0}}
	if got := fsyncSummary(h); got != (fsyncInfo{}) {
		t.Errorf("no syncs: got %+v, want zeros", got)
	}
	h.Counts = []uint64{90, 9, 1, 0} // 100 syncs
	h.Sum = 150 * ms
	if got, want := fsyncSummary(h), (fsyncInfo{Count: 100, SumSeconds: 0.15, P50Seconds: 0.001, P99Seconds: 0.002}); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	h.Counts = []uint64{10, 0, 0, 90} // most above the last bound
	if got := fsyncSummary(h); got.P50Seconds != -1 || got.P99Seconds != -1 {
		t.Errorf("above the last bound: got %+v, want -1 for both", got)
	}
}

// hasKeys says whether m has every key.
func hasKeys(m map[string]uint64, keys ...string) bool {
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			return false
		}
	}
	return true
}
