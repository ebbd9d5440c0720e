package quorum

import (
	"context"
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/keelmq/keel/wal"
)

// BenchmarkCommit: Txns of two 100-byte keys committed with inflight
// Txns in flight, through a three-node Store (in-process network, each
// node's Pebble in its own directory on the real disk) beside a single
// wal.Log on the same disk. Compare with benchstat.
func BenchmarkCommit(b *testing.B) {
	for _, inflight := range []int{1, 64} {
		b.Run(fmt.Sprintf("store=log/inflight=%d", inflight), func(b *testing.B) {
			l, err := wal.Open(wal.Options{Dir: b.TempDir(), Logger: quiet})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			benchCommit(b, l, inflight)
		})
		b.Run(fmt.Sprintf("store=quorum3/inflight=%d", inflight), func(b *testing.B) {
			net := NewNetwork(1)
			defer net.Close()
			ids := []uint64{1, 2, 3}
			var nodes []*Node
			for _, id := range ids {
				n, err := Start(Config{ID: id, Peers: ids, Dir: b.TempDir(), FS: vfs.Default, Logger: quiet,
					Transport: net.Endpoint(id)})
				if err != nil {
					b.Fatal(err)
				}
				defer n.Close()
				nodes = append(nodes, n)
			}
			nodes[0].Campaign()
			s, err := nodes[0].Leader(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			benchCommit(b, s, inflight)
		})
	}
}

func benchCommit(b *testing.B, s wal.Store, inflight int) {
	b.ReportAllocs()
	val := make([]byte, 100)
	slots := make(chan struct{}, inflight)
	var failed error
	i := 0
	for b.Loop() {
		slots <- struct{}{}
		t := &wal.Txn{}
		t.Set(fmt.Appendf(nil, "k%09d/a", i), val)
		t.Set(fmt.Appendf(nil, "k%09d/b", i), val)
		i++
		t.Done = func(err error) {
			if err != nil && failed == nil {
				failed = err // Dones run on one goroutine
			}
			<-slots
		}
		s.Submit(t)
	}
	for range inflight {
		slots <- struct{}{}
	}
	if failed != nil {
		b.Fatal(failed)
	}
}
