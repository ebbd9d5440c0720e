package wal

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// dirDigest is every file of dir (name, size, content hash), for proving
// that a read-only open wrote nothing.
func dirDigest(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = fmt.Sprintf("%d %x", len(b), sha256.Sum256(b))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func commitKeys(t *testing.T, l *Log, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		var txn Txn
		txn.Set([]byte(fmt.Sprintf("k%06d", i)), []byte(fmt.Sprintf("v%d", i)))
		if err := l.Commit(context.Background(), &txn); err != nil {
			t.Fatal(err)
		}
	}
}

// A stopped store opens read-only with everything committed, the part only
// in the WAL included, and not one byte of the directory changes.
func TestOpenReadOnlyWritesNothing(t *testing.T) {
	dir := t.TempDir()
	l, err := openDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	commitKeys(t, l, 0, 100)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	before := dirDigest(t, dir)

	r, err := OpenReadOnly(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Format(); got != FormatVersion {
		t.Errorf("Format() = %d, want %d", got, FormatVersion)
	}
	n := 0
	if err := r.Scan([]byte("k"), []byte("l"), func(k, v []byte) error {
		if want := fmt.Sprintf("k%06d", n); string(k) != want {
			return fmt.Errorf("key %d: got %q, want %q", n, k, want)
		}
		n++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != 100 {
		t.Errorf("scan found %d keys, want 100", n)
	}
	if v, err := r.Get([]byte("k000042")); err != nil || string(v) != "v42" {
		t.Errorf("Get(k000042) = %q, %v; want v42", v, err)
	}
	var txn Txn
	txn.Set([]byte("x"), []byte("y"))
	if err := Commit(context.Background(), r, &txn); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Commit on a read-only store: got %v, want ErrReadOnly", err)
	}
	m, err := r.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	if m.DiskSize == 0 || len(m.Levels) != 7 || !strings.Contains(m.Summary, "WAL") {
		t.Errorf("Metrics() = disk %d, %d levels, summary %q: want a size, 7 levels and Pebble's table", m.DiskSize, len(m.Levels), m.Summary)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	after := dirDigest(t, dir)
	for name, d := range before {
		if after[name] != d {
			t.Errorf("%s changed: before %s, after %q", name, d, after[name])
		}
	}
	for name := range after {
		if _, ok := before[name]; !ok {
			t.Errorf("%s was created by a read-only open", name)
		}
	}
	// And a broker opens it again afterwards, with everything there.
	l, err = openDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if v, err := l.Get([]byte("k000099")); err != nil || string(v) != "v99" {
		t.Errorf("after the read-only open, Get(k000099) = %q, %v; want v99", v, err)
	}
}

// A store a Log holds is refused as locked, naming this process; a missing
// directory and one without a store are refused and left alone.
func TestOpenReadOnlyRefusals(t *testing.T) {
	dir := t.TempDir()
	l, err := openDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = OpenReadOnly(Options{Dir: dir})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), fmt.Sprint(os.Getpid())) {
		t.Errorf("OpenReadOnly of a held directory: got %v, want ErrLocked naming pid %d", err, os.Getpid())
	}
	l.Close()

	missing := filepath.Join(t.TempDir(), "nope")
	if _, err := OpenReadOnly(Options{Dir: missing}); !errors.Is(err, ErrNoStore) {
		t.Errorf("OpenReadOnly of a missing directory: got %v, want ErrNoStore", err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenReadOnly created %s", missing)
	}
	empty := t.TempDir()
	if _, err := OpenReadOnly(Options{Dir: empty}); !errors.Is(err, ErrNoStore) {
		t.Errorf("OpenReadOnly of an empty directory: got %v, want ErrNoStore", err)
	}
	if got := listDir(t, empty); len(got) != 0 {
		t.Errorf("OpenReadOnly left %v in an empty directory", got)
	}
}

// A checkpoint taken while Txns keep committing holds every Txn
// acknowledged before it began, and a prefix of the rest, each whole; the
// copy's WAL syncs are not counted as the store's.
func TestCheckpointUnderWrites(t *testing.T) {
	dir := t.TempDir()
	l, err := openDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	commitKeys(t, l, 0, 10)

	syncs := l.Stats().Syncs
	quiet := filepath.Join(t.TempDir(), "quiet")
	if err := l.Checkpoint(quiet); err != nil {
		t.Fatal(err)
	}
	if got := l.Stats().Syncs; got != syncs {
		t.Errorf("a checkpoint of an idle store counted %d WAL syncs, want 0", got-syncs)
	}
	if err := l.Checkpoint(quiet); err == nil {
		t.Errorf("Checkpoint into an existing directory succeeded")
	}

	var (
		mu      sync.Mutex
		acked   = 9 // highest key acknowledged
		stop    = make(chan struct{})
		done    = make(chan struct{})
		reached = make(chan struct{}) // closed once 200 is acknowledged
	)
	go func() {
		defer close(done)
		for i := 10; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			var txn Txn
			// Two keys per Txn: a checkpoint holds both or neither.
			txn.Set([]byte(fmt.Sprintf("k%06d", i)), []byte(fmt.Sprintf("v%d", i)))
			txn.Set([]byte(fmt.Sprintf("p%06d", i)), []byte(fmt.Sprintf("v%d", i)))
			if err := l.Commit(context.Background(), &txn); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			acked = i
			mu.Unlock()
			if i == 200 {
				close(reached)
			}
		}
	}()
	// Let some commits land, then checkpoint while they go on.
	<-reached
	mu.Lock()
	ackedBefore := acked
	mu.Unlock()
	dest := filepath.Join(t.TempDir(), "backup")
	err = l.Checkpoint(dest)
	close(stop)
	<-done
	if err != nil {
		t.Fatal(err)
	}

	c, err := openDir(dest)
	if err != nil {
		t.Fatalf("open the checkpoint: %v", err)
	}
	defer c.Close()
	last := -1
	if err := c.Scan([]byte("k"), []byte("l"), func(k, v []byte) error {
		var i int
		fmt.Sscanf(string(k), "k%06d", &i)
		if i != last+1 {
			return fmt.Errorf("checkpoint holds key %d after %d: not a prefix", i, last)
		}
		if want := fmt.Sprintf("v%d", i); string(v) != want {
			return fmt.Errorf("key %d holds %q, want %q", i, v, want)
		}
		last = i
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if last < ackedBefore {
		t.Errorf("checkpoint ends at key %d; key %d was acknowledged before it began", last, ackedBefore)
	}
	for i := 10; i <= last; i++ {
		if _, err := c.Get([]byte(fmt.Sprintf("p%06d", i))); err != nil {
			t.Fatalf("checkpoint holds k%06d without the p key of the same Txn: %v", i, err)
		}
	}
	if _, err := c.Get([]byte(fmt.Sprintf("p%06d", last+1))); !errors.Is(err, ErrNotFound) {
		t.Errorf("checkpoint holds p%06d without its k key: %v", last+1, err)
	}
	t.Logf("acknowledged before the checkpoint: %d; in it: %d", ackedBefore, last)
}
