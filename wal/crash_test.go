package wal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// workload commits Txns of three keys each (an atomic unit) from several
// goroutines and tracks which were acknowledged.
type workload struct {
	mu    sync.Mutex
	acked map[int]bool // Txn id -> Done(nil) seen
	seen  map[int]bool // Txn id -> Done seen (nil or error)
	// firstErr is the Done order position of the first failure; every later
	// Done must be a failure too.
	doneSeq  int
	firstErr int
	badOrder string
	next     atomic.Int64
}

func newWorkload() *workload {
	return &workload{acked: map[int]bool{}, seen: map[int]bool{}, firstErr: -1}
}

func txnKeys(id int) [3][]byte {
	return [3][]byte{
		fmt.Appendf(nil, "t%07d/a", id),
		fmt.Appendf(nil, "t%07d/b", id),
		fmt.Appendf(nil, "t%07d/c", id),
	}
}

// submit queues one Txn with a payload of size bytes per key; its Done
// receives from inflight.
func (w *workload) submit(l *Log, size int, inflight chan struct{}) {
	id := int(w.next.Add(1))
	txn := &Txn{}
	val := bytes.Repeat(fmt.Appendf(nil, "%07d", id), size/7+1)[:size]
	for _, k := range txnKeys(id) {
		txn.Set(k, val)
	}
	txn.Done = func(err error) {
		<-inflight
		w.mu.Lock()
		defer w.mu.Unlock()
		w.seen[id] = true
		if err == nil {
			w.acked[id] = true
			if w.firstErr >= 0 && w.badOrder == "" {
				w.badOrder = fmt.Sprintf("Done(nil) for txn %d after a failure", id)
			}
		} else if w.firstErr < 0 {
			w.firstErr = w.doneSeq
		}
		w.doneSeq++
	}
	l.Submit(txn)
}

func (w *workload) ackedCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// run keeps n goroutines submitting, each with up to 4 Txns in flight,
// until stop is closed.
func (w *workload) run(l *Log, n, size int, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			inflight := make(chan struct{}, 4)
			for {
				select {
				case <-stop:
					return
				case inflight <- struct{}{}:
				}
				w.submit(l, size, inflight)
			}
		})
	}
	return &wg
}

func (w *workload) snapshotAcked() map[int]bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := make(map[int]bool, len(w.acked))
	for id := range w.acked {
		m[id] = true
	}
	return m
}

// check reopens fs and asserts: every id in acked is fully present; no Txn
// up to maxID is partly present.
func check(t *testing.T, fs vfs.FS, acked map[int]bool, maxID int) (present int) {
	t.Helper()
	l := openTest(t, testOptions(fs))
	defer l.Close()
	got := map[int]int{} // txn id -> keys present
	err := l.Scan([]byte("t"), []byte("u"), func(k, v []byte) error {
		var id int
		if _, err := fmt.Sscanf(string(k), "t%07d/", &id); err != nil {
			return err
		}
		if want := fmt.Appendf(nil, "%07d", id); !bytes.HasPrefix(v, want) {
			return fmt.Errorf("txn %d: key %s holds %q", id, k, v[:min(len(v), 16)])
		}
		got[id]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for id := 1; id <= maxID; id++ {
		n := got[id]
		if n != 0 && n != 3 {
			t.Fatalf("txn %d is half applied: %d of 3 keys", id, n)
		}
		if acked[id] && n != 3 {
			t.Fatalf("txn %d was acknowledged but is missing after the crash", id)
		}
		if n == 3 {
			present++
		}
	}
	return present
}

// TestPowerLoss crashes the filesystem (keeping only synced data, or synced
// data plus a random half of the rest) while Txns are being committed, and
// checks the reopened store: everything acknowledged is there, nothing is
// half applied.
func TestPowerLoss(t *testing.T) {
	for _, c := range []struct {
		name     string
		unsynced int
		seed     uint64
	}{
		{"synced only", 0, 0},
		{"half of unsynced seed 1", 50, 1},
		{"half of unsynced seed 2", 50, 2},
		{"all unsynced", 100, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			fs := vfs.NewCrashableMem()
			l := openTest(t, testOptions(fs))
			w := newWorkload()
			stop := make(chan struct{})
			// Payloads of 1 KiB with a 1 MiB memtable: flushes and
			// compactions run while we crash.
			wg := w.run(l, 8, 1024, stop)
			for w.ackedCount() < 1000 {
				time.Sleep(time.Millisecond)
			}
			acked := w.snapshotAcked() // acks seen before the crash
			cfg := vfs.CrashCloneCfg{UnsyncedDataPercent: c.unsynced}
			if c.unsynced > 0 {
				cfg.RNG = rand.New(rand.NewPCG(c.seed, c.seed))
			}
			crashed := fs.CrashClone(cfg)
			maxID := int(w.next.Load())
			close(stop)
			wg.Wait()
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			present := check(t, crashed, acked, maxID)
			t.Logf("%d acked before the crash, %d of %d submitted present after it", len(acked), present, maxID)
		})
	}
}

// eio injects EIO into writes or syncs of WAL files while on.
func eio(kinds ...errorfs.OpKind) *errorfs.Toggle {
	return &errorfs.Toggle{Injector: errorfs.InjectorFunc(func(op errorfs.Op) error {
		if !strings.HasSuffix(op.Path, ".log") {
			return nil
		}
		for _, k := range kinds {
			if op.Kind == k {
				return syscall.EIO
			}
		}
		return nil
	})}
}

// TestWALErrors injects EIO into WAL writes or syncs under concurrent
// submitters: the failing batch's Txns get Done(err), nothing after the
// first failure gets Done(nil), Err() turns sticky, later Submits fail
// promptly, Close returns, and after a crash everything acknowledged is on
// disk.
func TestWALErrors(t *testing.T) {
	for _, c := range []struct {
		name  string
		kinds []errorfs.OpKind
	}{
		{"sync", []errorfs.OpKind{errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo}},
		{"write", []errorfs.OpKind{errorfs.OpFileWrite, errorfs.OpFileWriteAt}},
	} {
		t.Run(c.name, func(t *testing.T) {
			mem := vfs.NewCrashableMem()
			inj := eio(c.kinds...)
			// Keep the memtable far below Pebble's first memtable size (256
			// KiB) so Pebble never rotates the WAL here: a WAL error that
			// surfaces during a rotation crashes the process (see doc.go),
			// which a test cannot observe.
			opts := testOptions(errorfs.Wrap(mem, inj))
			opts.Pebble = nil
			l := openTest(t, opts)
			w := newWorkload()
			stop := make(chan struct{})
			wg := w.run(l, 8, 10, stop)
			for w.ackedCount() < 100 {
				time.Sleep(time.Millisecond)
			}
			inj.On()
			deadline := time.Now().Add(10 * time.Second)
			for l.Err() == nil {
				if time.Now().After(deadline) {
					t.Fatal("no sticky error after injecting EIO")
				}
				time.Sleep(time.Millisecond)
			}
			close(stop)
			wg.Wait()
			if !errors.Is(l.Err(), syscall.EIO) && !strings.Contains(l.Err().Error(), "input/output error") {
				t.Errorf("Err() = %v, want EIO", l.Err())
			}

			// A Submit now gets Done(Err()) promptly.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			var txn Txn
			txn.Set([]byte("late"), []byte("x"))
			if err := l.Commit(ctx, &txn); err == nil || errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Commit after failure = %v, want the sticky error", err)
			}
			cancel()

			closed := make(chan error, 1)
			go func() { closed <- l.Close() }()
			select {
			case err := <-closed:
				t.Logf("Close: %v", err)
			case <-time.After(10 * time.Second):
				t.Fatal("Close hangs after a WAL error")
			}

			w.mu.Lock()
			defer w.mu.Unlock()
			if w.badOrder != "" {
				t.Error(w.badOrder)
			}
			if w.firstErr < 0 {
				t.Fatal("no Txn saw the error")
			}
			maxID := int(w.next.Load())
			if len(w.seen) != maxID {
				t.Errorf("%d of %d Txns got Done", len(w.seen), maxID)
			}
			s := l.Stats()
			if s.Failures == 0 {
				t.Errorf("Stats.Failures = 0")
			}
			t.Logf("%d acked, %d failed; stats %+v", len(w.acked), maxID-len(w.acked), s)

			// Power loss now: everything acknowledged was synced.
			inj.Off()
			check(t, mem.CrashClone(vfs.CrashCloneCfg{}), w.acked, maxID)
		})
	}
}
