package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Sentinel errors; compare with errors.Is.
var (
	// ErrNotFound is returned by Get for a key that is not present.
	ErrNotFound = errors.New("wal: not found")
	// ErrClosed is returned (or passed to Txn.Done) once Close has begun.
	ErrClosed = errors.New("wal: closed")
	// ErrNewerFormat is wrapped by Open's error when the data directory was
	// written by a newer Keel than this one.
	ErrNewerFormat = errors.New("wal: newer data format")
)

// Pebble settings. pebbleFormat is part of the on-disk format: it is the
// Pebble format major version a new data directory is created with (and an
// older one ratcheted up to). It is pinned rather than pebble.FormatNewest so
// that upgrading the Pebble library never silently rewrites a data directory
// into a format an older Keel cannot open; raise it deliberately, with a
// release note. Any later Pebble opens it (Pebble reads every format from
// pebble.FormatMinSupported on).
const (
	pebbleFormat = pebble.FormatValueSeparation

	defaultMemTableSize = 64 << 20
	defaultCacheSize    = 64 << 20
	defaultThreshold    = 1024

	// maxQueue bounds the committer's queue (txns); a full queue blocks
	// Submit, which is the broker's back-pressure.
	maxQueue = 4096
)

// Log is Keel's durable write path: a Pebble store, written in Submit
// order, and the one committer goroutine that waits for its syncs.
type Log struct {
	db        *pebble.DB
	lock      *pebble.Lock // the data directory's; released after db closes
	dir       string
	logger    *slog.Logger
	threshold int

	// mu protects the committer's queue.
	mu struct {
		sync.Mutex
		queue   []*Txn // submitted, not yet taken by the committer
		closing bool   // Close has begun; the committer drains and exits
		ready   sync.Cond
		notFull sync.Cond
	}
	// free holds batches to reuse.
	free chan *pebble.Batch
	// stopped is closed when the committer goroutine has exited.
	stopped chan struct{}

	// dbMu guards db against use after Close: readers hold it shared.
	dbMu struct {
		sync.RWMutex
		closed bool
	}
	closeOnce sync.Once

	// sticky is the first error after which the store cannot go on.
	sticky atomic.Pointer[error]
	// wedged is set when Pebble panicked inside its commit pipeline: its
	// commit mutex may still be held, so DB.Close would never return.
	wedged atomic.Bool

	stats struct {
		commits, records, bytes, failures atomic.Uint64
		metricsReads                      atomic.Uint64 // db.Metrics calls (Stats, Metrics)
	}
	syncs syncStats // counted by syncFS, around the FS Pebble is given
}

// Open opens (creating if needed) the data directory opts.Dir and starts the
// committer. It refuses a directory that is not a Keel data directory
// (ErrNotDataDir) and one another process or Open holds (ErrLocked): see
// datadir.go.
func Open(opts Options) (*Log, error) {
	if opts.Dir == "" {
		return nil, errors.New("wal: open: Options.Dir is empty")
	}
	fs := opts.FS
	if fs == nil {
		fs = vfs.Default
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("component", "wal")
	l := &Log{
		dir:       opts.Dir,
		logger:    logger,
		threshold: effectiveThreshold(opts.CompressThreshold),
		stopped:   make(chan struct{}),
		free:      make(chan *pebble.Batch, 8),
	}
	l.mu.ready.L = &l.mu.Mutex
	l.mu.notFull.L = &l.mu.Mutex
	l.mu.queue = make([]*Txn, 0, 64)

	if err := checkDataDir(fs, opts.Dir); err != nil {
		return nil, err
	}
	lock, err := lockDataDir(fs, opts.Dir)
	if err != nil {
		return nil, err
	}
	l.lock = lock
	if err := l.openPebble(fs, opts); err != nil {
		_ = lock.Close()
		return nil, err
	}
	go l.run()
	return l, nil
}

// openPebble opens Pebble on opts.Dir under l.lock into l.db, loads every
// table's properties and checks the format version. On error, l.db is
// closed.
func (l *Log) openPebble(fs vfs.FS, opts Options) error {
	logger := l.logger
	if err := checkManifest(fs, opts.Dir); err != nil {
		return err
	}
	cache := pebble.NewCache(defaultCacheSize)
	defer cache.Unref()
	po := &pebble.Options{
		FS:                 syncFS{FS: fs, dir: fs.PathDir(fs.PathJoin(opts.Dir, "x")), stats: &l.syncs},
		Cache:              cache,
		MemTableSize:       defaultMemTableSize,
		FormatMajorVersion: pebbleFormat,
		Lock:               l.lock,
		WALBytesPerSync:    0, // every commit syncs anyway
		Logger:             pebbleLogger{l},
		EventListener: &pebble.EventListener{
			BackgroundError: func(err error) {
				logger.Error("pebble background error", "err", err)
			},
			WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
				logger.Warn("pebble write stall", "reason", info.Reason)
			},
			DiskSlow: func(info pebble.DiskSlowInfo) {
				logger.Warn("slow disk operation", "info", info.String())
			},
		},
	}
	if opts.Pebble != nil {
		opts.Pebble(po)
	}
	db, err := pebble.Open(opts.Dir, po)
	if err == nil {
		// A Fatalf during Open (it is not fatal here: see pebbleLogger).
		err = l.Err()
		if err != nil {
			_ = db.Close()
		}
	}
	if err != nil {
		return l.wrapErr("open", err)
	}
	// Open reads only the MANIFEST and WAL; sstables are opened on first
	// use. Load every table's properties now (footer, meta index and
	// properties blocks, all checksummed: a few KiB per table), so a
	// truncated or garbled table fails Open rather than the first read of
	// it. Data blocks are verified when read: Get and Scan report that
	// corruption the same way.
	if _, err := db.SSTables(pebble.WithProperties()); err != nil {
		_ = db.Close()
		return l.wrapErr("open", err)
	}
	l.db = db
	if err := l.checkFormat(); err != nil {
		_ = db.Close()
		return err
	}
	return nil
}

// checkFormat reads the format version key, writing it (synced) into an
// empty store.
func (l *Log) checkFormat() error {
	v, closer, err := l.db.Get(FormatKey)
	if errors.Is(err, pebble.ErrNotFound) {
		empty, err := l.isEmpty()
		if err != nil {
			return fmt.Errorf("wal: open %s: %w", l.dir, err)
		}
		if !empty {
			return fmt.Errorf("wal: open: data directory %s holds data but no format version: "+
				"it is not a Keel data directory, or it is damaged", l.dir)
		}
		var buf [4]byte
		binary.BigEndian.PutUint32(buf[:], FormatVersion)
		if err := l.db.Set(FormatKey, buf[:], pebble.Sync); err != nil {
			return fmt.Errorf("wal: open %s: write format version: %w", l.dir, err)
		}
		if err := l.Err(); err != nil { // a Fatalf from Pebble's commit path
			return fmt.Errorf("wal: open %s: write format version: %w", l.dir, err)
		}
		return nil
	}
	if err != nil {
		return l.wrapErr("open: read format version", err)
	}
	defer closer.Close()
	if len(v) != 4 {
		return fmt.Errorf("wal: open: data directory %s has a malformed format version (%d bytes): "+
			"restore it from a backup, or move it aside to start empty", l.dir, len(v))
	}
	switch got := binary.BigEndian.Uint32(v); {
	case got > FormatVersion:
		return fmt.Errorf("%w: data directory %s was written by format version %d; "+
			"this keel reads up to %d: upgrade keel", ErrNewerFormat, l.dir, got, FormatVersion)
	case got == 0:
		return fmt.Errorf("wal: open: data directory %s has invalid format version 0", l.dir)
	case got < FormatVersion:
		// Format 1 reads as format 2 (doc.go): only the key changes.
		var buf [4]byte
		binary.BigEndian.PutUint32(buf[:], FormatVersion)
		if err := l.db.Set(FormatKey, buf[:], pebble.Sync); err != nil {
			return l.wrapErr("open: upgrade format version", err)
		}
		if err := l.Err(); err != nil {
			return fmt.Errorf("wal: open %s: upgrade format version: %w", l.dir, err)
		}
		l.logger.Info("data directory upgraded", "dir", l.dir, "from_format", got, "to_format", FormatVersion)
	}
	return nil
}

// wrapErr wraps a Pebble error for op; corruption gets the directory and
// what to do about it.
func (l *Log) wrapErr(op string, err error) error {
	if pebble.IsCorruptionError(err) {
		return fmt.Errorf("wal: %s: data directory %s is corrupt: %w; "+
			"restore it from a backup, or move it aside to start empty", op, l.dir, err)
	}
	return fmt.Errorf("wal: %s %s: %w", op, l.dir, err)
}

func (l *Log) isEmpty() (bool, error) {
	it, err := l.db.NewIter(nil)
	if err != nil {
		return false, err
	}
	valid := it.First()
	return !valid, errors.Join(it.Error(), it.Close())
}

func effectiveThreshold(t int) int {
	switch {
	case t < 0:
		return -1
	case t == 0:
		return defaultThreshold
	}
	return t
}

// CompressThreshold is the effective payload compression threshold in bytes,
// or -1 when compression is disabled. Pass it to the Append functions.
func (l *Log) CompressThreshold() int { return l.threshold }

// Err returns nil, or the sticky error after which the store accepts no
// more writes (a failed WAL write or sync, or a fatal error reported by
// Pebble). Once non-nil it never changes; the broker should stop.
func (l *Log) Err() error {
	if p := l.sticky.Load(); p != nil {
		return *p
	}
	return nil
}

// setErr records err as the sticky error unless one is already set.
func (l *Log) setErr(err error) {
	if l.sticky.CompareAndSwap(nil, &err) {
		l.logger.Error("store failed: accepting no more writes", "dir", l.dir, "err", err)
	}
}

// Close stops accepting Txns, commits everything submitted so far (their
// Done run), stops the committer and closes Pebble. Later Submits get
// Done(ErrClosed); a second Close returns ErrClosed.
func (l *Log) Close() error {
	err := ErrClosed
	l.closeOnce.Do(func() {
		err = l.close()
	})
	return err
}

func (l *Log) close() error {
	l.mu.Lock()
	l.mu.closing = true
	l.mu.ready.Signal()
	l.mu.notFull.Broadcast()
	l.mu.Unlock()
	<-l.stopped

	l.dbMu.Lock()
	l.dbMu.closed = true
	l.dbMu.Unlock()
	if l.wedged.Load() {
		// Pebble panicked inside its commit pipeline and may still hold
		// its commit mutex; DB.Close would wait for it forever. Leave the
		// DB (and its directory lock) to the process exit.
		return fmt.Errorf("wal: close %s: pebble left unusable by %w", l.dir, l.Err())
	}
	err := l.db.Close()
	if lerr := l.lock.Close(); err == nil && lerr != nil {
		err = lerr
	}
	if err != nil {
		return fmt.Errorf("wal: close %s: %w", l.dir, err)
	}
	return nil
}
