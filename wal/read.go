package wal

import (
	"errors"

	"github.com/cockroachdb/pebble/v2"
)

// Get returns a copy of the value stored under key, or ErrNotFound. It reads
// what Pebble has applied, which may include a Txn whose sync is still in
// flight (see commit.go).
func (l *Log) Get(key []byte) ([]byte, error) {
	l.dbMu.RLock()
	defer l.dbMu.RUnlock()
	if l.dbMu.closed {
		return nil, ErrClosed
	}
	v, closer, err := l.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, l.wrapErr("get", err)
	}
	out := append([]byte(nil), v...)
	_ = closer.Close()
	return out, nil
}

// Scan calls fn for every key in [lower, upper) in key order; upper nil
// means no upper bound. k and v are valid only during fn. If fn returns an
// error, Scan stops and returns it. fn must not call Close.
func (l *Log) Scan(lower, upper []byte, fn func(k, v []byte) error) (err error) {
	l.dbMu.RLock()
	defer l.dbMu.RUnlock()
	if l.dbMu.closed {
		return ErrClosed
	}
	it, err := l.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return l.wrapErr("scan", err)
	}
	defer func() {
		if cerr := it.Close(); cerr != nil && err == nil {
			err = l.wrapErr("scan", cerr)
		}
	}()
	for valid := it.First(); valid; valid = it.Next() {
		v, verr := it.ValueAndErr()
		if verr != nil {
			return l.wrapErr("scan", verr)
		}
		if err := fn(it.Key(), v); err != nil {
			return err
		}
	}
	if err := it.Error(); err != nil {
		return l.wrapErr("scan", err)
	}
	return nil
}
