package quorum

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"

	"github.com/keelmq/keel/wal"
)

// Store is the wal.Store of one leadership term of a Node (Node.Leader
// returns it). Submit proposes the Txn to the Raft group; Done(nil) means
// its entry is committed (in a quorum's synced logs) and applied here, in
// the term the Store serves. When that term ends every Txn whose fate is
// unknown fails, and the Store is failed for good: the broker rebuilds
// from Node.Applied and asks Node.Leader for the next term's Store.
// Package doc, "Store", says how it keeps the wal.Store contract.
type Store struct {
	n    *Node
	term uint64
	ov   overlay

	mu struct {
		sync.Mutex
		queue    []queued // submitted, not yet proposed
		err      error    // sticky
		inflight int      // submitted, Done not yet run
		closed   bool     // Close has run: Submit fails at once
		notFull  sync.Cond
	}
	stats struct{ commits, failures atomic.Uint64 }
}

type queued struct {
	t    *wal.Txn
	last uint64 // overlay seq of its last op
}

func newStore(n *Node, term uint64) *Store {
	s := &Store{n: n, term: term}
	s.mu.notFull.L = &s.mu.Mutex
	return s
}

// Term is the term the Store serves.
func (s *Store) Term() uint64 { return s.term }

// Submit queues t for the next proposal and returns; it blocks only while
// maxInflight Txns are in flight. t's writes are visible to reads at once
// (the overlay). t.Done runs on the node's goroutine, in Submit order.
// NoSync is ignored: every Txn is replicated and synced.
func (s *Store) Submit(t *wal.Txn) {
	s.mu.Lock()
	for s.mu.inflight >= maxInflight && s.mu.err == nil {
		s.mu.notFull.Wait()
	}
	if s.mu.closed {
		// Every earlier Done has run (Close waited for them).
		s.mu.Unlock()
		s.stats.failures.Add(1)
		if t.Done != nil {
			t.Done(wal.ErrClosed)
		}
		return
	}
	select {
	case <-s.n.stopped:
		// The node is closed: after every earlier Done (wal.Log's rule 6).
		s.mu.Unlock()
		<-s.n.drained
		s.stats.failures.Add(1)
		if t.Done != nil {
			t.Done(wal.ErrClosed)
		}
		return
	default:
	}
	s.mu.inflight++
	var last uint64
	if s.mu.err == nil {
		last = s.ov.add(t)
	}
	s.mu.queue = append(s.mu.queue, queued{t: t, last: last})
	s.mu.Unlock()
	s.n.kickLoop()
}

// take hands the queue to the node's goroutine.
func (s *Store) take() ([]queued, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.mu.queue
	s.mu.queue = nil
	return q, s.mu.err
}

// fail makes err the Store's sticky error, unless it has one, and drops
// the overlay: reads serve only what is applied from then on.
func (s *Store) fail(err error) {
	s.mu.Lock()
	if s.mu.err == nil {
		s.mu.err = err
		s.ov.clear()
		s.n.logger.Warn("store failed", "term", s.term, "err", err)
	}
	s.mu.notFull.Broadcast()
	s.mu.Unlock()
}

// complete runs t's Done. REQUIRES: the node's goroutine, in Submit order.
func (s *Store) complete(t *wal.Txn, err error) {
	s.mu.Lock()
	s.mu.inflight--
	s.mu.notFull.Broadcast()
	s.mu.Unlock()
	if err == nil {
		s.stats.commits.Add(1)
	} else {
		s.stats.failures.Add(1)
	}
	if t.Done != nil {
		t.Done(err)
	}
}

// Err is nil, or the sticky failure: the term ended, a proposal was
// dropped, the node failed or closed, or the Store was closed.
func (s *Store) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.err
}

// Close waits until every Txn submitted has its Done, then fails the
// Store (wal.ErrClosed): a later Submit calls Done(wal.ErrClosed) at once,
// in the submitter. The node goes on; if it still leads, it serves a new
// Store in the same term once a barrier entry is applied (package doc,
// "Store"). Every Snapshot must be closed first.
func (s *Store) Close() error {
	s.mu.Lock()
	for s.mu.inflight > 0 {
		s.mu.notFull.Wait()
	}
	s.mu.closed = true
	s.mu.Unlock()
	s.fail(wal.ErrClosed)
	s.n.kickLoop()
	s.n.mu.Lock()
	for i, x := range s.n.mu.stores {
		if x == s {
			s.n.mu.stores = append(s.n.mu.stores[:i], s.n.mu.stores[i+1:]...)
			break
		}
	}
	s.n.mu.Unlock()
	return nil
}

// CompressThreshold implements wal.Store.
func (s *Store) CompressThreshold() int { return s.n.log.CompressThreshold() }

// Stats implements wal.Store: the node's Pebble counters (its syncs are
// the Raft log's and the applies'), with this Store's Txn outcomes.
func (s *Store) Stats() wal.Stats {
	st := s.n.log.Stats()
	st.Commits = s.stats.commits.Load()
	st.Failures = s.stats.failures.Load()
	return st
}

// Get implements wal.Reader: the applied state with every submitted Txn
// over it.
func (s *Store) Get(key []byte) ([]byte, error) {
	s.ov.mu.Lock()
	p, decided := s.ov.lookupLocked(key)
	s.ov.mu.Unlock()
	if decided {
		if p.del {
			return nil, wal.ErrNotFound
		}
		return bytes.Clone(p.value), nil
	}
	// A key the overlay does not hold is applied (or never written):
	// reading Pebble after the overlay sees it.
	return s.n.log.Get(key)
}

// Scan implements wal.Reader, over one consistent view.
func (s *Store) Scan(lower, upper []byte, fn func(k, v []byte) error) error {
	snap, err := s.Snapshot()
	if err != nil {
		return err
	}
	defer snap.Close()
	return snap.Scan(lower, upper, fn)
}

// Snapshot implements wal.Store: Pebble's snapshot and the overlay, taken
// together so that no Txn falls between them.
func (s *Store) Snapshot() (wal.Snapshot, error) {
	s.ov.mu.Lock()
	defer s.ov.mu.Unlock()
	ps, err := s.n.log.Snapshot()
	if err != nil {
		return nil, err
	}
	return &snapshot{s: ps, v: s.ov.viewLocked()}, nil
}

type snapshot struct {
	s wal.Snapshot
	v *ovView
}

func (s *snapshot) Get(key []byte) ([]byte, error) { return s.v.get(s.s, key) }

func (s *snapshot) Scan(lower, upper []byte, fn func(k, v []byte) error) error {
	return s.v.scan(s.s, lower, upper, fn)
}

func (s *snapshot) Close() error { return s.s.Close() }

var _ wal.Store = (*Store)(nil)

// Commit is wal.Commit(ctx, s, t).
func (s *Store) Commit(ctx context.Context, t *wal.Txn) error { return wal.Commit(ctx, s, t) }
