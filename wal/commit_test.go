package wal

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestGroupCommitOrder runs 64 submitters × 100 Txns against a real store.
// The committer is held (commitEnv.hold) before each group until the queue
// is full or every Txn is submitted, so groups must form: Syncs < Commits is
// a property of group commit, not a timing. Done must run in Submit order.
func TestGroupCommitOrder(t *testing.T) {
	const submitters, perSubmitter = 64, 100
	var allSubmitted atomic.Bool
	var l *Log
	env := commitEnv{hold: func(int) {
		for !allSubmitted.Load() {
			l.mu.Lock()
			full := len(l.mu.queue) >= maxQueue
			l.mu.Unlock()
			if full {
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
	}}
	l, err := open(testOptions(vfs.NewMem()), env)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	// A Txn's number is taken under the same lock as its Submit, so numbers
	// are in Submit order.
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
	allSubmitted.Store(true)
	// One more Commit flushes the queue; its Done is after all others.
	if err := l.Commit(context.Background(), &Txn{}); err != nil {
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
	t.Logf("stats: %+v (%.1f txns/sync)", s, float64(s.Commits)/float64(s.Syncs))
	if s.Commits != submitters*perSubmitter+1 {
		t.Errorf("Commits = %d, want %d", s.Commits, submitters*perSubmitter+1)
	}
	if s.Records != submitters*perSubmitter*9/10 {
		t.Errorf("Records = %d, want %d", s.Records, submitters*perSubmitter*9/10)
	}
	if s.Syncs >= s.Commits/100 {
		t.Errorf("Syncs = %d for %d Txns: no group commit", s.Syncs, s.Commits)
	}
}

// TestEmptyGroupNoSync: a group of only empty Txns does not sync.
func TestEmptyGroupNoSync(t *testing.T) {
	l := openTest(t, testOptions(vfs.NewMem()))
	defer l.Close()
	for range 5 {
		if err := l.Commit(context.Background(), &Txn{}); err != nil {
			t.Fatal(err)
		}
	}
	if s := l.Stats(); s.Syncs != 0 || s.Commits != 5 {
		t.Errorf("Stats = %+v, want 0 syncs, 5 commits", s)
	}
}

// TestSplitLargeGroup: a group larger than maxBatchBytes is written as
// several batches, still in order.
func TestSplitLargeGroup(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	env := commitEnv{hold: func(int) { once.Do(func() { <-release }) }, maxBatchBytes: 3000}
	l, err := open(testOptions(vfs.NewMem()), env)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	big := make([]byte, 1000)
	var got []int
	for i := range 5 {
		txn := &Txn{}
		txn.Set(key(i), big)
		txn.Done = func(err error) {
			if err != nil {
				t.Error(err)
			}
			got = append(got, i)
		}
		l.Submit(txn)
	}
	close(release)
	if err := l.Commit(context.Background(), &Txn{}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 {
		t.Fatalf("Done calls %v", got)
	}
	for i, n := range got {
		if n != i {
			t.Fatalf("Done order %v", got)
		}
	}
	// The first Txn ran alone (the hold saw it); the other four split 2+2.
	if s := l.Stats(); s.Syncs != 3 {
		t.Errorf("Syncs = %d, want 3", s.Syncs)
	}
}
