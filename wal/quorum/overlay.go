package quorum

import (
	"bytes"
	"slices"
	"sync"

	"github.com/keelmq/keel/wal"
)

// overlay holds the writes of a leader's Txns that are submitted and not
// yet applied, so that a read sees every Txn submitted before it (the
// Store contract) while Pebble holds only what is applied (package doc,
// "Reads"). Every op gets a sequence number; a key's latest op and every
// range deletion are kept until the Txn that wrote them is applied.
type overlay struct {
	mu     sync.Mutex
	seq    uint64             // the last op's
	points map[string]ovPoint // a key's latest Set or Delete
	ranges []ovRange          // DeleteRanges, in seq order
	fifo   []ovOp             // points' ops in seq order, for trimming
}

type ovPoint struct {
	seq   uint64
	del   bool
	value []byte
}

type ovRange struct {
	seq    uint64
	lo, hi []byte
}

type ovOp struct {
	seq uint64
	key string
}

// add records t's ops and returns the sequence number of its last op
// (that of the op before it for an empty Txn).
func (o *overlay) add(t *wal.Txn) uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.points == nil {
		o.points = map[string]ovPoint{}
	}
	t.Ops(func(op wal.TxnOp) {
		o.seq++
		switch op.Kind {
		case 'S':
			o.points[string(op.Key)] = ovPoint{seq: o.seq, value: op.Value}
			o.fifo = append(o.fifo, ovOp{o.seq, string(op.Key)})
		case 'D':
			o.points[string(op.Key)] = ovPoint{seq: o.seq, del: true}
			o.fifo = append(o.fifo, ovOp{o.seq, string(op.Key)})
		case 'R':
			o.ranges = append(o.ranges, ovRange{seq: o.seq, lo: op.Key, hi: op.Value})
		}
	})
	return o.seq
}

// trimLocked forgets every op up to seq: Pebble has applied them.
// REQUIRES: o.mu held, and Pebble holds every Txn up to seq.
func (o *overlay) trimLocked(seq uint64) {
	i := 0
	for ; i < len(o.fifo) && o.fifo[i].seq <= seq; i++ {
		if p, ok := o.points[o.fifo[i].key]; ok && p.seq <= seq {
			delete(o.points, o.fifo[i].key)
		}
	}
	o.fifo = slices.Delete(o.fifo, 0, i)
	j := 0
	for j < len(o.ranges) && o.ranges[j].seq <= seq {
		j++
	}
	o.ranges = slices.Delete(o.ranges, 0, j)
}

// clear forgets everything (the Store failed: reads serve what is
// applied, never a write whose fate is unknown).
func (o *overlay) clear() {
	o.mu.Lock()
	o.points, o.ranges, o.fifo = nil, nil, nil
	o.mu.Unlock()
}

// lookupLocked is ovView.lookup on the live overlay. REQUIRES: o.mu held.
func (o *overlay) lookupLocked(k []byte) (ovPoint, bool) {
	v := ovView{points: o.points, ranges: o.ranges}
	return v.lookup(k)
}

// viewLocked copies the overlay (for a Snapshot: O(pending writes)).
// REQUIRES: o.mu held.
func (o *overlay) viewLocked() *ovView {
	v := &ovView{ranges: slices.Clone(o.ranges), points: make(map[string]ovPoint, len(o.points))}
	for k, p := range o.points {
		v.points[k] = p
	}
	return v
}

// ovView is a frozen copy of (part of) the overlay.
type ovView struct {
	points map[string]ovPoint
	ranges []ovRange
}

// covered is the seq of the latest range deletion covering k, or 0.
func (v *ovView) covered(k []byte) (seq uint64) {
	for _, r := range v.ranges {
		if r.seq > seq && bytes.Compare(r.lo, k) <= 0 && bytes.Compare(k, r.hi) < 0 {
			seq = r.seq
		}
	}
	return seq
}

// lookup says what the overlay knows of k: decided is false when Pebble's
// value stands.
func (v *ovView) lookup(k []byte) (p ovPoint, decided bool) {
	p, ok := v.points[string(k)]
	c := v.covered(k)
	if ok && p.seq > c {
		return p, true
	}
	if c > 0 {
		return ovPoint{seq: c, del: true}, true
	}
	return ovPoint{}, false
}

func (v *ovView) get(r wal.Reader, key []byte) ([]byte, error) {
	if p, ok := v.lookup(key); ok {
		if p.del {
			return nil, wal.ErrNotFound
		}
		return bytes.Clone(p.value), nil
	}
	return r.Get(key)
}

// scan merges the overlay over r's scan of [lo, hi).
func (v *ovView) scan(r wal.Reader, lo, hi []byte, fn func(k, v []byte) error) error {
	keys := make([]string, 0, len(v.points))
	for k := range v.points {
		if k >= string(lo) && (hi == nil || k < string(hi)) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	i := 0
	emit := func(k string) error {
		if p, ok := v.lookup([]byte(k)); ok && !p.del {
			return fn([]byte(k), p.value)
		}
		return nil
	}
	err := r.Scan(lo, hi, func(k, val []byte) error {
		for i < len(keys) && keys[i] < string(k) {
			if err := emit(keys[i]); err != nil {
				return err
			}
			i++
		}
		if i < len(keys) && keys[i] == string(k) {
			i++
			return emit(string(k))
		}
		if v.covered(k) > 0 {
			return nil
		}
		return fn(k, val)
	})
	if err != nil {
		return err
	}
	for ; i < len(keys); i++ {
		if err := emit(keys[i]); err != nil {
			return err
		}
	}
	return nil
}
