package wal

import (
	"context"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// The commit pipeline. One goroutine, the committer (Log.run), owns every
// write to Pebble and every sync; callers only queue Txns.
//
// Ordering rules:
//
//  1. Txns are written in Submit order: the committer takes the whole queue
//     at once and appends the ops of its Txns, in order, to one Pebble batch
//     (a group), so a group, and with it every Txn in it, is all or nothing.
//  2. A group is committed with pebble.Sync and the committer waits for that
//     sync before calling any Done of the group. Done(nil) therefore never
//     precedes the fsync of the WAL record holding the Txn.
//  3. Done runs on the committer goroutine, in Submit order, across groups:
//     group N+1 is written only after every Done of group N has returned.
//  4. Txns submitted while a group syncs wait in the queue and form the next
//     group; that is the group commit. An empty Txn rides along and is
//     acknowledged in order with its group; a group of only empty Txns is not
//     synced at all (there is nothing to make durable, and everything before
//     it was synced by an earlier group).
//  5. After the first failed group the store is sticky-failed (Err): every
//     later Txn gets Done(Err()) in order, without touching Pebble.
//
// Pebble applies a batch to its memtable before the WAL sync completes, so a
// Get or Scan may see a Txn whose Done has not run yet (or that then fails).
// Readers that must see only durable state wait for Done.

// commitEnv is the committer's environment: a test seam in the manner of
// Pebble's commitEnv. The zero value is filled in by defaults.
type commitEnv struct {
	// hold, if set, runs on the committer before each group is written, with
	// the number of Txns in it. Tests block in it to let a group build up.
	hold func(txns int)
	// apply commits b to the store and waits for its sync.
	apply func(b *pebble.Batch) error
	// maxBatchBytes splits a larger group into several batches.
	maxBatchBytes int
}

func (l *Log) defaults() {
	if l.env.apply == nil {
		l.env.apply = l.applySynced
	}
	if l.env.maxBatchBytes == 0 {
		l.env.maxBatchBytes = maxBatchBytes
	}
}

// Stats are plain counters, safe for concurrent reads.
type Stats struct {
	Commits  uint64 // Txns acknowledged with Done(nil)
	Syncs    uint64 // groups written with a synced Pebble batch
	Records  uint64 // Set and Delete ops synced
	Bytes    uint64 // bytes of synced Pebble batches
	Failures uint64 // groups completed with an error
	DiskSize uint64 // Pebble's disk space usage, bytes
}

// Stats returns the counters. DiskSize asks Pebble for its metrics, which
// takes Pebble's mutex: call it at scrape intervals, not per message.
func (l *Log) Stats() Stats {
	s := Stats{
		Commits:  l.stats.commits.Load(),
		Syncs:    l.stats.syncs.Load(),
		Records:  l.stats.records.Load(),
		Bytes:    l.stats.bytes.Load(),
		Failures: l.stats.failures.Load(),
	}
	l.dbMu.RLock()
	if !l.dbMu.closed {
		s.DiskSize = l.db.Metrics().DiskSpaceUsage()
	}
	l.dbMu.RUnlock()
	return s
}

// Submit hands t to the committer and returns without waiting for a sync.
// t.Done is called once t is durable or has failed (see Txn.Done). Submit
// blocks only while the committer's queue is full. After Close has begun,
// Submit waits for the committer to finish and then calls t.Done(ErrClosed),
// so Done order still follows Submit order. t belongs to the log until its
// Done runs.
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
	l.mu.queue = append(l.mu.queue, t)
	if len(l.mu.queue) == 1 {
		// The committer waits only on an empty queue.
		l.mu.ready.Signal()
	}
	l.mu.Unlock()
}

// Commit submits t and waits for its Done; it returns Done's error. t.Done,
// if set, is still called first. If ctx ends first Commit returns ctx.Err(),
// and t may still be committed later: its outcome is unknown and t stays
// with the log.
func (l *Log) Commit(ctx context.Context, t *Txn) error {
	ch := make(chan error, 1)
	inner := t.Done
	t.Done = func(err error) {
		if inner != nil {
			inner(err)
		}
		ch <- err
	}
	l.Submit(t)
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run is the committer goroutine.
func (l *Log) run() {
	defer close(l.stopped)
	var group []*Txn
	batch := l.db.NewBatch()
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

		batch = l.commitGroup(batch, group)
		clear(group) // drop references to Txns the callers may reuse
	}
	if batch != nil && l.Err() == nil {
		_ = batch.Close()
	}
}

// commitGroup writes group as one synced batch (or several, when it exceeds
// maxBatchBytes) and calls every Done in order. It returns the batch to use
// next (nil after a failure: a failed batch may still be referenced by
// Pebble and is never reused).
func (l *Log) commitGroup(b *pebble.Batch, group []*Txn) *pebble.Batch {
	if err := l.Err(); err != nil {
		l.finish(group, err)
		return b
	}
	if l.env.hold != nil {
		l.env.hold(len(group))
	}
	start, records, size := 0, 0, 0
	mustSync := func(txns []*Txn) bool {
		for _, t := range txns {
			if !t.NoSync && len(t.ops) > 0 {
				return true
			}
		}
		return false
	}
	for i, t := range group {
		n := 0
		for j := range t.ops {
			n += len(t.ops[j].key) + len(t.ops[j].value) + 16
		}
		if records > 0 && size+n > l.env.maxBatchBytes {
			// Commit what we have, in order, before this Txn.
			if b = l.sync(b, group[start:i], records, mustSync(group[start:i])); b == nil {
				l.finish(group[i:], l.Err())
				return nil
			}
			start, records, size = i, 0, 0
		}
		for j := range t.ops {
			o := &t.ops[j]
			if o.del {
				_ = b.Delete(o.key, nil) // errors only on a closed batch
			} else {
				_ = b.Set(o.key, o.value, nil)
			}
		}
		records += len(t.ops)
		size += n
	}
	return l.sync(b, group[start:], records, mustSync(group[start:]))
}

// sync commits b (holding records ops of txns) with a sync and completes
// txns. It returns the batch to reuse, or nil after a failure.
func (l *Log) sync(b *pebble.Batch, txns []*Txn, records int, mustSync bool) *pebble.Batch {
	if records == 0 {
		l.finish(txns, nil)
		return b
	}
	size := len(b.Repr())
	apply := l.env.apply
	if !mustSync {
		apply = l.applyNoSync
	}
	if err := apply(b); err != nil {
		l.setErr(fmt.Errorf("wal: commit: %w", err))
		l.logger.Error("commit failed", "txns", len(txns), "records", records, "err", err)
		l.finish(txns, l.Err())
		return nil
	}
	if mustSync {
		l.stats.syncs.Add(1)
	}
	l.stats.records.Add(uint64(records))
	l.stats.bytes.Add(uint64(size))
	b.Reset()
	l.finish(txns, nil)
	return b
}

// finish calls Done(err) for txns in order.
func (l *Log) finish(txns []*Txn, err error) {
	if err == nil {
		l.stats.commits.Add(uint64(len(txns)))
	} else if len(txns) > 0 {
		l.stats.failures.Add(1)
	}
	for _, t := range txns {
		if t.Done != nil {
			t.Done(err)
		}
	}
}

// applySynced commits b with pebble.Sync and waits for the sync.
//
// DB.Apply cannot be used: on a commit error it calls Logger.Fatalf and,
// since ours does not exit, then returns nil. ApplyNoSyncWait hands the sync
// error to SyncWait instead. Errors before the WAL write still go through
// Fatalf (our sticky error); in that case Pebble never queued the batch for
// a sync and SyncWait would wait forever, so it is not called.
func (l *Log) applySynced(b *pebble.Batch) (err error) {
	defer func() {
		if r := recover(); r != nil {
			// Pebble panics when its WAL writer has failed (commitWrite);
			// its commit mutex stays held.
			l.wedged.Store(true)
			err = fmt.Errorf("pebble panicked in commit: %v", r)
		}
	}()
	if err := l.db.ApplyNoSyncWait(b, pebble.Sync); err != nil {
		return err
	}
	if err := l.Err(); err != nil {
		return err
	}
	return b.SyncWait()
}

// applyNoSync writes b to Pebble's WAL without waiting for a sync (see
// Txn.NoSync). Errors are handled as in applySynced.
func (l *Log) applyNoSync(b *pebble.Batch) (err error) {
	defer func() {
		if r := recover(); r != nil {
			l.wedged.Store(true)
			err = fmt.Errorf("pebble panicked in commit: %v", r)
		}
	}()
	// DB.Apply reports a commit error through Logger.Fatalf (our sticky
	// error) and may then return nil: check Err afterwards.
	if err := l.db.Apply(b, pebble.NoSync); err != nil {
		return err
	}
	return l.Err()
}
