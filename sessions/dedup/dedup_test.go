package dedup

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/keelmq/keel/wal"
)

func open(t *testing.T, fs vfs.FS) *wal.Log {
	t.Helper()
	l, err := wal.Open(wal.Options{Dir: "data", FS: fs, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func commit(t *testing.T, l *wal.Log, txn *wal.Txn) {
	t.Helper()
	if err := l.Commit(context.Background(), txn); err != nil {
		t.Fatal(err)
	}
	txn.Reset()
}

// The window on Pebble: ids are seen per scope, expire after the ttl,
// the cap evicts the oldest, and a reload keeps exactly the ids still in
// the window and deletes the rest.
func TestWindow(t *testing.T) {
	fs := vfs.NewMem()
	l := open(t, fs)
	t0 := time.Unix(1_800_000_000, 0)
	w := New(time.Minute, 3)
	var txn wal.Txn
	seen := func(scope, id string, at time.Duration) bool { return w.Seen(&txn, scope, id, t0.Add(at)) }
	for _, tc := range []struct {
		scope, id string
		at        time.Duration
		want      bool
	}{
		{"c:a", "1", 0, false},
		{"c:a", "1", time.Second, true},
		{"c:b", "1", time.Second, false}, // another scope
		{"c:a", "2", 2 * time.Second, false},
		{"c:a", "3", 3 * time.Second, false},
		{"c:a", "4", 4 * time.Second, false}, // the cap (3): "1" goes
		{"c:a", "1", 5 * time.Second, false},
		{"c:a", "3", 6 * time.Second, true},
	} {
		if got := seen(tc.scope, tc.id, tc.at); got != tc.want {
			t.Fatalf("Seen(%s, %s) at +%v = %v, want %v", tc.scope, tc.id, tc.at, got, tc.want)
		}
	}
	if w.Hits != 2 || w.Evicted != 2 || w.Len() != 4 { // a: 3,4,1 (2 went for 1); b: 1
		t.Fatalf("hits %d evicted %d len %d, want 2, 2, 4", w.Hits, w.Evicted, w.Len())
	}
	commit(t, l, &txn)

	// Reloaded at +64.5s: c:a's "3" (until +63s) and "4" (+64s) expired, "1" (+65s)
	// holds; c:b's "1" (+61s) expired.
	w2, err := Load(l, &txn, time.Minute, 3, t0.Add(64500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if w2.Len() != 1 || !w2.Seen(&txn, "c:a", "1", t0.Add(64500*time.Millisecond)) || w2.Seen(&txn, "c:b", "1", t0.Add(64500*time.Millisecond)) {
		t.Fatalf("reloaded window: len %d; want only c:a's 1", w2.Len())
	}
	commit(t, l, &txn)
	n := 0
	l.Scan(wal.DedupPrefix(), wal.PrefixEnd(wal.DedupPrefix()), func(k, v []byte) error { n++; return nil })
	if n != 2 { // c:a 1, and c:b 1 again (just seen)
		t.Fatalf("%d dedup records on disk after the reload, want 2", n)
	}
	l.Close()
}

// A quiet publisher's ids expire too, as other scopes publish.
func TestWindowSweepsQuietScopes(t *testing.T) {
	w := New(time.Minute, 0)
	var txn wal.Txn
	t0 := time.Unix(1_800_000_000, 0)
	w.Seen(&txn, "c:quiet", "x", t0)
	for i := 0; i < 4; i++ {
		w.Seen(&txn, "c:busy", string(rune('a'+i)), t0.Add(2*time.Minute))
	}
	if _, ok := w.scopes["c:quiet"]; ok || w.Len() != 4 {
		t.Fatalf("the quiet scope is still held (len %d)", w.Len())
	}
}
