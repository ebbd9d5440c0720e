package quorum

import (
	"errors"
	"strings"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/keelmq/keel/wal"
)

// TestLeaderDiskFails: the leader's WAL syncs start failing. Its node
// stops (Raft cannot go on without its log), its Store fails with the
// error, every Txn after the first failure fails, in order, including
// later Submits; the others elect a leader that has every acked Txn.
func TestLeaderDiskFails(t *testing.T) {
	c := newCluster(t, 3, 10)
	// Restart node 1 on a filesystem that can fail its WAL syncs.
	c.stop(1)
	mem := c.fs[1]
	inj := &errorfs.Toggle{Injector: errorfs.InjectorFunc(func(op errorfs.Op) error {
		if strings.HasSuffix(op.Path, ".log") &&
			(op.Kind == errorfs.OpFileSync || op.Kind == errorfs.OpFileSyncData || op.Kind == errorfs.OpFileSyncTo) {
			return syscall.EIO
		}
		return nil
	})}
	c.startOn(1, mem, errorfs.Wrap(mem, inj))
	s := c.leader(1)
	h := newHistory()
	var ids []int
	for id := range 30 {
		s.Submit(h.txn(id))
		ids = append(ids, id)
	}
	c.settle()
	inj.On()
	for id := 30; id < 60; id++ {
		s.Submit(h.txn(id))
		ids = append(ids, id)
	}
	c.settle()
	if c.nodes[1].Err() == nil {
		t.Fatal("node 1 goes on after its WAL sync failed")
	}
	err := s.Err()
	if err == nil || !(errors.Is(err, syscall.EIO) || strings.Contains(err.Error(), "input/output error")) {
		t.Fatalf("Store.Err() = %v, want the EIO", err)
	}
	s.Submit(h.txn(60)) // after the failure: fails too
	ids = append(ids, 60)
	c.settle()
	h.check(t, ids)
	acked := h.acked()
	if len(acked) < 30 || acked[60] {
		t.Fatalf("acked %d (txn 60 acked: %v); want at least the 30 before the fault, not 60", len(acked), acked[60])
	}
	newID, s2 := c.serving(1)
	for id := range acked {
		if !present(t, s2, id) {
			t.Fatalf("acked txn %d missing on the new leader %d", id, newID)
		}
	}
	if err := wal.Commit(waitCtx(t), s2, h.txn(61)); err != nil {
		t.Fatal(err)
	}
}
