package wal

import (
	"context"
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

func keysOf(t *testing.T, r Reader) []string {
	t.Helper()
	var out []string
	if err := r.Scan(nil, nil, func(k, v []byte) error {
		if k[0] != 0 { // not the format key
			out = append(out, string(k)+"="+string(v))
		}
		return nil
	}); err != nil {
		t.Fatalf("Scan: %v", err)
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A range deletion removes what the Txn wrote before it and keeps what it
// writes after it; a snapshot keeps its view; both survive a power cut.
func TestDeleteRangeAndSnapshot(t *testing.T) {
	mem := vfs.NewCrashableMem()
	l, err := Open(Options{Dir: "d", FS: mem})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t1 := &Txn{}
	t1.Set([]byte("a1"), []byte("x"))
	t1.Set([]byte("a2"), []byte("x"))
	t1.Set([]byte("b"), []byte("x"))
	if err := Commit(ctx, l, t1); err != nil {
		t.Fatal(err)
	}
	snap, err := l.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	t2 := &Txn{}
	t2.Set([]byte("a3"), []byte("gone")) // before the range deletion: removed
	t2.DeleteRange([]byte("a"), []byte("b"))
	t2.Set([]byte("a2"), []byte("new")) // after it: kept
	if err := Commit(ctx, l, t2); err != nil {
		t.Fatal(err)
	}
	want := []string{"a2=new", "b=x"}
	if got := keysOf(t, l); !equal(got, want) {
		t.Fatalf("after the range deletion: got %v, want %v", got, want)
	}
	if got, want := keysOf(t, snap), []string{"a1=x", "a2=x", "b=x"}; !equal(got, want) {
		t.Fatalf("snapshot: got %v, want %v", got, want)
	}
	if v, err := snap.Get([]byte("a1")); err != nil || string(v) != "x" {
		t.Fatalf("snapshot Get(a1) = %q, %v; want x", v, err)
	}
	if err := snap.Close(); err != nil {
		t.Fatal(err)
	}
	clone := mem.CrashClone(vfs.CrashCloneCfg{})
	l.Close()
	l, err = Open(Options{Dir: "d", FS: clone})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got := keysOf(t, l); !equal(got, want) {
		t.Fatalf("after a power cut: got %v, want %v", got, want)
	}
	if _, err := l.Get([]byte("a1")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(a1) = %v, want ErrNotFound", err)
	}
}
