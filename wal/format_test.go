package wal

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// filesWithSuffix lists dir's files named *suffix, sorted (Pebble's file
// numbers are zero-padded, so the last is the newest).
func filesWithSuffix(t *testing.T, fs vfs.FS, dir, suffix string) []string {
	t.Helper()
	names, err := fs.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range names {
		if strings.HasSuffix(n, suffix) || (suffix == "MANIFEST" && strings.HasPrefix(n, "MANIFEST-")) {
			out = append(out, fs.PathJoin(dir, n))
		}
	}
	sort.Strings(out)
	return out
}

func readFile(t *testing.T, fs vfs.FS, name string) []byte {
	t.Helper()
	f, err := fs.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, fs vfs.FS, name string, b []byte) {
	t.Helper()
	f, err := fs.Create(name, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestTornWALTail: a crash in the middle of writing the last WAL record
// leaves a torn tail. Open must succeed, keeping every earlier record and
// dropping the torn one.
func TestTornWALTail(t *testing.T) {
	for _, c := range []struct {
		name string
		tear func([]byte) []byte
	}{
		{"truncated", func(b []byte) []byte { return b[:len(b)-3000] }},
		{"zeroed", func(b []byte) []byte { clear(b[len(b)-3000:]); return b }},
		{"garbled", func(b []byte) []byte {
			for i := len(b) - 3000; i < len(b); i++ {
				b[i] ^= 0x5a
			}
			return b
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			fs := vfs.NewCrashableMem()
			l := openTest(t, testOptions(fs))
			ctx := context.Background()
			var a, b Txn
			a.Set([]byte("a"), []byte("acknowledged"))
			if err := l.Commit(ctx, &a); err != nil {
				t.Fatal(err)
			}
			// The last record: 8 KiB, so tearing its last 3000 bytes
			// leaves its head in the file.
			b.Set([]byte("b"), bytes.Repeat([]byte("torn"), 2048))
			if err := l.Commit(ctx, &b); err != nil {
				t.Fatal(err)
			}
			// Power loss: crash, then tear the newest WAL's tail as if the
			// last write had not fully reached the disk.
			crashed := fs.CrashClone(vfs.CrashCloneCfg{})
			l.Close()
			logs := filesWithSuffix(t, crashed, "data", ".log")
			newest := logs[len(logs)-1]
			writeFile(t, crashed, newest, c.tear(readFile(t, crashed, newest)))

			l, err := Open(testOptions(crashed))
			if err != nil {
				t.Fatalf("Open after a torn WAL tail: %v", err)
			}
			defer l.Close()
			if v, err := l.Get([]byte("a")); err != nil || string(v) != "acknowledged" {
				t.Errorf("Get(a) = %q, %v", v, err)
			}
			if _, err := l.Get([]byte("b")); !errors.Is(err, ErrNotFound) {
				t.Errorf("torn record b: Get err = %v, want ErrNotFound", err)
			}
		})
	}
}

// closedStore writes enough through a 1 MiB memtable to produce sstables,
// closes the store and returns its directory on a real filesystem.
func closedStore(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	opts := Options{Dir: dir, Logger: quiet, Pebble: smallPebble}
	l := openTest(t, opts)
	ctx := context.Background()
	val := make([]byte, 1024)
	for i := range 40 {
		var txn Txn
		for j := range 100 {
			txn.Set(key(i*100+j), val)
		}
		if err := l.Commit(ctx, &txn); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func garble(t *testing.T, name string, at func(size int) int) {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	i := at(len(b))
	for j := i; j < i+16 && j < len(b); j++ {
		b[j] ^= 0xa5
	}
	if err := os.WriteFile(name, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func wantCorrupt(t *testing.T, err error, dir string) {
	t.Helper()
	if err == nil {
		t.Fatal("no error from a corrupt store")
	}
	msg := err.Error()
	for _, want := range []string{dir, "corrupt", "restore it from a backup, or move it aside"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	t.Logf("error: %v", err)
}

func TestCorruptManifest(t *testing.T) {
	dir := closedStore(t)
	manifests := filesWithSuffix(t, vfs.Default, dir, "MANIFEST")
	garble(t, manifests[len(manifests)-1], func(n int) int { return n / 2 })
	_, err := Open(Options{Dir: dir, Logger: quiet})
	wantCorrupt(t, err, dir)
}

func TestCorruptSSTable(t *testing.T) {
	t.Run("footer", func(t *testing.T) {
		dir := closedStore(t)
		ssts := filesWithSuffix(t, vfs.Default, dir, ".sst")
		if len(ssts) == 0 {
			t.Fatal("no sstables")
		}
		garble(t, ssts[0], func(n int) int { return n - 40 })
		_, err := Open(Options{Dir: dir, Logger: quiet})
		wantCorrupt(t, err, dir)
	})
	t.Run("data block", func(t *testing.T) {
		// Data blocks are checked when read: Open may succeed, the first
		// Scan over the block fails with the same advice.
		dir := closedStore(t)
		ssts := filesWithSuffix(t, vfs.Default, dir, ".sst")
		garble(t, ssts[0], func(n int) int { return 100 })
		l, err := Open(Options{Dir: dir, Logger: quiet})
		if err != nil {
			wantCorrupt(t, err, dir)
			return
		}
		defer l.Close()
		err = l.Scan(nil, nil, func(k, v []byte) error { return nil })
		wantCorrupt(t, err, dir)
	})
}

// TestManifestDamage: a damaged record with valid records after it is
// corruption; a damaged or cut last record is a torn tail.
func TestManifestDamage(t *testing.T) {
	dir := closedStore(t)
	manifests := filesWithSuffix(t, vfs.Default, dir, "MANIFEST")
	b, err := os.ReadFile(manifests[len(manifests)-1])
	if err != nil {
		t.Fatal(err)
	}
	if off := manifestDamage(b); off != -1 {
		t.Fatalf("intact manifest: damage at %d", off)
	}
	// Find the last chunk's start.
	last := 0
	for off := 0; off < len(b); {
		end, ok := chunkAt(b, off)
		if !ok {
			t.Fatalf("intact manifest does not parse at %d", off)
		}
		last, off = off, end
	}
	if off := manifestDamage(b[:len(b)-3]); off != -1 {
		t.Errorf("cut last record: damage at %d, want a torn tail", off)
	}
	torn := bytes.Clone(b)
	torn[len(torn)-1] ^= 0xff
	if off := manifestDamage(torn); off != -1 {
		t.Errorf("garbled last record: damage at %d, want a torn tail", off)
	}
	mid := bytes.Clone(b)
	mid[last-1] ^= 0xff // the chunk before the last
	if off := manifestDamage(mid); off < 0 || off >= last {
		t.Errorf("garbled middle record: damage at %d, want before %d", off, last)
	}
	if off := manifestDamage([]byte("not a manifest at all")); off != -1 {
		t.Errorf("unknown layout: damage at %d, want -1 (left to Pebble)", off)
	}
}
