package quorum

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/keelmq/keel/wal"
)

// checkAcks checks the ack history against the cluster's logs: one node
// acknowledges per term; each acknowledged entry is, on every running node,
// the entry of that index with that term, holding the Txn; and the Txn is
// applied everywhere.
func (c *cluster) checkAcks(t *testing.T) {
	t.Helper()
	ackerOf := map[uint64]uint64{} // term -> node
	for _, a := range c.ackList() {
		if n, ok := ackerOf[a.term]; ok && n != a.node {
			t.Fatalf("term %d: acks from node %d and node %d", a.term, n, a.node)
		}
		ackerOf[a.term] = a.node
		for _, id := range c.ids {
			n := c.nodes[id]
			if n == nil {
				continue
			}
			term, err := n.storage.Term(a.index)
			if err != nil || term != a.term {
				t.Fatalf("ack (node %d, term %d, index %d): node %d's entry %d has term %d (%v)",
					a.node, a.term, a.index, id, a.index, term, err)
			}
			ents, err := n.storage.Entries(a.index, a.index+1, math.MaxUint64)
			if err != nil {
				t.Fatal(err)
			}
			var applied wal.Txn
			if _, _, err := decodeProposal(ents[0].GetData(), &applied); err != nil {
				t.Fatal(err)
			}
			if !containsTxn(&applied, a.txn) {
				t.Fatalf("ack (node %d, term %d, index %d): node %d's entry does not hold the txn", a.node, a.term, a.index, id)
			}
			var missing error
			a.txn.Ops(func(op wal.TxnOp) {
				if v, err := n.Applied().Get(op.Key); err != nil || string(v) != string(op.Value) {
					missing = fmt.Errorf("key %q = %q, %v", op.Key, v, err)
				}
			})
			if missing != nil {
				t.Fatalf("ack (node %d, term %d, index %d): node %d has not applied it: %v", a.node, a.term, a.index, id, missing)
			}
		}
	}
}

// containsTxn: every op of want appears in got, in order.
func containsTxn(got, want *wal.Txn) bool {
	var g, w []wal.TxnOp
	got.Ops(func(op wal.TxnOp) { g = append(g, op) })
	want.Ops(func(op wal.TxnOp) { w = append(w, op) })
	for i := 0; i+len(w) <= len(g); i++ {
		ok := true
		for j := range w {
			if g[i+j].Kind != w[j].Kind || string(g[i+j].Key) != string(w[j].Key) || string(g[i+j].Value) != string(w[j].Value) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// TestLeaderPartitioned: the leader is cut off with proposals in flight.
// Every Txn acknowledged survives the new leader; every Txn whose fate was
// unknown failed (ErrLeadershipLost), never a Done(nil) for something
// lost; the old leader catches up when healed.
func TestLeaderPartitioned(t *testing.T) {
	c := newCluster(t, 3, 3)
	s1 := c.leader(1)
	h := newHistory()
	var ids []int
	for id := range 50 {
		s1.Submit(h.txn(id))
		ids = append(ids, id)
	}
	c.settle()
	// In flight when the partition comes: appended on the leader, their
	// messages held, then dropped by the cut.
	c.net.Hold()
	for id := 50; id < 80; id++ {
		s1.Submit(h.txn(id))
		ids = append(ids, id)
	}
	c.settle()
	c.net.Isolate(1, c.ids...)
	c.net.Release()
	c.settle()

	newID, s2 := c.serving(1)
	c.tick(20) // the old leader's CheckQuorum notices it is alone
	if st := c.nodes[1].Status(); st.Serving != 0 {
		t.Fatalf("isolated node 1 still serves: %+v", st)
	}
	for id := 80; id < 90; id++ { // too late for term 1's store
		s1.Submit(h.txn(id))
		ids = append(ids, id)
	}
	c.settle()
	h.check(t, ids)
	acked := h.acked()
	if len(acked) != 50 {
		t.Fatalf("acked %d before the partition, want 50", len(acked))
	}
	for _, id := range ids[50:] {
		if err := h.outcome[id]; !errors.Is(err, ErrLeadershipLost) {
			t.Fatalf("txn %d in flight at the partition: Done(%v), want ErrLeadershipLost", id, err)
		}
	}
	if !errors.Is(s1.Err(), ErrLeadershipLost) {
		t.Fatalf("old store's Err = %v, want ErrLeadershipLost (sticky)", s1.Err())
	}
	for id := range acked {
		if !present(t, s2, id) {
			t.Fatalf("acked txn %d missing on the new leader %d", id, newID)
		}
	}
	// The new leader goes on; the old one, healed, catches up and drops
	// its uncommitted tail.
	var more []int
	for id := 100; id < 150; id++ {
		s2.Submit(h.txn(id))
		more = append(more, id)
	}
	c.settle()
	h.check(t, more)
	c.net.Heal()
	c.tick(5)
	for _, id := range c.ids {
		for tid := range h.acked() {
			if !present(t, c.nodes[id].Applied(), tid) {
				t.Fatalf("node %d lacks acked txn %d after healing", id, tid)
			}
		}
		for _, tid := range ids[50:] {
			if present(t, c.nodes[id].Applied(), tid) {
				t.Fatalf("node %d applied txn %d that only the isolated leader had", id, tid)
			}
		}
	}
	c.checkAcks(t)
}

// TestFaultyNetwork: a stream of Txns over a network that drops,
// duplicates and reorders messages, with the leader isolated mid-stream from another
// goroutine. Whatever the interleaving: acknowledged means committed
// (checked against every node's log), Done in order, failures sticky.
func TestFaultyNetwork(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			c := newCluster(t, 3, seed)
			s1 := c.leader(1)
			c.net.SetFaults(0.05, 0.05, 0.1)
			h := newHistory()
			var ids []int
			for id := range 300 {
				s1.Submit(h.txn(id))
				ids = append(ids, id)
				if id%20 == 0 {
					c.tick(1) // heartbeats resend what was dropped
				}
				if id == 150+int(seed)*20 {
					c.net.Isolate(1, c.ids...)
				}
			}
			c.settle()
			c.serving(1)
			c.tick(20)
			c.net.SetFaults(0, 0, 0)
			c.net.Heal()
			c.tick(10)
			h.check(t, ids)
			for id := range h.acked() {
				for _, n := range c.ids {
					if !present(t, c.nodes[n].Applied(), id) {
						t.Fatalf("acked txn %d missing on node %d", id, n)
					}
				}
			}
			if len(h.acked()) == 0 {
				t.Fatal("nothing acked")
			}
			c.checkAcks(t)
		})
	}
}

// TestRestartCatchesUp: a follower crashes (keeping only what it synced),
// misses a run of Txns, restarts from its crash clone and catches up; then
// the leader crashes the same way and the others elect a new one that has
// every acknowledged Txn.
func TestRestartCatchesUp(t *testing.T) {
	c := newCluster(t, 3, 5)
	s := c.leader(1)
	h := newHistory()
	for id := range 50 {
		s.Submit(h.txn(id))
	}
	c.settle()
	clone3 := c.powerCut(3, vfs.CrashCloneCfg{})
	c.stop(3)
	for id := 50; id < 100; id++ {
		s.Submit(h.txn(id))
	}
	c.settle()
	if n := len(h.acked()); n != 100 {
		t.Fatalf("acked %d with one follower down, want 100", n)
	}
	c.start(3, clone3)
	c.tick(3)
	for id := range 100 {
		if !present(t, c.nodes[3].Applied(), id) {
			t.Fatalf("restarted node 3 lacks txn %d", id)
		}
	}

	c.crash(1)
	newID, s2 := c.serving(0)
	for id := range h.acked() {
		if !present(t, s2, id) {
			t.Fatalf("acked txn %d missing on node %d after the leader crashed", id, newID)
		}
	}
	if err := wal.Commit(waitCtx(t), s2, h.txn(100)); err != nil {
		t.Fatal(err)
	}
	c.tick(3)
	c.checkAcks(t)
}

// TestPowerLoss: every node loses power at once; what was acknowledged is
// on a quorum's disks (read from the crash clones' logs), and after the
// restart the cluster serves every acknowledged Txn.
func TestPowerLoss(t *testing.T) {
	c := newCluster(t, 3, 6)
	s := c.leader(1)
	h := newHistory()
	c.net.SetFaults(0.1, 0, 0.05)
	for id := range 200 {
		s.Submit(h.txn(id))
		if id%25 == 0 {
			c.tick(1)
		}
	}
	c.net.SetFaults(0, 0, 0)
	c.tick(2)
	acks := c.ackList()
	if len(acks) == 0 {
		t.Fatal("nothing acked")
	}
	clones := map[uint64]*vfs.MemFS{}
	for _, id := range c.ids {
		Kill(c.eps[id]) // all at once, then the disks
	}
	for _, id := range c.ids {
		clones[id] = c.powerCut(id, vfs.CrashCloneCfg{})
	}
	for _, id := range c.ids {
		c.stop(id)
	}
	on := map[int]int{} // ack -> disks holding its entry
	for _, id := range c.ids {
		l := openLog(t, clones[id])
		st := openStorage(t, l)
		for i, a := range acks {
			if term, err := st.Term(a.index); err == nil && term == a.term {
				on[i]++
			}
		}
		l.Close()
	}
	for i, a := range acks {
		if on[i] < 2 {
			t.Fatalf("ack (node %d, term %d, index %d) is on %d disks, want a quorum", a.node, a.term, a.index, on[i])
		}
	}
	for _, id := range c.ids {
		c.start(id, clones[id])
	}
	_, s2 := c.serving(0)
	for id := range h.acked() {
		if !present(t, s2, id) {
			t.Fatalf("acked txn %d lost in the power loss", id)
		}
	}
	c.tick(3)
	c.checkAcks(t)
}

// TestWrongNodeID: a data directory keeps the id it was created with.
func TestWrongNodeID(t *testing.T) {
	fs := vfs.NewMem()
	net := NewNetwork(1)
	defer net.Close()
	n, err := Start(Config{ID: 1, Peers: []uint64{1}, Dir: "d", FS: fs, Logger: quiet, Transport: net.Endpoint(1)})
	if err != nil {
		t.Fatal(err)
	}
	n.Close()
	if _, err := Start(Config{ID: 2, Peers: []uint64{2}, Dir: "d", FS: fs, Logger: quiet, Transport: net.Endpoint(2)}); !errors.Is(err, ErrWrongNode) {
		t.Fatalf("start as another node: err %v, want ErrWrongNode", err)
	}
}

// TestSingleNode: a group of one commits on its own sync.
func TestSingleNode(t *testing.T) {
	net := NewNetwork(1)
	defer net.Close()
	n, err := Start(Config{ID: 1, Peers: []uint64{1}, Dir: "d", FS: vfs.NewMem(), Logger: quiet,
		Transport: net.Endpoint(1), TickInterval: 1e6})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	s, err := n.Leader(waitCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	h := newHistory()
	if err := wal.Commit(context.Background(), s, h.txn(1)); err != nil {
		t.Fatal(err)
	}
	if !present(t, n.Applied(), 1) {
		t.Fatal("not applied")
	}
}

// TestOldTermEntryCommittedLater: the leader's entry reaches a follower
// but no ack comes back; the follower becomes leader and commits it. The
// old leader's Txn failed (its fate was unknown then), and it never gets a
// second Done, though the entry is applied everywhere in the end.
func TestOldTermEntryCommittedLater(t *testing.T) {
	c := newCluster(t, 3, 7)
	s1 := c.leader(1)
	h := newHistory()
	if err := wal.Commit(waitCtx(t), s1, h.txn(1)); err != nil {
		t.Fatal(err)
	}
	c.net.Cut(2, 1)
	c.net.Cut(3, 1)
	c.net.Cut(1, 3)
	s1.Submit(h.txn(2)) // reaches node 2 only; no answer reaches node 1
	c.settle()
	c.net.Cut(1, 2)
	newID, s2 := c.serving(1)
	c.tick(20)
	if err := h.outcome[2]; !errors.Is(err, ErrLeadershipLost) {
		t.Fatalf("txn 2: Done(%v), want ErrLeadershipLost", err)
	}
	if newID != 2 {
		t.Fatalf("node %d leads; only node 2 could (it has the longer log)", newID)
	}
	if !present(t, s2, 2) {
		t.Fatal("the new leader did not commit the old term's entry")
	}
	c.net.Heal()
	c.tick(5)
	for _, id := range c.ids {
		if !present(t, c.nodes[id].Applied(), 2) {
			t.Fatalf("node %d has not applied txn 2", id)
		}
	}
	h.check(t, []int{1, 2})
	c.checkAcks(t)
	for _, a := range c.ackList() {
		if a.term != s1.Term() || a.node != 1 {
			continue
		}
		if a.txn != nil && containsTxn(a.txn, h.txnOps(2)) {
			t.Fatalf("txn 2 acknowledged by node 1 in term %d", a.term)
		}
	}
}
