package quorum

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// caughtUp ticks until every node has applied what the leader committed.
func (c *cluster) caughtUp() {
	c.t.Helper()
	for range 100 {
		var lead Status
		for _, id := range c.ids {
			if st := c.nodes[id].Status(); st.Serving != 0 {
				lead = st
			}
		}
		done := lead.Serving != 0
		for _, id := range c.ids {
			if c.nodes[id].Status().Applied < lead.Commit {
				done = false
			}
		}
		if done {
			return
		}
		c.tick(1)
	}
	c.t.Errorf("nodes did not catch up with the leader")
}

// anyServing is the Store of a node that serves now, or nil.
func (c *cluster) anyServing() *Store {
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for _, id := range c.ids {
		if n := c.nodes[id]; n != nil {
			if s, err := n.Leader(done); err == nil {
				return s
			}
		}
	}
	return nil
}

// TestRandomSchedule: seeded schedules of Submits, ticks, isolations,
// heals, lossy links and crashes (keeping what was synced, plus a random
// part of the rest) against three nodes. At the end, healed: every Txn got
// one Done, in Submit order per Store, none a success after a failure;
// every ack is in every node's log at its (term, index) and applied
// everywhere; one node acked per term.
func TestRandomSchedule(t *testing.T) {
	for seed := range uint64(6) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 77))
			c := newCluster(t, 3, seed)
			c.leader(1 + seed%3)
			h := newHistory()
			perStore := map[*Store][]int{}
			next := 0
			pick := func() uint64 { return c.ids[rng.IntN(len(c.ids))] }
			var actions []string
			for range 150 {
				switch r := rng.IntN(20); {
				case r < 7:
					if s := c.anyServing(); s != nil {
						for range 1 + rng.IntN(8) {
							s.Submit(h.txn(next))
							perStore[s] = append(perStore[s], next)
							next++
						}
						actions = append(actions, "submit")
					}
				case r < 12:
					c.tick(1 + rng.IntN(6))
					actions = append(actions, "tick")
				case r < 14:
					id := pick()
					c.net.Isolate(id, c.ids...)
					actions = append(actions, fmt.Sprint("isolate ", id))
				case r == 15:
					from, to := pick(), pick()
					c.net.Cut(from, to)
					actions = append(actions, fmt.Sprintf("cut %d->%d", from, to))
				case r == 16:
					c.net.Heal()
					actions = append(actions, "heal")
				case r == 17:
					c.net.SetFaults(rng.Float64()*0.2, rng.Float64()*0.1, rng.Float64()*0.2)
					actions = append(actions, "faults")
				default:
					id := pick()
					clone := c.powerCut(id, vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(100),
						RNG: rand.New(rand.NewPCG(seed, uint64(next)))})
					c.stop(id)
					c.start(id, clone)
					actions = append(actions, fmt.Sprint("crash ", id))
				}
				if rng.IntN(3) == 0 {
					c.settle()
				}
			}
			defer func() {
				if t.Failed() {
					t.Logf("schedule: %v", actions)
					for _, id := range c.ids {
						t.Logf("node %d: %+v err %v", id, c.nodes[id].Status(), c.nodes[id].Err())
					}
				}
			}()
			c.net.Heal()
			c.net.SetFaults(0, 0, 0)
			c.settle()
			c.serving(0)
			c.caughtUp()
			if t.Failed() {
				return
			}
			h.mu.Lock()
			outcomes := len(h.outcome)
			h.mu.Unlock()
			if outcomes != next {
				t.Fatalf("%d of %d Txns got a Done", outcomes, next)
			}
			for _, ids := range perStore {
				h.check(t, ids)
			}
			acked := h.acked()
			for id := range acked {
				for _, n := range c.ids {
					if !present(t, c.nodes[n].Applied(), id) {
						t.Fatalf("acked txn %d missing on node %d", id, n)
					}
				}
			}
			c.checkAcks(t)
			t.Logf("%d txns, %d acked, %d stores", next, len(acked), len(perStore))
		})
	}
}
