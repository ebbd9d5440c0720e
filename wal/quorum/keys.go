package quorum

import (
	"encoding/binary"

	"github.com/keelmq/keel/wal"
)

// The keys under wal.QuorumPrefix ('q'), drawn in the package doc ("Keys").
// Part of the on-disk format.
const (
	kindApplied  = 'a'
	kindConf     = 'c'
	kindEntry    = 'e'
	kindHard     = 'h'
	kindNodeID   = 'n'
	kindCompact  = 't'
	quorumPrefix = 'q'
)

var (
	appliedKey = []byte{quorumPrefix, kindApplied}
	confKey    = []byte{quorumPrefix, kindConf}
	hardKey    = []byte{quorumPrefix, kindHard}
	nodeIDKey  = []byte{quorumPrefix, kindNodeID}
	compactKey = []byte{quorumPrefix, kindCompact}
)

func init() {
	// The prefix is wal's to hand out; keep the two in step.
	if p := wal.QuorumPrefix(); len(p) != 1 || p[0] != quorumPrefix {
		panic("quorum: wal.QuorumPrefix changed")
	}
}

// entryKey is the key of the Raft log entry at index i.
func entryKey(i uint64) []byte {
	k := make([]byte, 10)
	k[0], k[1] = quorumPrefix, kindEntry
	binary.BigEndian.PutUint64(k[2:], i)
	return k
}

func parseEntryKey(k []byte) (uint64, bool) {
	if len(k) != 10 || k[0] != quorumPrefix || k[1] != kindEntry {
		return 0, false
	}
	return binary.BigEndian.Uint64(k[2:]), true
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func u64pair(a, b uint64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, a), b)
}
