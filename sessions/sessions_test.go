package sessions

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/keelmq/keel/wal"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// owner stands for the engine's live end of a session.
type owner struct{}

func load(t *testing.T, l wal.Store) *Store[*owner] {
	t.Helper()
	st, err := Load[*owner](l, discard(), time.UnixMicro(1))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func keepAll(*wal.Message, byte, []uint32) bool { return true }

func commit(t *testing.T, l *wal.Log, f func(txn *wal.Txn)) {
	t.Helper()
	txn := &wal.Txn{}
	f(txn)
	if err := l.Commit(context.Background(), txn); err != nil {
		t.Fatal(err)
	}
}

// reopen crash-clones fs (only synced data survives) and opens a log on it.
func reopen(t *testing.T, fs *vfs.MemFS, l *wal.Log) (*vfs.MemFS, *wal.Log) {
	t.Helper()
	clone := fs.CrashClone(vfs.CrashCloneCfg{})
	l.Close()
	nl, err := wal.Open(wal.Options{Dir: "d", FS: clone})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nl.Close() })
	return clone, nl
}

func TestLoadRestoresEverySessionPart(t *testing.T) {
	fs := vfs.NewCrashableMem()
	l, err := wal.Open(wal.Options{Dir: "d", FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	msg := &wal.Message{Topic: "t", Payload: []byte("body"), QoS: 2}
	commit(t, l, func(txn *wal.Txn) {
		txn.Set(wal.SessionKey("a"), wal.AppendSession(nil, &wal.Session{Protocol: 5, ExpirySeconds: 60, DisconnectedAt: 1234,
			Will: &wal.Will{Message: wal.Message{Topic: "w", Payload: []byte("x")}, DelaySeconds: 5}}, 0))
		txn.Set(wal.SubscriptionKey("a", "t/#"), wal.AppendSubscription(nil, &wal.Subscription{QoS: 2, SubID: 9}))
		txn.Set(wal.MessageKey(100), wal.AppendMessage(nil, msg, 0))
		// Seq 10: sent with id 7 (shared body); 11: released id 8; 12, 13: queued.
		txn.Set(wal.QueueKey("a", 10), wal.AppendEntry(nil, &wal.Entry{State: wal.EntrySent, PacketID: 7, QoS: 2, Shared: 100}, 0))
		txn.Set(wal.QueueKey("a", 11), wal.AppendEntry(nil, &wal.Entry{State: wal.EntryReleased, PacketID: 8, QoS: 2}, 0))
		txn.Set(wal.QueueKey("a", 12), wal.AppendEntry(nil, &wal.Entry{State: wal.EntryQueued, QoS: 1, Inline: msg}, 0))
		txn.Set(wal.QueueKey("a", 13), wal.AppendEntry(nil, &wal.Entry{State: wal.EntryQueued, QoS: 2, Shared: 100}, 0))
		txn.Set(wal.InboundKey("a", 42), nil)
		// A second session that was connected when the broker stopped.
		txn.Set(wal.SessionKey("b"), wal.AppendSession(nil, &wal.Session{Protocol: 4, ExpirySeconds: NeverExpire}, 0))
	})
	fs, l = reopen(t, fs, l)

	st := load(t, l)
	a := st.Sessions["a"]
	if a == nil || !a.Persistent || a.Protocol != 5 || a.Expiry != 60 || a.Will == nil || a.Will.DelaySeconds != 5 {
		t.Fatalf("session a: got %+v", a)
	}
	if got := a.Subs["t/#"]; got.QoS != 2 || got.SubID != 9 {
		t.Fatalf("subscription: got %+v, want qos 2 subid 9", got)
	}
	if f := a.Inflight[7]; f == nil || f.State != Sent || f.Seq != 10 || f.Msg == nil || string(f.Msg.Payload) != "body" {
		t.Fatalf("in-flight id 7: got %+v", f)
	}
	if f := a.Inflight[8]; f == nil || f.State != Released || f.Msg != nil {
		t.Fatalf("released id 8: got %+v", f)
	}
	if !a.Backlog || a.cursor != 12 {
		t.Fatalf("backlog %v cursor %d, want true 12", a.Backlog, a.cursor)
	}
	if _, ok := a.InQoS2[42]; !ok || len(a.InQoS2) != 1 {
		t.Fatalf("inbound ids: got %v, want {42}", a.InQoS2)
	}
	if b := st.Sessions["b"]; b == nil || !b.DisconnectedAt.IsZero() {
		t.Fatalf("session b (connected when the broker stopped): got %+v", b)
	}
	if st.seq != 100 {
		t.Fatalf("seq %d, want 100", st.seq)
	}

	// The shared body's references: seq 10 (sent) and 13 (queued).
	snap, err := l.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var refs []uint64
	if err := SharedRefs(snap, "a", 1, func(ids []uint64) { refs = append(refs, ids...) }); err != nil {
		t.Fatal(err)
	}
	if len(refs) != 2 || refs[0] != 100 || refs[1] != 100 {
		t.Fatalf("shared refs: got %v, want [100 100]", refs)
	}

	// End removes every key of the session at once; the snapshot keeps its
	// view, and releasing the references it shows deletes the body.
	commit(t, l, func(txn *wal.Txn) { st.End(txn, a) })
	if n, _ := countKeys(t, snap, wal.SessionPrefix("a")); n != 7 {
		t.Fatalf("snapshot: %d keys of a, want 7", n)
	}
	snap.Close()
	commit(t, l, func(txn *wal.Txn) { st.Unref(txn, refs[0]) })
	if _, err := l.Get(wal.MessageKey(100)); err != nil {
		t.Fatalf("body deleted after one of two releases: %v", err)
	}
	commit(t, l, func(txn *wal.Txn) { st.Unref(txn, refs[1]) })
	if _, err := l.Get(wal.MessageKey(100)); err == nil {
		t.Fatal("body still there after its last release")
	}
	_, l = reopen(t, fs, l)
	st = load(t, l)
	if st.Sessions["a"] != nil {
		t.Fatal("erased session came back")
	}
	if st.Sessions["b"] == nil {
		t.Fatal("session b lost")
	}
}

func countKeys(t *testing.T, r wal.Reader, prefix []byte) (int, error) {
	t.Helper()
	n := 0
	err := r.Scan(prefix, wal.PrefixEnd(prefix), func(k, v []byte) error { n++; return nil })
	return n, err
}

func TestNextPacketIDSkipsInUse(t *testing.T) {
	s := New[*owner]("c")
	s.setInflight(&Flight{PacketID: 1})
	s.setInflight(&Flight{PacketID: 2})
	if got := s.nextPacketID(); got != 3 {
		t.Fatalf("got %d, want 3", got)
	}
	s.nextPID = 65535
	if got := s.nextPacketID(); got != 3 {
		t.Fatalf("after wrap: got %d, want 3 (0 is never used, 1 and 2 are in flight)", got)
	}
}

// A completion's delete rides the next sync; if a crash loses it after the
// packet id was reused, two bindings of one id come back. The older flow
// is done: Load keeps the newer and marks the older (and a body nothing
// references any more) as garbage.
func TestLoadDropsStaleBindings(t *testing.T) {
	fs := vfs.NewCrashableMem()
	l, err := wal.Open(wal.Options{Dir: "d", FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	msg := &wal.Message{Topic: "t", Payload: []byte("m"), QoS: 1}
	commit(t, l, func(txn *wal.Txn) {
		txn.Set(wal.SessionKey("a"), wal.AppendSession(nil, &wal.Session{Protocol: 4, ExpirySeconds: NeverExpire, DisconnectedAt: 1}, 0))
		txn.Set(wal.MessageKey(5), wal.AppendMessage(nil, msg, 0))
		txn.Set(wal.QueueKey("a", 10), wal.AppendEntry(nil, &wal.Entry{State: wal.EntrySent, PacketID: 1, QoS: 1, Shared: 5}, 0))
		txn.Set(wal.QueueKey("a", 20), wal.AppendEntry(nil, &wal.Entry{State: wal.EntrySent, PacketID: 1, QoS: 1, Inline: msg}, 0))
		txn.Set(wal.MessageKey(6), wal.AppendMessage(nil, msg, 0)) // referenced by nothing
	})
	_, l = reopen(t, fs, l)
	st := load(t, l)
	if f := st.Sessions["a"].Inflight[1]; f == nil || f.Seq != 20 {
		t.Fatalf("binding of id 1: got %+v, want the newer one (seq 20)", f)
	}
	want := map[string]bool{string(wal.QueueKey("a", 10)): true, string(wal.MessageKey(5)): true, string(wal.MessageKey(6)): true}
	if len(st.garbage) != len(want) {
		t.Fatalf("garbage: got %d keys, want %d", len(st.garbage), len(want))
	}
	for _, k := range st.garbage {
		if !want[string(k)] {
			t.Fatalf("unexpected garbage key %q", k)
		}
	}
}

// Every event method writes the records that Load reads back: a flow run
// through the Store, then a power cut, gives the same session.
func TestFlowsSurviveAPowerCut(t *testing.T) {
	fs := vfs.NewCrashableMem()
	l, err := wal.Open(wal.Options{Dir: "d", FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	st := load(t, l)
	s := New[*owner]("c")
	s.Persistent, s.Protocol, s.Expiry = true, 5, NeverExpire
	st.Sessions["c"] = s
	m := func(p string) *wal.Message { return &wal.Message{Topic: "t", Payload: []byte(p), QoS: 2} }
	var sent, done, rel *Flight
	commit(t, l, func(txn *wal.Txn) {
		st.Save(txn, s)
		st.Subscribe(txn, s, "t/#", Subscription{QoS: 2, SubID: 3})
		st.Subscribe(txn, s, "gone", Subscription{QoS: 1})
		if !st.Received(txn, s, 9) || st.Received(txn, s, 9) {
			t.Fatal("Received: want new, then a resend")
		}
		st.Received(txn, s, 10)
		id := st.StoreShared(txn, m("shared"), 2)
		sent = st.Bind(txn, s, Delivery{Msg: m("shared"), QoS: 2, Shared: id})
		done = st.Bind(txn, s, Delivery{Msg: m("done"), QoS: 1})
		rel = st.Bind(txn, s, Delivery{Msg: m("rel"), QoS: 2})
		st.Enqueue(txn, s, Delivery{Msg: m("q1"), QoS: 1, Shared: id})
		st.Enqueue(txn, s, Delivery{Msg: m("q2"), QoS: 2})
	})
	commit(t, l, func(txn *wal.Txn) {
		st.Unsubscribe(txn, s, "gone")
		if !st.ReleaseInbound(txn, s, 10) || st.ReleaseInbound(txn, s, 10) {
			t.Fatal("ReleaseInbound: want held, then not")
		}
		st.Complete(txn, s, done)
		st.MarkReleased(txn, s, rel)
	})
	_, l = reopen(t, fs, l)
	st = load(t, l)
	c := st.Sessions["c"]
	if c == nil || c.Protocol != 5 || c.Expiry != NeverExpire {
		t.Fatalf("session: got %+v", c)
	}
	if len(c.Subs) != 1 || c.Subs["t/#"].SubID != 3 {
		t.Fatalf("subscriptions: got %v, want only t/# with id 3", c.Subs)
	}
	if _, ok := c.InQoS2[9]; !ok || len(c.InQoS2) != 1 {
		t.Fatalf("inbound ids: got %v, want {9}", c.InQoS2)
	}
	if len(c.Inflight) != 2 {
		t.Fatalf("in flight: got %d, want 2", len(c.Inflight))
	}
	if f := c.Inflight[sent.PacketID]; f == nil || f.State != Sent || string(f.Msg.Payload) != "shared" {
		t.Fatalf("sent flight: got %+v", f)
	}
	if f := c.Inflight[rel.PacketID]; f == nil || f.State != Released || f.Msg != nil {
		t.Fatalf("released flight: got %+v", f)
	}
	// The queue comes back in order, bound as it is handed out.
	var got []string
	txn := &wal.Txn{}
	retry, err := st.Refill(txn, c, 10, false, keepAll, func(f *Flight) { got = append(got, string(f.Msg.Payload)) })
	if err != nil || retry {
		t.Fatalf("Refill: retry %v, err %v", retry, err)
	}
	// q1 shares the body stored once.
	if len(got) != 2 || got[0] != "shared" || got[1] != "q2" || c.Backlog {
		t.Fatalf("refill: got %v (backlog %v), want [shared q2] and the backlog ended", got, c.Backlog)
	}
}

// Queued counts a shared body for every session that queues it, the same
// at run time and after Load; EvictOldest takes the oldest queued entry
// (never one in flight), releases its body's reference, and sees only what
// was submitted.
func TestQueuedAndEvictOldest(t *testing.T) {
	fs := vfs.NewCrashableMem()
	l, err := wal.Open(wal.Options{Dir: "d", FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	st := load(t, l)
	sess := func(id string) *Session[*owner] {
		s := New[*owner](id)
		s.Persistent, s.Protocol, s.Expiry = true, 5, NeverExpire
		st.Sessions[id] = s
		return s
	}
	a, o := sess("a"), sess("o")
	payload := make([]byte, 600)
	rand.NewChaCha8([32]byte{1}).Read(payload) // not compressible
	big := &wal.Message{Topic: "t", Payload: payload, QoS: 1}
	small := &wal.Message{Topic: "t", Payload: []byte("small"), QoS: 1}
	var inflight *Flight
	commit(t, l, func(txn *wal.Txn) {
		st.Save(txn, a)
		st.Save(txn, o)
		inflight = st.Bind(txn, a, Delivery{Msg: small, QoS: 1}) // oldest, but in flight
		id := st.StoreShared(txn, big, 2)
		st.Enqueue(txn, a, Delivery{Msg: big, QoS: 1, Shared: id})
		st.Enqueue(txn, o, Delivery{Msg: big, QoS: 1, Shared: id})
		st.Enqueue(txn, a, Delivery{Msg: small, QoS: 1})
	})
	n, bytes := a.Queued()
	if n != 3 || bytes < 600 { // the body counted for a
		t.Fatalf("a queued: %d entries, %d bytes; want 3 and the shared body counted", n, bytes)
	}
	same := func(what string) {
		t.Helper()
		fs, l = reopen(t, fs, l)
		re := load(t, l)
		for id, s := range st.Sessions {
			wn, wb := s.Queued()
			if gn, gb := re.Sessions[id].Queued(); gn != wn || gb != wb {
				t.Fatalf("%s: %s after Load: %d entries, %d bytes; at run time %d and %d", what, id, gn, gb, wn, wb)
			}
		}
		if re.Garbage() != 0 {
			t.Fatalf("%s: Load found %d dead keys, want none", what, re.Garbage())
		}
		st = re
		a, o = st.Sessions["a"], st.Sessions["o"]
	}
	same("queued")

	// Evicting a's oldest queued entry takes the shared one, not the
	// flight; the body stays for o.
	commit(t, l, func(txn *wal.Txn) {
		if ok, err := st.EvictOldest(txn, a); !ok || err != nil {
			t.Fatalf("EvictOldest a: %v, %v", ok, err)
		}
	})
	if n, bytes := a.Queued(); n != 2 || bytes > 200 {
		t.Fatalf("a after the eviction: %d entries, %d bytes; want 2, without the body", n, bytes)
	}
	if a.Inflight[inflight.PacketID] == nil {
		t.Fatalf("the flight was evicted")
	}
	same("a evicted")
	commit(t, l, func(txn *wal.Txn) {
		if ok, err := st.EvictOldest(txn, o); !ok || err != nil {
			t.Fatalf("EvictOldest o: %v, %v", ok, err)
		}
		if ok, _ := st.EvictOldest(txn, o); ok {
			t.Fatalf("EvictOldest on an empty queue: evicted")
		}
	})
	if s := st.Stats(); s.Queued != 2 {
		t.Fatalf("after both evictions: %d entries, want 2", s.Queued)
	}
	same("o evicted") // and the body went with its last reference (no garbage)
	if s := st.Stats(); s.QueuedBytes != a.queuedBytes {
		t.Fatalf("stored bytes: %d, want only a's inline entries (%d)", s.QueuedBytes, a.queuedBytes)
	}

	// An entry a Txn not yet submitted holds is not visible to a read.
	txn := &wal.Txn{}
	st.Enqueue(txn, o, Delivery{Msg: small, QoS: 1})
	if hidden, err := st.OldestHidden(o); !hidden || err != nil {
		t.Fatalf("OldestHidden: %v, %v; want true", hidden, err)
	}
	if ok, _ := st.EvictOldest(txn, o); ok {
		t.Fatalf("EvictOldest found an entry not yet submitted")
	}
	if hidden, _ := st.OldestHidden(a); hidden {
		t.Fatalf("OldestHidden a: true, want false (its queued entry is stored)")
	}
}
