package main

import "math/bits"

// hist is a log-linear latency histogram over non-negative nanoseconds.
//
// Values below 2^subBits are counted exactly; above, every power of two is
// split into 2^subBits equal buckets, so a reported quantile is within
// 1/2^subBits (1.6%) of the true value. Recording is a few instructions and
// never allocates; each goroutine owns its histograms and they are merged
// once the run is over.
type hist struct {
	counts [histBuckets]uint64
	n      uint64
	sum    float64 // ns
	max    int64
}

const (
	subBits     = 6
	subCount    = 1 << subBits
	histShifts  = 42 // values up to 2^48 ns (about 78 hours)
	histBuckets = (histShifts + 1) * subCount
)

func bucketOf(v int64) int {
	if v < 0 {
		v = 0
	}
	u := uint64(v)
	if u < subCount {
		return int(u)
	}
	shift := bits.Len64(u) - subBits - 1 // u>>shift is in [subCount, 2*subCount)
	if shift >= histShifts {
		return histBuckets - 1
	}
	return (shift+1)*subCount + int(u>>uint(shift)) - subCount
}

// bucketMid is the midpoint of bucket i's range, in ns.
func bucketMid(i int) float64 {
	if i < subCount {
		return float64(i)
	}
	shift := i/subCount - 1
	lo := uint64(subCount+i%subCount) << uint(shift)
	width := uint64(1) << uint(shift)
	return float64(lo) + float64(width-1)/2
}

func (h *hist) record(v int64) {
	h.counts[bucketOf(v)]++
	h.n++
	h.sum += float64(v)
	if v > h.max {
		h.max = v
	}
}

func (h *hist) merge(o *hist) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	if o.max > h.max {
		h.max = o.max
	}
}

// quantile returns the q-quantile (0 < q <= 1) in ns, or 0 when empty.
func (h *hist) quantile(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	if rank < 1 {
		rank = 1
	}
	if rank > h.n {
		rank = h.n
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			m := bucketMid(i)
			if m > float64(h.max) {
				m = float64(h.max)
			}
			return m
		}
	}
	return float64(h.max)
}

func (h *hist) mean() float64 {
	if h.n == 0 {
		return 0
	}
	return h.sum / float64(h.n)
}
