package wal

import (
	"context"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// The commit pipeline: Submit applies, the committer (Log.run) waits for
// the syncs and calls the Dones. Its ordering rules are numbered in the
// package doc (doc.go, "Commit pipeline"); the code cites them by number.

// Stats are plain counters, safe for concurrent reads.
type Stats struct {
	Commits  uint64 // Txns acknowledged with Done(nil)
	Syncs    uint64 // fdatasyncs of Pebble's WAL files: SyncLatency.Count()
	Records  uint64 // Set and Delete ops applied
	Bytes    uint64 // bytes of applied Pebble batches
	Failures uint64 // Txns completed with an error
	DiskSize uint64 // Pebble's disk space usage, bytes
	// MetricsReads counts the times Pebble's metrics were read (by Stats,
	// for DiskSize, and by Metrics), this call included: what watching
	// the store costs it, one per /metrics scrape.
	MetricsReads uint64

	// SyncLatency is the latency of those fdatasyncs, over SyncBuckets.
	SyncLatency Histogram
}

// Stats returns the counters. DiskSize asks Pebble for its metrics, which
// takes Pebble's mutex: call it at scrape intervals, not per message.
func (l *Log) Stats() Stats {
	s := Stats{
		Commits:     l.stats.commits.Load(),
		Records:     l.stats.records.Load(),
		Bytes:       l.stats.bytes.Load(),
		Failures:    l.stats.failures.Load(),
		SyncLatency: l.syncs.histogram(),
	}
	s.Syncs = s.SyncLatency.Count()
	l.dbMu.RLock()
	if !l.dbMu.closed {
		l.stats.metricsReads.Add(1)
		s.DiskSize = l.db.Metrics().DiskSpaceUsage()
	}
	l.dbMu.RUnlock()
	s.MetricsReads = l.stats.metricsReads.Load()
	return s
}

// Submit applies t to the store and hands it to the committer, without
// waiting for a sync. t.Done is called once t is durable or has failed (see
// Txn.Done). Submit blocks only while the committer's queue is full or
// Pebble stalls writes. After Close has begun, Submit waits for the
// committer to finish and then calls t.Done(ErrClosed), so Done order still
// follows Submit order (rule 6). t belongs to the log until its Done runs.
func (l *Log) Submit(t *Txn) {
	l.mu.Lock()
	for len(l.mu.queue) >= maxQueue && !l.mu.closing {
		l.mu.notFull.Wait()
	}
	if l.mu.closing {
		l.mu.Unlock()
		<-l.stopped
		if t.Done != nil {
			t.Done(ErrClosed)
		}
		return
	}
	l.apply(t)
	l.mu.queue = append(l.mu.queue, t)
	if len(l.mu.queue) == 1 {
		// The committer waits only on an empty queue.
		l.mu.ready.Signal()
	}
	l.mu.Unlock()
}

// Commit is Commit(ctx, l, t).
func (l *Log) Commit(ctx context.Context, t *Txn) error { return Commit(ctx, l, t) }

// apply writes t's ops to Pebble as one batch (l.mu held: Submit order,
// rule 1).
// A synced batch is left on t for the committer to wait on.
func (l *Log) apply(t *Txn) {
	if len(t.ops) == 0 {
		return
	}
	if err := l.Err(); err != nil {
		t.err = err
		return
	}
	var b *pebble.Batch
	select {
	case b = <-l.free:
	default:
		b = l.db.NewBatch()
	}
	for j := range t.ops {
		o := &t.ops[j]
		switch o.kind { // errors only on a closed batch
		case opSet:
			_ = b.Set(o.key, o.value, nil)
		case opDelete:
			_ = b.Delete(o.key, nil)
		case opDeleteRange:
			_ = b.DeleteRange(o.key, o.value, nil)
		}
	}
	size := len(b.Repr())
	if err := l.applyBatch(b, !t.NoSync); err != nil {
		// A failed batch may still be referenced by Pebble: never reused.
		l.setErr(fmt.Errorf("wal: commit: %w", err))
		l.logger.Error("commit failed", "records", len(t.ops), "err", err)
		t.err = l.Err()
		return
	}
	l.stats.records.Add(uint64(len(t.ops)))
	l.stats.bytes.Add(uint64(size))
	if t.NoSync {
		l.recycle(b)
	} else {
		t.batch = b
	}
}

// recycle keeps b for a later apply, unless it grew large or enough are
// kept. A channel, not l.mu: the committer must not wait behind an apply.
func (l *Log) recycle(b *pebble.Batch) {
	if cap(b.Repr()) <= 1<<20 {
		b.Reset()
		select {
		case l.free <- b:
			return
		default:
		}
	}
	_ = b.Close()
}

// run is the committer goroutine: it waits for each Txn's sync, in Submit
// order, and calls its Done (rules 2 and 3; after a failure, doc.go
// "Failures").
func (l *Log) run() {
	defer close(l.stopped)
	var group []*Txn
	var failed error // the first failure, in Submit order
	for {
		l.mu.Lock()
		for len(l.mu.queue) == 0 && !l.mu.closing {
			l.mu.ready.Wait()
		}
		if len(l.mu.queue) == 0 {
			// Closing and drained.
			l.mu.Unlock()
			break
		}
		group, l.mu.queue = l.mu.queue, group[:0]
		l.mu.notFull.Broadcast()
		l.mu.Unlock()

		for _, t := range group {
			err := t.err
			if b := t.batch; b != nil {
				t.batch = nil
				if serr := b.SyncWait(); serr != nil {
					l.setErr(fmt.Errorf("wal: commit: %w", serr))
					l.logger.Error("sync failed", "records", len(t.ops), "err", serr)
					err = l.Err()
				} else {
					l.recycle(b)
				}
			}
			if failed == nil && err != nil {
				failed = err
			}
			t.err = nil
			if failed != nil {
				l.stats.failures.Add(1)
				err = failed
			} else {
				l.stats.commits.Add(1)
			}
			if t.Done != nil {
				t.Done(err)
			}
		}
		clear(group) // drop references to Txns the callers may reuse
	}
	for {
		select {
		case b := <-l.free:
			_ = b.Close()
		default:
			return
		}
	}
}

// applyBatch writes b to Pebble. With sync it applies b with pebble.Sync
// without waiting for the sync: the committer waits for it
// (Batch.SyncWait, rule 2). Without, b is written to the WAL with no sync of its
// own (Txn.NoSync).
//
// DB.Apply cannot be used for synced writes: on a commit error it calls
// Logger.Fatalf and, since ours does not exit, then returns nil.
// ApplyNoSyncWait hands the sync error to SyncWait instead. Errors before
// the WAL write still go through Fatalf (our sticky error), in both modes;
// for a synced batch Pebble then never queued it for a sync and SyncWait
// would wait forever, so the error is returned and the batch abandoned.
func (l *Log) applyBatch(b *pebble.Batch, sync bool) (err error) {
	defer func() {
		if r := recover(); r != nil {
			// Pebble panics when its WAL writer has failed (commitWrite);
			// its commit mutex stays held.
			l.wedged.Store(true)
			err = fmt.Errorf("pebble panicked in commit: %v", r)
		}
	}()
	if sync {
		err = l.db.ApplyNoSyncWait(b, pebble.Sync)
	} else {
		err = l.db.Apply(b, pebble.NoSync)
	}
	if err != nil {
		return err
	}
	return l.Err()
}
