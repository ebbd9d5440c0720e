package quorum

import (
	"encoding/binary"
	"fmt"

	"github.com/keelmq/keel/wal"
)

// A proposal is the entry payload of a batch of Txns (package doc,
// "Entries"): part of the on-disk format, since the Raft log holds it.
const proposalVersion = 1

// proposal is one batch of Txns proposed by this node, waiting to be
// applied. Owned by the node's goroutine.
type proposal struct {
	seq   uint64 // carried in the entry with the node's incarnation
	term  uint64 // the term it was proposed in
	index uint64 // its entry's, once applied
	txns  []*wal.Txn
	// last is the overlay sequence number of the batch's last op.
	last uint64
}

func appendProposalHeader(dst []byte, incarnation, seq uint64, n int) []byte {
	dst = append(dst, proposalVersion)
	dst = binary.BigEndian.AppendUint64(dst, incarnation)
	dst = binary.AppendUvarint(dst, seq)
	return binary.AppendUvarint(dst, uint64(n))
}

// decodeProposal reads an entry's payload: who proposed it, and its Txns'
// ops appended, in order, to into.
func decodeProposal(data []byte, into *wal.Txn) (incarnation, seq uint64, err error) {
	if len(data) < 9 || data[0] != proposalVersion {
		return 0, 0, fmt.Errorf("%w: proposal header", ErrCorruptLog)
	}
	incarnation = binary.BigEndian.Uint64(data[1:9])
	data = data[9:]
	seq, k := binary.Uvarint(data)
	if k <= 0 {
		return 0, 0, fmt.Errorf("%w: proposal seq", ErrCorruptLog)
	}
	data = data[k:]
	n, k := binary.Uvarint(data)
	if k <= 0 || n > uint64(len(data)) {
		return 0, 0, fmt.Errorf("%w: proposal count", ErrCorruptLog)
	}
	data = data[k:]
	for range n {
		if data, err = wal.DecodeTxn(data, into); err != nil {
			return 0, 0, fmt.Errorf("%w: proposal: %v", ErrCorruptLog, err)
		}
	}
	if len(data) != 0 {
		return 0, 0, fmt.Errorf("%w: proposal: %d trailing bytes", ErrCorruptLog, len(data))
	}
	return incarnation, seq, nil
}
