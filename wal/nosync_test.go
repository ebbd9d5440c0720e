package wal

import (
	"context"
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// A NoSync Txn is not synced by itself, but the next synced Txn makes it
// durable: a crash keeps a prefix of the log.
func TestNoSyncRidesTheNextSync(t *testing.T) {
	fs := vfs.NewCrashableMem()
	l, err := Open(Options{Dir: "d", FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	before := l.Stats().Syncs

	lazy := &Txn{NoSync: true}
	lazy.Set([]byte("lazy"), []byte("1"))
	if err := l.Commit(ctx, lazy); err != nil {
		t.Fatal(err)
	}
	if got := l.Stats().Syncs; got != before {
		t.Fatalf("syncs %d after a NoSync Txn, want %d", got, before)
	}
	// Not synced yet: a power loss now may drop it.
	img := fs.CrashClone(CrashCloneCfgForTest())
	if l2, err := Open(Options{Dir: "d", FS: img}); err != nil {
		t.Fatal(err)
	} else {
		if _, err := l2.Get([]byte("lazy")); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unsynced NoSync write survived a crash keeping only synced data: err %v", err)
		}
		l2.Close()
	}

	synced := &Txn{}
	synced.Set([]byte("synced"), []byte("2"))
	if err := l.Commit(ctx, synced); err != nil {
		t.Fatal(err)
	}
	img = fs.CrashClone(CrashCloneCfgForTest())
	l3, err := Open(Options{Dir: "d", FS: img})
	if err != nil {
		t.Fatal(err)
	}
	defer l3.Close()
	for _, k := range []string{"lazy", "synced"} {
		if _, err := l3.Get([]byte(k)); err != nil {
			t.Fatalf("%s after the next synced commit and a crash: %v", k, err)
		}
	}
}

// CrashCloneCfgForTest keeps exactly what was synced.
func CrashCloneCfgForTest() vfs.CrashCloneCfg { return vfs.CrashCloneCfg{} }
