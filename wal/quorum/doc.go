// Package quorum is a wal.Store that commits to a Raft quorum
// (go.etcd.io/raft/v3): a Txn's Done(nil) means its entry is in the synced
// logs of a majority of the cluster's nodes and applied on this one, in the
// term it was proposed in. The Raft log and state live in each node's own
// Pebble (a wal.Log), beside the state they produce.
//
// This comment is the spec of the format and of the rules; the code files
// point here. wal's Store doc (wal/store.go) is the contract kept.
//
// # Files
//
//	storage.go       Storage: raft.Storage on the node's wal.Log; Append, Compact
//	keys.go          the keys below
//	node.go          Node: Start, the Ready loop, apply, propose, Leader, Close
//	proposal.go      the entry payload below
//	store.go         Store: the wal.Store of one leadership term
//	overlay.go       the submitted-not-applied writes reads see
//	transport.go     Transport
//	memtransport.go  Network: the deterministic in-process transport (tests)
//	tcptransport.go  TCP: length-prefixed messages between nodes
//	raftlog.go       raft's logger on slog
//
// # Keys
//
// Under wal.QuorumPrefix ('q'), which wal reserves for this package and
// nothing else reads (a scan of the broker's state, 'm' 'r' 's' 'd', never
// reaches it). Part of the on-disk format.
//
//	'q' 'a'               -> applied index (8, BE): written in the apply batch
//	'q' 'c'               -> raftpb.ConfState as of the applied index (protobuf)
//	'q' 'e' index(8, BE)  -> raftpb.Entry (protobuf)
//	'q' 'h'               -> raftpb.HardState (protobuf)
//	'q' 'n'               -> this directory's node id (8, BE), set once
//	'q' 't'               -> compaction mark: index(8, BE) term(8, BE) of the
//	                         last dropped entry
//
// The log is contiguous from the compaction mark + 1 (or 1) to its last
// entry; OpenStorage checks it. A directory created as node N refuses to
// start as any other id (ErrWrongNode): ids are never reused.
//
// # Entries
//
// An EntryNormal with data is a batch of Txns proposed together:
//
//	+------+------------------+--------------+-------------+------------------+
//	| 0x01 | incarnation (8)  | seq uvarint  | n uvarint   | n × Txn record   |
//	+------+------------------+--------------+-------------+------------------+
//
// (the Txn record is wal's, wal/doc.go). incarnation is random per Node
// start and seq counts the node's proposals: together they match an entry
// to the proposal waiting for it, never its index alone, and an entry
// proposed by an earlier run of this node matches nothing. An empty
// EntryNormal is the one a new leader appends for its term.
//
// # Ready loop
//
// One goroutine (Node.run) owns the RawNode: it takes messages, ticks and
// the serving Store's queue, then handles each Ready in raft's order:
//
//  1. If the node no longer leads the serving Store's term, the Store fails
//     first (every proposal whose fate is unknown gets ErrLeadershipLost),
//     before anything more is applied.
//  2. The Ready's entries and HardState are written as one batch
//     (Storage.Append), synced when Ready.MustSync, and the loop waits for
//     it: nothing that depends on them is sent before they are on disk.
//  3. Its messages are handed to the Transport.
//  4. Its committed entries are applied (below).
//  5. Advance.
//
// CheckQuorum and PreVote are on (a leader cut off from a majority steps
// down within an election timeout; a rejoining node does not disrupt the
// term), and proposal forwarding is off: only a serving leader proposes.
//
// # Applying
//
// A Ready's committed entries are applied as one Pebble batch holding
// every Txn's ops, in order, and the applied index (and the membership,
// after a configuration change). The batch is not synced: it rides the
// next sync, and a crash that loses it loses the applied index with it, so
// restart re-applies those entries from the log (Config.Applied is the
// durable applied index; Pebble keeps batches in order, so the applied
// index never runs ahead of the synced log). Then the proposals those
// entries carry are completed: Done(nil) for each Txn, in order.
//
// A Store starts serving (Node.Leader returns it) when its node, as
// leader, has applied the empty entry of its own term: by then every entry
// of earlier terms is applied here.
//
// # Store
//
// A Store is one leadership term's wal.Store. Submit queues the Txn and
// wakes the loop, which proposes what is queued as one entry (up to 4 MiB
// of Txns; more makes more entries). Done rules:
//
//   - Done(nil) only when the entry carrying the Txn is applied here, its
//     term equals the Store's, and the node still leads that term: it is
//     committed, so a majority has it in synced logs.
//   - When the term ends (the node steps down or sees a higher term), or
//     raft drops a proposal, every Txn proposed or queued gets Done(err)
//     (ErrLeadershipLost, ErrProposalDropped): its fate is unknown. It may
//     still be committed by the next leader and applied everywhere, as the
//     wal contract allows for a failed Txn; it is never acknowledged.
//   - The failure is sticky: every later Submit fails too. The Store is
//     done; the next term, on this node or another, is a new Store. If
//     the node still leads when its Store fails (a dropped proposal, or
//     Store.Close), it proposes a barrier (an entry of no Txns) and serves
//     a new Store in the same term once the barrier is applied: by then
//     every entry of the failed Store is applied or truncated, so the new
//     Store's state is settled.
//   - Dones run on the node's goroutine, in Submit order. At most 4096
//     Txns are in flight per Store; Submit then blocks (back-pressure).
//   - NoSync is ignored: every Txn is replicated.
//
// # Reads
//
// The contract says a read sees every Txn submitted before it, before its
// Done. Pebble holds only what is applied, and a leader's Txn is applied
// a round trip after Submit. Applying at Submit, as wal.Log does, would put
// writes whose fate is unknown into the state that followers and restarts
// trust, and undoing them on a lost term would mean rebuilding the state.
// So the Store keeps an overlay instead: the writes of its submitted,
// unapplied Txns (each key's latest Set or Delete, and every DeleteRange,
// each with a sequence number), read over a Pebble view. The apply of a
// batch and the trimming of the overlay happen under the overlay's lock,
// and a Snapshot takes Pebble's snapshot and a copy of the overlay under
// the same lock, so no Txn falls between them. When the Store fails its
// overlay is dropped: reads of a failed Store serve only what is applied,
// never a write whose fate is unknown. Node.Applied reads the applied
// state alone (a follower's view).
//
// # Failures
//
// A failed Raft log write or apply (the wal.Log's sticky error) stops the
// node: Raft cannot go on without its log. Every Store fails with that
// error, and Txns still get their Done(err) in order until Close. A
// snapshot from the leader (not built yet) also stops the node.
//
// # Transport
//
// Transport is what a node needs to send and receive raftpb.Messages.
// Network (tests) delivers in order with one goroutine and injects faults
// by rule: links cut one way, isolation, seeded drop, duplicate and
// reorder probabilities, hold and release, and Kill (a dead node sends
// nothing: tests kill a node's endpoint before cloning its disk); with it, tests drive ticks by hand and
// wait for quiet (activity) rather than time. TCP opens one connection per
// peer and direction: the magic "KQR1" and the sender's id (8, BE), then
// frames of a 4-byte BE length and a protobuf message (at most 64 MiB).
// A connection that breaks these rules is closed.
//
// # Wiring (for cmd and the engine; not done in this package)
//
//   - cmd/keel: a [cluster] section (node_id, listen, peers) builds a TCP
//     transport on the node-to-node listener and Start(Config{ID, Peers,
//     Dir: the data directory, TickInterval ~100 ms, ElectionTicks ~10:
//     a shared 2-core machine wants generous timeouts}). The data
//     directory is a wal data directory: the same checks, lock and format
//     key; keel inspect can read the 'q' keys to show term, commit and
//     applied index.
//   - The engine runs per term: it waits on Node.Leader, then loads
//     sessions and retained messages from that Store (which equals the
//     applied state at that moment) and serves with it as its wal.Store.
//     When the Store's Err becomes non-nil (its term ended) the engine
//     closes every client connection (5.0: DISCONNECT 0x9C with a Server
//     Reference), drops its memory, closes the Store, and waits on
//     Node.Leader again. Meanwhile, and on followers, CONNECT is refused
//     (CONNACK 0x9C/0x9D with a Server Reference, from Node.Status's Lead).
//   - A 3.1.1 client gets no reason code: its connection is closed.
//
// # Not yet
//
// Log compaction is built (Storage.Compact) but not run, because catching
// up a follower that needs compacted entries takes a state snapshot (a
// Pebble checkpoint), which is not built: Storage.Snapshot reports it
// temporarily unavailable after a compaction. Membership changes beyond
// the bootstrap, learners, TLS between nodes, linearizable reads on
// followers, and the process-level tests are the next slices of issue 18.
package quorum
