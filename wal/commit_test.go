package wal

import (
	"context"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/keelmq/keel/wal/waltest"
)

// TestGroupCommitOrder: 64 submitters × 10 Txns against a real store whose
// WAL sync is held at a gate. Done must run in Submit order, and the Txns
// submitted while one sync is held must share the next: a handful of
// fsyncs for 641 Txns is a property of group commit, not a timing.
func TestGroupCommitOrder(t *testing.T) {
	const submitters, perSubmitter = 64, 10
	gfs := waltest.NewGateFS(vfs.NewMem())
	l := openTest(t, testOptions(gfs))
	defer l.Close()
	ctx := context.Background()
	before := l.Stats()

	// A first Txn's sync is held at the gate...
	gfs.Hold()
	first := &Txn{}
	first.Set(key(1_000_000), []byte("v"))
	firstDone := make(chan error, 1)
	first.Done = func(err error) { firstDone <- err }
	l.Submit(first)
	gfs.AwaitBlocked(1)

	// ...while everyone else submits. A Txn's number is taken under the
	// same lock as its Submit, so numbers are in Submit order.
	var submitMu sync.Mutex
	next := 0
	var doneMu sync.Mutex
	var done []int
	var wg sync.WaitGroup
	for g := range submitters {
		wg.Go(func() {
			for i := range perSubmitter {
				txn := &Txn{}
				if i%10 != 9 { // every tenth Txn is empty and still waits its turn
					txn.Set(key(g*perSubmitter+i), []byte("v"))
				}
				submitMu.Lock()
				n := next
				next++
				txn.Done = func(err error) {
					if err != nil {
						t.Errorf("Done(%v)", err)
					}
					doneMu.Lock()
					done = append(done, n)
					doneMu.Unlock()
				}
				l.Submit(txn)
				submitMu.Unlock()
			}
		})
	}
	wg.Wait()
	select {
	case err := <-firstDone:
		t.Fatalf("first Txn done (%v) while its sync is held", err)
	default:
	}
	gfs.Release()
	// One more Commit; its Done is after all others.
	if err := l.Commit(ctx, &Txn{}); err != nil {
		t.Fatal(err)
	}
	if err := <-firstDone; err != nil {
		t.Fatal(err)
	}

	doneMu.Lock()
	defer doneMu.Unlock()
	if len(done) != submitters*perSubmitter {
		t.Fatalf("%d Done calls, want %d", len(done), submitters*perSubmitter)
	}
	for i, n := range done {
		if n != i {
			t.Fatalf("Done #%d was for Txn %d: not in Submit order", i, n)
		}
	}
	s := l.Stats()
	commits, syncs := s.Commits-before.Commits, s.Syncs-before.Syncs
	t.Logf("%d txns, %d fsyncs", commits, syncs)
	if commits != submitters*perSubmitter+2 {
		t.Errorf("Commits = %d, want %d", commits, submitters*perSubmitter+2)
	}
	if recs := s.Records - before.Records; recs != submitters*perSubmitter*9/10+1 {
		t.Errorf("Records = %d, want %d", recs, submitters*perSubmitter*9/10+1)
	}
	if syncs == 0 || syncs > 4 {
		t.Errorf("%d fsyncs for %d Txns submitted behind one held sync: want 2 to 4 (group commit)", syncs, commits)
	}
}

// TestEmptyTxnNoSync: empty Txns are acknowledged without a sync.
func TestEmptyTxnNoSync(t *testing.T) {
	l := openTest(t, testOptions(vfs.NewMem()))
	defer l.Close()
	before := l.Stats()
	for range 5 {
		if err := l.Commit(context.Background(), &Txn{}); err != nil {
			t.Fatal(err)
		}
	}
	if s := l.Stats(); s.Syncs != before.Syncs || s.Commits != before.Commits+5 {
		t.Errorf("Stats = %+v after 5 empty Txns, from %+v: want no sync, 5 commits", s, before)
	}
}
