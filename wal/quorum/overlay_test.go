package quorum

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/keelmq/keel/wal"
)

// TestOverlayMatchesPebble: applied Txns in one Pebble plus the rest in
// the overlay read exactly as all of them applied to another Pebble, for
// random Sets, Deletes and DeleteRanges, whatever prefix is applied.
func TestOverlayMatchesPebble(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	key := func() []byte { return fmt.Appendf(nil, "k%02d", rng.IntN(40)) }
	for round := range 30 {
		base := openLog(t, vfs.NewMem()) // what is applied
		ref := openLog(t, vfs.NewMem())  // everything
		var ov overlay
		var pending []struct {
			t    *wal.Txn
			last uint64
		}
		ctx := context.Background()
		for range 30 {
			txn := &wal.Txn{}
			for range 1 + rng.IntN(4) {
				switch rng.IntN(4) {
				case 0, 1:
					txn.Set(key(), fmt.Appendf(nil, "v%d", rng.IntN(1000)))
				case 2:
					txn.Delete(key())
				case 3:
					lo, hi := key(), key()
					if string(lo) > string(hi) {
						lo, hi = hi, lo
					}
					txn.DeleteRange(lo, hi)
				}
			}
			refTxn := &wal.Txn{}
			var rec []byte
			rec = wal.AppendTxn(rec, txn)
			if _, err := wal.DecodeTxn(rec, refTxn); err != nil {
				t.Fatal(err)
			}
			if err := wal.Commit(ctx, ref, refTxn); err != nil {
				t.Fatal(err)
			}
			pending = append(pending, struct {
				t    *wal.Txn
				last uint64
			}{txn, ov.add(txn)})
			// Apply a random prefix of what is pending.
			if k := rng.IntN(len(pending) + 1); k > 0 && rng.IntN(3) == 0 {
				batch := &wal.Txn{}
				for _, p := range pending[:k] {
					rec := wal.AppendTxn(nil, p.t)
					if _, err := wal.DecodeTxn(rec, batch); err != nil {
						t.Fatal(err)
					}
				}
				if err := wal.Commit(ctx, base, batch); err != nil {
					t.Fatal(err)
				}
				ov.mu.Lock()
				ov.trimLocked(pending[k-1].last)
				ov.mu.Unlock()
				pending = pending[k:]
			}
			// Compare.
			ov.mu.Lock()
			v := ov.viewLocked()
			ov.mu.Unlock()
			for i := range 40 {
				k := fmt.Appendf(nil, "k%02d", i)
				got, gerr := v.get(base, k)
				want, werr := ref.Get(k)
				if !errors.Is(gerr, werr) && !(gerr == nil && werr == nil) || string(got) != string(want) {
					t.Fatalf("round %d: Get(%s) = %q, %v; want %q, %v", round, k, got, gerr, want, werr)
				}
			}
			lo, hi := key(), key()
			if string(lo) > string(hi) {
				lo, hi = hi, lo
			}
			var got, want []string
			collect := func(out *[]string) func(k, v []byte) error {
				return func(k, v []byte) error { *out = append(*out, string(k)+"="+string(v)); return nil }
			}
			if err := v.scan(base, lo, hi, collect(&got)); err != nil {
				t.Fatal(err)
			}
			if err := ref.Scan(lo, hi, collect(&want)); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("round %d: Scan(%s, %s) = %v, want %v", round, lo, hi, got, want)
			}
		}
		base.Close()
		ref.Close()
	}
}
