package quorum

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/keelmq/keel/wal"
)

// Sentinel errors; compare with errors.Is.
var (
	// ErrLeadershipLost fails every Txn whose proposal's fate became
	// unknown: the node stopped leading, or its term changed, before the
	// entry was applied.
	ErrLeadershipLost = errors.New("quorum: leadership lost before commit")
	// ErrProposalDropped fails a Txn raft refused to propose (for one, a
	// leadership transfer in progress).
	ErrProposalDropped = errors.New("quorum: proposal dropped")
	// ErrWrongNode: the data directory belongs to another node id.
	ErrWrongNode = errors.New("quorum: data directory of another node")
)

// Config configures Start. Zero values take the defaults shown.
type Config struct {
	// ID is this node's Raft id: never 0, never reused for another disk.
	ID uint64
	// Peers are the ids of the cluster's voters, this node's included.
	// They bootstrap an empty log; a node with a log ignores them.
	Peers []uint64
	// Dir, FS, Logger, Pebble and CompressThreshold are wal.Options'.
	Dir               string
	FS                vfs.FS
	Logger            *slog.Logger
	Pebble            func(*pebble.Options)
	CompressThreshold int

	Transport Transport
	// TickInterval is the Raft tick: 0 means ticks come only from Tick
	// (deterministic tests drive them by hand).
	TickInterval time.Duration
	// ElectionTicks (10) and HeartbeatTicks (1) are raft's.
	ElectionTicks, HeartbeatTicks int

	act *activity // tests: counts queued work so they can wait for quiet
	// onAck, if set, sees every Done(nil) with the term and index of its
	// entry (tests check the ack history).
	onAck func(id, term, index uint64, t *wal.Txn)
}

// Status is a node's view of the cluster, for operators and tests.
type Status struct {
	ID, Term, Lead, Commit, Applied uint64
	State                           raft.StateType
	// Serving is the term of the Store this node serves with as leader,
	// or 0.
	Serving uint64
}

// Node is one member of the Raft group: its Pebble (a wal.Log holding the
// Raft log under 'q' and the applied state), its RawNode and the goroutine
// that owns it (run: the Ready loop, package doc "Ready loop").
type Node struct {
	id          uint64
	incarnation uint64 // random per Start: matches entries to proposals
	peers       []uint64
	log         *wal.Log
	storage     *Storage
	transport   Transport
	logger      *slog.Logger
	act         *activity
	onAck       func(id, term, index uint64, t *wal.Txn)
	tick        time.Duration

	inbox   chan event
	kick    chan struct{} // cap 1: a Store has Txns queued
	stop    chan struct{}
	stopped chan struct{} // run has returned
	drained chan struct{} // Close has failed what every Store held
	failed  bool          // owned by run: a fatal error stopped Raft

	// Owned by run.
	rn        *raft.RawNode
	cur       *Store      // the serving Store, while this node leads its term
	proposals []*proposal // cur's, proposed and not yet applied, in order
	nextSeq   uint64
	// A Store that failed while its node still leads (a dropped proposal,
	// Close) is followed by a barrier: an entry of no Txns whose apply, in
	// the same term, makes a new Store serve (everything before it is
	// applied by then).
	needBarrier bool
	barrier     struct{ seq, term uint64 }

	mu struct {
		sync.Mutex
		status Status
		err    error    // fatal: the node stopped
		stores []*Store // every Store not yet closed (a failed one drains)
		cur    *Store
		newCur chan struct{} // closed when cur changes
	}
	// gate closes the inbox at Close: posts hold it shared.
	gate struct {
		sync.RWMutex
		closed bool
	}
	closeOnce sync.Once
	closeErr  error
}

type event struct {
	m    *pb.Message // a message from a peer; none: tick, kick or campaign
	tick bool
	kick bool
}

const (
	inboxSize = 4096
	// maxProposalBytes bounds one entry's batch of Txns.
	maxProposalBytes = 4 << 20
	// maxInflight bounds a Store's Txns submitted and not yet done: a
	// full Store blocks Submit (back-pressure), as wal.Log's queue does.
	maxInflight = 4096
)

// Start opens the node's data directory, bootstraps an empty log with
// cfg.Peers, and starts its Ready loop and its transport.
func Start(cfg Config) (*Node, error) {
	if cfg.ID == 0 {
		return nil, errors.New("quorum: start: Config.ID is 0")
	}
	if cfg.Transport == nil {
		return nil, errors.New("quorum: start: Config.Transport is nil")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("component", "quorum", "node", cfg.ID)
	if cfg.ElectionTicks == 0 {
		cfg.ElectionTicks = 10
	}
	if cfg.HeartbeatTicks == 0 {
		cfg.HeartbeatTicks = 1
	}
	l, err := wal.Open(wal.Options{Dir: cfg.Dir, FS: cfg.FS, Logger: cfg.Logger, Pebble: cfg.Pebble,
		CompressThreshold: cfg.CompressThreshold})
	if err != nil {
		return nil, err
	}
	n, err := start(cfg, l, logger)
	if err != nil {
		_ = l.Close()
		return nil, err
	}
	return n, nil
}

func start(cfg Config, l *wal.Log, logger *slog.Logger) (*Node, error) {
	if err := checkNodeID(l, cfg.ID); err != nil {
		return nil, fmt.Errorf("quorum: start %s: %w", cfg.Dir, err)
	}
	st, err := OpenStorage(l)
	if err != nil {
		return nil, fmt.Errorf("quorum: start %s: %w", cfg.Dir, err)
	}
	var inc [8]byte
	_, _ = rand.Read(inc[:])
	n := &Node{
		id:          cfg.ID,
		incarnation: binary.BigEndian.Uint64(inc[:]),
		peers:       cfg.Peers,
		log:         l,
		storage:     st,
		transport:   cfg.Transport,
		logger:      logger,
		act:         cfg.act,
		onAck:       cfg.onAck,
		tick:        cfg.TickInterval,
		inbox:       make(chan event, inboxSize),
		kick:        make(chan struct{}, 1),
		stop:        make(chan struct{}),
		stopped:     make(chan struct{}),
		drained:     make(chan struct{}),
	}
	n.mu.newCur = make(chan struct{})
	rn, err := raft.NewRawNode(&raft.Config{
		ID:                        cfg.ID,
		ElectionTick:              cfg.ElectionTicks,
		HeartbeatTick:             cfg.HeartbeatTicks,
		Storage:                   st,
		Applied:                   st.Applied(),
		MaxSizePerMsg:             1 << 20,
		MaxInflightMsgs:           256,
		MaxUncommittedEntriesSize: 1 << 30,
		CheckQuorum:               true,
		PreVote:                   true,
		// Only the leader proposes: a follower's Store does not exist.
		DisableProposalForwarding: true,
		Logger:                    raftLogger{logger},
	})
	if err != nil {
		return nil, fmt.Errorf("quorum: start: %w", err)
	}
	if last, _ := st.LastIndex(); last == 0 && raft.IsEmptyHardState(st.HardState()) {
		if len(cfg.Peers) == 0 {
			return nil, errors.New("quorum: start: an empty log needs Config.Peers")
		}
		peers := make([]raft.Peer, len(cfg.Peers))
		for i, id := range cfg.Peers {
			peers[i] = raft.Peer{ID: id}
		}
		if err := rn.Bootstrap(peers); err != nil {
			return nil, fmt.Errorf("quorum: bootstrap: %w", err)
		}
	}
	n.rn = rn
	n.updateStatus()
	if err := cfg.Transport.Start(n.receive); err != nil {
		return nil, fmt.Errorf("quorum: start transport: %w", err)
	}
	go n.run()
	return n, nil
}

// checkNodeID records id in a new data directory and refuses one that
// belongs to another node.
func checkNodeID(l *wal.Log, id uint64) error {
	v, err := l.Get(nodeIDKey)
	switch {
	case errors.Is(err, wal.ErrNotFound):
		txn := &wal.Txn{}
		txn.Set(nodeIDKey, u64(id))
		return wal.Commit(context.Background(), l, txn)
	case err != nil:
		return err
	case len(v) != 8:
		return fmt.Errorf("%w: node id of %d bytes", ErrCorruptLog, len(v))
	case binary.BigEndian.Uint64(v) != id:
		return fmt.Errorf("%w: it is node %d's, not node %d's", ErrWrongNode, binary.BigEndian.Uint64(v), id)
	}
	return nil
}

// receive is the transport's callback: it queues m for the loop, or drops
// it when the inbox is full or the node stopped.
func (n *Node) receive(m *pb.Message) { n.post(event{m: m}, false) }

// Tick advances the node's logical clock by one tick (for Config's
// TickInterval 0: tests drive time by hand).
func (n *Node) Tick() { n.post(event{tick: true}, true) }

// Campaign asks this node to start an election now (tests pick a leader
// with it; raft's randomized timeouts pick one otherwise).
func (n *Node) Campaign() { n.post(event{}, true) }

// kickLoop wakes the loop to look at the Stores' queues.
func (n *Node) kickLoop() { n.post(event{kick: true}, false) }

// post hands ev to the loop (waiting for room if block), unless the node
// is closing. Every event posted before Close is counted out by the loop.
func (n *Node) post(ev event, block bool) {
	n.gate.RLock()
	defer n.gate.RUnlock()
	if n.gate.closed {
		return
	}
	n.act.add(1)
	if ev.kick {
		select {
		case n.kick <- struct{}{}:
		default:
			n.act.add(-1) // a kick is pending: it covers this one
		}
		return
	}
	if block {
		n.inbox <- ev
		return
	}
	select {
	case n.inbox <- ev:
	default:
		n.act.add(-1)
	}
}

// Status is the node's latest view.
func (n *Node) Status() Status {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.status
}

// Err is nil, or the failure that stopped the node.
func (n *Node) Err() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.err
}

// Applied reads the node's applied state (every node keeps it, ready to
// take over). It sees nothing that is not applied here.
func (n *Node) Applied() wal.Reader { return n.log }

// Leader waits until this node leads and has applied its own term's first
// entry (so everything committed before is applied here), and returns the
// Store that serves that term. It fails once the term ends.
func (n *Node) Leader(ctx context.Context) (*Store, error) {
	for {
		n.mu.Lock()
		s, ch, err := n.mu.cur, n.mu.newCur, n.mu.err
		n.mu.Unlock()
		if err != nil {
			return nil, err
		}
		if s != nil && s.Err() == nil {
			return s, nil
		}
		select {
		case <-ch:
		case <-n.stopped:
			return nil, wal.ErrClosed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Close stops the Ready loop and the transport, fails what every Store
// still holds (wal.ErrClosed), and closes Pebble.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.gate.Lock()
		n.gate.closed = true
		n.gate.Unlock()
		close(n.stop)
		<-n.stopped
		terr := n.transport.Close()
		n.mu.Lock()
		stores := append([]*Store(nil), n.mu.stores...)
		n.mu.Unlock()
		for _, s := range stores {
			n.failStore(s, wal.ErrClosed)
		}
		close(n.drained)
		n.closeErr = errors.Join(terr, n.log.Close())
	})
	return n.closeErr
}

// run is the one goroutine that owns the RawNode.
func (n *Node) run() {
	defer close(n.stopped)
	var tick <-chan time.Time
	if n.tick > 0 {
		t := time.NewTicker(n.tick)
		defer t.Stop()
		tick = t.C
	}
	// The bootstrap's (or a restart's) first Ready: its entries are
	// persisted and applied before any campaign.
	if err := n.ready(); err != nil {
		n.failed = true
		n.fatal(err)
	}
	for {
		handled := 0
		select {
		case <-n.stop:
			n.drainInbox()
			return
		case ev := <-n.inbox:
			if !n.failed {
				n.handle(ev)
			}
			handled++
			// Take what else is waiting, so one Ready covers it.
			for more := true; more && handled < 256; {
				select {
				case ev := <-n.inbox:
					if !n.failed {
						n.handle(ev)
					}
					handled++
				default:
					more = false
				}
			}
		case <-n.kick:
			handled++
		case <-tick:
			if !n.failed {
				n.rn.Tick()
			}
		}
		if n.failed {
			// Raft is stopped; Txns still get their Done(err) in order.
			n.propose()
			n.act.add(-handled)
			continue
		}
		n.propose()
		if err := n.ready(); err != nil {
			n.failed = true
			n.fatal(err)
		}
		n.act.add(-handled)
	}
}

func (n *Node) drainInbox() {
	for {
		select {
		case <-n.inbox:
			n.act.add(-1)
		case <-n.kick:
			n.act.add(-1)
		default:
			return
		}
	}
}

func (n *Node) handle(ev event) {
	switch {
	case ev.tick:
		n.rn.Tick()
	case ev.m == nil:
		_ = n.rn.Campaign()
	default:
		// An error is a message raft ignores (from an unknown peer, or a
		// stale response): nothing to do.
		_ = n.rn.Step(ev.m)
	}
}

// fatal stops the node: a storage failure leaves Raft unable to go on.
func (n *Node) fatal(err error) {
	n.logger.Error("node failed: stopping", "err", err)
	n.mu.Lock()
	if n.mu.err == nil {
		n.mu.err = err
	}
	stores := append([]*Store(nil), n.mu.stores...)
	n.mu.Unlock()
	for _, s := range stores {
		n.failStore(s, err)
	}
}

// ready handles every Ready in raft's order (package doc, "Ready loop").
func (n *Node) ready() error {
	ctx := context.Background()
	for n.rn.HasReady() {
		rd := n.rn.Ready()
		st := n.rn.BasicStatus()
		// A term that ended leaves its proposals' fate unknown: fail them
		// before anything more is applied.
		if s := n.cur; s != nil && (st.RaftState != raft.StateLeader || st.GetTerm() != s.term) {
			n.failStore(s, fmt.Errorf("%w: term %d ended (now term %d, %s)", ErrLeadershipLost, s.term, st.GetTerm(), st.RaftState))
		}
		if !raft.IsEmptySnap(rd.Snapshot) {
			return errors.New("quorum: a snapshot arrived; catching up by snapshot is not built yet")
		}
		var hs *pb.HardState
		if !raft.IsEmptyHardState(rd.HardState) {
			hs = rd.HardState
		}
		if err := n.storage.Append(ctx, hs, rd.Entries, rd.MustSync); err != nil {
			return err
		}
		n.transport.Send(rd.Messages)
		if err := n.apply(rd.CommittedEntries, st); err != nil {
			return err
		}
		n.rn.Advance(rd)
		n.updateStatus()
	}
	return nil
}

func (n *Node) updateStatus() {
	st := n.rn.BasicStatus()
	n.mu.Lock()
	n.mu.status = Status{ID: n.id, Term: st.GetTerm(), Lead: st.Lead, Commit: st.GetCommit(),
		Applied: n.storage.Applied(), State: st.RaftState}
	if n.mu.cur != nil && n.mu.cur.Err() == nil {
		n.mu.status.Serving = n.mu.cur.term
	}
	n.mu.Unlock()
}

// apply writes the committed entries' Txns and the applied index as one
// Pebble batch, then completes the proposals they carry (package doc,
// "Applying").
func (n *Node) apply(ents []*pb.Entry, st raft.BasicStatus) error {
	if len(ents) == 0 {
		return nil
	}
	batch := &wal.Txn{NoSync: true}
	var cs *pb.ConfState
	var done []*proposal
	serve := false
	for _, e := range ents {
		switch e.GetType() {
		case pb.EntryNormal:
			if len(e.GetData()) == 0 {
				// The entry a leader appends when its term begins.
				serve = serve || (st.RaftState == raft.StateLeader && e.GetTerm() == st.GetTerm())
				continue
			}
			inc, seq, err := decodeProposal(e.GetData(), batch)
			if err != nil {
				return fmt.Errorf("entry %d: %w", e.GetIndex(), err)
			}
			if inc == n.incarnation && seq == n.barrier.seq && e.GetTerm() == n.barrier.term {
				serve = serve || (st.RaftState == raft.StateLeader && e.GetTerm() == st.GetTerm())
				continue
			}
			if inc != n.incarnation || len(n.proposals) == 0 {
				continue // another node's, or a failed Store's: already done
			}
			if p := n.proposals[0]; p.seq == seq && p.term == e.GetTerm() && st.GetTerm() == p.term &&
				n.cur != nil && n.cur.term == p.term {
				p.index = e.GetIndex()
				done = append(done, p)
				n.proposals = n.proposals[1:]
			}
		case pb.EntryConfChange:
			var cc pb.ConfChange
			if err := proto.Unmarshal(e.GetData(), &cc); err != nil {
				return fmt.Errorf("%w: entry %d: conf change: %v", ErrCorruptLog, e.GetIndex(), err)
			}
			cs = n.rn.ApplyConfChange(&cc)
		case pb.EntryConfChangeV2:
			var cc pb.ConfChangeV2
			if err := proto.Unmarshal(e.GetData(), &cc); err != nil {
				return fmt.Errorf("%w: entry %d: conf change: %v", ErrCorruptLog, e.GetIndex(), err)
			}
			cs = n.rn.ApplyConfChange(&cc)
		}
	}
	last := ents[len(ents)-1].GetIndex()
	if err := recordApplied(batch, last, cs); err != nil {
		return err
	}
	ch := make(chan error, 1)
	batch.Done = func(err error) { ch <- err }
	s := n.cur
	if s != nil && len(done) > 0 {
		// Readers switch from the overlay to Pebble atomically: Submit
		// has applied the batch to Pebble's memtable when it returns.
		s.ov.mu.Lock()
		n.log.Submit(batch)
		s.ov.trimLocked(done[len(done)-1].last)
		s.ov.mu.Unlock()
	} else {
		n.log.Submit(batch)
	}
	if err := <-ch; err != nil {
		return fmt.Errorf("quorum: apply entries to %d: %w", last, err)
	}
	n.storage.appliedDone(last, cs)
	for _, p := range done {
		for _, t := range p.txns {
			if n.onAck != nil {
				n.onAck(n.id, p.term, p.index, t)
			}
			s.complete(t, nil)
		}
	}
	if serve && n.cur == nil {
		n.serve(st.GetTerm())
	}
	return nil
}

// serve makes a Store for term: this node leads it and has applied its
// first entry.
func (n *Node) serve(term uint64) {
	s := newStore(n, term)
	n.cur = s
	n.mu.Lock()
	n.mu.cur = s
	n.mu.stores = append(n.mu.stores, s)
	close(n.mu.newCur)
	n.mu.newCur = make(chan struct{})
	n.mu.Unlock()
	n.logger.Info("leading: serving", "term", term)
}

// propose proposes what the serving Store has queued, batched into
// entries, and fails what failed Stores have queued. REQUIRES: run.
func (n *Node) propose() {
	n.mu.Lock()
	stores := append([]*Store(nil), n.mu.stores...)
	n.mu.Unlock()
	if n.cur != nil && !slices.Contains(stores, n.cur) {
		n.failStore(n.cur, wal.ErrClosed) // closed: no longer listed
	}

	for _, s := range stores {
		if s != n.cur {
			n.failStore(s, nil) // drains what it queued after it failed
			continue
		}
		if st := n.rn.BasicStatus(); st.RaftState != raft.StateLeader || st.GetTerm() != s.term {
			n.failStore(s, fmt.Errorf("%w: term %d ended (now term %d, %s)", ErrLeadershipLost, s.term, st.GetTerm(), st.RaftState))
			continue
		}
		q, err := s.take()
		if err != nil {
			n.failStore(s, err)
			continue
		}
		for len(q) > 0 {
			size, k := 0, 0
			for k < len(q) && (k == 0 || size < maxProposalBytes) {
				size += txnSize(q[k].t)
				k++
			}
			group := q[:k:k]
			q = q[k:]
			data := appendProposalHeader(nil, n.incarnation, n.nextSeq, len(group))
			p := &proposal{seq: n.nextSeq, term: s.term, last: group[len(group)-1].last}
			for _, g := range group {
				data = wal.AppendTxn(data, g.t)
				p.txns = append(p.txns, g.t)
			}
			n.nextSeq++
			if err := n.rn.Propose(data); err != nil {
				n.proposals = append(n.proposals, p)
				n.failStore(s, fmt.Errorf("%w: %v", ErrProposalDropped, err))
				for _, g := range q {
					s.complete(g.t, s.Err())
				}
				break
			}
			n.proposals = append(n.proposals, p)
		}
	}
	n.proposeBarrier()
}

// proposeBarrier follows a Store that failed while its node still leads
// with an entry of no Txns (Node.needBarrier). REQUIRES: run.
func (n *Node) proposeBarrier() {
	if !n.needBarrier || n.cur != nil || n.failed {
		return
	}
	n.needBarrier = false
	if st := n.rn.BasicStatus(); st.RaftState == raft.StateLeader {
		seq := n.nextSeq
		n.nextSeq++
		if n.rn.Propose(appendProposalHeader(nil, n.incarnation, seq, 0)) == nil {
			n.barrier.seq, n.barrier.term = seq, st.GetTerm()
		}
	}
}

// failStore makes s fail with err (if it has not failed yet) and completes
// with its error every Txn it holds: its proposals, oldest first, then its
// queue. REQUIRES: run (or the loop has stopped).
func (n *Node) failStore(s *Store, err error) {
	if err != nil {
		s.fail(err)
	}
	if n.cur == s {
		n.cur = nil
		n.needBarrier = true
		for _, p := range n.proposals {
			for _, t := range p.txns {
				s.complete(t, s.Err())
			}
		}
		n.proposals = nil
		n.mu.Lock()
		if n.mu.cur == s {
			n.mu.cur = nil
		}
		n.mu.Unlock()
	}
	q, _ := s.take()
	for _, g := range q {
		s.complete(g.t, s.Err())
	}
}

// txnSize is the size of t's Txn record, near enough to bound a batch.
func txnSize(t *wal.Txn) int {
	n := 2
	t.Ops(func(op wal.TxnOp) { n += 1 + 4 + len(op.Key) + len(op.Value) })
	return n
}
