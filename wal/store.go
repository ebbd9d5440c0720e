package wal

import "context"

// Store is the durable write path as the engine, sessions and retain see
// it. Log (Pebble on this node) is one implementation; a replicated one
// (the quorum store) is another. The contract:
//
//   - Submit hands over a Txn and never waits for durability; it may block
//     for back-pressure (a full queue). The Txn belongs to the store until
//     its Done runs.
//   - Done(nil) means the Txn is durable by the implementation's
//     definition (Log: fsynced in Pebble's WAL; a quorum store: in a
//     quorum's synced logs and applied here). A NoSync Txn's Done(nil)
//     means only that it is ordered: it becomes durable with the next
//     synced Txn, and a crash may lose it (never a later synced one).
//   - Dones run in Submit order, on one goroutine that is not the
//     submitter's. Done must be quick and must not call Submit.
//   - Each Txn is all or nothing, after a crash too.
//   - After the first failure every later Txn fails too (Err is sticky),
//     and nothing is acknowledged as a success any more. The outcome of a
//     failed Txn is unknown: after a restart it is wholly present or
//     wholly absent.
//   - A read (Get, Scan, Snapshot) sees every Txn submitted before it, in
//     order, whether or not its Done has run yet: a reader that must see
//     only durable state waits for Done. So a reader that submitted a Txn
//     can read its own writes at once, without waiting for a sync.
//   - A Snapshot is a consistent view as of its creation, unaffected by
//     later Txns, until it is closed. Every Snapshot must be closed before
//     the store is.
type Store interface {
	Reader
	Submit(t *Txn)
	Snapshot() (Snapshot, error)
	// Err is nil, or the sticky failure after which nothing is durable.
	Err() error
	// CompressThreshold is what to pass to the Append record encoders.
	CompressThreshold() int
	Stats() Stats
}

// Reader reads a Store or a Snapshot.
type Reader interface {
	// Get returns a copy of the value under key, or ErrNotFound.
	Get(key []byte) ([]byte, error)
	// Scan calls fn for every key in [lower, upper) in key order (upper
	// nil: no bound). k and v are valid only during fn. An error from fn
	// stops the scan and is returned.
	Scan(lower, upper []byte, fn func(k, v []byte) error) error
}

// Snapshot is a point-in-time Reader of a Store.
type Snapshot interface {
	Reader
	Close() error
}

// Commit submits t to s and waits for its Done; it returns Done's error.
// t.Done, if set, is still called first. If ctx ends first Commit returns
// ctx.Err(), and t may still be committed later: its outcome is unknown.
func Commit(ctx context.Context, s Store, t *Txn) error {
	ch := make(chan error, 1)
	inner := t.Done
	t.Done = func(err error) {
		if inner != nil {
			inner(err)
		}
		ch <- err
	}
	s.Submit(t)
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

var _ Store = (*Log)(nil)
