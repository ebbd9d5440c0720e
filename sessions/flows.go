package sessions

import (
	"errors"
	"fmt"

	"github.com/keelmq/keel/wal"
)

// The methods below are the engine's events. Each changes memory and, for
// a persistent session, appends its records to txn in the same call; the
// engine releases the packet that acknowledges the change only after txn
// is durable. Rows are those of the commit-before-send table.

// Save writes s's own record: client id, protocol, expiry, will, and when
// it went offline. Row "CONNECT that creates or resumes a persistent
// session" (and the record's later changes: disconnect, will published).
// Nothing is written for a non-persistent session.
func (st *Store[O]) Save(txn *wal.Txn, s *Session[O]) {
	if s.Persistent {
		txn.Set(wal.SessionKey(s.ClientID), wal.AppendSession(nil, s.record(), st.store.CompressThreshold()))
	}
}

// Subscribe adds or replaces the subscription to filter and reports
// whether one existed. Row "SUBSCRIBE on a persistent session".
func (st *Store[O]) Subscribe(txn *wal.Txn, s *Session[O], filter string, sub Subscription) (existed bool) {
	_, existed = s.Subs[filter]
	s.setSub(filter, sub)
	if s.Persistent {
		r := toRecord(sub)
		txn.Set(wal.SubscriptionKey(s.ClientID, filter), wal.AppendSubscription(nil, &r))
	}
	return existed
}

// Unsubscribe removes the subscription to filter and reports whether there
// was one. Row "UNSUBSCRIBE on a persistent session".
func (st *Store[O]) Unsubscribe(txn *wal.Txn, s *Session[O], filter string) bool {
	if _, ok := s.Subs[filter]; !ok {
		return false
	}
	delete(s.Subs, filter)
	if s.Persistent {
		txn.Delete(wal.SubscriptionKey(s.ClientID, filter))
	}
	return true
}

// Received records inbound QoS 2 packet id pid and reports whether it is
// new; a packet id already held is a resend, not to be routed again
// [MQTT-4.3.3-10]. Row "PUBLISH QoS 2 in": the id rides with the message.
func (st *Store[O]) Received(txn *wal.Txn, s *Session[O], pid uint16) (first bool) {
	if _, seen := s.InQoS2[pid]; seen {
		return false
	}
	s.setInQoS2(pid)
	if s.Persistent {
		txn.Set(wal.InboundKey(s.ClientID, pid), nil)
	}
	return true
}

// ReleaseInbound forgets inbound QoS 2 packet id pid and reports whether
// it was held. Row "PUBREL in".
func (st *Store[O]) ReleaseInbound(txn *wal.Txn, s *Session[O], pid uint16) bool {
	if _, ok := s.InQoS2[pid]; !ok {
		return false
	}
	delete(s.InQoS2, pid)
	if s.Persistent {
		txn.Delete(wal.InboundKey(s.ClientID, pid))
	}
	return true
}

// StoreShared writes m once as a body that refs queue entries will share
// and returns its id (row "PUBLISH QoS 1 in": a message stored once however
// many persistent sessions it is queued for).
func (st *Store[O]) StoreShared(txn *wal.Txn, m *wal.Message, refs int) uint64 {
	id := st.nextSeq()
	v := wal.AppendMessage(nil, m, st.store.CompressThreshold())
	txn.Set(wal.MessageKey(id), v)
	st.refs[id] = body{refs: int32(refs), size: int32(len(v))}
	st.totals.bodyBytes.Add(int64(len(v)))
	return id
}

// Unref drops one reference to shared body id and deletes the body in txn
// when it was the last. id 0 is no body.
func (st *Store[O]) Unref(txn *wal.Txn, id uint64) {
	if id == 0 {
		return
	}
	b, ok := st.refs[id]
	if !ok {
		return
	}
	if b.refs--; b.refs > 0 {
		st.refs[id] = b
		return
	}
	delete(st.refs, id)
	st.totals.bodyBytes.Add(-int64(b.size))
	txn.Delete(wal.MessageKey(id))
}

// Bind binds d to a new packet id of s and returns the flight to send.
// Row "PUBLISH QoS 1/2 out to a persistent session": the binding rides in
// txn (with the inbound message, when they share a drain), before the
// PUBLISH leaves. REQUIRES: d.QoS > 0 and s.CanSendNow.
func (st *Store[O]) Bind(txn *wal.Txn, s *Session[O], d Delivery) *Flight {
	f := &Flight{PacketID: s.nextPacketID(), State: Sent, QoS: d.QoS, Retain: d.Retain, SubIDs: d.SubIDs, Msg: d.Msg}
	if s.Persistent {
		f.Seq, f.Shared = st.nextSeq(), d.Shared
		st.addEntry(s, 1, 0)
		st.addShared(s, f.Shared, 1)
		st.writeEntry(txn, s, f, wal.EntrySent)
	}
	s.setInflight(f)
	return f
}

// Enqueue queues d for later: on disk for a persistent session (row
// "PUBLISH QoS 1 in": a queue entry for every persistent session it
// matches), in memory for a non-persistent one. It reports false when a
// non-persistent session's memory queue is full and d was not queued.
func (st *Store[O]) Enqueue(txn *wal.Txn, s *Session[O], d Delivery) bool {
	if !s.Persistent {
		if st.MaxMemQueue > 0 && len(s.Pending) >= st.MaxMemQueue {
			return false
		}
		s.Pending = append(s.Pending, &Flight{QoS: d.QoS, Retain: d.Retain, SubIDs: d.SubIDs, Msg: d.Msg})
		return true
	}
	f := &Flight{Seq: st.nextSeq(), QoS: d.QoS, Retain: d.Retain, SubIDs: d.SubIDs, Shared: d.Shared, Msg: d.Msg}
	st.addEntry(s, 1, 0)
	st.addShared(s, f.Shared, 1)
	st.writeEntry(txn, s, f, wal.EntryQueued)
	if !s.Backlog {
		s.Backlog, s.cursor = true, f.Seq
	}
	return true
}

// writeEntry writes f's queue entry in state, and counts the change of
// its size (f.size: its size as last written, 0 for a new one).
func (st *Store[O]) writeEntry(txn *wal.Txn, s *Session[O], f *Flight, state byte) {
	e := wal.Entry{State: state, QoS: f.QoS, Retain: f.Retain, SubIDs: f.SubIDs, Shared: f.Shared}
	if state != wal.EntryQueued {
		e.PacketID = f.PacketID
	}
	if f.Shared == 0 && state != wal.EntryReleased {
		e.Inline = f.Msg
	}
	v := wal.AppendEntry(nil, &e, st.store.CompressThreshold())
	txn.Set(wal.QueueKey(s.ClientID, f.Seq), v)
	st.addEntry(s, 0, int64(len(v)-f.size))
	f.size = len(v)
}

// MarkReleased moves f to Released: its message is no longer needed, the
// entry keeps only the packet id. Row "PUBREC in (QoS 2 out)", before the
// PUBREL.
func (st *Store[O]) MarkReleased(txn *wal.Txn, s *Session[O], f *Flight) {
	f.State, f.Msg = Released, nil
	if s.Persistent {
		st.writeEntry(txn, s, f, wal.EntryReleased)
		st.addShared(s, f.Shared, -1)
		st.Unref(txn, f.Shared)
	}
	f.Shared = 0
}

// Complete ends an outbound flow (PUBACK, PUBCOMP, or a 5.0 PUBREC with a
// failure reason): the binding and its queue entry go. Rows "PUBACK in"
// and "PUBCOMP in"; nothing is sent after it, so the engine may let it ride
// the next sync.
func (st *Store[O]) Complete(txn *wal.Txn, s *Session[O], f *Flight) {
	delete(s.Inflight, f.PacketID)
	if s.Persistent {
		st.drop(txn, s, f)
	}
}

// MaxScan bounds the queue entries one Refill reads (see Refill).
const MaxScan = 1024

// errStopScan ends a Scan early once enough was read.
var errStopScan = errors.New("sessions: enough read")

// Refill moves queued messages of s into its window of w and calls send
// for each, in queue order: from memory for a non-persistent session,
// streamed from disk for a persistent one, each bound to its packet id in
// txn before it is sent (row "PUBLISH QoS 1/2 out"). A queued QoS 0
// message is deleted and sent without a packet id. An entry for which
// keep reports false (expired, too large for the client) is dropped.
//
// It reads at most max(w, MaxScan) entries, however many it drops, so a
// long run of expired entries is read over several calls: if it stops at
// that bound with room left, it reports retry. If it reaches the end of
// what the store shows and unseen is true (txn, not yet submitted, may
// hold entries for s), it reports retry too: call it again once txn is
// submitted. Otherwise reaching the end ends the backlog.
func (st *Store[O]) Refill(txn *wal.Txn, s *Session[O], w int, unseen bool,
	keep func(m *wal.Message, qos byte, subIDs []uint32) bool, send func(f *Flight)) (retry bool, err error) {
	for len(s.Pending) > 0 && len(s.Inflight) < w {
		f := s.Pending[0]
		s.Pending[0] = nil
		s.Pending = s.Pending[1:]
		if !keep(f.Msg, f.QoS, f.SubIDs) {
			continue
		}
		f.PacketID, f.State = s.nextPacketID(), Sent
		s.setInflight(f)
		send(f)
	}
	if !s.Persistent || !s.Backlog {
		return false, nil
	}
	// Pull until the window is full or the queue is drained: entries that
	// take no slot (dropped, or QoS 0) leave room no ack will come to fill.
	budget := max(w, MaxScan)
	for {
		room := w - len(s.Inflight)
		// Pull in chunks, not one message per ack: each pull is a scan.
		if room <= 0 || (len(s.Inflight) > 0 && room < min(w/4, 64)) {
			return false, nil
		}
		if budget <= 0 {
			return true, nil
		}
		room = min(room, budget)
		n := 0
		err := st.store.Scan(wal.QueueKey(s.ClientID, s.cursor), wal.PrefixEnd(wal.QueuePrefix(s.ClientID)), func(k, v []byte) error {
			if n >= room {
				return errStopScan
			}
			n++
			seq, _ := wal.ParseQueueSeq(k)
			e, err := wal.DecodeEntry(v)
			if err != nil {
				return err
			}
			s.cursor = seq + 1
			m := e.Inline
			if e.Shared != 0 {
				if m, err = sharedBody(st.store, e.Shared); err != nil {
					return err
				}
			}
			f := &Flight{Seq: seq, QoS: e.QoS, Retain: e.Retain, SubIDs: e.SubIDs, Shared: e.Shared, Msg: m, size: len(v)}
			if m == nil || !keep(m, e.QoS, e.SubIDs) {
				st.drop(txn, s, f)
				return nil
			}
			if e.QoS == 0 {
				st.drop(txn, s, f)
				send(f)
				return nil
			}
			f.PacketID, f.State = s.nextPacketID(), Sent
			st.writeEntry(txn, s, f, wal.EntrySent)
			s.setInflight(f)
			send(f)
			return nil
		})
		if err != nil && !errors.Is(err, errStopScan) {
			return false, err
		}
		budget -= n
		if n < room {
			if unseen {
				return true, nil
			}
			s.Backlog = false
			return false, nil
		}
	}
}

// drop deletes f's queue entry (completed, or not to be sent).
func (st *Store[O]) drop(txn *wal.Txn, s *Session[O], f *Flight) {
	txn.Delete(wal.QueueKey(s.ClientID, f.Seq))
	st.addEntry(s, -1, -int64(f.size))
	st.addShared(s, f.Shared, -1)
	st.Unref(txn, f.Shared)
}

// End deletes s: memory, and for a persistent session every key of its
// state with one range deletion in txn. Rows "CONNECT clean start over an
// existing persistent session" and "session expiry". It reads nothing:
// the references s's queue held to shared bodies are released later by
// SharedRefs over a snapshot taken before txn, then Unref. Until then
// those bodies stay; if the broker stops first, Load collects them.
//
// REQUIRES: every earlier write of s was submitted before the snapshot
// handed to SharedRefs (so the snapshot and the reference counts agree).
func (st *Store[O]) End(txn *wal.Txn, s *Session[O]) {
	delete(st.Sessions, s.ClientID)
	st.uncount(s)
	if s.Persistent {
		p := wal.SessionPrefix(s.ClientID)
		txn.DeleteRange(p, wal.PrefixEnd(p))
		st.addEntry(s, -s.queued, -s.queuedBytes)
		s.sharedBytes = 0
	}
	s.Persistent = false
	s.Backlog = false
	s.Pending, s.Resend = nil, nil
	s.Inflight = nil
	s.InQoS2 = nil
}

// SharedRefs calls fn with the shared body ids referenced by client's
// queue in snap (an entry that still needs its body: queued or sent), in
// chunks of at most chunk ids. It reads only entry headers and touches no
// Store: any goroutine may run it.
func SharedRefs(snap wal.Reader, client string, chunk int, fn func(ids []uint64)) error {
	var ids []uint64
	err := snap.Scan(wal.QueuePrefix(client), wal.PrefixEnd(wal.QueuePrefix(client)), func(k, v []byte) error {
		h, err := wal.PeekEntry(v)
		if err != nil {
			return err
		}
		if h.Shared != 0 && h.State != wal.EntryReleased {
			ids = append(ids, h.Shared)
			if len(ids) == chunk {
				fn(ids)
				ids = nil
			}
		}
		return nil
	})
	if len(ids) > 0 {
		fn(ids)
	}
	return err
}

// OldestHidden reports whether s has queued entries (not in flight) and a
// read shows none of them: every one was written in a Txn not yet
// submitted, so EvictOldest cannot find them until it is. It reads at
// most one entry.
func (st *Store[O]) OldestHidden(s *Session[O]) (bool, error) {
	if s.Waiting() <= 0 {
		return false, nil
	}
	_, _, ok, err := st.oldestQueued(s)
	return !ok, err
}

// EvictOldest deletes s's oldest queued entry, one not in flight, in txn
// and reports whether there was one a read shows (see OldestHidden): the
// drop_oldest policy of a full queue, which makes room in the same Txn as
// the entry that takes it. A shared body loses the entry's reference. It
// reads at most one entry.
func (st *Store[O]) EvictOldest(txn *wal.Txn, s *Session[O]) (bool, error) {
	if s.Waiting() <= 0 {
		return false, nil
	}
	seq, v, ok, err := st.oldestQueued(s)
	if !ok || err != nil {
		return false, err
	}
	h, err := wal.PeekEntry(v)
	if err != nil {
		return false, fmt.Errorf("sessions: queue entry %d of %q: %w", seq, s.ClientID, err)
	}
	// Every entry at or after the cursor is queued (Session.Backlog):
	// the cursor moves past the one deleted, so that a read that still
	// shows it (txn is not submitted yet) does not offer it again.
	s.cursor = seq + 1
	f := &Flight{Seq: seq, Shared: h.Shared, size: len(v)}
	if h.State == wal.EntryReleased {
		f.Shared = 0
	}
	st.drop(txn, s, f)
	return true, nil
}

// oldestQueued reads s's first entry at or after its cursor: the oldest
// queued one a read shows.
func (st *Store[O]) oldestQueued(s *Session[O]) (seq uint64, v []byte, ok bool, err error) {
	if !s.Backlog {
		return 0, nil, false, nil
	}
	err = st.store.Scan(wal.QueueKey(s.ClientID, s.cursor), wal.PrefixEnd(wal.QueuePrefix(s.ClientID)), func(k, val []byte) error {
		seq, _ = wal.ParseQueueSeq(k)
		v, ok = append([]byte(nil), val...), true
		return errStopScan
	})
	if err != nil && !errors.Is(err, errStopScan) {
		return 0, nil, false, err
	}
	return seq, v, ok, nil
}

// DropOldestPending drops the oldest message waiting in the memory queue
// of non-persistent s and reports whether there was one.
func (st *Store[O]) DropOldestPending(s *Session[O]) bool {
	if s.Persistent || len(s.Pending) == 0 {
		return false
	}
	s.Pending[0] = nil
	s.Pending = s.Pending[1:]
	return true
}
