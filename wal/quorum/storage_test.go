package quorum

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/keelmq/keel/wal"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func openLog(t testing.TB, fs vfs.FS) *wal.Log {
	t.Helper()
	l, err := wal.Open(wal.Options{Dir: "data", FS: fs, Logger: quiet,
		Pebble: func(o *pebble.Options) { o.MemTableSize = 1 << 20 }})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func openStorage(t testing.TB, l *wal.Log) *Storage {
	t.Helper()
	s, err := OpenStorage(l)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// ents is index(i).terms(...) of raft's own storage tests: entries from
// index i on with these terms, each with a payload naming it.
func ents(i uint64, terms ...uint64) []*pb.Entry {
	out := make([]*pb.Entry, len(terms))
	for j, term := range terms {
		out[j] = &pb.Entry{Index: new(i + uint64(j)), Term: new(term), Data: fmt.Appendf(nil, "e%d.%d", i+uint64(j), term)}
	}
	return out
}

func sameEntries(t *testing.T, what string, got, want []*pb.Entry) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d entries %v, want %d %v", what, len(got), got, len(want), want)
	}
	for i := range got {
		if !proto.Equal(got[i], want[i]) {
			t.Fatalf("%s: entry %d: got %v, want %v", what, i, got[i], want[i])
		}
	}
}

// compacted3 is raft's storage-test fixture: a log compacted at index 3
// (term 3) holding entries 4, 5 and 6 with terms 4, 5 and 6.
func compacted3(t *testing.T, l *wal.Log) *Storage {
	t.Helper()
	s := openStorage(t, l)
	ctx := context.Background()
	if err := s.Append(ctx, nil, ents(1, 1, 2, 3, 4, 5, 6), true); err != nil {
		t.Fatal(err)
	}
	markApplied(t, l, s, 3)
	if err := s.Compact(ctx, 3); err != nil {
		t.Fatal(err)
	}
	return s
}

func markApplied(t *testing.T, l *wal.Log, s *Storage, i uint64) {
	t.Helper()
	txn := &wal.Txn{}
	if err := recordApplied(txn, i, nil); err != nil {
		t.Fatal(err)
	}
	if err := wal.Commit(context.Background(), l, txn); err != nil {
		t.Fatal(err)
	}
	s.appliedDone(i, nil)
}

func TestStorageTerm(t *testing.T) {
	l := openLog(t, vfs.NewMem())
	defer l.Close()
	s := compacted3(t, l)
	for _, tt := range []struct {
		i     uint64
		err   error
		wterm uint64
	}{
		{2, raft.ErrCompacted, 0},
		{3, nil, 3},
		{4, nil, 4},
		{5, nil, 5},
		{6, nil, 6},
		{7, raft.ErrUnavailable, 0},
	} {
		term, err := s.Term(tt.i)
		if !errors.Is(err, tt.err) || term != tt.wterm {
			t.Errorf("Term(%d) = %d, %v; want %d, %v", tt.i, term, err, tt.wterm, tt.err)
		}
	}
}

func TestStorageEntries(t *testing.T) {
	l := openLog(t, vfs.NewMem())
	defer l.Close()
	s := compacted3(t, l)
	all := ents(4, 4, 5, 6)
	size := func(es ...*pb.Entry) (n uint64) {
		for _, e := range es {
			n += uint64(proto.Size(e))
		}
		return n
	}
	for _, tt := range []struct {
		lo, hi, maxSize uint64
		err             error
		want            []*pb.Entry
	}{
		{2, 6, math.MaxUint64, raft.ErrCompacted, nil},
		{3, 4, math.MaxUint64, raft.ErrCompacted, nil},
		{4, 5, math.MaxUint64, nil, ents(4, 4)},
		{4, 6, math.MaxUint64, nil, ents(4, 4, 5)},
		{4, 7, math.MaxUint64, nil, ents(4, 4, 5, 6)},
		// Even with maxSize 0 the first entry is returned.
		{4, 7, 0, nil, ents(4, 4)},
		{4, 7, size(all[0], all[1]), nil, ents(4, 4, 5)},
		{4, 7, size(all[0], all[1]) + size(all[2])/2, nil, ents(4, 4, 5)},
		{4, 7, size(all...) - 1, nil, ents(4, 4, 5)},
		{4, 7, size(all...), nil, ents(4, 4, 5, 6)},
	} {
		got, err := s.Entries(tt.lo, tt.hi, tt.maxSize)
		if !errors.Is(err, tt.err) {
			t.Fatalf("Entries(%d, %d, %d): err %v, want %v", tt.lo, tt.hi, tt.maxSize, err, tt.err)
		}
		sameEntries(t, fmt.Sprintf("Entries(%d, %d, %d)", tt.lo, tt.hi, tt.maxSize), got, tt.want)
	}
	if _, err := s.Entries(4, 8, math.MaxUint64); err == nil {
		t.Fatal("Entries beyond the last index: no error")
	}
}

func TestStorageFirstLastIndex(t *testing.T) {
	l := openLog(t, vfs.NewMem())
	defer l.Close()
	s := openStorage(t, l)
	if first, _ := s.FirstIndex(); first != 1 {
		t.Fatalf("empty: FirstIndex = %d, want 1", first)
	}
	if last, _ := s.LastIndex(); last != 0 {
		t.Fatalf("empty: LastIndex = %d, want 0", last)
	}
	s = compacted3(t, l)
	if first, _ := s.FirstIndex(); first != 4 {
		t.Fatalf("FirstIndex = %d, want 4", first)
	}
	if last, _ := s.LastIndex(); last != 6 {
		t.Fatalf("LastIndex = %d, want 6", last)
	}
	if err := s.Append(context.Background(), nil, ents(7, 7), true); err != nil {
		t.Fatal(err)
	}
	if last, _ := s.LastIndex(); last != 7 {
		t.Fatalf("after append: LastIndex = %d, want 7", last)
	}
	markApplied(t, l, s, 4)
	if err := s.Compact(context.Background(), 4); err != nil {
		t.Fatal(err)
	}
	if first, _ := s.FirstIndex(); first != 5 {
		t.Fatalf("after compact: FirstIndex = %d, want 5", first)
	}
	// And all of it reads back after a reopen.
	s = openStorage(t, l)
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	term, err := s.Term(4)
	if first != 5 || last != 7 || term != 4 || err != nil {
		t.Fatalf("reopened: first %d last %d Term(4) %d %v; want 5 7 4", first, last, term, err)
	}
}

func TestStorageCompact(t *testing.T) {
	for _, tt := range []struct {
		i         uint64
		err       bool
		compacted bool
		wfirst    uint64
		wterm     uint64
	}{
		{2, true, true, 4, 3},
		{3, true, true, 4, 3},
		{4, false, false, 5, 4},
		{5, false, false, 6, 5},
	} {
		l := openLog(t, vfs.NewMem())
		s := compacted3(t, l)
		markApplied(t, l, s, 6)
		err := s.Compact(context.Background(), tt.i)
		if (err != nil) != tt.err || errors.Is(err, raft.ErrCompacted) != tt.compacted {
			t.Fatalf("Compact(%d): err %v", tt.i, err)
		}
		first, _ := s.FirstIndex()
		term, _ := s.Term(first - 1)
		if first != tt.wfirst || term != tt.wterm {
			t.Fatalf("Compact(%d): first %d (term before it %d), want %d (%d)", tt.i, first, term, tt.wfirst, tt.wterm)
		}
		if got, err := s.Entries(first, 7, math.MaxUint64); err != nil || len(got) != int(7-first) {
			t.Fatalf("Compact(%d): Entries(%d, 7) = %d entries, %v", tt.i, first, len(got), err)
		}
		l.Close()
	}
	// Never beyond what is applied.
	l := openLog(t, vfs.NewMem())
	defer l.Close()
	s := compacted3(t, l)
	if err := s.Compact(context.Background(), 5); err == nil {
		t.Fatal("Compact beyond the applied index: no error")
	}
}

func TestStorageAppend(t *testing.T) {
	for _, tt := range []struct {
		name   string
		append []*pb.Entry
		want   []*pb.Entry // entries 4.. after the append
	}{
		{"all compacted", ents(1, 1, 2), ents(4, 4, 5, 6)},
		{"same", ents(3, 3, 4, 5, 6), ents(4, 4, 5, 6)},
		{"replace tail", ents(3, 3, 7, 7), ents(4, 7, 7)},
		{"extend", ents(3, 3, 4, 5, 6, 6), ents(4, 4, 5, 6, 6)},
		{"truncate incoming and existing", ents(2, 3, 3, 5), ents(4, 5)},
		{"truncate existing", ents(5, 6), ents(4, 4, 6)},
		{"direct", ents(7, 6), ents(4, 4, 5, 6, 6)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := openLog(t, vfs.NewMem())
			defer l.Close()
			s := compacted3(t, l)
			if err := s.Append(context.Background(), nil, tt.append, true); err != nil {
				t.Fatal(err)
			}
			check := func(s *Storage, what string) {
				last, _ := s.LastIndex()
				got, err := s.Entries(4, last+1, math.MaxUint64)
				if err != nil {
					t.Fatal(err)
				}
				sameEntries(t, what, got, tt.want)
			}
			check(s, "after append")
			check(openStorage(t, l), "reopened")
		})
	}
	l := openLog(t, vfs.NewMem())
	defer l.Close()
	s := compacted3(t, l)
	if err := s.Append(context.Background(), nil, ents(8, 6), true); err == nil {
		t.Fatal("append leaving a hole: no error")
	}
}

func TestStorageInitialStateAndSnapshot(t *testing.T) {
	l := openLog(t, vfs.NewMem())
	defer l.Close()
	s := openStorage(t, l)
	hs, cs, err := s.InitialState()
	if err != nil || !raft.IsEmptyHardState(hs) || len(cs.GetVoters()) != 0 {
		t.Fatalf("empty: InitialState = %v, %v, %v", hs, cs, err)
	}
	snap, err := s.Snapshot()
	if err != nil || !raft.IsEmptySnap(snap) {
		t.Fatalf("empty: Snapshot = %v, %v", snap, err)
	}
	want := &pb.HardState{Term: new(uint64(5)), Vote: new(uint64(2)), Commit: new(uint64(1))}
	if err := s.Append(context.Background(), want, ents(1, 5), true); err != nil {
		t.Fatal(err)
	}
	conf := &pb.ConfState{Voters: []uint64{1, 2, 3}}
	txn := &wal.Txn{}
	if err := recordApplied(txn, 1, conf); err != nil {
		t.Fatal(err)
	}
	if err := wal.Commit(context.Background(), l, txn); err != nil {
		t.Fatal(err)
	}
	s = openStorage(t, l)
	hs, cs, _ = s.InitialState()
	if !proto.Equal(hs, want) || !proto.Equal(cs, conf) || s.Applied() != 1 {
		t.Fatalf("reopened: InitialState = %v, %v applied %d; want %v, %v applied 1", hs, cs, s.Applied(), want, conf)
	}
	snap, _ = s.Snapshot()
	if !proto.Equal(snap.GetMetadata().GetConfState(), conf) {
		t.Fatalf("Snapshot's ConfState = %v, want %v", snap.GetMetadata().GetConfState(), conf)
	}
	// Once compacted, a follower that needs what was dropped would need
	// the state itself, which this slice does not send.
	if err := s.Compact(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Snapshot(); !errors.Is(err, raft.ErrSnapshotTemporarilyUnavailable) {
		t.Fatalf("compacted: Snapshot err %v, want ErrSnapshotTemporarilyUnavailable", err)
	}
}

// TestStorageCrash: what Append returned for is on disk; a crash keeps
// nothing of an append it did not return for, and never a hole.
func TestStorageCrash(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 20 {
		fs := vfs.NewCrashableMem()
		l := openLog(t, fs)
		s := openStorage(t, l)
		ctx := context.Background()
		var want []*pb.Entry
		var wantHS *pb.HardState
		next := uint64(1)
		term := uint64(1)
		for range 1 + rng.IntN(20) {
			if rng.IntN(4) == 0 && next > 1 {
				// A new leader replaces part of the tail.
				term++
				next -= uint64(rng.IntN(int(next-1))) + 1
				if next < 1 {
					next = 1
				}
			}
			n := 1 + rng.IntN(3)
			terms := make([]uint64, n)
			for i := range terms {
				terms[i] = term
			}
			batch := ents(next, terms...)
			hs := &pb.HardState{Term: new(term), Vote: new(uint64(1)), Commit: new(next - 1)}
			if err := s.Append(ctx, hs, batch, true); err != nil {
				t.Fatal(err)
			}
			want = append(want[:next-1], batch...)
			wantHS = hs
			next += uint64(n)
		}
		// Unsynced writes after the last append: may or may not survive.
		crash := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rand.New(rand.NewPCG(uint64(round), 9))})
		l.Close()

		l2 := openLog(t, crash)
		s2 := openStorage(t, l2)
		last, _ := s2.LastIndex()
		got, err := s2.Entries(1, last+1, math.MaxUint64)
		if err != nil {
			t.Fatal(err)
		}
		sameEntries(t, fmt.Sprintf("round %d after crash", round), got, want)
		if hs, _, _ := s2.InitialState(); !proto.Equal(hs, wantHS) {
			t.Fatalf("round %d: HardState after crash %v, want %v", round, hs, wantHS)
		}
		l2.Close()
	}
}
