package sessions

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/keelmq/keel/wal"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

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

	st, err := Load(l, discard())
	if err != nil {
		t.Fatal(err)
	}
	a := st.Sessions["a"]
	if a == nil || !a.Persistent || a.Protocol != 5 || a.Expiry != 60 || a.Will == nil || a.Will.DelaySeconds != 5 {
		t.Fatalf("session a: got %+v", a)
	}
	if got := a.Subs["t/#"]; got.QoS != 2 || got.SubID != 9 {
		t.Fatalf("subscription: got %+v, want qos 2 subid 9", got)
	}
	if f := a.Inflight[7]; f == nil || f.State != wal.EntrySent || f.Seq != 10 || f.Msg == nil || string(f.Msg.Payload) != "body" {
		t.Fatalf("in-flight id 7: got %+v", f)
	}
	if f := a.Inflight[8]; f == nil || f.State != wal.EntryReleased || f.Msg != nil {
		t.Fatalf("released id 8: got %+v", f)
	}
	if !a.Backlog || a.Cursor != 12 {
		t.Fatalf("backlog %v cursor %d, want true 12", a.Backlog, a.Cursor)
	}
	if _, ok := a.InQoS2[42]; !ok || len(a.InQoS2) != 1 {
		t.Fatalf("inbound ids: got %v, want {42}", a.InQoS2)
	}
	if len(st.WasConnected) != 1 || st.WasConnected[0].ClientID != "b" {
		t.Fatalf("was connected: got %d sessions, want only b", len(st.WasConnected))
	}
	if st.MaxSeq != 100 {
		t.Fatalf("MaxSeq %d, want 100", st.MaxSeq)
	}

	// Pull streams the queue from the cursor, in order, with bodies.
	got, err := st.Pull(a, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Seq != 12 || got[1].Seq != 13 || string(got[1].Msg.Payload) != "body" {
		t.Fatalf("pull: got %+v", got)
	}

	// The shared body has two references (seq 10 and 13): releasing one
	// keeps it, releasing both deletes it.
	commit(t, l, func(txn *wal.Txn) { st.Release(txn, 100) })
	if _, err := l.Get(wal.MessageKey(100)); err != nil {
		t.Fatalf("body deleted after one of two releases: %v", err)
	}
	commit(t, l, func(txn *wal.Txn) { st.Release(txn, 100) })
	if _, err := l.Get(wal.MessageKey(100)); err == nil {
		t.Fatal("body still there after its last release")
	}

	// Erase removes every key of the session.
	commit(t, l, func(txn *wal.Txn) {
		if err := st.Erase(txn, a); err != nil {
			t.Fatal(err)
		}
	})
	_, l = reopen(t, fs, l)
	st, err = Load(l, discard())
	if err != nil {
		t.Fatal(err)
	}
	if st.Sessions["a"] != nil {
		t.Fatal("erased session came back")
	}
	if st.Sessions["b"] == nil {
		t.Fatal("session b lost")
	}
}

func TestNextPacketIDSkipsInUse(t *testing.T) {
	s := New("c")
	s.Inflight[1] = &Flight{PacketID: 1}
	s.Inflight[2] = &Flight{PacketID: 2}
	if got := s.NextPacketID(); got != 3 {
		t.Fatalf("got %d, want 3", got)
	}
	s.nextPID = 65535
	if got := s.NextPacketID(); got != 3 {
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
	st, err := Load(l, discard())
	if err != nil {
		t.Fatal(err)
	}
	if f := st.Sessions["a"].Inflight[1]; f == nil || f.Seq != 20 {
		t.Fatalf("binding of id 1: got %+v, want the newer one (seq 20)", f)
	}
	want := map[string]bool{string(wal.QueueKey("a", 10)): true, string(wal.MessageKey(5)): true, string(wal.MessageKey(6)): true}
	if len(st.Garbage) != len(want) {
		t.Fatalf("garbage: got %d keys, want %d", len(st.Garbage), len(want))
	}
	for _, k := range st.Garbage {
		if !want[string(k)] {
			t.Fatalf("unexpected garbage key %q", k)
		}
	}
}
