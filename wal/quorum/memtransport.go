package quorum

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Network is an in-process Transport fabric for tests: one delivery
// goroutine hands queued messages over in the order they were sent, and
// faults are explicit: links cut one way (Cut) or isolated (Isolate),
// messages dropped, duplicated or reordered with a seeded probability, and a hold
// that keeps every message queued until Release (a delay the test
// controls). Decisions are made at delivery time, so a cut also drops what
// is already in flight on that link.
type Network struct {
	act *activity // nil, or the test's quiescence counter

	mu struct {
		sync.Mutex
		cond    sync.Cond
		recv    map[uint64]func(*pb.Message)
		cut     map[[2]uint64]bool // from, to
		queue   []*pb.Message
		held    bool
		drop    float64
		dup     float64
		reorder float64
		rng     *rand.Rand
		closed  bool
		sent    int
		dropped int
	}
	done chan struct{}
}

// NewNetwork starts a network whose random faults follow seed.
func NewNetwork(seed uint64) *Network { return newNetwork(seed, nil) }

func newNetwork(seed uint64, act *activity) *Network {
	n := &Network{act: act, done: make(chan struct{})}
	n.mu.cond.L = &n.mu.Mutex
	n.mu.recv = map[uint64]func(*pb.Message){}
	n.mu.cut = map[[2]uint64]bool{}
	n.mu.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	go n.deliver()
	return n
}

// Endpoint is node id's Transport on n.
func (n *Network) Endpoint(id uint64) Transport { return &memEndpoint{n: n, id: id} }

// Cut drops every message from one node to another (one way).
func (n *Network) Cut(from, to uint64) {
	n.mu.Lock()
	n.mu.cut[[2]uint64{from, to}] = true
	n.mu.Unlock()
}

// Isolate cuts every link to and from id.
func (n *Network) Isolate(id uint64, others ...uint64) {
	for _, o := range others {
		if o != id {
			n.Cut(id, o)
			n.Cut(o, id)
		}
	}
}

// Heal restores every link.
func (n *Network) Heal() {
	n.mu.Lock()
	clear(n.mu.cut)
	n.mu.Unlock()
}

// SetFaults sets the probabilities that a message is dropped, delivered
// twice, or delivered out of order (a random later message goes first).
func (n *Network) SetFaults(drop, dup, reorder float64) {
	n.mu.Lock()
	n.mu.drop, n.mu.dup, n.mu.reorder = drop, dup, reorder
	n.mu.Unlock()
}

// Hold keeps every message queued until Release. Held messages do not
// count as activity: the cluster settles around them.
func (n *Network) Hold() {
	n.mu.Lock()
	if !n.mu.held {
		n.mu.held = true
		n.act.add(-len(n.mu.queue))
	}
	n.mu.Unlock()
}

// Release delivers what Hold kept, in order, and lets later messages go.
func (n *Network) Release() {
	n.mu.Lock()
	if n.mu.held {
		n.mu.held = false
		n.act.add(len(n.mu.queue))
	}
	n.mu.cond.Broadcast()
	n.mu.Unlock()
}

// Counts reports messages sent and dropped so far.
func (n *Network) Counts() (sent, dropped int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.sent, n.mu.dropped
}

// Close stops the delivery goroutine; queued messages are dropped.
func (n *Network) Close() {
	n.mu.Lock()
	if n.mu.closed {
		n.mu.Unlock()
		return
	}
	n.mu.closed = true
	dropped := len(n.mu.queue)
	if n.mu.held {
		dropped = 0
	}
	n.mu.queue = nil
	n.mu.cond.Broadcast()
	n.mu.Unlock()
	<-n.done
	n.act.add(-dropped)
}

func (n *Network) send(msgs []*pb.Message) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.closed {
		return
	}
	for _, m := range msgs {
		n.mu.queue = append(n.mu.queue, proto.Clone(m).(*pb.Message))
		n.mu.sent++
	}
	if !n.mu.held {
		n.act.add(len(msgs))
	}
	n.mu.cond.Broadcast()
}

func (n *Network) deliver() {
	defer close(n.done)
	n.mu.Lock()
	for {
		for !n.mu.closed && (len(n.mu.queue) == 0 || n.mu.held) {
			n.mu.cond.Wait()
		}
		if n.mu.closed {
			n.mu.Unlock()
			return
		}
		if len(n.mu.queue) > 1 && n.mu.reorder > 0 && n.mu.rng.Float64() < n.mu.reorder {
			j := 1 + n.mu.rng.IntN(len(n.mu.queue)-1)
			n.mu.queue[0], n.mu.queue[j] = n.mu.queue[j], n.mu.queue[0]
		}
		m := n.mu.queue[0]
		n.mu.queue[0] = nil
		n.mu.queue = n.mu.queue[1:]
		recv := n.mu.recv[m.GetTo()]
		copies := 1
		switch {
		case recv == nil || n.mu.cut[[2]uint64{m.GetFrom(), m.GetTo()}]:
			copies = 0
		case n.mu.drop > 0 && n.mu.rng.Float64() < n.mu.drop:
			copies = 0
		case n.mu.dup > 0 && n.mu.rng.Float64() < n.mu.dup:
			copies = 2
		}
		if copies == 0 {
			n.mu.dropped++
		}
		n.mu.Unlock()
		for range copies {
			recv(proto.Clone(m).(*pb.Message))
		}
		n.act.add(-1)
		n.mu.Lock()
	}
}

type memEndpoint struct {
	n    *Network
	id   uint64
	dead atomic.Bool // Kill: sends nothing more
}

func (e *memEndpoint) Start(recv func(*pb.Message)) error {
	e.n.mu.Lock()
	e.n.mu.recv[e.id] = recv
	e.n.mu.Unlock()
	return nil
}

func (e *memEndpoint) Send(msgs []*pb.Message) {
	if !e.dead.Load() {
		e.n.send(msgs)
	}
}

// Kill makes t (an Endpoint) send nothing more: a test that simulates a
// power cut kills the node's endpoint before it clones the node's disk,
// so that nothing the node syncs after the clone reaches a peer (a dead
// node sends nothing).
func Kill(t Transport) {
	if e, ok := t.(*memEndpoint); ok {
		e.dead.Store(true)
	}
}

func (e *memEndpoint) Close() error {
	e.n.mu.Lock()
	delete(e.n.mu.recv, e.id)
	e.n.mu.Unlock()
	return nil
}

// activity counts work queued anywhere in an in-process cluster (messages
// in the Network, events in a node's inbox), so a test can wait until
// everything has settled instead of sleeping. nil counts nothing.
type activity struct {
	mu   sync.Mutex
	cond sync.Cond
	n    int
}

func newActivity() *activity {
	a := &activity{}
	a.cond.L = &a.mu
	return a
}

func (a *activity) add(d int) {
	if a == nil || d == 0 {
		return
	}
	a.mu.Lock()
	a.n += d
	if a.n < 0 {
		panic("quorum: activity below zero")
	}
	if a.n == 0 {
		a.cond.Broadcast()
	}
	a.mu.Unlock()
}

// wait returns once nothing is queued anywhere.
func (a *activity) wait() {
	a.mu.Lock()
	for a.n > 0 {
		a.cond.Wait()
	}
	a.mu.Unlock()
}
