package engine

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keelmq/keel/engine/packet"
	"github.com/keelmq/keel/wal"
)

// Queue quotas. A persistent session's stored queue (queued and in-flight
// entries, Session.Queued) is bounded by Options.MaxQueuedMessages and
// MaxQueuedBytes; a non-persistent session's memory queue (messages
// waiting for room in its window) by MaxMemQueue. A queue is full when one
// more entry would pass a bound. What then happens is Options.QueueFull:
//
//   - QueueRefuse: a client's QoS 1/2 PUBLISH that would add an entry to a
//     full queue is refused as a whole before anything of it is written or
//     routed (all or nothing: a retry cannot double it for the others).
//     5.0: PUBACK/PUBREC 0x97 Quota exceeded and DISCONNECT 0x97; 3.1 and
//     3.1.1, which have no reason codes: the publisher is disconnected
//     without an ack. Its packets after that one are ignored, so it
//     resends them in order (refuseQueueFull).
//     What cannot be refused (QoS 0, wills, retained messages sent on
//     SUBSCRIBE) is dropped for the full session, counted, as under
//     QueueDropNew.
//   - QueueDropNew: accepted; the full session does not get it (counted
//     queue_full / memory_queue_full).
//   - QueueDropOldest: accepted; the full session loses its oldest queued
//     message, one not in flight, deleted in the same Txn as the new
//     entry (counted queue_full_oldest / memory_queue_full_oldest). When
//     nothing queued can go (everything is in flight, or the message alone
//     is over MaxQueuedBytes) the new one is dropped instead. Retained
//     messages sent on SUBSCRIBE (deliver without admit) evict nothing:
//     they are dropped for a full session.
//
// Every drop is also logged with the client id, at most once per
// dropLogEvery per session, with the count since the last line.
type QueueFullPolicy uint8

const (
	QueueRefuse QueueFullPolicy = iota
	QueueDropNew
	QueueDropOldest
)

var queueFullNames = [...]string{"refuse", "drop_new", "drop_oldest"}

func (p QueueFullPolicy) String() string {
	if int(p) < len(queueFullNames) {
		return queueFullNames[p]
	}
	return fmt.Sprintf("QueueFullPolicy(%d)", p)
}

// ParseQueueFull parses refuse, drop_new or drop_oldest.
func ParseQueueFull(s string) (QueueFullPolicy, error) {
	for i, n := range queueFullNames {
		if s == n {
			return QueueFullPolicy(i), nil
		}
	}
	return 0, fmt.Errorf("want refuse, drop_new or drop_oldest, got %q", s)
}

// maxEvictions bounds the entries one message may evict under
// QueueDropOldest (a large message over the byte bound of a queue of small
// ones): past it the new message is dropped instead.
const maxEvictions = 64

// dropLogEvery is the shortest time between two drop lines of one session.
const dropLogEvery = 10 * time.Second

// dropTally is what a session lost since its last drop line.
type dropTally struct {
	n    uint64
	last time.Time
}

// msgSize is what a new entry for m counts against MaxQueuedBytes before
// it is written: its topic and payload (the stored entry adds a few bytes
// of header).
func msgSize(m *wal.Message) int64 { return int64(len(m.Topic) + len(m.Payload)) }

// full reports whether s's queue has no room for one more entry of m.
func (b *Broker) full(s *session, m *wal.Message) bool {
	if !s.Persistent {
		return b.opts.MaxMemQueue > 0 && len(s.Pending) >= b.opts.MaxMemQueue
	}
	n, bytes := s.Queued()
	maxN, maxB := b.queueLimits(s) // quotaoverride.go
	return (maxN > 0 && n >= maxN) || (maxB > 0 && bytes+msgSize(m) > maxB)
}

// wouldQueue reports whether deliver(s, m at qos) adds an entry to s's
// quota'd queue: a stored entry (queued, or bound at once) of a persistent
// session, or a message in a non-persistent one's memory queue. It follows
// deliver's branches.
func (b *Broker) wouldQueue(s *session, m *wal.Message, qos byte, subIDs []uint32) bool {
	to := s.Owner
	if to != nil && (!to.allowRead(m.Topic) || !to.fits(m, qos, subIDs)) {
		return false
	}
	if qos == 0 {
		return to == nil && s.Persistent && b.opts.QueueQoS0
	}
	if to == nil {
		return s.Persistent
	}
	if s.CanSendNow(to.window()) {
		return s.Persistent
	}
	return true
}

// admit matches m (core.targets) and applies the queue quotas before
// anything of m is written. refusable says m is a client's QoS 1/2
// PUBLISH: under QueueRefuse, admit then reports false, with the reason,
// if any target's queue is full, and has written nothing. Under
// QueueDropOldest it makes room in the full queues. Drops of the new
// message are left to deliver, which finds the queue still full.
func (b *Broker) admit(m *wal.Message, from *session, refusable bool) (ok bool, why refuseReason) {
	c := &b.core
	b.match(m, from)
	if len(c.targets) == 0 {
		return true, 0
	}
	if m.ExpireAt != 0 && expired(m, b.now().UnixMilli()) {
		b.stats.reasons.drop(dropExpired)
		c.targets = c.targets[:0]
		return true, 0
	}
	var over []*routeTarget
	for _, t := range c.targets {
		qos := min(m.QoS, t.qos)
		if !b.full(t.s, m) || !b.wouldQueue(t.s, m, qos, t.subIDs) {
			continue
		}
		switch {
		case b.opts.QueueFull == QueueRefuse && refusable:
			if t.s.Persistent {
				return false, refuseQueueFull
			}
			return false, refuseMemQueueFull
		case b.opts.QueueFull == QueueDropOldest:
			over = append(over, t)
		}
	}
	if len(over) == 0 {
		return true, 0
	}
	// Evictions ride the Txn of the new entries. An oldest entry written
	// in the current Txn is not visible to a read yet: submit what the
	// drain holds first (nothing of m is in it), once.
	for _, t := range over {
		hidden, err := c.sessions.OldestHidden(t.s)
		if err != nil {
			b.log.Error("reading session queue", "client", t.s.ClientID, "err", err)
		}
		if hidden {
			b.flush(true)
			break
		}
	}
	for _, t := range over {
		b.evict(t.s, m)
	}
	return true, 0
}

// evict makes room for m in s's full queue under QueueDropOldest, as far
// as it can: deliver drops m if it is still full.
func (b *Broker) evict(s *session, m *wal.Message) {
	c := &b.core
	if !s.Persistent {
		if c.sessions.DropOldestPending(s) {
			b.dropped(s, dropMemQueueFullOldest)
		}
		return
	}
	if _, maxB := b.queueLimits(s); maxB > 0 && msgSize(m) > maxB {
		return // it would not fit in an empty queue: deliver drops it
	}
	for n := 0; n < maxEvictions && b.full(s, m); n++ {
		ok, err := c.sessions.EvictOldest(c.txn, s)
		if err != nil {
			b.log.Error("reading session queue", "client", s.ClientID, "err", err)
			return
		}
		if !ok {
			return
		}
		b.dropped(s, dropQueueFullOldest)
	}
}

// dropped counts a message s lost to a full queue and logs it, at most
// once per dropLogEvery per session, with the count since the last line.
func (b *Broker) dropped(s *session, why dropReason) {
	b.stats.reasons.drop(why)
	c := &b.core
	t := c.dropLog[s]
	if t == nil {
		t = &dropTally{}
		c.dropLog[s] = t
	}
	t.n++
	now := b.now()
	if !t.last.IsZero() && now.Sub(t.last) < dropLogEvery {
		return
	}
	b.log.Warn("queue full: messages dropped", "client", s.ClientID, "persistent", s.Persistent,
		"policy", b.opts.QueueFull.String(), "reason", dropNames[why], "dropped", t.n)
	t.n, t.last = 0, now
}

// refuseQueueFull answers a client's QoS 1/2 PUBLISH that admit refused:
// nothing of it was written. 5.0: PUBACK/PUBREC 0x97 Quota exceeded, then
// DISCONNECT 0x97; 3.1 and 3.1.1, which have no reason code to say it
// with (an ack would claim a message that is not stored): the connection
// is closed without an ack. Either way after the acks it is owed, and
// whatever else it sent meanwhile is ignored: not acknowledged, not
// routed. So the publisher resends from the refused message on, in order
// (its session resends what was not acknowledged), and never finds a
// later message accepted ahead of a refused one: had the connection stayed
// open, a message pipelined behind the refused one could be accepted, and
// the refused one, retried (or resent by its session after a crash that
// lost the 0x97), would arrive after it.
func (b *Broker) refuseQueueFull(c *conn, p *packet.Publish, why refuseReason) {
	b.stats.reasons.refuse(why)
	msg := "publish refused: a subscriber's queue is full"
	if why == refuseDiskLow {
		msg = "publish refused: disk below min_free_disk" // disk.go
	}
	b.refusedLog.log(c.log, msg, "topic", p.Topic, "qos", p.QoS, "reason", refuseNames[why])
	c.refused = true
	c.setEndReason(msg)
	if c.version == packet.V5 {
		kind := packet.PUBACK
		if p.QoS == 2 {
			kind = packet.PUBREC
		}
		b.emit(c, outItem{pkt: &packet.Ack{Kind: kind, PacketID: p.PacketID, ReasonCode: packet.CodeQuotaExceeded}, decIn: true}, nil)
		b.emit(c, outItem{pkt: &packet.Disconnect{ReasonCode: packet.CodeQuotaExceeded}}, nil)
	}
	b.emit(c, outItem{close: true}, nil)
}

// freedIDs are inbound QoS 2 packet ids the core refused, which the
// reader forgets at its next PUBLISH (freeQoS2).
type freedIDs struct {
	any atomic.Bool // ids is not empty
	mu  sync.Mutex
	ids []uint16
}

// freeQoS2 hands inbound QoS 2 id pid back to the reader: the core refused
// its PUBLISH with a PUBREC failure reason, after which the client may use
// the id for a new message [MQTT-4.3.3-9]. The reader's count of the flow
// ends when that PUBREC leaves (decIn). Called before the PUBREC is
// emitted, so the reader sees it before any reuse of the id.
func (c *conn) freeQoS2(pid uint16) {
	if c.version != packet.V5 {
		return // 3.1.1: the connection closes
	}
	f := &c.freed
	f.mu.Lock()
	f.ids = append(f.ids, pid)
	f.mu.Unlock()
	f.any.Store(true)
}

// takeFreedQoS2 forgets, on the reader, the QoS 2 ids the core refused.
func (c *conn) takeFreedQoS2() {
	f := &c.freed
	if !f.any.Load() {
		return
	}
	f.mu.Lock()
	ids := f.ids
	f.ids = nil
	f.any.Store(false)
	f.mu.Unlock()
	for _, pid := range ids {
		delete(c.qos2Open, pid)
	}
}
