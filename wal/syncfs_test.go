package wal

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/keelmq/keel/wal/waltest"
)

// Stats.Syncs counts the WAL's syncs as the filesystem sees them: a gate
// below the store counts every sync of a *.log file independently.
func TestSyncsCountedAtTheFilesystem(t *testing.T) {
	gate := waltest.NewGateFS(vfs.NewCrashableMem())
	l, err := Open(Options{Dir: "d", FS: gate, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	commit := func(noSync bool, i int) {
		t.Helper()
		txn := &Txn{NoSync: noSync}
		txn.Set(fmt.Appendf(nil, "k%d", i), []byte("v"))
		if err := l.Commit(ctx, txn); err != nil {
			t.Fatal(err)
		}
	}

	before := l.Stats()
	for i := range 5 {
		commit(true, i)
	}
	if got := l.Stats(); got.Syncs != before.Syncs {
		t.Fatalf("Syncs = %d after 5 NoSync Txns, want %d", got.Syncs, before.Syncs)
	}
	for i := range 3 {
		commit(false, i)
	}
	s := l.Stats()
	if s.Syncs < before.Syncs+3 {
		t.Fatalf("Syncs = %d after 3 synced Commits, want at least %d", s.Syncs, before.Syncs+3)
	}
	if want := uint64(gate.Syncs()); s.Syncs != want {
		t.Errorf("Syncs = %d, the filesystem saw %d WAL syncs", s.Syncs, want)
	}
	h := s.SyncLatency
	if h.Count() != s.Syncs || len(h.Counts) != len(h.Bounds)+1 || !slices.Equal(h.Bounds, SyncBuckets[:]) {
		t.Errorf("SyncLatency = %+v, want %d samples over SyncBuckets", h, s.Syncs)
	}
}

func TestSyncStatsBuckets(t *testing.T) {
	var s syncStats
	for _, d := range []time.Duration{0, 50 * time.Microsecond, 51 * time.Microsecond, time.Second, 2 * time.Second} {
		s.observe(d)
	}
	h := s.histogram()
	want := make([]uint64, len(SyncBuckets)+1)
	want[0] = 2                  // 0 and 50us: the first bound is inclusive
	want[1] = 1                  // 51us
	want[len(SyncBuckets)-1] = 1 // 1s
	want[len(SyncBuckets)] = 1   // 2s: above every bound
	if !slices.Equal(h.Counts, want) {
		t.Errorf("Counts = %v, want %v", h.Counts, want)
	}
	if wantSum := 3*time.Second + 101*time.Microsecond; h.Sum != wantSum {
		t.Errorf("Sum = %v, want %v", h.Sum, wantSum)
	}
}
