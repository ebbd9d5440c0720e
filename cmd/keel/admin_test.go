package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/keelmq/keel/engine/client"
	"github.com/keelmq/keel/engine/enginetest"
	"github.com/keelmq/keel/engine/packet"
	"github.com/keelmq/keel/wal"
)

// testAdmin starts an admin listener on a free loopback port, shut down
// when the test ends.
func testAdmin(t *testing.T) *adminServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := startAdmin(ln, false, enginetest.Logger())
	t.Cleanup(func() { a.shutdown(context.Background()) })
	return a
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// /healthz answers from the start; /readyz only once the broker runs and
// while its store has not failed, and not while stopping.
func TestAdminHealthAndReadiness(t *testing.T) {
	a := testAdmin(t)
	base := "http://" + a.addr
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 503, "/metrics": 503, "/api/stats": 503} {
		if code, body := get(t, base+path); code != want {
			t.Errorf("before ready: GET %s: %d %q, want %d", path, code, body, want)
		}
	}
	if _, body := get(t, base+"/readyz"); !strings.Contains(body, "starting") {
		t.Errorf("/readyz before ready: %q, want it to say starting", body)
	}

	toggle := &errorfs.Toggle{Injector: errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind == errorfs.OpFileSyncData || op.Kind == errorfs.OpFileSync || op.Kind == errorfs.OpFileWrite {
			return syscall.EIO
		}
		return nil
	})}
	b := enginetest.Start(t, enginetest.Options{FS: errorfs.Wrap(vfs.NewCrashableMem(), toggle)})
	a.ready(b.Engine, b.Store, nil)
	if code, body := get(t, base+"/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz once ready: %d %q, want 200 ready", code, body)
	}
	if code, body := get(t, base+"/metrics"); code != 200 || !strings.Contains(body, "keel_store_syncs_total") {
		t.Errorf("/metrics once ready: %d, want 200 and the broker's metrics", code)
	}

	// A commit fails: the broker is alive and not ready.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Connect(ctx, client.Options{Addr: b.Addr, ClientID: "p", CleanStart: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	toggle.On()
	// Retained, so it has something to commit.
	code, err := c.PublishWait(ctx, &packet.Publish{Topic: "t", QoS: 1, Retain: true, Payload: []byte("x")})
	if err == nil && code < 0x80 {
		t.Fatalf("a publish over a failing disk was acknowledged with %v", code)
	}
	select {
	case <-b.Engine.Failed():
	case <-ctx.Done():
		t.Fatal("the broker did not fail")
	}
	if code, body := get(t, base+"/readyz"); code != 503 || !strings.HasPrefix(body, "store failed: ") {
		t.Errorf("/readyz after a store failure: %d %q, want 503 store failed", code, body)
	}
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz after a store failure: %d, want 200", code)
	}
	a.stop()
	if code, body := get(t, base+"/readyz"); code != 503 || body != "shutting down\n" {
		t.Errorf("/readyz while stopping: %d %q, want 503 shutting down", code, body)
	}
}

// keel inspect --admin reads a running broker's store through the admin
// API, and sees what an inspect of the stopped directory sees.
func TestAdminLiveInspect(t *testing.T) {
	f := startOpsFixture(t)
	a := testAdmin(t)
	a.ready(f.b.Engine, f.b.Store, nil)

	live := inspectJSON[sessionsView](t, "--admin", a.addr, "sessions")
	if !live.Live || live.Dir != "" || len(live.Sessions) != 3 {
		t.Fatalf("live sessions: live %t, dir %q, %d sessions; want true, none, 3", live.Live, live.Dir, len(live.Sessions))
	}
	st := inspectJSON[statsView](t, "--admin", a.addr)
	if b := st.Broker; b == nil || b.ClientsConnected != 1 || b.Version == "" || b.MessagesReceived == 0 || b.StoreSyncs == 0 {
		t.Errorf("live stats broker %+v: want one client connected (sub5), a version, messages and syncs", b)
	}
	if st.Stats.FormatVersion != wal.FormatVersion || st.Stats.Sessions != 3 || st.Stats.Inflight != fixtureMessages || st.Stats.Store == nil {
		t.Errorf("live stats %+v", st.Stats)
	}
	one := inspectJSON[oneSessionView](t, "--admin", a.addr, "session", "sub5")
	if len(one.Session.Inflight) != fixtureMessages || one.Session.Will == nil {
		t.Errorf("live session sub5: %+v", one.Session)
	}
	if code, _, errOut := runIn("inspect", "--admin", a.addr, "session", "nobody"); code != 1 || !strings.Contains(errOut, "404") || !strings.Contains(errOut, "no such session") {
		t.Errorf("live session nobody: exit %d, stderr %q; want 1, 404 and no such session", code, errOut)
	}
	if code, body := get(t, "http://"+a.addr+"/api/sessions?limit=x"); code != 400 || !strings.Contains(body, "limit") {
		t.Errorf("GET /api/sessions?limit=x: %d %q, want 400", code, body)
	}
	// From a peer not on loopback the API says no.
	req := httptest.NewRequest("GET", "/api/stats", nil)
	req.RemoteAddr = "192.0.2.7:4000"
	rec := httptest.NewRecorder()
	a.srv.Handler.ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden {
		t.Errorf("/api/stats from 192.0.2.7: %d, want 403", rec.Code)
	}

	f.b.Stop()
	offline := inspectJSON[sessionsView](t, f.dir, "sessions")
	if !reflect.DeepEqual(live.Sessions, offline.Sessions) {
		t.Errorf("live and stopped inspections differ:\nlive    %+v\nstopped %+v", live.Sessions, offline.Sessions)
	}
}

// A backup taken through the admin listener while QoS 1 publishes keep
// coming holds every message acknowledged before it began, each whole and
// in order, and a broker started on the restored copy delivers them.
func TestLiveBackupUnderLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	b := enginetest.Start(t, enginetest.Options{FS: vfs.Default, Dir: dir})
	a := testAdmin(t)
	a.ready(b.Engine, b.Store, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// The sink: a persistent session that is offline, so every message
	// is queued for it on disk.
	sink, err := client.Connect(ctx, client.Options{Addr: b.Addr, Version: packet.V311, ClientID: "sink"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Subscribe(ctx, &packet.Subscribe{PacketID: 1, Subs: []packet.Subscription{{Filter: "load/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	sink.Disconnect(ctx, &packet.Disconnect{})
	waitDisconnectStored(t, b.Store, "sink")

	const publishers, most = 3, 20000
	payload := func(p, i int) []byte { return []byte(fmt.Sprintf("p%d-%06d-%s", p, i, strings.Repeat("x", 100))) }
	acked := make([]chan int, publishers) // each publisher's acknowledged count, as it grows
	stop := make(chan struct{})
	done := make(chan error, publishers)
	for p := range publishers {
		acked[p] = make(chan int, most)
		go func() {
			c, err := client.Connect(ctx, client.Options{Addr: b.Addr, ClientID: fmt.Sprintf("pub%d", p), CleanStart: true})
			if err != nil {
				done <- err
				return
			}
			defer c.Close()
			for i := range most {
				select {
				case <-stop:
					done <- nil
					return
				default:
				}
				code, err := c.PublishWait(ctx, &packet.Publish{Topic: fmt.Sprintf("load/p%d", p), QoS: 1, Payload: payload(p, i)})
				if err != nil || code != 0 {
					done <- fmt.Errorf("publisher %d message %d: %v, %v", p, i, code, err)
					return
				}
				acked[p] <- i + 1
			}
			done <- nil
		}()
	}
	// Wait for some load, then note what is acknowledged and back up.
	before := make([]int, publishers)
	for p := range publishers {
		for before[p] < 300 {
			select {
			case before[p] = <-acked[p]:
			case err := <-done:
				t.Fatalf("a publisher ended early: %v", err)
			}
		}
	}
	for p := range publishers {
		for drained := false; !drained; {
			select {
			case before[p] = <-acked[p]:
			default:
				drained = true
			}
		}
	}
	dest := filepath.Join(t.TempDir(), "backup")
	code, out, errOut := runIn("backup", "--admin", a.addr, dest)
	close(stop)
	for range publishers {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
	if code != 0 || !strings.Contains(out, dest+": backup taken at") {
		t.Fatalf("keel backup --admin: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	t.Logf("acknowledged before the backup: %v; %s", before, strings.TrimSpace(out))

	data := filepath.Join(t.TempDir(), "restored")
	if code, out, errOut := runIn("restore", dest, data); code != 0 {
		t.Fatalf("keel restore: exit %d, %q %q", code, out, errOut)
	}
	r := enginetest.Start(t, enginetest.Options{FS: vfs.Default, Dir: data})
	st := inspectJSON[sessionsView](t, dest, "sessions")
	if len(st.Sessions) != 1 || st.Sessions[0].ClientID != "sink" {
		t.Fatalf("backup sessions: %+v, want the sink only", st.Sessions)
	}
	n := int(st.Sessions[0].Queue.Entries)
	got := receive(t, r.Addr, "sink", n)
	next := make([]int, publishers)
	for _, m := range got {
		var p, i int
		if _, err := fmt.Sscanf(m, "load/p%d p%d-%06d-", &p, &p, &i); err != nil || p < 0 || p >= publishers {
			t.Fatalf("restored message %q: not one of ours", m)
		}
		if want := fmt.Sprintf("load/p%d %s", p, payload(p, i)); m != want {
			t.Fatalf("restored message %q, want %q: half-written", m, want)
		}
		if i != next[p] {
			t.Fatalf("publisher %d: restored message %d after %d: lost or out of order", p, i, next[p]-1)
		}
		next[p]++
	}
	for p := range publishers {
		if next[p] < before[p] {
			t.Errorf("publisher %d: the backup holds %d messages, %d were acknowledged before it began", p, next[p], before[p])
		}
	}
}

// The binary: keel serve --admin serves health and the API; keel inspect
// of its directory names its PID; inspect and backup through --admin work
// while it serves, and the backup starts a broker.
func TestBinaryAdminInspectBackup(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	k := startKeel(t, "serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--data", data)
	if k.metrics == "" {
		t.Fatalf("keel logged no admin address:\n%s", k.stderr())
	}
	for path, want := range map[string]string{"/healthz": "ok\n", "/readyz": "ready\n"} {
		if code, body := get(t, "http://"+k.metrics+path); code != 200 || body != want {
			t.Errorf("GET %s: %d %q, want 200 %q", path, code, body, want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.Connect(ctx, client.Options{Addr: k.addr, Version: packet.V311, ClientID: "keep"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Subscribe(ctx, &packet.Subscribe{PacketID: 1, Subs: []packet.Subscription{{Filter: "a/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	c.Disconnect(ctx, &packet.Disconnect{})
	p, err := client.Connect(ctx, client.Options{Addr: k.addr, ClientID: "p", CleanStart: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if code, err := p.PublishWait(ctx, &packet.Publish{Topic: "a/b", QoS: 1, Payload: []byte{byte('0' + i)}}); err != nil || code != 0 {
			t.Fatal(code, err)
		}
	}
	p.Close()

	code, _, errOut := runKeel(t, "inspect", data)
	if code != 1 || !strings.Contains(errOut, fmt.Sprintf("another keel (pid %d)", k.cmd.Process.Pid)) || !strings.Contains(errOut, "--admin") {
		t.Errorf("keel inspect of a served directory: exit %d, stderr %q; want 1, its pid and --admin", code, errOut)
	}
	code, out, errOut := runKeel(t, "inspect", "--admin", k.metrics, "queues")
	if code != 0 || !strings.Contains(out, "keep    10       10") {
		t.Errorf("keel inspect --admin queues: exit %d, stdout %q, stderr %q; want keep with 10 queued", code, out, errOut)
	}
	dest := filepath.Join(t.TempDir(), "backup")
	code, out, errOut = runKeel(t, "backup", "--admin", k.metrics, dest)
	if code != 0 || !strings.Contains(out, "1 sessions, 1 subscriptions, 10 queue entries") {
		t.Errorf("keel backup --admin: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	k.waitLog(t, `msg="admin: backup taken"`)
	k.stop(t)

	k2 := startKeel(t, "serve", "--listen", "127.0.0.1:0", "--data", dest)
	got := receive(t, k2.addr, "keep", 10)
	for i, m := range got {
		if want := "a/b " + string(rune('0'+i)); m != want {
			t.Errorf("message %d from the backup: %q, want %q", i, m, want)
		}
	}
	k2.stop(t)
}
