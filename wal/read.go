package wal

import (
	"errors"

	"github.com/cockroachdb/pebble/v2"
)

// Get returns a copy of the value stored under key, or ErrNotFound. It reads
// what Pebble has applied: every Txn submitted so far, including one whose
// sync is still in flight (see Store).
func (l *Log) Get(key []byte) ([]byte, error) {
	l.dbMu.RLock()
	defer l.dbMu.RUnlock()
	if l.dbMu.closed {
		return nil, ErrClosed
	}
	return l.get(l.db, key)
}

// Scan calls fn for every key in [lower, upper) in key order; upper nil
// means no upper bound. k and v are valid only during fn. If fn returns an
// error, Scan stops and returns it. fn must not call Close.
func (l *Log) Scan(lower, upper []byte, fn func(k, v []byte) error) error {
	l.dbMu.RLock()
	defer l.dbMu.RUnlock()
	if l.dbMu.closed {
		return ErrClosed
	}
	return l.scan(l.db, lower, upper, fn)
}

// Snapshot returns a view of everything submitted so far. It must be
// closed before the Log is.
func (l *Log) Snapshot() (Snapshot, error) {
	l.dbMu.RLock()
	defer l.dbMu.RUnlock()
	if l.dbMu.closed {
		return nil, ErrClosed
	}
	return &snapshot{l: l, s: l.db.NewSnapshot()}, nil
}

type snapshot struct {
	l *Log
	s *pebble.Snapshot
}

func (s *snapshot) Get(key []byte) ([]byte, error) { return s.l.get(s.s, key) }

func (s *snapshot) Scan(lower, upper []byte, fn func(k, v []byte) error) error {
	return s.l.scan(s.s, lower, upper, fn)
}

func (s *snapshot) Close() error { return s.s.Close() }

func (l *Log) get(r pebble.Reader, key []byte) ([]byte, error) { return readGet(r, key, l.wrapErr) }

func (l *Log) scan(r pebble.Reader, lower, upper []byte, fn func(k, v []byte) error) error {
	return readScan(r, lower, upper, fn, l.wrapErr)
}

// readGet and readScan are Get and Scan over any Pebble reader; wrap
// turns Pebble's errors into the store's (Log.wrapErr, ReadOnly.wrapErr).
func readGet(r pebble.Reader, key []byte, wrap func(string, error) error) ([]byte, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, wrap("get", err)
	}
	out := append([]byte(nil), v...)
	_ = closer.Close()
	return out, nil
}

func readScan(r pebble.Reader, lower, upper []byte, fn func(k, v []byte) error, wrap func(string, error) error) (err error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return wrap("scan", err)
	}
	defer func() {
		if cerr := it.Close(); cerr != nil && err == nil {
			err = wrap("scan", cerr)
		}
	}()
	for valid := it.First(); valid; valid = it.Next() {
		v, verr := it.ValueAndErr()
		if verr != nil {
			return wrap("scan", verr)
		}
		if err := fn(it.Key(), v); err != nil {
			return err
		}
	}
	if err := it.Error(); err != nil {
		return wrap("scan", err)
	}
	return nil
}
