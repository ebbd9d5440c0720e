package quorum

import (
	"fmt"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/raft/v3/raftpb"
)

// persistCheck wraps a node's Transport: at every Send it crash-clones the
// node's filesystem (what a power cut at that instant keeps) and checks
// that the messages depend on nothing the clone lacks: every entry they
// carry is in the clone's log with its term, and every vote granted or
// append answered is backed by a synced HardState of that term (and that
// vote).
type persistCheck struct {
	Transport
	fs   *vfs.MemFS
	t    *testing.T
	mu   sync.Mutex
	errs []string
	sent int
}

func (p *persistCheck) Send(msgs []*pb.Message) {
	if len(msgs) > 0 {
		p.check(msgs)
	}
	p.Transport.Send(msgs)
}

func (p *persistCheck) check(msgs []*pb.Message) {
	clone := p.fs.CrashClone(vfs.CrashCloneCfg{})
	l := openLog(p.t, clone)
	defer l.Close()
	st := openStorage(p.t, l)
	hs := st.HardState()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent += len(msgs)
	for _, m := range msgs {
		for _, e := range m.GetEntries() {
			if term, err := st.Term(e.GetIndex()); err != nil || term != e.GetTerm() {
				p.errs = append(p.errs, fmt.Sprintf("%v to %d carries entry %d (term %d) the sender's disk lacks (%d, %v)",
					m.GetType(), m.GetTo(), e.GetIndex(), e.GetTerm(), term, err))
			}
		}
		switch m.GetType() {
		case pb.MessageType_MsgVoteResp:
			if !m.GetReject() && (hs.GetTerm() != m.GetTerm() || hs.GetVote() != m.GetTo()) {
				p.errs = append(p.errs, fmt.Sprintf("vote for %d in term %d sent before it was synced (disk: term %d vote %d)",
					m.GetTo(), m.GetTerm(), hs.GetTerm(), hs.GetVote()))
			}
		case pb.MessageType_MsgAppResp, pb.MessageType_MsgVote, pb.MessageType_MsgApp, pb.MessageType_MsgHeartbeat:
			if hs.GetTerm() < m.GetTerm() {
				p.errs = append(p.errs, fmt.Sprintf("%v of term %d sent before the term was synced (disk: %d)",
					m.GetType(), m.GetTerm(), hs.GetTerm()))
			}
		}
	}
}

// TestPersistBeforeSend: no message leaves a node before what it depends
// on is synced on that node's disk, through an election, a stream of
// Txns, a partition and a new election.
func TestPersistBeforeSend(t *testing.T) {
	act := newActivity()
	c := &cluster{t: t, act: act, net: newNetwork(9, act), fs: map[uint64]*vfs.MemFS{}, nodes: map[uint64]*Node{}}
	c.ids = []uint64{1, 2, 3}
	checks := map[uint64]*persistCheck{}
	for _, id := range c.ids {
		fs := vfs.NewCrashableMem()
		checks[id] = &persistCheck{Transport: c.net.Endpoint(id), fs: fs, t: t}
		n, err := Start(Config{ID: id, Peers: c.ids, Dir: "data", FS: fs, Logger: quiet,
			Transport: checks[id], act: act})
		if err != nil {
			t.Fatal(err)
		}
		c.fs[id], c.nodes[id] = fs, n
	}
	t.Cleanup(func() {
		for _, id := range c.ids {
			_ = c.nodes[id].Close()
		}
		c.net.Close()
	})
	s := c.leader(1)
	h := newHistory()
	for id := range 20 {
		s.Submit(h.txn(id))
		if id%5 == 0 {
			c.settle()
		}
	}
	c.settle()
	c.net.Isolate(1, c.ids...)
	c.serving(1)
	c.tick(12)
	c.net.Heal()
	c.tick(3)
	total := 0
	for _, id := range c.ids {
		p := checks[id]
		p.mu.Lock()
		for _, e := range p.errs {
			t.Errorf("node %d: %s", id, e)
		}
		total += p.sent
		p.mu.Unlock()
	}
	if total < 50 {
		t.Fatalf("only %d messages checked", total)
	}
}
