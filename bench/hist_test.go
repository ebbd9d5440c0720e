package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestHistQuantiles(t *testing.T) {
	var h hist
	var vals []int64
	r := rand.New(rand.NewPCG(1, 2))
	for range 100_000 {
		v := int64(math.Exp(r.NormFloat64()*2 + 10)) // log-normal, ~20µs
		vals = append(vals, v)
		h.record(v)
	}
	slices.Sort(vals)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := float64(vals[int(q*float64(len(vals)))-1])
		got := h.quantile(q)
		if math.Abs(got-want)/want > 0.02 {
			t.Errorf("quantile(%v) = %.0f, want %.0f within 2%%", q, got, want)
		}
	}
	if got, want := h.max, vals[len(vals)-1]; got != want {
		t.Errorf("max = %d, want %d", got, want)
	}
}

func TestHistBucketsContiguous(t *testing.T) {
	prev := -1
	for v := int64(0); v < 1<<20; v++ {
		b := bucketOf(v)
		if b != prev && b != prev+1 {
			t.Fatalf("bucketOf(%d) = %d after %d: buckets must be contiguous", v, b, prev)
		}
		if lo := bucketMid(b); math.Abs(lo-float64(v)) > float64(v)/subCount+1 {
			t.Fatalf("bucketMid(bucketOf(%d)) = %.1f: too far", v, lo)
		}
		prev = b
	}
	if got := bucketOf(math.MaxInt64); got != histBuckets-1 {
		t.Errorf("bucketOf(MaxInt64) = %d, want %d", got, histBuckets-1)
	}
}

func TestBitmap(t *testing.T) {
	var have, want bitmap
	for _, s := range []uint32{0, 1, 63, 64, 1000, 100_000} {
		want.set(s)
		if s != 1000 {
			have.set(s)
		}
	}
	if !have.set(64) {
		t.Error("set(64) twice: want reported as present")
	}
	if got := want.count(); got != 6 {
		t.Errorf("count = %d, want 6", got)
	}
	if got := have.missing(&want); got != 1 {
		t.Errorf("missing = %d, want 1", got)
	}
}
