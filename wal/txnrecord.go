package wal

import (
	"encoding/binary"
	"fmt"
)

// The Txn record: a Txn's ops as bytes, for a store that ships Txns
// elsewhere before applying them (wal/quorum carries them in Raft
// entries). Part of the on-disk format (doc.go, "Txn record"): a Raft log
// holds these bytes.
const (
	txnOpSet         = 1
	txnOpDelete      = 2
	txnOpDeleteRange = 3
)

// AppendTxn appends t's ops, in order, to dst as a Txn record. Done and
// NoSync are not part of it.
func AppendTxn(dst []byte, t *Txn) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(t.ops)))
	for i := range t.ops {
		o := &t.ops[i]
		switch o.kind {
		case opSet:
			dst = append(dst, txnOpSet)
			dst = appendBytes(appendBytes(dst, o.key), o.value)
		case opDelete:
			dst = append(dst, txnOpDelete)
			dst = appendBytes(dst, o.key)
		case opDeleteRange:
			dst = append(dst, txnOpDeleteRange)
			dst = appendBytes(appendBytes(dst, o.key), o.value)
		}
	}
	return dst
}

// DecodeTxn appends the ops of the Txn record at the start of src to t and
// returns what follows the record. The ops alias src: src must not change
// while t is in use. A malformed record returns an error wrapping
// ErrCorruptRecord and leaves t as it was.
func DecodeTxn(src []byte, t *Txn) (rest []byte, err error) {
	n, k := binary.Uvarint(src)
	if k <= 0 {
		return nil, fmt.Errorf("%w: txn: op count", ErrCorruptRecord)
	}
	src = src[k:]
	if n > uint64(len(src)) { // every op takes at least one byte
		return nil, fmt.Errorf("%w: txn: %d ops in %d bytes", ErrCorruptRecord, n, len(src))
	}
	mark := len(t.ops)
	fail := func(what string) ([]byte, error) {
		t.ops = t.ops[:mark]
		return nil, fmt.Errorf("%w: txn: %s", ErrCorruptRecord, what)
	}
	for range n {
		if len(src) == 0 {
			return fail("truncated op")
		}
		kind := src[0]
		src = src[1:]
		var key, value []byte
		var ok bool
		if key, src, ok = takeBytes(src); !ok {
			return fail("truncated key")
		}
		switch kind {
		case txnOpSet, txnOpDeleteRange:
			if value, src, ok = takeBytes(src); !ok {
				return fail("truncated value")
			}
			if kind == txnOpSet {
				t.Set(key, value)
			} else {
				t.DeleteRange(key, value)
			}
		case txnOpDelete:
			t.Delete(key)
		default:
			return fail(fmt.Sprintf("unknown op kind %d", kind))
		}
	}
	return src, nil
}

// TxnOp is one op of a Txn, as Txn.Ops shows it.
type TxnOp struct {
	// Kind is 'S' (Set key = Value), 'D' (Delete key) or 'R'
	// (DeleteRange [Key, Value)).
	Kind       byte
	Key, Value []byte
}

// Ops calls fn for each op of t in order. The slices are t's: do not
// modify them.
func (t *Txn) Ops(fn func(op TxnOp)) {
	for i := range t.ops {
		o := &t.ops[i]
		switch o.kind {
		case opSet:
			fn(TxnOp{Kind: 'S', Key: o.key, Value: o.value})
		case opDelete:
			fn(TxnOp{Kind: 'D', Key: o.key})
		case opDeleteRange:
			fn(TxnOp{Kind: 'R', Key: o.key, Value: o.value})
		}
	}
}

func takeBytes(src []byte) (b, rest []byte, ok bool) {
	n, k := binary.Uvarint(src)
	if k <= 0 || n > uint64(len(src)-k) {
		return nil, nil, false
	}
	return src[k : k+int(n) : k+int(n)], src[k+int(n):], true
}
