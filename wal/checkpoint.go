package wal

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// StoreMetrics is Pebble's view of a store, for operators (keel inspect,
// the admin listener).
type StoreMetrics struct {
	DiskSize      uint64 // bytes on disk: WAL, tables, obsolete files not yet deleted
	WALFiles      int64
	WALSize       uint64 // live bytes in the WAL
	MemTableSize  uint64
	MemTableCount int64
	ReadAmp       int // sublevels of L0 plus non-empty levels below
	Levels        []LevelMetrics
	// Summary is Pebble's own multi-line table of the same (Metrics.String).
	Summary string
}

// LevelMetrics is one level of the LSM.
type LevelMetrics struct {
	Level     int
	Sublevels int32
	Tables    int64
	Bytes     int64
	Score     float64 // compaction score; 0 when the level needs none
}

func storeMetrics(db *pebble.DB) StoreMetrics {
	m := db.Metrics()
	sm := StoreMetrics{
		DiskSize:      m.DiskSpaceUsage(),
		WALFiles:      m.WAL.Files,
		WALSize:       m.WAL.Size,
		MemTableSize:  m.MemTable.Size,
		MemTableCount: m.MemTable.Count,
		ReadAmp:       m.ReadAmp(),
		Summary:       m.String(),
	}
	for i, l := range m.Levels {
		sm.Levels = append(sm.Levels, LevelMetrics{Level: i, Sublevels: l.Sublevels, Tables: l.TablesCount, Bytes: l.TablesSize, Score: l.Score})
	}
	return sm
}

// Metrics summarizes Pebble's view of the store. It takes Pebble's mutex:
// call it at human intervals, not per message.
func (l *Log) Metrics() (StoreMetrics, error) {
	l.dbMu.RLock()
	defer l.dbMu.RUnlock()
	if l.dbMu.closed {
		return StoreMetrics{}, ErrClosed
	}
	l.stats.metricsReads.Add(1)
	return storeMetrics(l.db), nil
}

// Checkpoint writes a consistent copy of the store into dest, which must
// not exist, while the store keeps serving (Pebble's DB.Checkpoint:
// sstables hard-linked where the filesystem allows, the WAL, MANIFEST and
// OPTIONS copied, every file and dest synced).
//
// What it holds: every Txn whose Done(nil) ran before Checkpoint was
// called, since Done(nil) follows the sync of the WAL record holding it
// and the WAL files are copied after Checkpoint begins. Txns applied
// meanwhile may be in it or not, each wholly or not at all, as after a
// crash (a partly copied last WAL record is a torn tail, which Open
// skips). So the copy is what a power cut at that moment would have left,
// and Keel's replay is built for exactly that.
//
// A failed store (Err non-nil) is not checkpointed: memory and disk may
// disagree about the last Txn, and the operator wants the restart's state,
// not this one's.
func (l *Log) Checkpoint(dest string) error {
	l.dbMu.RLock()
	defer l.dbMu.RUnlock()
	if l.dbMu.closed {
		return ErrClosed
	}
	if err := l.Err(); err != nil {
		return fmt.Errorf("wal: checkpoint: the store has failed: %w", err)
	}
	if err := l.db.Checkpoint(dest); err != nil {
		return fmt.Errorf("wal: checkpoint %s to %s: %w", l.dir, dest, err)
	}
	return nil
}
