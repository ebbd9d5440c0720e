package wal

import (
	"fmt"
)

// Reclaim flushes the memtable, so that the deletions it holds reach the
// sstables and Pebble's own compactions, which go first to the tables
// whose tombstones shadow the most bytes, give the space of deleted keys
// back; the flushed memtable's WAL file is then deleted (or kept for
// reuse). Without it, on a store that takes few new writes (keel refusing
// below min_free_disk), the deletions of what subscribers drained would
// wait in the memtable, and their space with them, until enough new
// writes filled it.
//
// It does not compact by itself: a manual compaction rewrites live data
// too, and on a nearly full disk that needs the very space it is meant to
// free. It is I/O: the caller runs it on a goroutine of its own, never on
// the broker's core. Close waits for it.
func (l *Log) Reclaim() error {
	l.dbMu.RLock()
	defer l.dbMu.RUnlock()
	if l.dbMu.closed {
		return ErrClosed
	}
	if err := l.Err(); err != nil {
		return fmt.Errorf("wal: reclaim: the store has failed: %w", err)
	}
	if err := l.db.Flush(); err != nil {
		return fmt.Errorf("wal: reclaim %s: flush: %w", l.dir, err)
	}
	return nil
}
