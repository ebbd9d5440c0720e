// Package sessions holds Keel's session state: subscriptions, the outbound
// in-flight window (QoS 1/2 packet ids bound to queued messages), inbound
// QoS 2 packet ids, will, and expiry. Persistent sessions are rebuilt from
// the wal on start; their offline queues stay on disk and are streamed from
// Pebble in order, so memory does not grow with queue depth.
//
// A Store and its Sessions are owned by the broker's single routing
// goroutine: nothing here locks.
package sessions

import (
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/keelmq/keel/wal"
)

// NeverExpire is the session expiry meaning "never" (3.1.1 clean session 0,
// or 5.0 Session Expiry Interval 0xFFFFFFFF).
const NeverExpire = 0xFFFFFFFF

// Flight is one outbound QoS 1/2 message bound to a packet id.
type Flight struct {
	Seq      uint64 // queue key of its entry (persistent sessions)
	PacketID uint16
	State    byte // wal.EntrySent or wal.EntryReleased
	QoS      byte
	Retain   bool
	SubIDs   []uint32
	Shared   uint64       // shared body id, 0 if inline or released
	Msg      *wal.Message // nil once released
}

// Session is one client's session.
type Session struct {
	ClientID   string
	Persistent bool // state is on disk
	Protocol   byte
	Expiry     uint32 // seconds after disconnect; NeverExpire
	Will       *wal.Will

	// Subscriptions by filter (the filter as subscribed, $share included).
	Subs map[string]wal.Subscription

	// Outbound window: packet id -> flight, plus the order they were sent.
	Inflight map[uint16]*Flight
	nextPID  uint16

	// Backlog is true while the disk queue may hold entries at or after
	// Cursor that are not in Inflight. Every entry with seq >= Cursor is in
	// state EntryQueued.
	Backlog bool
	Cursor  uint64

	// Pending holds QoS 1/2 messages of a non-persistent session waiting
	// for room in its window (persistent sessions queue on disk instead).
	Pending []*Flight

	// Inbound QoS 2 packet ids received and not yet released.
	InQoS2 map[uint16]struct{}

	// DisconnectedAt is when the session went offline (zero while online).
	DisconnectedAt time.Time

	// Owner is the broker's handle for the connection, nil when offline.
	Owner any
}

// New returns an empty session.
func New(clientID string) *Session {
	return &Session{
		ClientID: clientID,
		Subs:     make(map[string]wal.Subscription),
		Inflight: make(map[uint16]*Flight),
		InQoS2:   make(map[uint16]struct{}),
	}
}

// NextPacketID returns a free packet id for an outbound message.
// REQUIRES: len(s.Inflight) < 65535.
func (s *Session) NextPacketID() uint16 {
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

// InflightInOrder returns the in-flight messages in the order they were
// queued (by seq), for resending on reconnect [MQTT-4.4.0-1].
func (s *Session) InflightInOrder() []*Flight {
	out := make([]*Flight, 0, len(s.Inflight))
	for _, f := range s.Inflight {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out
}

// Record is the session's own record for the wal.
func (s *Session) Record() *wal.Session {
	r := &wal.Session{Protocol: s.Protocol, ExpirySeconds: s.Expiry, Will: s.Will}
	if !s.DisconnectedAt.IsZero() {
		r.DisconnectedAt = s.DisconnectedAt.UnixMilli()
	}
	return r
}

// Store is the set of sessions plus the refcounts of shared message bodies.
type Store struct {
	log      wal.Store
	Sessions map[string]*Session

	// refs counts the queue entries that reference each shared body.
	refs map[uint64]int32

	// MaxSeq is the highest queue or message seq found on disk.
	MaxSeq uint64

	// WasConnected lists sessions that were connected when the broker
	// stopped: their connection ended without DISCONNECT.
	WasConnected []*Session

	// Garbage holds keys Load found dead (completed flows whose deletion
	// was lost, unreferenced bodies): the broker deletes them at start.
	Garbage [][]byte
}

// Load rebuilds every persistent session from the wal.
func Load(l wal.Store, logger *slog.Logger) (*Store, error) {
	st := &Store{log: l, Sessions: make(map[string]*Session), refs: make(map[uint64]int32)}
	var queued, inflight, subs int
	var staleShared []uint64
	var s *Session // the session of the previous key: keys come grouped by session
	err := l.Scan(wal.AllSessionsPrefix(), wal.PrefixEnd(wal.AllSessionsPrefix()), func(k, v []byte) error {
		if len(k) < 4 {
			return fmt.Errorf("sessions: bad key %q", k)
		}
		n := int(k[1])<<8 | int(k[2])
		if len(k) < 3+n+1 {
			return fmt.Errorf("sessions: bad key %q", k)
		}
		if s == nil || s.ClientID != string(k[3:3+n]) { // no allocation: compared in place
			client := string(k[3 : 3+n])
			s = New(client)
			s.Persistent = true
			st.Sessions[client] = s
		}
		client, kind, rest := s.ClientID, k[3+n], k[3+n+1:]
		switch kind {
		case 'M':
			rec, err := wal.DecodeSession(v)
			if err != nil {
				return fmt.Errorf("sessions: session %q: %w", client, err)
			}
			s.Protocol, s.Expiry, s.Will = rec.Protocol, rec.ExpirySeconds, rec.Will
			if rec.DisconnectedAt != 0 {
				s.DisconnectedAt = time.UnixMilli(rec.DisconnectedAt)
			} else {
				st.WasConnected = append(st.WasConnected, s)
			}
		case 'S':
			sub, err := wal.DecodeSubscription(v)
			if err != nil {
				return fmt.Errorf("sessions: subscription %q of %q: %w", rest, client, err)
			}
			s.Subs[string(rest)] = sub
			subs++
		case 'Q':
			if len(rest) != 8 {
				return fmt.Errorf("sessions: bad queue key %q", k)
			}
			seq := beUint64(rest)
			if seq > st.MaxSeq {
				st.MaxSeq = seq
			}
			h, err := wal.PeekEntry(v)
			if err != nil {
				return fmt.Errorf("sessions: queue entry %d of %q: %w", seq, client, err)
			}
			if h.Shared != 0 {
				st.refs[h.Shared]++
			}
			if h.State == wal.EntryQueued {
				// Queued messages stay on disk; only the cursor is kept.
				if !s.Backlog {
					s.Backlog, s.Cursor = true, seq
				}
				queued++
				return nil
			}
			e, err := wal.DecodeEntry(v)
			if err != nil {
				return fmt.Errorf("sessions: queue entry %d of %q: %w", seq, client, err)
			}
			f := &Flight{Seq: seq, PacketID: e.PacketID, State: e.State, QoS: e.QoS, Retain: e.Retain, SubIDs: e.SubIDs, Shared: e.Shared, Msg: e.Inline}
			if e.Shared != 0 && e.State == wal.EntrySent {
				m, err := st.sharedBody(e.Shared)
				if err != nil {
					return fmt.Errorf("sessions: queue entry %d of %q: %w", seq, client, err)
				}
				f.Msg = m
			}
			if old := s.Inflight[e.PacketID]; old != nil {
				// Two bindings of one packet id: the id was reused after
				// the older flow completed, and the completion's delete
				// (written without a sync of its own) was lost. The
				// older one is done: drop it.
				if old.Seq > f.Seq {
					old, f = f, old
				}
				st.Garbage = append(st.Garbage, wal.QueueKey(client, old.Seq))
				if old.Shared != 0 {
					staleShared = append(staleShared, old.Shared)
				}
			} else {
				inflight++
			}
			s.Inflight[e.PacketID] = f
		case 'I':
			if len(rest) != 2 {
				return fmt.Errorf("sessions: bad inbound key %q", k)
			}
			s.InQoS2[uint16(rest[0])<<8|uint16(rest[1])] = struct{}{}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, id := range staleShared {
		// A body left without references is collected by the scan below.
		if st.refs[id]--; st.refs[id] <= 0 {
			delete(st.refs, id)
		}
	}
	// Shared bodies: find the highest id, and drop orphans (a body whose
	// last reference went away).
	err = l.Scan(wal.MessagePrefix(), wal.PrefixEnd(wal.MessagePrefix()), func(k, v []byte) error {
		if len(k) == 9 {
			id := beUint64(k[1:])
			if id > st.MaxSeq {
				st.MaxSeq = id
			}
			if st.refs[id] == 0 {
				// No entry references it: its last release was lost
				// (or never written). Collect it.
				st.Garbage = append(st.Garbage, append([]byte(nil), k...))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for client, s := range st.Sessions {
		if s.Protocol == 0 {
			// State without its session record cannot be resumed: a
			// broken invariant, but not one to refuse to start over.
			logger.Warn("sessions: state without a session record; ignoring", "client", client)
			delete(st.Sessions, client)
		}
	}
	logger.Info("sessions restored", "sessions", len(st.Sessions), "subscriptions", subs,
		"queued", queued, "inflight", inflight, "shared_bodies", len(st.refs), "garbage", len(st.Garbage))
	return st, nil
}

func beUint64(b []byte) uint64 {
	var v uint64
	for _, c := range b[:8] {
		v = v<<8 | uint64(c)
	}
	return v
}

func (st *Store) sharedBody(id uint64) (*wal.Message, error) {
	v, err := st.log.Get(wal.MessageKey(id))
	if err != nil {
		return nil, fmt.Errorf("shared body %d: %w", id, err)
	}
	m, err := wal.DecodeMessage(v)
	if err != nil {
		return nil, fmt.Errorf("shared body %d: %w", id, err)
	}
	return &m, nil
}

// AddRefs records n new references to shared body id.
func (st *Store) AddRefs(id uint64, n int32) { st.refs[id] += n }

// Release drops one reference to shared body id and deletes the body in
// txn when it was the last.
func (st *Store) Release(txn *wal.Txn, id uint64) {
	if id == 0 {
		return
	}
	st.refs[id]--
	if st.refs[id] <= 0 {
		delete(st.refs, id)
		txn.Delete(wal.MessageKey(id))
	}
}

// SharedBodies is the number of shared message bodies referenced.
func (st *Store) SharedBodies() int { return len(st.refs) }

// errStopScan ends a Scan early once enough was read.
var errStopScan = errors.New("sessions: enough read")

// Pulled is one queued entry read from disk.
type Pulled struct {
	Seq   uint64
	Entry wal.Entry
	Msg   *wal.Message
}

// Pull reads up to limit queued entries of s from disk, starting at
// s.Cursor, in order. It advances nothing: the caller moves s.Cursor past
// what it takes.
func (st *Store) Pull(s *Session, limit int) ([]Pulled, error) {
	var out []Pulled
	err := st.log.Scan(wal.QueueKey(s.ClientID, s.Cursor), wal.PrefixEnd(wal.QueuePrefix(s.ClientID)), func(k, v []byte) error {
		if len(out) >= limit {
			return errStopScan
		}
		_, _, rest, _ := wal.ParseSessionKey(k)
		e, err := wal.DecodeEntry(v)
		if err != nil {
			return err
		}
		p := Pulled{Seq: beUint64(rest), Entry: e, Msg: e.Inline}
		if e.Shared != 0 {
			m, err := st.sharedBody(e.Shared)
			if err != nil {
				return err
			}
			p.Msg = m
		}
		out = append(out, p)
		return nil
	})
	if err != nil && !errors.Is(err, errStopScan) {
		return out, err
	}
	return out, nil
}

// Erase writes the deletion of all of s's durable state into txn and
// releases its references to shared bodies.
func (st *Store) Erase(txn *wal.Txn, s *Session) error {
	err := st.log.Scan(wal.SessionPrefix(s.ClientID), wal.PrefixEnd(wal.SessionPrefix(s.ClientID)), func(k, v []byte) error {
		_, kind, _, _ := wal.ParseSessionKey(k)
		if kind == 'Q' {
			e, err := wal.DecodeEntry(v)
			if err == nil && e.Shared != 0 && e.State != wal.EntryReleased {
				st.Release(txn, e.Shared)
			}
		}
		txn.Delete(append([]byte(nil), k...))
		return nil
	})
	return err
}
