package main

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/keelmq/keel/engine/enginetest"
	"github.com/keelmq/keel/wal"
)

// digest is every file of dir with its size and hash.
func digest(t *testing.T, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = fmt.Sprintf("%d %x", len(b), sha256.Sum256(b))
	}
	return out
}

func inspectJSON[T any](t *testing.T, args ...string) *T {
	t.Helper()
	code, out, errOut := runIn(append([]string{"inspect"}, append(args, "--json")...)...)
	if code != 0 || errOut != "" {
		t.Fatalf("keel inspect %s: exit %d, stderr %q", strings.Join(args, " "), code, errOut)
	}
	v := new(T)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("keel inspect %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return v
}

func sessionByID(t *testing.T, ss []sessionInfo, id string) sessionInfo {
	t.Helper()
	for _, s := range ss {
		if s.ClientID == id {
			return s
		}
	}
	t.Fatalf("no session %q among %d", id, len(ss))
	return sessionInfo{}
}

// keel inspect on a data directory a real broker wrote with real clients:
// every field is what the clients left, and not one byte of the directory
// changes.
func TestInspectStoppedBroker(t *testing.T) {
	f := makeOpsFixture(t)
	before := digest(t, f.dir)
	now := time.Now()

	t.Run("sessions", func(t *testing.T) {
		v := inspectJSON[sessionsView](t, f.dir, "sessions")
		if v.Live || v.Dir != f.dir || now.Sub(v.At) > time.Minute || v.At.Before(now.Add(-time.Second)) {
			t.Errorf("header: live %t, dir %q, at %v; want false, %q, now", v.Live, v.Dir, v.At, f.dir)
		}
		var ids []string
		for _, s := range v.Sessions {
			ids = append(ids, s.ClientID)
		}
		if want := []string{"pub5", "sub311", "sub5"}; !slices.Equal(ids, want) {
			t.Fatalf("sessions %v, want %v (paho-pub and own were clean sessions)", ids, want)
		}

		s := sessionByID(t, v.Sessions, "sub311")
		if s.Protocol != "3.1.1" || s.ProtocolLevel != 4 || !s.Persistent || !s.NeverExpires || s.ExpirySeconds != 0xFFFFFFFF {
			t.Errorf("sub311: protocol %q/%d persistent %t never %t expiry %d; want 3.1.1/4, true, true, 4294967295",
				s.Protocol, s.ProtocolLevel, s.Persistent, s.NeverExpires, s.ExpirySeconds)
		}
		if s.Connected || s.DisconnectedAt == nil || s.ExpiresAt != nil {
			t.Errorf("sub311: connected %t, disconnected_at %v, expires_at %v; want offline since its DISCONNECT, no expiry",
				s.Connected, s.DisconnectedAt, s.ExpiresAt)
		}
		if want := []subInfo{{Filter: "q/#", QoS: 1}}; !slices.Equal(s.Subscriptions, want) {
			t.Errorf("sub311 subscriptions %+v, want %+v", s.Subscriptions, want)
		}
		if q := s.Queue; q.Entries != fixtureMessages || q.Queued != fixtureMessages || q.Inflight != 0 || q.Bytes <= 0 || q.OldestSeq == 0 {
			t.Errorf("sub311 queue %+v, want %d entries all queued, bytes and an oldest seq", q, fixtureMessages)
		}
		if len(s.Inflight) != 0 || len(s.InboundQoS2) != 0 || s.Will != nil {
			t.Errorf("sub311: inflight %v, inbound %v, will %+v; want none", s.Inflight, s.InboundQoS2, s.Will)
		}

		s = sessionByID(t, v.Sessions, "sub5")
		if s.Protocol != "5.0" || s.ExpirySeconds != 3600 || s.NeverExpires {
			t.Errorf("sub5: protocol %q, expiry %d, never %t; want 5.0, 3600, false", s.Protocol, s.ExpirySeconds, s.NeverExpires)
		}
		// Connected when the broker stopped: the store records no
		// disconnect, and the expiry clock starts at the next start.
		if !s.Connected || s.DisconnectedAt != nil || s.ExpiresAt != nil {
			t.Errorf("sub5: connected %t, disconnected_at %v, expires_at %v; want connected, neither time", s.Connected, s.DisconnectedAt, s.ExpiresAt)
		}
		if want := []subInfo{{Filter: "q/+", QoS: 2, NoLocal: true, SubscriptionID: 7}}; !slices.Equal(s.Subscriptions, want) {
			t.Errorf("sub5 subscriptions %+v, want %+v", s.Subscriptions, want)
		}
		if q := s.Queue; q.Entries != fixtureMessages || q.Queued != 0 || q.Inflight != fixtureMessages || q.Bytes <= 0 {
			t.Errorf("sub5 queue %+v, want %d entries, all in flight", q, fixtureMessages)
		}
		if len(s.Inflight) != fixtureMessages {
			t.Fatalf("sub5 in flight: %+v, want %d", s.Inflight, fixtureMessages)
		}
		for i, fl := range s.Inflight {
			want := flight{PacketID: uint16(i + 1), State: "sent", QoS: 2, Topic: "q/a", Seq: fl.Seq}
			if i == 0 {
				want.State, want.Topic = "released", "" // PUBREC came: the message is no longer needed
			}
			if fl != want {
				t.Errorf("sub5 in flight %d: got %+v, want %+v", i, fl, want)
			}
			if i > 0 && fl.Seq <= s.Inflight[i-1].Seq {
				t.Errorf("sub5 in flight not in queue order: seq %d after %d", fl.Seq, s.Inflight[i-1].Seq)
			}
		}
		if s.Queue.OldestSeq != s.Inflight[0].Seq {
			t.Errorf("sub5 oldest seq %d, want the first flight's %d", s.Queue.OldestSeq, s.Inflight[0].Seq)
		}
		if w := s.Will; w == nil || *w != (willInfo{Topic: "will/sub5", QoS: 1, PayloadBytes: 4, DelaySeconds: 600}) {
			t.Errorf("sub5 will %+v, want will/sub5, QoS 1, 4 bytes, delay 600", w)
		}

		s = sessionByID(t, v.Sessions, "pub5")
		if !slices.Equal(s.InboundQoS2, []uint16{9}) {
			t.Errorf("pub5 inbound QoS 2 ids %v, want [9] (PUBREC sent, no PUBREL)", s.InboundQoS2)
		}
		if s.Connected || s.DisconnectedAt == nil || s.ExpiresAt == nil || !s.ExpiresAt.Equal(s.DisconnectedAt.Add(60*time.Second)) {
			t.Errorf("pub5: connected %t, disconnected_at %v, expires_at %v; want offline, expiring 60 s after", s.Connected, s.DisconnectedAt, s.ExpiresAt)
		}
		if len(s.Subscriptions) != 0 || s.Queue.Entries != 0 {
			t.Errorf("pub5: subscriptions %v, queue %+v; want none", s.Subscriptions, s.Queue)
		}
	})

	t.Run("stats", func(t *testing.T) {
		v := inspectJSON[statsView](t, f.dir)
		s := v.Stats
		want := inspectStats{FormatVersion: wal.FormatVersion, Sessions: 3, Subscriptions: 2, QueueEntries: 2 * fixtureMessages,
			Queued: fixtureMessages, Inflight: fixtureMessages, InboundQoS2: 1, Wills: 1,
			// one body per message, shared by its two queues
			SharedBodies: fixtureMessages, SharedBodyBytes: s.SharedBodyBytes,
			Retained: 2, RetainedBytes: 5 + 2000, Store: s.Store}
		if s != want {
			t.Errorf("stats %+v\nwant  %+v", s, want)
		}
		if s.SharedBodyBytes <= 0 {
			t.Errorf("shared body bytes %d, want > 0", s.SharedBodyBytes)
		}
		if st := s.Store; st == nil || st.DiskBytes == 0 || len(st.Levels) != 7 || st.WALFiles == 0 || st.WALBytes == 0 || !strings.Contains(st.Pebble, "level") {
			t.Errorf("store %+v: want a size, a WAL, 7 levels and Pebble's table", st)
		}
		if v.Broker != nil {
			t.Errorf("a stopped broker's stats carry broker %+v", v.Broker)
		}
	})

	t.Run("retained", func(t *testing.T) {
		v := inspectJSON[retainedView](t, f.dir, "retained")
		if len(v.Retained) != 2 {
			t.Fatalf("retained %+v, want r/one and r/two", v.Retained)
		}
		one, two := v.Retained[0], v.Retained[1]
		if one.Topic != "r/one" || one.QoS != 1 || one.PayloadBytes != 5 || one.StoredBytes <= 5 || one.ExpiresAt != nil || one.Expired {
			t.Errorf("r/one: %+v, want QoS 1, 5 bytes, no expiry", one)
		}
		if two.Topic != "r/two" || two.QoS != 1 || two.PayloadBytes != 2000 || two.StoredBytes >= 2000 || two.Expired ||
			two.ExpiresAt == nil || two.ExpiresAt.Before(now.Add(3590*time.Second)) || two.ExpiresAt.After(now.Add(3601*time.Second)) {
			t.Errorf("r/two: %+v, want QoS 1, 2000 bytes stored compressed, expiring in an hour", two)
		}
	})

	t.Run("session", func(t *testing.T) {
		v := inspectJSON[oneSessionView](t, f.dir, "session", "sub5")
		if v.Session.ClientID != "sub5" || len(v.Session.Inflight) != fixtureMessages {
			t.Errorf("session sub5: %+v", v.Session)
		}
		code, out, _ := runIn("inspect", f.dir, "session", "sub5")
		for _, want := range []string{"client             sub5", "5.0 (level 5)", "packet id 1", "released", "will/sub5", "q/+", "no local", "subscription id 7"} {
			if code != 0 || !strings.Contains(out, want) {
				t.Errorf("keel inspect session sub5: exit %d, output lacks %q:\n%s", code, want, out)
			}
		}
		code, _, errOut := runIn("inspect", f.dir, "session", "nobody")
		if code != 1 || !strings.Contains(errOut, `no such session "nobody"`) {
			t.Errorf("keel inspect session nobody: exit %d, stderr %q; want 1 and no such session", code, errOut)
		}
	})

	t.Run("paging", func(t *testing.T) {
		v := inspectJSON[sessionsView](t, f.dir, "sessions", "--limit", "2")
		if len(v.Sessions) != 2 || v.Sessions[1].ClientID != "sub311" || v.Next != "sub311" {
			t.Fatalf("sessions --limit 2: %d sessions, next %q; want pub5 sub311, next sub311", len(v.Sessions), v.Next)
		}
		v = inspectJSON[sessionsView](t, f.dir, "sessions", "--limit", "2", "--after", v.Next)
		if len(v.Sessions) != 1 || v.Sessions[0].ClientID != "sub5" || v.Next != "" {
			t.Errorf("second page: %d sessions, next %q; want sub5 and no next", len(v.Sessions), v.Next)
		}
		v = inspectJSON[sessionsView](t, "--prefix", "sub", f.dir, "sessions")
		if len(v.Sessions) != 2 || v.Sessions[0].ClientID != "sub311" {
			t.Errorf("--prefix sub: %d sessions", len(v.Sessions))
		}
		q := inspectJSON[queuesView](t, f.dir, "queues")
		if len(q.Queues) != 2 || q.Queues[0].ClientID != "sub311" || q.Queues[0].Queue.Entries != fixtureMessages {
			t.Errorf("queues: %+v, want sub311 and sub5, 5 entries each", q.Queues)
		}
		r := inspectJSON[retainedView](t, f.dir, "retained", "--prefix", "r/t")
		if len(r.Retained) != 1 || r.Retained[0].Topic != "r/two" {
			t.Errorf("retained --prefix r/t: %+v", r.Retained)
		}
	})

	t.Run("text", func(t *testing.T) {
		for view, wants := range map[string][]string{
			"stats":    {fmt.Sprintf("format version     %d", wal.FormatVersion), "sessions           3 (subscriptions 2, wills 1)", "queue entries      10 (queued 5, in flight 5)", "retained           2 topics"},
			"sessions": {"CLIENT", "sub311  3.1.1", "never", "sub5    5.0    connected", "will/sub5"},
			"queues":   {"sub311  5        5       0", "sub5    5        0       5"},
			"retained": {"r/one  1    5 B", "r/two  1    2.0 KiB"},
		} {
			code, out, errOut := runIn("inspect", f.dir, view)
			for _, want := range wants {
				if code != 0 || !strings.Contains(out, want) {
					t.Errorf("keel inspect DATA %s: exit %d, stderr %q, output lacks %q:\n%s", view, code, errOut, want, out)
				}
			}
		}
	})

	after := digest(t, f.dir)
	if !sameFiles(before, after) {
		t.Errorf("keel inspect changed the data directory:\nbefore %v\nafter  %v", before, after)
	}
}

func sameFiles(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// A directory a running broker holds is refused, naming its PID and the
// live form; usage errors exit 2.
func TestInspectRefusals(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	enginetest.Start(t, enginetest.Options{FS: vfs.Default, Dir: dir})
	code, out, errOut := runIn("inspect", dir)
	if code != 1 || out != "" || !strings.Contains(errOut, fmt.Sprintf("pid %d", os.Getpid())) || !strings.Contains(errOut, "keel inspect --admin") {
		t.Errorf("keel inspect of a held directory: exit %d, stdout %q, stderr %q; want 1, the pid and the --admin form", code, out, errOut)
	}
	missing := filepath.Join(t.TempDir(), "none")
	if code, _, errOut := runIn("inspect", missing); code != 1 || !strings.Contains(errOut, "does not exist") {
		t.Errorf("keel inspect of a missing directory: exit %d, stderr %q", code, errOut)
	}
	if _, err := os.Stat(missing); err == nil {
		t.Errorf("keel inspect created %s", missing)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"inspect"}, "want DATA"},
		{[]string{"inspect", dir, "bogus"}, `unknown view "bogus"`},
		{[]string{"inspect", dir, "session"}, "session takes the client ID"},
		{[]string{"inspect", dir, "sessions", "x"}, `unexpected argument "x"`},
		{[]string{"inspect", dir, "--limit", "-1"}, "--limit"},
		{[]string{"inspect", "--nope"}, "flag provided but not defined"},
		{[]string{"backup", "a"}, "want DATA DEST"},
		{[]string{"backup", "--admin", "127.0.0.1:1", "a", "b"}, "with --admin, want DEST only"},
		{[]string{"restore", "a"}, "want BACKUP DATA"},
	} {
		code, out, errOut := runIn(tc.args...)
		if code != 2 || out != "" || !strings.Contains(errOut, tc.want) || !strings.Contains(errOut, "Usage") {
			t.Errorf("keel %s: exit %d, stdout %q, stderr %q; want 2, %q and the usage", strings.Join(tc.args, " "), code, out, errOut, tc.want)
		}
	}
	for _, cmd := range []string{"inspect", "backup", "restore"} {
		code, out, errOut := runIn(cmd, "--help")
		if code != 0 || errOut != "" || !strings.HasPrefix(out, "Usage:") || !strings.Contains(out, "Exit status") {
			t.Errorf("keel %s --help: exit %d, stderr %q, stdout %q", cmd, code, errOut, out)
		}
	}
}
