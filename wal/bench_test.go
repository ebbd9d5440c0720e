package wal

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// BenchmarkCommit measures the commit path on a real directory: N
// submitters each commit one Txn at a time (a QoS 1 PUBLISH: the message and
// one queue entry, 256-byte payload) and wait for it, as N connections each
// waiting for a PUBACK would. Reported: syncs/s, recs/sync and txns/sync.
//
//	go test -run '^$' -bench BenchmarkCommit -count 5 ./wal
func BenchmarkCommit(b *testing.B) {
	for _, n := range []int{1, 16, 64, 256} {
		b.Run(fmt.Sprintf("submitters=%d", n), func(b *testing.B) {
			l := openTest(b, Options{Dir: filepath.Join(b.TempDir(), "data"), Logger: quiet})
			defer l.Close()
			msg := Message{Topic: "meter/0042/reading", Payload: make([]byte, 256), QoS: 1}
			val := AppendMessage(nil, &msg, l.CompressThreshold())
			entry := AppendEntry(nil, &Entry{QoS: 1, Shared: 1}, -1)

			var next atomic.Int64
			before := l.Stats()
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for g := range n {
				wg.Go(func() {
					ctx := context.Background()
					var txn Txn
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						txn.Reset()
						txn.Set(MessageKey(uint64(i)), val)
						txn.Set(QueueKey(fmt.Sprint("c", g), uint64(i)), entry)
						if err := l.Commit(ctx, &txn); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			s := l.Stats()
			syncs := float64(s.Syncs - before.Syncs)
			b.ReportMetric(syncs/elapsed.Seconds(), "syncs/s")
			b.ReportMetric(float64(s.Records-before.Records)/syncs, "recs/sync")
			b.ReportMetric(float64(s.Commits-before.Commits)/syncs, "txns/sync")
		})
	}
}

// BenchmarkFsync is the disk's raw cost of one small write + fdatasync, the
// floor under every synced commit.
func BenchmarkFsync(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "f"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 512)
	for b.Loop() {
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSubmit measures the hot path alone: one goroutine submits
// pre-built Txns, keeping up to 1024 in flight, on an in-memory filesystem
// (no fsync cost). allocs/op is the committer's allocation per Txn; it
// should be zero.
func BenchmarkSubmit(b *testing.B) {
	l := openTest(b, Options{Dir: "data", FS: vfs.NewMem(), Logger: quiet})
	defer l.Close()
	const window = 1024
	sem := make(chan struct{}, window)
	txns := make([]Txn, window)
	val := make([]byte, 256)
	for i := range txns {
		txns[i].Set(MessageKey(uint64(i)), val)
		txns[i].Done = func(err error) {
			if err != nil {
				b.Error(err)
			}
			<-sem
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		sem <- struct{}{}
		l.Submit(&txns[i%window])
		i++
	}
	for range window {
		sem <- struct{}{}
	}
}
