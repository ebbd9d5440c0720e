package wal

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// smallPebble keeps test stores light.
func smallPebble(o *pebble.Options) { o.MemTableSize = 1 << 20 }

func testOptions(fs vfs.FS) Options {
	return Options{Dir: "data", FS: fs, Logger: quiet, Pebble: smallPebble}
}

func openTest(t testing.TB, opts Options) *Log {
	t.Helper()
	l, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func key(i int) []byte { return fmt.Appendf(nil, "k%06d", i) }

func TestCommitGetScan(t *testing.T) {
	l := openTest(t, testOptions(vfs.NewMem()))
	defer l.Close()
	ctx := context.Background()
	opened := l.Stats() // Open wrote the format version, with a sync

	var txn Txn
	for i := range 10 {
		txn.Set(key(i), []byte{byte(i)})
	}
	if err := l.Commit(ctx, &txn); err != nil {
		t.Fatal(err)
	}
	txn.Reset()
	txn.Delete(key(3))
	txn.Set(key(4), []byte("four"))
	if err := l.Commit(ctx, &txn); err != nil {
		t.Fatal(err)
	}

	if v, err := l.Get(key(4)); err != nil || string(v) != "four" {
		t.Errorf("Get(k4) = %q, %v; want four, nil", v, err)
	}
	if _, err := l.Get(key(3)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(deleted) err = %v, want ErrNotFound", err)
	}

	var got []string
	err := l.Scan(key(2), key(6), func(k, v []byte) error {
		got = append(got, string(k))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := "[k000002 k000004 k000005]"; fmt.Sprint(got) != want {
		t.Errorf("Scan = %v, want %v", got, want)
	}

	// Upper nil: no bound; the format key (0x00...) sorts before lower.
	n := 0
	stop := errors.New("stop")
	err = l.Scan([]byte("k"), nil, func(k, v []byte) error {
		n++
		if n == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 3 {
		t.Errorf("Scan stopped with %v after %d keys, want stop after 3", err, n)
	}

	s := l.Stats()
	if s.Commits != 2 || s.Syncs-opened.Syncs != 2 || s.Records != 12 || s.Failures != 0 || s.Bytes == 0 || s.DiskSize == 0 {
		t.Errorf("Stats = %+v", s)
	}
	if err := l.Err(); err != nil {
		t.Errorf("Err = %v", err)
	}
}

func TestClose(t *testing.T) {
	fs := vfs.NewMem()
	l := openTest(t, testOptions(fs))
	// Submitted before Close: committed by Close.
	const n = 100
	var mu sync.Mutex
	var order []int
	for i := range n {
		txn := &Txn{}
		txn.Set(key(i), []byte("v"))
		txn.Done = func(err error) {
			if err != nil {
				t.Errorf("txn %d: %v", i, err)
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
		}
		l.Submit(txn)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if len(order) != n {
		t.Fatalf("%d Done calls before Close returned, want %d", len(order), n)
	}
	if err := l.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close = %v, want ErrClosed", err)
	}
	var txn Txn
	txn.Set(key(0), nil)
	if err := l.Commit(context.Background(), &txn); !errors.Is(err, ErrClosed) {
		t.Errorf("Commit after Close = %v, want ErrClosed", err)
	}
	if _, err := l.Get(key(0)); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close = %v, want ErrClosed", err)
	}
	if err := l.Scan(nil, nil, func(k, v []byte) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("Scan after Close = %v, want ErrClosed", err)
	}

	l = openTest(t, testOptions(fs))
	defer l.Close()
	for i := range n {
		if _, err := l.Get(key(i)); err != nil {
			t.Fatalf("after reopen, Get(%s): %v", key(i), err)
		}
	}
}

func TestFormatVersion(t *testing.T) {
	fs := vfs.NewMem()
	l := openTest(t, testOptions(fs))
	v, err := l.Get(FormatKey)
	if err != nil || len(v) != 4 || binary.BigEndian.Uint32(v) != FormatVersion {
		t.Fatalf("format key = %x, %v; want %d", v, err, FormatVersion)
	}
	if got := l.CompressThreshold(); got != 1024 {
		t.Errorf("CompressThreshold = %d, want 1024", got)
	}
	// Pretend a newer Keel wrote this directory.
	var txn Txn
	txn.Set(FormatKey, binary.BigEndian.AppendUint32(nil, FormatVersion+1))
	if err := l.Commit(context.Background(), &txn); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = Open(testOptions(fs))
	if !errors.Is(err, ErrNewerFormat) {
		t.Fatalf("Open = %v, want ErrNewerFormat", err)
	}
	want := fmt.Sprintf("data directory data was written by format version %d; this keel reads up to %d: upgrade keel",
		FormatVersion+1, FormatVersion)
	if !bytes.Contains([]byte(err.Error()), []byte(want)) {
		t.Errorf("error %q does not say %q", err, want)
	}
}

func TestCompressThresholdOption(t *testing.T) {
	for _, c := range []struct{ in, want int }{{0, 1024}, {-1, -1}, {-50, -1}, {1, 1}, {4096, 4096}} {
		o := testOptions(vfs.NewMem())
		o.CompressThreshold = c.in
		l := openTest(t, o)
		if got := l.CompressThreshold(); got != c.want {
			t.Errorf("CompressThreshold(%d) = %d, want %d", c.in, got, c.want)
		}
		l.Close()
	}
}

func TestOpenNotKeel(t *testing.T) {
	// A Pebble store with data but no format key is refused.
	fs := vfs.NewMem()
	db, err := pebble.Open("data", &pebble.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Set([]byte("x"), []byte("y"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(testOptions(fs)); err == nil || !bytes.Contains([]byte(err.Error()), []byte("no format version")) {
		t.Fatalf("Open = %v, want a 'no format version' error", err)
	}
}

// A format-1 directory opens and is upgraded to 2 by its format key
// alone: its session records (no owner) read as before, without one.
func TestFormat1Upgrade(t *testing.T) {
	fs := vfs.NewMem()
	l := openTest(t, testOptions(fs))
	format1 := []byte{recordV1, 0, 4, 0x80, 0x01, 0x00} // flags 0, protocol 4, expiry 128, disconnectedAt 0
	var txn Txn
	txn.Set(FormatKey, binary.BigEndian.AppendUint32(nil, 1))
	txn.Set(SessionKey("old"), format1)
	if err := l.Commit(context.Background(), &txn); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openTest(t, testOptions(fs))
	defer l.Close()
	v, err := l.Get(FormatKey)
	if err != nil || binary.BigEndian.Uint32(v) != 2 {
		t.Fatalf("format key after the upgrade = %x, %v; want 2", v, err)
	}
	raw, err := l.Get(SessionKey("old"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := DecodeSession(raw)
	if err != nil {
		t.Fatal(err)
	}
	if s.Protocol != 4 || s.ExpirySeconds != 128 || s.Owner != nil {
		t.Fatalf("format-1 session read as %+v, want protocol 4, expiry 128, no owner", s)
	}
	// A format-2 record with an owner is what format 1 could not read:
	// that is why the version moved.
	withOwner := AppendSession(nil, &Session{Protocol: 5, Owner: &Owner{Username: "alice"}}, 0)
	if withOwner[1]&^(sessionWill) == 0 {
		t.Fatalf("an owned session's flags %#x use no bit format 1 lacks", withOwner[1])
	}
}
