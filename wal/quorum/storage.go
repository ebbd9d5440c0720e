package quorum

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/keelmq/keel/wal"
)

// Storage is the Raft log, HardState and membership of one node, kept in
// its wal.Log under wal.QuorumPrefix (package doc, "Keys"). It implements
// raft.Storage for the node's RawNode; Append and Compact are the writes.
//
// Raft reads it from the node's goroutine; the writes come from the same
// goroutine. mu makes the reads safe from anywhere else too (tests,
// Status).
type Storage struct {
	l *wal.Log

	mu struct {
		sync.Mutex
		hard     *pb.HardState
		conf     *pb.ConfState // as of applied
		applied  uint64
		first    uint64 // the first index Entries may serve
		prevTerm uint64 // the term of entry first-1 (0 when first is 1)
		last     uint64 // the last index in the log; first-1 when empty
	}
}

// ErrCorruptLog wraps a Raft log, HardState or membership record that
// cannot be read back.
var ErrCorruptLog = errors.New("quorum: corrupt raft state")

// OpenStorage reads the Raft state kept in l.
func OpenStorage(l *wal.Log) (*Storage, error) {
	s := &Storage{l: l}
	s.mu.hard = &pb.HardState{}
	s.mu.conf = &pb.ConfState{}
	s.mu.first = 1
	if v, err := l.Get(hardKey); err == nil {
		if err := proto.Unmarshal(v, s.mu.hard); err != nil {
			return nil, fmt.Errorf("%w: hard state: %v", ErrCorruptLog, err)
		}
	} else if !errors.Is(err, wal.ErrNotFound) {
		return nil, fmt.Errorf("quorum: open storage: %w", err)
	}
	if v, err := l.Get(confKey); err == nil {
		if err := proto.Unmarshal(v, s.mu.conf); err != nil {
			return nil, fmt.Errorf("%w: conf state: %v", ErrCorruptLog, err)
		}
	} else if !errors.Is(err, wal.ErrNotFound) {
		return nil, fmt.Errorf("quorum: open storage: %w", err)
	}
	if v, err := l.Get(appliedKey); err == nil {
		if len(v) != 8 {
			return nil, fmt.Errorf("%w: applied index of %d bytes", ErrCorruptLog, len(v))
		}
		s.mu.applied = binary.BigEndian.Uint64(v)
	} else if !errors.Is(err, wal.ErrNotFound) {
		return nil, fmt.Errorf("quorum: open storage: %w", err)
	}
	if v, err := l.Get(compactKey); err == nil {
		if len(v) != 16 {
			return nil, fmt.Errorf("%w: compaction mark of %d bytes", ErrCorruptLog, len(v))
		}
		s.mu.first = binary.BigEndian.Uint64(v) + 1
		s.mu.prevTerm = binary.BigEndian.Uint64(v[8:])
	} else if !errors.Is(err, wal.ErrNotFound) {
		return nil, fmt.Errorf("quorum: open storage: %w", err)
	}
	// The last index: the highest entry key. The log is contiguous from
	// first (Append and Compact keep it so), so counting from first finds
	// the end and proves there is no hole.
	s.mu.last = s.mu.first - 1
	err := l.Scan(entryKey(s.mu.first), entryKey(1<<64-1), func(k, v []byte) error {
		i, ok := parseEntryKey(k)
		if !ok || i != s.mu.last+1 {
			return fmt.Errorf("%w: entry key %x after index %d", ErrCorruptLog, k, s.mu.last)
		}
		s.mu.last = i
		return nil
	})
	if err != nil {
		return nil, err
	}
	if s.mu.applied > s.mu.last {
		return nil, fmt.Errorf("%w: applied index %d beyond the log's last %d", ErrCorruptLog, s.mu.applied, s.mu.last)
	}
	return s, nil
}

// InitialState implements raft.Storage.
func (s *Storage) InitialState() (*pb.HardState, *pb.ConfState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return proto.Clone(s.mu.hard).(*pb.HardState), proto.Clone(s.mu.conf).(*pb.ConfState), nil
}

// Applied is the index of the last entry applied to the state keys.
func (s *Storage) Applied() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.applied
}

// HardState is a copy of the last HardState appended.
func (s *Storage) HardState() *pb.HardState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return proto.Clone(s.mu.hard).(*pb.HardState)
}

// FirstIndex implements raft.Storage.
func (s *Storage) FirstIndex() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.first, nil
}

// LastIndex implements raft.Storage.
func (s *Storage) LastIndex() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.last, nil
}

// Term implements raft.Storage.
func (s *Storage) Term(i uint64) (uint64, error) {
	s.mu.Lock()
	first, last, prevTerm := s.mu.first, s.mu.last, s.mu.prevTerm
	s.mu.Unlock()
	switch {
	case i+1 < first:
		return 0, raft.ErrCompacted
	case i+1 == first:
		return prevTerm, nil
	case i > last:
		return 0, raft.ErrUnavailable
	}
	e, err := s.entry(i)
	if err != nil {
		return 0, err
	}
	return e.GetTerm(), nil
}

func (s *Storage) entry(i uint64) (*pb.Entry, error) {
	v, err := s.l.Get(entryKey(i))
	if errors.Is(err, wal.ErrNotFound) {
		return nil, raft.ErrUnavailable
	}
	if err != nil {
		return nil, fmt.Errorf("quorum: read entry %d: %w", i, err)
	}
	e := &pb.Entry{}
	if err := proto.Unmarshal(v, e); err != nil || e.GetIndex() != i {
		return nil, fmt.Errorf("%w: entry %d: %v", ErrCorruptLog, i, err)
	}
	return e, nil
}

// Entries implements raft.Storage: the entries [lo, hi), at least one,
// then as many as fit maxSize bytes (counted as raft counts them).
func (s *Storage) Entries(lo, hi, maxSize uint64) ([]*pb.Entry, error) {
	s.mu.Lock()
	first, last := s.mu.first, s.mu.last
	s.mu.Unlock()
	if lo < first {
		return nil, raft.ErrCompacted
	}
	if hi > last+1 {
		return nil, fmt.Errorf("quorum: entries [%d, %d) beyond the last index %d", lo, hi, last)
	}
	if lo >= hi {
		return nil, nil
	}
	var ents []*pb.Entry
	var size uint64
	errFull := errors.New("full")
	err := s.l.Scan(entryKey(lo), entryKey(hi), func(k, v []byte) error {
		e := &pb.Entry{}
		if err := proto.Unmarshal(v, e); err != nil {
			return fmt.Errorf("%w: entry key %x: %v", ErrCorruptLog, k, err)
		}
		if e.GetIndex() != lo+uint64(len(ents)) {
			return raft.ErrUnavailable
		}
		size += uint64(proto.Size(e))
		if len(ents) > 0 && size > maxSize {
			return errFull
		}
		ents = append(ents, e)
		return nil
	})
	if err != nil && !errors.Is(err, errFull) {
		return nil, err
	}
	if err == nil && uint64(len(ents)) != hi-lo {
		return nil, raft.ErrUnavailable
	}
	return ents, nil
}

// Snapshot implements raft.Storage. This slice sends no state snapshots
// (package doc, "Not yet"): while nothing is compacted, the "snapshot" is
// the empty one at index 0 with the membership; once the log is compacted a
// lagging follower would need the state itself, which is not built yet, so
// it is reported temporarily unavailable and raft retries.
func (s *Storage) Snapshot() (*pb.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mu.first > 1 {
		return nil, raft.ErrSnapshotTemporarilyUnavailable
	}
	return &pb.Snapshot{Metadata: &pb.SnapshotMetadata{
		ConfState: proto.Clone(s.mu.conf).(*pb.ConfState),
		Index:     new(uint64(0)),
		Term:      new(uint64(0)),
	}}, nil
}

// Append writes hs (if not nil) and ents (replacing every entry from
// ents[0]'s index on) as one batch, and returns once it is synced (with
// sync; without, once it is ordered in Pebble's WAL: raft's Ready.MustSync
// says when that is enough, e.g. a HardState whose commit index alone
// moved). This is the Ready loop's "persist before sending". Entries below
// FirstIndex are skipped. REQUIRES: ents are consecutive and start at most
// at LastIndex+1.
func (s *Storage) Append(ctx context.Context, hs *pb.HardState, ents []*pb.Entry, sync bool) error {
	s.mu.Lock()
	first, last := s.mu.first, s.mu.last
	s.mu.Unlock()
	if len(ents) > 0 && ents[0].GetIndex()+uint64(len(ents))-1 < first {
		ents = nil // all compacted
	}
	if len(ents) > 0 && ents[0].GetIndex() < first {
		ents = ents[first-ents[0].GetIndex():]
	}
	if len(ents) > 0 && ents[0].GetIndex() > last+1 {
		return fmt.Errorf("quorum: append at index %d leaves a hole after the last index %d", ents[0].GetIndex(), last)
	}
	if hs == nil && len(ents) == 0 {
		return nil
	}
	txn := &wal.Txn{NoSync: !sync}
	newLast := last
	if len(ents) > 0 {
		at := ents[0].GetIndex()
		if at <= last {
			// A new leader's entries replace our conflicting tail.
			txn.DeleteRange(entryKey(at), entryKey(last+1))
		}
		for i, e := range ents {
			if e.GetIndex() != at+uint64(i) {
				return fmt.Errorf("quorum: append: entry %d after %d", e.GetIndex(), at+uint64(i)-1)
			}
			v, err := proto.Marshal(e)
			if err != nil {
				return fmt.Errorf("quorum: append: %w", err)
			}
			txn.Set(entryKey(e.GetIndex()), v)
		}
		newLast = ents[len(ents)-1].GetIndex()
	}
	if hs != nil {
		v, err := proto.Marshal(hs)
		if err != nil {
			return fmt.Errorf("quorum: append: %w", err)
		}
		txn.Set(hardKey, v)
	}
	if err := wal.Commit(ctx, s.l, txn); err != nil {
		return fmt.Errorf("quorum: append: %w", err)
	}
	s.mu.Lock()
	s.mu.last = newLast
	if hs != nil {
		s.mu.hard = proto.Clone(hs).(*pb.HardState)
	}
	s.mu.Unlock()
	return nil
}

// Compact drops the entries up to and including i, keeping i's term for
// matching. REQUIRES: i is applied. Not synced: the next synced batch
// carries it, and Pebble keeps batches in order, so a crash never keeps
// the compaction without the applies it follows.
func (s *Storage) Compact(ctx context.Context, i uint64) error {
	s.mu.Lock()
	first, last, applied := s.mu.first, s.mu.last, s.mu.applied
	s.mu.Unlock()
	if i < first {
		return raft.ErrCompacted
	}
	if i > last || i > applied {
		return fmt.Errorf("quorum: compact %d beyond the last index %d or the applied %d", i, last, applied)
	}
	term, err := s.Term(i)
	if err != nil {
		return err
	}
	txn := &wal.Txn{NoSync: true}
	txn.Set(compactKey, u64pair(i, term))
	txn.DeleteRange(entryKey(first), entryKey(i+1))
	if err := wal.Commit(ctx, s.l, txn); err != nil {
		return fmt.Errorf("quorum: compact: %w", err)
	}
	s.mu.Lock()
	s.mu.first, s.mu.prevTerm = i+1, term
	s.mu.Unlock()
	return nil
}

// recordApplied adds to txn the writes that record entry index applied and,
// if cs is not nil, the membership it left. The caller commits txn with
// the entries' state writes (one batch), then calls appliedDone.
func recordApplied(txn *wal.Txn, index uint64, cs *pb.ConfState) error {
	txn.Set(appliedKey, u64(index))
	if cs != nil {
		v, err := proto.Marshal(cs)
		if err != nil {
			return fmt.Errorf("quorum: apply: %w", err)
		}
		txn.Set(confKey, v)
	}
	return nil
}

// appliedDone updates the memory after recordApplied's batch committed.
func (s *Storage) appliedDone(index uint64, cs *pb.ConfState) {
	s.mu.Lock()
	s.mu.applied = index
	if cs != nil {
		s.mu.conf = proto.Clone(cs).(*pb.ConfState)
	}
	s.mu.Unlock()
}

var _ raft.Storage = (*Storage)(nil)
