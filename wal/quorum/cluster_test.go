package quorum

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/keelmq/keel/wal"
)

// cluster is an in-process Raft group for tests: each node on its own
// crash-simulating filesystem, all on one Network, ticks driven by hand,
// and an activity count so that settle waits until every message and
// event has been handled (no sleeps).
type cluster struct {
	t     *testing.T
	act   *activity
	net   *Network
	ids   []uint64
	fs    map[uint64]*vfs.MemFS
	nodes map[uint64]*Node
	eps   map[uint64]Transport

	mu   sync.Mutex
	acks []ack // every Done(nil), as the nodes saw them
}

type ack struct {
	node, term, index uint64
	txn               *wal.Txn
}

func newCluster(t *testing.T, size int, seed uint64) *cluster {
	act := newActivity()
	c := &cluster{t: t, act: act, net: newNetwork(seed, act), fs: map[uint64]*vfs.MemFS{}, nodes: map[uint64]*Node{},
		eps: map[uint64]Transport{}}
	for i := range size {
		c.ids = append(c.ids, uint64(i+1))
	}
	for _, id := range c.ids {
		c.start(id, vfs.NewCrashableMem())
	}
	t.Cleanup(func() {
		for _, id := range c.ids {
			if n := c.nodes[id]; n != nil {
				_ = n.Close()
			}
		}
		c.net.Close()
	})
	return c
}

func (c *cluster) start(id uint64, fs *vfs.MemFS) { c.startOn(id, fs, fs) }

// startOn starts node id on fsys, a wrapper of mem (faults injected).
func (c *cluster) startOn(id uint64, mem *vfs.MemFS, fsys vfs.FS) {
	c.t.Helper()
	ep := c.net.Endpoint(id)
	c.eps[id] = ep
	n, err := Start(Config{
		ID: id, Peers: c.ids, Dir: "data", FS: fsys, Logger: quiet,
		Pebble:    func(o *pebble.Options) { o.MemTableSize = 1 << 20 },
		Transport: ep,
		act:       c.act,
		onAck: func(node, term, index uint64, t *wal.Txn) {
			c.mu.Lock()
			c.acks = append(c.acks, ack{node, term, index, t})
			c.mu.Unlock()
		},
	})
	if err != nil {
		c.t.Fatal(err)
	}
	c.fs[id], c.nodes[id] = mem, n
}

// crash keeps what node id synced, stops it, and restarts it from that.
func (c *cluster) crash(id uint64) {
	c.t.Helper()
	clone := c.powerCut(id, vfs.CrashCloneCfg{})
	c.stop(id)
	c.start(id, clone)
}

// powerCut is what node id's disk holds if the power fails now. The node
// sends nothing from then on (its process is dead); stop it next.
func (c *cluster) powerCut(id uint64, cfg vfs.CrashCloneCfg) *vfs.MemFS {
	Kill(c.eps[id])
	return c.fs[id].CrashClone(cfg)
}

func (c *cluster) stop(id uint64) {
	c.t.Helper()
	if err := c.nodes[id].Close(); err != nil {
		c.t.Fatal(err)
	}
	c.nodes[id] = nil
	c.settle()
}

func (c *cluster) settle() { c.act.wait() }

// tick advances every running node's clock k times, settling after each.
func (c *cluster) tick(k int) {
	for range k {
		for _, id := range c.ids {
			if n := c.nodes[id]; n != nil {
				n.Tick()
			}
		}
		c.settle()
	}
}

// leader makes id campaign and returns its Store once it serves.
func (c *cluster) leader(id uint64) *Store {
	c.t.Helper()
	c.nodes[id].Campaign()
	c.settle()
	for range 50 {
		if st := c.nodes[id].Status(); st.Serving != 0 {
			s, err := c.nodes[id].Leader(context.Background())
			if err != nil {
				c.t.Fatal(err)
			}
			return s
		}
		c.tick(1)
	}
	c.t.Fatalf("node %d did not become leader: %+v", id, c.nodes[id].Status())
	return nil
}

// serving waits (in ticks) for some node other than not to serve.
func (c *cluster) serving(not uint64) (uint64, *Store) {
	c.t.Helper()
	for range 200 {
		for _, id := range c.ids {
			if n := c.nodes[id]; n != nil && id != not && n.Status().Serving != 0 {
				s, err := n.Leader(context.Background())
				if err == nil {
					return id, s
				}
			}
		}
		c.tick(1)
	}
	c.t.Fatal("no leader elected")
	return 0, nil
}

func (c *cluster) ackList() []ack {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.acks)
}

// history records every Txn's outcome in Done order, per store.
type history struct {
	mu      sync.Mutex
	outcome map[int]error // txn id -> its Done's error
	order   []int         // ids in Done order
	bad     []string
}

func newHistory() *history { return &history{outcome: map[int]error{}} }

func (h *history) txn(id int) *wal.Txn {
	t := &wal.Txn{}
	t.Set(fmt.Appendf(nil, "t%06d/a", id), fmt.Appendf(nil, "%d", id))
	t.Set(fmt.Appendf(nil, "t%06d/b", id), fmt.Appendf(nil, "%d", id))
	t.Done = func(err error) {
		h.mu.Lock()
		defer h.mu.Unlock()
		if _, dup := h.outcome[id]; dup {
			h.bad = append(h.bad, fmt.Sprintf("txn %d: Done twice", id))
		}
		h.outcome[id] = err
		h.order = append(h.order, id)
	}
	return t
}

// txnOps is txn id's ops, without a Done.
func (h *history) txnOps(id int) *wal.Txn {
	t := h.txn(id)
	t.Done = nil
	return t
}

func (h *history) acked() map[int]bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := map[int]bool{}
	for id, err := range h.outcome {
		if err == nil {
			m[id] = true
		}
	}
	return m
}

// check: each Txn in ids got exactly one Done, in Submit order (ids is
// the Submit order), and after the first failure no success.
func (h *history) check(t *testing.T, ids []int) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, b := range h.bad {
		t.Error(b)
	}
	var got []int
	for _, id := range h.order {
		if slices.Contains(ids, id) {
			got = append(got, id)
		}
	}
	if !slices.Equal(got, ids) {
		i := 0
		for i < len(got) && i < len(ids) && got[i] == ids[i] {
			i++
		}
		t.Fatalf("Done order differs from Submit order at position %d (got %d Dones for %d Txns; %v...)",
			i, len(got), len(ids), got[i:min(len(got), i+5)])
	}
	failed := false
	for _, id := range ids {
		err := h.outcome[id]
		if err != nil {
			failed = true
		} else if failed {
			t.Fatalf("txn %d: Done(nil) after a failure", id)
		}
	}
}

// present reads txn id's two keys from r: both, or neither (all or
// nothing).
func present(t *testing.T, r wal.Reader, id int) bool {
	t.Helper()
	var n int
	for _, k := range []string{"a", "b"} {
		v, err := r.Get(fmt.Appendf(nil, "t%06d/%s", id, k))
		switch {
		case err == nil:
			if string(v) != fmt.Sprint(id) {
				t.Fatalf("txn %d key %s = %q", id, k, v)
			}
			n++
		case !errors.Is(err, wal.ErrNotFound):
			t.Fatal(err)
		}
	}
	if n == 1 {
		t.Fatalf("txn %d: half present", id)
	}
	return n == 2
}

func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestClusterCommit(t *testing.T) {
	c := newCluster(t, 3, 1)
	s := c.leader(1)
	h := newHistory()
	var ids []int
	for id := range 200 {
		s.Submit(h.txn(id))
		ids = append(ids, id)
	}
	c.settle()
	h.check(t, ids)
	if got := len(h.acked()); got != len(ids) {
		t.Fatalf("acked %d of %d", got, len(ids))
	}
	for _, id := range c.ids {
		for _, tid := range ids {
			if !present(t, c.nodes[id].Applied(), tid) {
				t.Fatalf("node %d has not applied txn %d", id, tid)
			}
		}
	}
	if st := s.Stats(); st.Commits != uint64(len(ids)) || st.Failures != 0 {
		t.Fatalf("Stats: %d commits %d failures, want %d, 0", st.Commits, st.Failures, len(ids))
	}
	if err := wal.Commit(waitCtx(t), s, h.txn(1000)); err != nil {
		t.Fatal(err)
	}
	// Followers have no Store.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.nodes[2].Leader(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("follower's Leader: err %v, want context.Canceled", err)
	}
}

// TestStoreReadsSubmitted: a read sees every Txn submitted before it,
// before its Done (the overlay), and a Snapshot stays as it was.
func TestStoreReadsSubmitted(t *testing.T) {
	c := newCluster(t, 3, 2)
	s := c.leader(1)
	h := newHistory()
	if err := wal.Commit(waitCtx(t), s, h.txn(1)); err != nil {
		t.Fatal(err)
	}
	c.net.Hold() // nothing commits while held
	s.Submit(h.txn(2))
	del := &wal.Txn{}
	del.DeleteRange([]byte("t000001/"), []byte("t000001/b")) // t1/a goes
	del.Set([]byte("t000001/a2"), []byte("new"))             // after the range: stays
	s.Submit(del)
	c.settle()
	if len(h.acked()) != 1 {
		t.Fatalf("acked %d while the network is held, want 1", len(h.acked()))
	}
	if !present(t, s, 2) {
		t.Fatal("a submitted txn is not visible to Get")
	}
	if _, err := s.Get([]byte("t000001/a")); !errors.Is(err, wal.ErrNotFound) {
		t.Fatalf("Get of a key a submitted DeleteRange removed: err %v", err)
	}
	scan := func(r wal.Reader) []string {
		var keys []string
		if err := r.Scan([]byte("t"), []byte("u"), func(k, v []byte) error {
			keys = append(keys, string(k)+"="+string(v))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return keys
	}
	want := []string{"t000001/a2=new", "t000001/b=1", "t000002/a=2", "t000002/b=2"}
	if got := scan(s); !slices.Equal(got, want) {
		t.Fatalf("Scan before commit: %v, want %v", got, want)
	}
	snap, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if got := scan(snap); !slices.Equal(got, want) {
		t.Fatalf("Snapshot before commit: %v, want %v", got, want)
	}
	// Followers see only what they applied.
	if present(t, c.nodes[2].Applied(), 2) {
		t.Fatal("a follower shows an uncommitted txn")
	}
	c.net.Release()
	c.settle()
	s.Submit(h.txn(3))
	c.settle()
	if len(h.acked()) != 3 {
		t.Fatalf("acked %d after release, want 3: %v; %+v %+v %+v", len(h.acked()), h.outcome, c.nodes[1].Status(), c.nodes[2].Status(), c.nodes[3].Status())
	}
	if got := scan(snap); !slices.Equal(got, want) {
		t.Fatalf("Snapshot after later commits: %v, want %v", got, want)
	}
	snap.Close()
	want = append(want, "t000003/a=3", "t000003/b=3")
	if got := scan(s); !slices.Equal(got, want) {
		t.Fatalf("Scan after commit: %v, want %v", got, want)
	}
	if got := scan(c.nodes[3].Applied()); !slices.Equal(got, want) {
		t.Fatalf("follower's applied state: %v, want %v", got, want)
	}
	s.ov.mu.Lock()
	left := len(s.ov.points) + len(s.ov.ranges) + len(s.ov.fifo)
	s.ov.mu.Unlock()
	if left != 0 {
		t.Fatalf("overlay holds %d items after everything applied", left)
	}
}

// TestStoreCloseServesAgain: closing the serving Store fails later
// Submits with wal.ErrClosed; the node, still leading, serves a new Store
// in the same term once a barrier entry is applied.
func TestStoreCloseServesAgain(t *testing.T) {
	c := newCluster(t, 3, 8)
	s := c.leader(1)
	h := newHistory()
	if err := wal.Commit(waitCtx(t), s, h.txn(1)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := wal.Commit(waitCtx(t), s, h.txn(2)); !errors.Is(err, wal.ErrClosed) {
		t.Fatalf("Submit after Close: %v, want wal.ErrClosed", err)
	}
	c.settle()
	s2, err := c.nodes[1].Leader(waitCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if s2 == s || s2.Term() != s.Term() {
		t.Fatalf("new store %p term %d; old %p term %d", s2, s2.Term(), s, s.Term())
	}
	if err := wal.Commit(waitCtx(t), s2, h.txn(3)); err != nil {
		t.Fatal(err)
	}
	if !present(t, s2, 1) || present(t, s2, 2) || !present(t, s2, 3) {
		t.Fatal("new store's state: want txns 1 and 3, not 2")
	}
	c.tick(2)
	c.checkAcks(t)
}
