package wal

import (
	"log/slog"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// FormatVersion is the version of the on-disk format written by this build.
// 2 adds the session owner to the Session record (doc.go); format 1 is
// upgraded in place at Open.
const FormatVersion uint32 = 2

// Options configure Open. The zero value is valid except for Dir.
type Options struct {
	Dir    string
	FS     vfs.FS       // nil: the operating system's filesystem
	Logger *slog.Logger // nil: slog.Default()

	// CompressThreshold: payloads of at least this many bytes are
	// compressed when that saves bytes. 0 means 1024; negative disables.
	CompressThreshold int

	// Pebble, if set, adjusts Pebble's options before Open (tests use it
	// for error-injecting filesystems and small caches).
	Pebble func(*pebble.Options)
}

// Txn is a group of writes committed atomically, with sync. Build it with
// Set, Delete and DeleteRange, then Submit it.
type Txn struct {
	ops []op
	// Done is called by the committer goroutine once the Txn's batch is
	// synced (err nil) or has failed (err non-nil). A failed Txn is not
	// acknowledged: it is applied all or nothing, but after a failed sync
	// Keel cannot know which, so the caller must not ack it and must expect
	// either outcome after a restart. Calls happen in Submit order, on the
	// committer goroutine. Done must not block, and must not call Submit,
	// Commit or Close (the committer would wait for itself).
	Done func(err error)

	// NoSync lets the Txn be written without waiting for an fsync of its
	// own: Done runs once it is in Pebble's WAL, and the next synced Txn
	// makes it durable (order is kept: a crash keeps a prefix of the log).
	// For writes whose loss is harmless and that no packet waits on, like
	// deleting a queue entry after its PUBACK (lost, it is only resent).
	NoSync bool

	// Set by Submit for the committer.
	batch *pebble.Batch // applied with a sync to wait for
	err   error         // the apply failed
}

type opKind uint8

const (
	opSet opKind = iota
	opDelete
	opDeleteRange // key is the lower bound, value the upper (exclusive)
)

type op struct {
	kind       opKind
	key, value []byte
}

// Set writes key = value. The Txn keeps the slices: do not modify them.
func (t *Txn) Set(key, value []byte) { t.ops = append(t.ops, op{key: key, value: value}) }

// Delete removes key.
func (t *Txn) Delete(key []byte) { t.ops = append(t.ops, op{kind: opDelete, key: key}) }

// DeleteRange removes every key in [lower, upper), including keys written
// earlier in the same Txn; keys written after it in the Txn stay. It costs
// one record whatever the range holds.
func (t *Txn) DeleteRange(lower, upper []byte) {
	t.ops = append(t.ops, op{kind: opDeleteRange, key: lower, value: upper})
}

// Len is the number of writes in t.
func (t *Txn) Len() int { return len(t.ops) }

// Reset empties t for reuse.
func (t *Txn) Reset() { t.ops = t.ops[:0]; t.Done = nil; t.NoSync = false }

// Log's API is the Store interface (store.go), plus Open, Close and Commit;
// the package doc (doc.go) is the spec of what they write and in what order.
