// Package sessions owns Keel's session state: subscriptions, the outbound
// in-flight window (QoS 1/2 packet ids bound to queued messages), the
// offline queue, inbound QoS 2 packet ids, will, and expiry, in memory and
// as records in the store. The engine says what happened (a subscription,
// a delivery bound to a packet id, an ack, the end of a session); each
// method here changes memory and appends the records of that change to the
// engine's Txn together, and cites its row of the commit-before-send table
// (README). Only this package knows the session keys.
//
// Persistent sessions are rebuilt from the store on start (Load); their
// offline queues stay on disk and are streamed back in order (Refill), so
// memory does not grow with queue depth. A non-persistent session lives in
// memory only and writes nothing.
//
// A Store and its Sessions are owned by the broker's core goroutine:
// nothing here locks. Methods that read the store read only what their
// session's own state bounds (a window's worth of queue entries); ending a
// session deletes its keys with one range deletion and leaves the release
// of its shared message bodies to SharedRefs, which reads a snapshot and
// may run on any goroutine.
package sessions

import (
	"sort"
	"sync/atomic"
	"time"

	"github.com/keelmq/keel/wal"
)

// NeverExpire is the session expiry meaning "never" (3.1.1 clean session 0,
// or 5.0 Session Expiry Interval 0xFFFFFFFF).
const NeverExpire = 0xFFFFFFFF

// Flight states.
const (
	Sent     = wal.EntrySent     // PUBLISH sent, waiting for PUBACK or PUBREC
	Released = wal.EntryReleased // PUBREC received, PUBREL sent, waiting for PUBCOMP
)

// Subscription is one subscription's options.
type Subscription struct {
	QoS               byte // granted
	NoLocal           bool
	RetainAsPublished bool
	RetainHandling    byte
	SubID             uint32 // 0: none
}

// Delivery is one copy of a message for one session.
type Delivery struct {
	Msg    *wal.Message
	QoS    byte // min of the message's and the subscription's
	Retain bool // the retain flag to deliver with (Retain As Published)
	SubIDs []uint32
	Shared uint64 // the stored shared body (StoreShared), or 0: inline
}

// Flight is one outbound QoS 1/2 message bound to a packet id, or (QoS 0,
// PacketID 0) a queued QoS 0 message handed out by Refill.
type Flight struct {
	Seq      uint64 // queue key of its entry (persistent sessions)
	PacketID uint16
	State    byte // Sent or Released
	QoS      byte
	Retain   bool
	SubIDs   []uint32
	Shared   uint64       // shared body id, 0 if inline or released
	Msg      *wal.Message // nil once released
	size     int          // bytes of its queue entry as last written (persistent)
}

// Session is one client's session. O is what the engine keeps for an
// online session's live end (a connection, a bridge link); sessions only
// holds it. Fields are read by the engine; they change only through the
// Store's methods, except where a field says otherwise.
type Session[O any] struct {
	ClientID   string
	Persistent bool // state is on disk
	Protocol   byte
	Expiry     uint32 // seconds after disconnect; NeverExpire
	Will       *wal.Will
	// Creator is the identity of the client that created the session,
	// which the engine holds other clients to (Options.SessionOwners);
	// nil for a session restored from a format-1 record.
	Creator *wal.Owner

	// Subscriptions by filter (the filter as subscribed, $share included);
	// nil until the first. The maps here are read by others, written only
	// through the Store.
	Subs map[string]Subscription

	// Outbound window: packet id -> flight.
	Inflight map[uint16]*Flight
	nextPID  uint16

	// Backlog is true while the disk queue may hold entries at or after
	// cursor that are not in Inflight. Every entry with seq >= cursor is
	// queued (not bound).
	Backlog bool
	cursor  uint64

	// Pending holds QoS 1/2 messages of a non-persistent session waiting
	// for room in its window (persistent sessions queue on disk instead).
	Pending []*Flight

	// Resend holds flights resumed on this connection that are not resent
	// yet because the client's Receive Maximum is full [MQTT-3.3.4-9]. The
	// engine fills and drains it.
	Resend []*Flight

	// Inbound QoS 2 packet ids received and not yet released.
	InQoS2 map[uint16]struct{}

	// DisconnectedAt is when the session went offline (zero while online).
	// The engine sets it.
	DisconnectedAt time.Time

	// MaxQueued and MaxQueuedBytes are the session's own queue bounds,
	// set by the engine (its per-client overrides); 0: the engine's
	// default, negative: no limit. Not stored.
	MaxQueued      int64
	MaxQueuedBytes int64

	// Owner is the session's live end while it is online (Attach,
	// Detach).
	Owner  O
	online bool

	// The session's stored queue: entries (queued and in flight) and
	// their bytes; sharedBytes is the bytes of the shared bodies they
	// reference, each counted for every entry that references it.
	queued      int64
	queuedBytes int64
	sharedBytes int64
}

// Queued is the number of entries in s's stored queue (queued and in
// flight) and their bytes as stored, a shared body counted for each entry
// that references it: what s alone would hold on disk. A non-persistent
// session has none.
func (s *Session[O]) Queued() (entries, bytes int64) {
	return s.queued, s.queuedBytes + s.sharedBytes
}

// SharesBodies reports whether an entry of s's stored queue references a
// shared message body: only then does ending s leave references for
// SharedRefs to release. (A count that erred high would only cost a
// needless sweep; none errs low: each reference adds its body's size.)
func (s *Session[O]) SharesBodies() bool { return s.sharedBytes > 0 }

// Waiting is the number of entries in s's stored queue that are queued
// and not in flight: what EvictOldest may take.
func (s *Session[O]) Waiting() int64 {
	if !s.Persistent {
		return 0
	}
	return s.queued - int64(len(s.Inflight))
}

// New returns an empty, non-persistent session. Its maps are made at
// their first entry: most sessions of a fleet never use some of them.
func New[O any](clientID string) *Session[O] {
	return &Session[O]{ClientID: clientID}
}

func (s *Session[O]) setSub(filter string, sub Subscription) {
	if s.Subs == nil {
		s.Subs = make(map[string]Subscription)
	}
	s.Subs[filter] = sub
}

func (s *Session[O]) setInflight(f *Flight) {
	if s.Inflight == nil {
		s.Inflight = make(map[uint16]*Flight)
	}
	s.Inflight[f.PacketID] = f
}

func (s *Session[O]) setInQoS2(pid uint16) {
	if s.InQoS2 == nil {
		s.InQoS2 = make(map[uint16]struct{})
	}
	s.InQoS2[pid] = struct{}{}
}

// nextPacketID returns a free packet id for an outbound message.
// REQUIRES: len(s.Inflight) < 65535.
func (s *Session[O]) nextPacketID() uint16 {
	for {
		s.nextPID++
		if s.nextPID == 0 {
			s.nextPID = 1
		}
		if _, used := s.Inflight[s.nextPID]; !used {
			return s.nextPID
		}
	}
}

// CanSendNow reports whether a new QoS 1/2 message for s may be bound and
// sent at once with a window of w: nothing queued ahead of it, and room.
func (s *Session[O]) CanSendNow(w int) bool {
	return !s.Backlog && len(s.Pending) == 0 && len(s.Inflight) < w
}

// InflightInOrder returns the in-flight messages in the order they were
// queued (by seq), for resending on reconnect [MQTT-4.4.0-1].
func (s *Session[O]) InflightInOrder() []*Flight {
	out := make([]*Flight, 0, len(s.Inflight))
	for _, f := range s.Inflight {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out
}

// record is the session's own record for the store.
func (s *Session[O]) record() *wal.Session {
	r := &wal.Session{Protocol: s.Protocol, ExpirySeconds: s.Expiry, Will: s.Will, Owner: s.Creator}
	if !s.DisconnectedAt.IsZero() {
		r.DisconnectedAt = s.DisconnectedAt.UnixMilli()
	}
	return r
}

// Store is the set of sessions plus the reference counts of shared message
// bodies.
type Store[O any] struct {
	store    wal.Store
	Sessions map[string]*Session[O]

	// refs counts the queue entries that reference each shared body.
	refs map[uint64]body

	// seq is the last queue or message seq handed out.
	seq uint64

	// garbage holds keys Load found dead (completed flows whose deletion
	// was lost, unreferenced bodies), deleted by CollectGarbage.
	garbage [][]byte

	// MaxMemQueue bounds Pending per non-persistent session (Enqueue).
	MaxMemQueue int

	// Totals for Stats, written on the core goroutine only.
	totals totals
}

// body is a shared message body: its references and its stored size.
type body struct {
	refs int32
	size int32
}

// totals are the Store's counters; read from any goroutine (Stats).
type totals struct {
	persistent, offline atomic.Int64 // stored sessions; of them, offline
	entries, entryBytes atomic.Int64 // queue entries of all sessions, and their bytes
	bodyBytes           atomic.Int64 // shared bodies' bytes
}

// Stats are the Store's counters, safe to read from any goroutine.
type Stats struct {
	Persistent int64 // stored sessions
	Offline    int64 // stored sessions with no connection
	Queued     int64 // stored queue entries (queued and in flight), all sessions
	// QueuedBytes is the bytes of the stored queue entries and of the
	// shared bodies they reference (each stored once).
	QueuedBytes int64
}

// Stats returns the Store's counters. Safe to call from any goroutine.
func (st *Store[O]) Stats() Stats {
	t := &st.totals
	return Stats{
		Persistent:  t.persistent.Load(),
		Offline:     t.offline.Load(),
		Queued:      t.entries.Load(),
		QueuedBytes: t.entryBytes.Load() + t.bodyBytes.Load(),
	}
}

// Attach makes o the live end of s (its connection) and s persistent if
// persistent is true (once stored, a session stays stored until End).
func (st *Store[O]) Attach(s *Session[O], o O, persistent bool) {
	st.uncount(s)
	s.Owner, s.online = o, true
	s.Persistent = s.Persistent || persistent
	st.count(s)
}

// Detach takes s's live end away: s is offline.
func (st *Store[O]) Detach(s *Session[O]) {
	st.uncount(s)
	var none O
	s.Owner, s.online = none, false
	st.count(s)
}

func (st *Store[O]) count(s *Session[O]) {
	if s.Persistent {
		st.totals.persistent.Add(1)
		if !s.online {
			st.totals.offline.Add(1)
		}
	}
}

func (st *Store[O]) uncount(s *Session[O]) {
	if s.Persistent {
		st.totals.persistent.Add(-1)
		if !s.online {
			st.totals.offline.Add(-1)
		}
	}
}

// addEntry counts a change of d entries and b bytes in s's stored queue.
func (st *Store[O]) addEntry(s *Session[O], d int64, b int64) {
	s.queued += d
	s.queuedBytes += b
	st.totals.entries.Add(d)
	st.totals.entryBytes.Add(b)
}

// addShared counts a reference of s's queue to shared body id (sign +1)
// or its end (-1) in s's bytes. The totals count each body once
// (StoreShared, Unref). REQUIRES: the body is still referenced (call it
// before the Unref that may free it).
func (st *Store[O]) addShared(s *Session[O], id uint64, sign int64) {
	if id != 0 {
		s.sharedBytes += sign * int64(st.refs[id].size)
	}
}

func (st *Store[O]) nextSeq() uint64 {
	st.seq++
	return st.seq
}

func beUint64(b []byte) uint64 {
	var v uint64
	for _, c := range b[:8] {
		v = v<<8 | uint64(c)
	}
	return v
}
