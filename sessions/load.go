package sessions

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/keelmq/keel/wal"
)

// Load rebuilds every persistent session from the store. Queued entries
// stay on disk (only their headers are read); bound ones are loaded with
// their messages. now seeds the seq counter: seqs only need to grow, and
// starting from the clock keeps them growing even if the newest entries
// were deleted before a crash.
func Load[O any](store wal.Store, logger *slog.Logger, now time.Time) (*Store[O], error) {
	st := &Store[O]{store: store, Sessions: make(map[string]*Session[O]), refs: make(map[uint64]body)}
	// Shared bodies first: their sizes, so that each session's queue
	// counts the bodies it references (Session.Queued). Their references
	// are counted from the queue entries below.
	err := store.Scan(wal.MessagePrefix(), wal.PrefixEnd(wal.MessagePrefix()), func(k, v []byte) error {
		id, ok := wal.ParseMessageKey(k)
		if !ok {
			return nil
		}
		st.seq = max(st.seq, id)
		st.refs[id] = body{size: int32(len(v))}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var queued, inflight, subs int
	var staleShared []uint64
	var s *Session[O] // the session of the previous key: keys come grouped by session
	err = store.Scan(wal.AllSessionsPrefix(), wal.PrefixEnd(wal.AllSessionsPrefix()), func(k, v []byte) error {
		clientBytes, kind, rest, ok := wal.ParseSessionKeyBytes(k)
		if !ok {
			return fmt.Errorf("sessions: bad key %q", k)
		}
		if s == nil || s.ClientID != string(clientBytes) { // no allocation: compared in place
			client := string(clientBytes)
			s = New[O](client)
			s.Persistent = true
			st.Sessions[client] = s
		}
		client := s.ClientID
		switch kind {
		case wal.KindSession:
			rec, err := wal.DecodeSession(v)
			if err != nil {
				return fmt.Errorf("sessions: session %q: %w", client, err)
			}
			s.Protocol, s.Expiry, s.Will, s.Creator = rec.Protocol, rec.ExpirySeconds, rec.Will, rec.Owner
			if rec.DisconnectedAt != 0 {
				s.DisconnectedAt = time.UnixMilli(rec.DisconnectedAt)
			}
		case wal.KindSubscription:
			sub, err := wal.DecodeSubscription(v)
			if err != nil {
				return fmt.Errorf("sessions: subscription %q of %q: %w", rest, client, err)
			}
			s.setSub(string(rest), fromRecord(sub))
			subs++
		case wal.KindQueue:
			if len(rest) != 8 {
				return fmt.Errorf("sessions: bad queue key %q", k)
			}
			seq := beUint64(rest)
			st.seq = max(st.seq, seq)
			h, err := wal.PeekEntry(v)
			if err != nil {
				return fmt.Errorf("sessions: queue entry %d of %q: %w", seq, client, err)
			}
			if h.Shared != 0 {
				b := st.refs[h.Shared]
				b.refs++
				st.refs[h.Shared] = b
				s.sharedBytes += int64(b.size)
			}
			st.addEntry(s, 1, int64(len(v)))
			if h.State == wal.EntryQueued {
				// Queued messages stay on disk; only the cursor is kept.
				if !s.Backlog {
					s.Backlog, s.cursor = true, seq
				}
				queued++
				return nil
			}
			e, err := wal.DecodeEntry(v)
			if err != nil {
				return fmt.Errorf("sessions: queue entry %d of %q: %w", seq, client, err)
			}
			f := &Flight{Seq: seq, PacketID: e.PacketID, State: e.State, QoS: e.QoS, Retain: e.Retain, SubIDs: e.SubIDs, Shared: e.Shared, Msg: e.Inline, size: len(v)}
			if e.Shared != 0 && e.State == wal.EntrySent {
				m, err := sharedBody(store, e.Shared)
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
				st.garbage = append(st.garbage, wal.QueueKey(client, old.Seq))
				st.addEntry(s, -1, -int64(old.size))
				if old.Shared != 0 {
					s.sharedBytes -= int64(st.refs[old.Shared].size)
					staleShared = append(staleShared, old.Shared)
				}
			} else {
				inflight++
			}
			s.setInflight(f)
		case wal.KindInbound:
			if len(rest) != 2 {
				return fmt.Errorf("sessions: bad inbound key %q", k)
			}
			s.setInQoS2(uint16(rest[0])<<8 | uint16(rest[1]))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, id := range staleShared {
		b := st.refs[id]
		b.refs--
		st.refs[id] = b
	}
	// Drop orphans: a body whose last reference went away (its release
	// was lost, never written, or left to a sweep that a stop cut short).
	for id, b := range st.refs {
		if b.refs <= 0 {
			if b.size > 0 { // else referenced once, and not stored
				st.garbage = append(st.garbage, wal.MessageKey(id))
			}
			delete(st.refs, id)
			continue
		}
		st.totals.bodyBytes.Add(int64(b.size))
	}
	for client, s := range st.Sessions {
		if s.Protocol == 0 {
			// State without its session record cannot be resumed: a
			// broken invariant, but not one to refuse to start over.
			logger.Warn("sessions: state without a session record; ignoring", "client", client)
			delete(st.Sessions, client)
			st.addEntry(s, -s.queued, -s.queuedBytes)
			continue
		}
		st.count(s) // stored, and offline
	}
	if t := uint64(now.UnixMicro()); t > st.seq {
		st.seq = t
	}
	logger.Info("sessions restored", "sessions", len(st.Sessions), "subscriptions", subs,
		"queued", queued, "inflight", inflight, "shared_bodies", len(st.refs), "garbage", len(st.garbage))
	return st, nil
}

func sharedBody(r wal.Reader, id uint64) (*wal.Message, error) {
	v, err := r.Get(wal.MessageKey(id))
	if err != nil {
		return nil, fmt.Errorf("shared body %d: %w", id, err)
	}
	m, err := wal.DecodeMessage(v)
	if err != nil {
		return nil, fmt.Errorf("shared body %d: %w", id, err)
	}
	return &m, nil
}

// CollectGarbage deletes in txn what Load found dead.
func (st *Store[O]) CollectGarbage(txn *wal.Txn) {
	for _, k := range st.garbage {
		txn.Delete(k)
	}
	st.garbage = nil
}

// Garbage is the number of dead keys Load found, not yet collected.
func (st *Store[O]) Garbage() int { return len(st.garbage) }

func toRecord(s Subscription) wal.Subscription {
	return wal.Subscription{QoS: s.QoS, NoLocal: s.NoLocal, RetainAsPublished: s.RetainAsPublished, RetainHandling: s.RetainHandling, SubID: s.SubID}
}

func fromRecord(r wal.Subscription) Subscription {
	return Subscription{QoS: r.QoS, NoLocal: r.NoLocal, RetainAsPublished: r.RetainAsPublished, RetainHandling: r.RetainHandling, SubID: r.SubID}
}
