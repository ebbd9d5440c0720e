package quorum

import (
	pb "go.etcd.io/raft/v3/raftpb"
)

// Transport carries Raft messages between the nodes of a cluster. The
// node owns its Transport: it calls Start once, Send from its Ready loop,
// and Close when it stops.
type Transport interface {
	// Start begins handing messages addressed to this node to recv. recv
	// does not block for long (it queues the message for the node, or
	// drops it when the node is overloaded: Raft resends what matters).
	Start(recv func(m *pb.Message)) error
	// Send hands msgs to their recipients without waiting for the
	// network: a message that cannot be queued is dropped. The messages
	// are the caller's again once Send returns.
	Send(msgs []*pb.Message)
	// Close stops sending and receiving and waits for the transport's
	// goroutines.
	Close() error
}
