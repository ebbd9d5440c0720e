package main

import "math/bits"

// bitmap is a growable set of message sequence numbers. Growth doubles the
// backing slice, so recording a run of n messages costs O(log n) allocations.
type bitmap struct {
	w []uint64
}

// set adds seq and reports whether it was already present.
func (b *bitmap) set(seq uint32) (was bool) {
	i := int(seq >> 6)
	if i >= len(b.w) {
		n := max(2*len(b.w), i+1, 64)
		w := make([]uint64, n)
		copy(w, b.w)
		b.w = w
	}
	m := uint64(1) << (seq & 63)
	was = b.w[i]&m != 0
	b.w[i] |= m
	return was
}

func (b *bitmap) count() int64 {
	var n int
	for _, w := range b.w {
		n += bits.OnesCount64(w)
	}
	return int64(n)
}

// missing counts the members of want that b lacks.
func (b *bitmap) missing(want *bitmap) int64 {
	var n int
	for i, w := range want.w {
		var have uint64
		if i < len(b.w) {
			have = b.w[i]
		}
		n += bits.OnesCount64(w &^ have)
	}
	return int64(n)
}
