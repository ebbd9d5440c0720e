package wal

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// ErrReadOnly is passed to the Done of every Txn submitted to a read-only
// store (ReadOnly, View).
var ErrReadOnly = errors.New("wal: read-only store")

// ErrNoStore is wrapped by OpenReadOnly's error when the directory is
// missing or holds no Pebble store.
var ErrNoStore = errors.New("wal: no Keel store")

// ReadOnly is a stopped broker's data directory opened for reading only,
// for tools (keel inspect, backup, restore). It is a Store whose Submit
// fails every Txn with ErrReadOnly, so code that rebuilds state from a
// Store (sessions.Load) runs on it unchanged, and whatever would write
// fails instead.
//
// Nothing in the directory is written: Pebble opens it with
// Options.ReadOnly (the WAL is replayed into memory, never flushed; no
// compaction, no OPTIONS file, no format ratchet, no file deleted), and the
// format key is read, never created. The only file it may create is an
// empty LOCK when the directory has none (a copied directory): it holds
// the directory's lock while open, so a keel cannot start on it meanwhile,
// and it finds out that a running keel holds it (ErrLocked, with its PID).
type ReadOnly struct {
	db     *pebble.DB
	lock   *pebble.Lock
	fs     vfs.FS
	dir    string
	format uint32

	mu     sync.RWMutex // guards db against use after Close
	closed bool
}

// OpenReadOnly opens the data directory opts.Dir for reading. Only Dir,
// FS and Logger of opts are used. It fails with ErrNoStore on a directory
// without a store, ErrLocked when a keel (or anything else) holds it,
// ErrNewerFormat for a format this build cannot read, and on corruption
// as Open does.
func OpenReadOnly(opts Options) (*ReadOnly, error) {
	if opts.Dir == "" {
		return nil, errors.New("wal: open read-only: Options.Dir is empty")
	}
	fs := opts.FS
	if fs == nil {
		fs = vfs.Default
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	names, err := fs.List(opts.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist", ErrNoStore, opts.Dir)
	}
	if err != nil {
		return nil, fmt.Errorf("wal: open read-only %s: %w", opts.Dir, err)
	}
	if !hasPebbleStore(names) {
		return nil, fmt.Errorf("%w: %s holds no Pebble store (no MANIFEST, CURRENT or OPTIONS file)", ErrNoStore, opts.Dir)
	}
	lock, err := lockDataDir(fs, opts.Dir)
	if err != nil {
		return nil, err
	}
	r := &ReadOnly{lock: lock, fs: fs, dir: opts.Dir}
	if err := r.open(fs, logger); err != nil {
		_ = lock.Close()
		return nil, err
	}
	return r, nil
}

func hasPebbleStore(names []string) bool {
	for _, n := range names {
		if n == "CURRENT" || strings.HasPrefix(n, "MANIFEST-") || strings.HasPrefix(n, "OPTIONS-") {
			return true
		}
	}
	return false
}

func (r *ReadOnly) open(fs vfs.FS, logger *slog.Logger) error {
	if err := checkManifest(fs, r.dir); err != nil {
		return err
	}
	// No FormatMajorVersion: the zero value never ratchets the store's.
	po := &pebble.Options{
		FS:       fs,
		ReadOnly: true,
		Lock:     r.lock,
		Logger:   readOnlyLogger{logger},
	}
	db, err := pebble.Open(r.dir, po)
	if err != nil {
		return r.wrapErr("open read-only", err)
	}
	if _, err := db.SSTables(pebble.WithProperties()); err != nil {
		_ = db.Close()
		return r.wrapErr("open read-only", err)
	}
	r.db = db
	if err := r.readFormat(); err != nil {
		_ = db.Close()
		return err
	}
	return nil
}

// readFormat reads the format version key; a store without one is
// accepted only if it is empty (format 0: a first start cut short).
func (r *ReadOnly) readFormat() error {
	v, closer, err := r.db.Get(FormatKey)
	if errors.Is(err, pebble.ErrNotFound) {
		it, err := r.db.NewIter(nil)
		if err != nil {
			return r.wrapErr("open read-only", err)
		}
		empty := !it.First()
		if err := errors.Join(it.Error(), it.Close()); err != nil {
			return r.wrapErr("open read-only", err)
		}
		if !empty {
			return fmt.Errorf("wal: open read-only: data directory %s holds data but no format version: "+
				"it is not a Keel data directory, or it is damaged", r.dir)
		}
		return nil
	}
	if err != nil {
		return r.wrapErr("open read-only: read format version", err)
	}
	defer closer.Close()
	if len(v) != 4 {
		return fmt.Errorf("wal: open read-only: data directory %s has a malformed format version (%d bytes)", r.dir, len(v))
	}
	switch got := binary.BigEndian.Uint32(v); {
	case got > FormatVersion:
		return fmt.Errorf("%w: data directory %s was written by format version %d; "+
			"this keel reads up to %d: use a newer keel", ErrNewerFormat, r.dir, got, FormatVersion)
	case got == 0:
		return fmt.Errorf("wal: open read-only: data directory %s has invalid format version 0", r.dir)
	default:
		r.format = got
	}
	return nil
}

func (r *ReadOnly) wrapErr(op string, err error) error {
	if pebble.IsCorruptionError(err) {
		return fmt.Errorf("wal: %s: data directory %s is corrupt: %w", op, r.dir, err)
	}
	return fmt.Errorf("wal: %s %s: %w", op, r.dir, err)
}

// Format is the store's format version; 0 for an empty store that has
// none yet.
func (r *ReadOnly) Format() uint32 { return r.format }

// Dir is the data directory.
func (r *ReadOnly) Dir() string { return r.dir }

// Get implements Reader.
func (r *ReadOnly) Get(key []byte) ([]byte, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return nil, ErrClosed
	}
	return readGet(r.db, key, r.wrapErr)
}

// Scan implements Reader.
func (r *ReadOnly) Scan(lower, upper []byte, fn func(k, v []byte) error) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return ErrClosed
	}
	return readScan(r.db, lower, upper, fn, r.wrapErr)
}

// Snapshot implements Store. The store does not change while open, so a
// snapshot is the store itself; closing it does nothing.
func (r *ReadOnly) Snapshot() (Snapshot, error) { return nopSnapshot{r}, nil }

// Submit implements Store: every Txn fails with ErrReadOnly.
func (r *ReadOnly) Submit(t *Txn) {
	if t.Done != nil {
		t.Done(ErrReadOnly)
	}
}

// Err implements Store: nil.
func (r *ReadOnly) Err() error { return nil }

// CompressThreshold implements Store.
func (r *ReadOnly) CompressThreshold() int { return defaultThreshold }

// Stats implements Store: only DiskSize is set.
func (r *ReadOnly) Stats() Stats {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return Stats{}
	}
	return Stats{DiskSize: r.db.Metrics().DiskSpaceUsage()}
}

// Metrics summarizes Pebble's view of the store. A read-only Pebble does
// not track its WAL, so the WAL's files are counted from the directory,
// and DiskSize is the size of every file in it.
func (r *ReadOnly) Metrics() (StoreMetrics, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return StoreMetrics{}, ErrClosed
	}
	m := storeMetrics(r.db)
	names, err := r.fs.List(r.dir)
	if err != nil {
		return StoreMetrics{}, fmt.Errorf("wal: metrics %s: %w", r.dir, err)
	}
	m.DiskSize, m.WALFiles, m.WALSize = 0, 0, 0
	for _, n := range names {
		st, err := r.fs.Stat(r.fs.PathJoin(r.dir, n))
		if err != nil {
			return StoreMetrics{}, fmt.Errorf("wal: metrics %s: %w", r.dir, err)
		}
		if st.IsDir() {
			continue
		}
		m.DiskSize += uint64(st.Size())
		if isPebbleLeftover(n) && strings.HasSuffix(n, ".log") {
			m.WALFiles++
			m.WALSize += uint64(st.Size())
		}
	}
	return m, nil
}

// Close closes Pebble and releases the directory's lock.
func (r *ReadOnly) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	r.closed = true
	err := r.db.Close()
	if lerr := r.lock.Close(); err == nil {
		err = lerr
	}
	if err != nil {
		return fmt.Errorf("wal: close %s: %w", r.dir, err)
	}
	return nil
}

type nopSnapshot struct{ Reader }

func (nopSnapshot) Close() error { return nil }

// View is a read-only Store over r (a Snapshot of a live store, say): its
// reads are r's, its Submit fails every Txn with ErrReadOnly. It lets code
// that rebuilds state from a Store (sessions.Load) read a live broker's
// snapshot without touching the broker.
func View(r Reader) Store { return view{r} }

type view struct{ Reader }

func (v view) Submit(t *Txn) {
	if t.Done != nil {
		t.Done(ErrReadOnly)
	}
}
func (v view) Snapshot() (Snapshot, error) { return nopSnapshot{v.Reader}, nil }
func (v view) Err() error                  { return nil }
func (v view) CompressThreshold() int      { return defaultThreshold }
func (v view) Stats() Stats                { return Stats{} }

// readOnlyLogger sends Pebble's lines to the logger at debug level (a
// read-only open has nothing to say to an operator); a Fatalf is logged as
// an error. Pebble calls Fatalf only on its write paths, which a read-only
// DB does not take.
type readOnlyLogger struct{ l *slog.Logger }

func (p readOnlyLogger) Infof(format string, args ...any) {
	p.l.Log(context.Background(), slog.LevelDebug, "pebble: "+fmt.Sprintf(format, args...))
}

func (p readOnlyLogger) Errorf(format string, args ...any) {
	p.l.Log(context.Background(), slog.LevelError, "pebble: "+fmt.Sprintf(format, args...))
}

func (p readOnlyLogger) Fatalf(format string, args ...any) {
	p.l.Log(context.Background(), slog.LevelError, "pebble fatal: "+fmt.Sprintf(format, args...))
}

var _ Store = (*ReadOnly)(nil)
