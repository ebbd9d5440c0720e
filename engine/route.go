package engine

import (
	"time"

	"github.com/keelmq/keel/engine/packet"
	"github.com/keelmq/keel/sessions"
	"github.com/keelmq/keel/wal"
)

// target is one session a message goes to, after merging every matching
// subscription of that session (one copy, at the highest granted QoS,
// carrying every matching subscription identifier).
type target struct {
	s      *sessions.Session
	qos    byte
	rap    bool
	subIDs []uint32
}

func (b *Broker) nextSeq() uint64 {
	b.core.seq++
	return b.core.seq
}

// toMessage turns a received PUBLISH into a stored message. It aliases the
// packet's buffer, which nothing modifies.
func toMessage(p *packet.Publish, version byte, now time.Time) *wal.Message {
	m := &wal.Message{Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain}
	if version != packet.V5 {
		return m
	}
	pr := &p.Props
	if pr.Has(packet.PropPayloadFormat) {
		m.HasPayloadFormat, m.PayloadFormat = true, pr.PayloadFormat
	}
	if pr.Has(packet.PropMessageExpiry) {
		m.ExpireAt = now.UnixMilli() + int64(pr.MessageExpiry)*1000
	}
	m.ContentType = pr.ContentType
	m.ResponseTopic = pr.ResponseTopic
	if pr.Has(packet.PropCorrelationData) {
		m.CorrelationData = pr.CorrelationData
		if m.CorrelationData == nil {
			m.CorrelationData = []byte{}
		}
	}
	for _, u := range pr.User {
		m.User = append(m.User, wal.UserProperty{Key: u.Key, Value: u.Value})
	}
	return m
}

func expired(m *wal.Message, nowMs int64) bool { return m.ExpireAt != 0 && nowMs >= m.ExpireAt }

// onPublish handles an inbound PUBLISH (commit-before-send rows "PUBLISH
// QoS 1 in", "PUBLISH QoS 2 in" and its resend).
func (b *Broker) onPublish(c *conn, p *packet.Publish) {
	if !active(c) {
		return
	}
	s := c.sess
	b.stats.received.Add(1)
	switch p.QoS {
	case 0:
		b.publish(toMessage(p, c.version, time.Now()), s)
	// The ack is queued before the deliveries: all are released together
	// after the same sync, and the publisher's ack is the latency that
	// waits on it. Per connection, order is unchanged.
	case 1:
		b.emit(c, outItem{pkt: &packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID}, decIn: true},
			&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID, ReasonCode: packet.CodeUnspecifiedError})
		b.publish(toMessage(p, c.version, time.Now()), s)
	case 2:
		b.emit(c, outItem{pkt: &packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID}},
			&packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID, ReasonCode: packet.CodeUnspecifiedError})
		if _, seen := s.InQoS2[p.PacketID]; !seen {
			// First arrival: record the packet id with the message so a
			// resend, even after a crash, is not routed twice
			// [MQTT-4.3.3-10].
			s.InQoS2[p.PacketID] = struct{}{}
			if s.Persistent {
				b.core.txn.Set(wal.InboundKey(s.ClientID, p.PacketID), nil)
			}
			b.publish(toMessage(p, c.version, time.Now()), s)
		}
	}
}

// publish stores the retained update and routes m to every matching
// session. from is the publishing session (nil for wills and $SYS).
func (b *Broker) publish(m *wal.Message, from *sessions.Session) {
	if m.Retain {
		// [MQTT-3.3.1-5] store (or, with an empty payload, clear
		// [MQTT-3.3.1-10]) the retained message for the topic.
		b.core.retained.Set(b.core.txn, m)
	}
	b.route(m, from)
}

// route delivers m to every session with a matching subscription.
func (b *Broker) route(m *wal.Message, from *sessions.Session) {
	c := &b.core
	clear(c.scratch)
	c.targets = c.targets[:0]
	var groups map[string][]target
	add := func(t target) {
		if i, ok := c.scratch[t.s]; ok {
			if t.qos > i.qos {
				i.qos = t.qos
			}
			i.rap = i.rap || t.rap
			i.subIDs = append(i.subIDs, t.subIDs...)
			return
		}
		nt := &target{s: t.s, qos: t.qos, rap: t.rap, subIDs: t.subIDs}
		c.scratch[t.s] = nt
		c.targets = append(c.targets, nt)
	}
	c.subs.Match(m.Topic, func(filter string, k subKey, v subValue) {
		t := target{s: k.s, qos: v.opts.QoS, rap: v.opts.RetainAsPublished}
		if v.opts.SubID != 0 {
			t.subIDs = []uint32{v.opts.SubID}
		}
		if k.group != "" {
			if groups == nil {
				groups = make(map[string][]target)
			}
			key := k.group + "\x00" + filter
			groups[key] = append(groups[key], t)
			return
		}
		if v.opts.NoLocal && k.s == from {
			return // [MQTT-3.8.3-3]
		}
		add(t)
	})
	for key, members := range groups {
		// A shared subscription delivers each message to one member
		// [MQTT-4.8.2-2]; prefer members that are online, round robin.
		n := c.rr[key]
		c.rr[key] = n + 1
		pick := members[n%len(members)]
		for i := range members {
			cand := members[(n+i)%len(members)]
			if cand.s.Owner != nil {
				pick = cand
				break
			}
		}
		add(pick)
	}
	if len(c.targets) == 0 {
		return
	}
	nowMs := time.Now().UnixMilli()
	if expired(m, nowMs) {
		return
	}
	// A body stored once serves every persistent session it is queued for.
	durable := 0
	for _, t := range c.targets {
		if t.s.Persistent && min(m.QoS, t.qos) > 0 {
			durable++
		}
	}
	var shared uint64
	if durable > 1 {
		shared = b.nextSeq()
		c.txn.Set(wal.MessageKey(shared), wal.AppendMessage(nil, m, b.store.CompressThreshold()))
		c.sessions.AddRefs(shared, int32(durable))
	}
	for _, t := range c.targets {
		qos := min(m.QoS, t.qos)
		// [MQTT-3.3.1-12]/[MQTT-3.3.1-13]: the retain flag is kept only
		// for Retain As Published subscriptions.
		retainFlag := m.Retain && t.rap
		sh := uint64(0)
		if t.s.Persistent && qos > 0 {
			sh = shared
		}
		b.deliver(t.s, m, qos, retainFlag, t.subIDs, sh)
	}
}

// window is how many outbound QoS 1/2 messages s may have in flight on c.
func (b *Broker) window(c *conn) int {
	w := int(b.opts.MaxInflight)
	if int(c.clientRecvMax) < w {
		w = int(c.clientRecvMax) // [MQTT-3.3.4-9] the client's Receive Maximum
	}
	return w
}

// fits reports whether m can be sent to c at qos within the client's
// Maximum Packet Size [MQTT-3.1.2-24]; a message that does not fit is
// discarded for that client [MQTT-3.1.2-25].
func fits(c *conn, m *wal.Message, qos byte, subIDs []uint32) bool {
	return c.clientMaxPkt == 0 || publishSize(m, qos, subIDs) <= int(c.clientMaxPkt)
}

// publishSize is the exact size of the 5.0 PUBLISH that carries m at qos
// with subIDs, as conn.encode writes it (see setMessageProps).
func publishSize(m *wal.Message, qos byte, subIDs []uint32) int {
	props := 0
	if m.HasPayloadFormat {
		props += 1 + 1
	}
	if m.ExpireAt != 0 {
		props += 1 + 4
	}
	if m.ContentType != "" {
		props += 1 + 2 + len(m.ContentType)
	}
	if m.ResponseTopic != "" {
		props += 1 + 2 + len(m.ResponseTopic)
	}
	if m.CorrelationData != nil {
		props += 1 + 2 + len(m.CorrelationData)
	}
	for _, id := range subIDs {
		props += 1 + packet.VarIntLen(id)
	}
	for _, u := range m.User {
		props += 1 + 2 + len(u.Key) + 2 + len(u.Value)
	}
	rem := 2 + len(m.Topic) + packet.VarIntLen(uint32(props)) + props + len(m.Payload)
	if qos > 0 {
		rem += 2
	}
	return 1 + packet.VarIntLen(uint32(rem)) + rem
}

// deliver hands one copy of m to session s at qos (commit-before-send row
// "PUBLISH QoS 1/2 out to a persistent session": the queue entry, bound to
// its packet id when it can be sent now, rides in the current Txn).
func (b *Broker) deliver(s *sessions.Session, m *wal.Message, qos byte, retainFlag bool, subIDs []uint32, shared uint64) {
	c := &b.core
	oc, _ := s.Owner.(*conn)
	if oc != nil && !fits(oc, m, qos, subIDs) {
		if shared != 0 {
			c.sessions.Release(c.txn, shared)
		}
		return
	}
	if qos == 0 {
		if oc != nil {
			b.emit(oc, outItem{pub: &outPub{msg: m, retain: retainFlag, subIDs: subIDs}}, nil)
			return
		}
		if s.Persistent && b.opts.QueueQoS0 {
			seq := b.nextSeq()
			e := wal.Entry{State: wal.EntryQueued, Retain: retainFlag, SubIDs: subIDs, Inline: m}
			c.txn.Set(wal.QueueKey(s.ClientID, seq), wal.AppendEntry(nil, &e, b.store.CompressThreshold()))
			if !s.Backlog {
				s.Backlog, s.Cursor = true, seq
			}
		}
		return
	}
	if !s.Persistent {
		if oc == nil {
			return
		}
		if len(s.Inflight) < b.window(oc) && len(s.Pending) == 0 {
			pid := s.NextPacketID()
			s.Inflight[pid] = &sessions.Flight{PacketID: pid, State: wal.EntrySent, QoS: qos, Retain: retainFlag, SubIDs: subIDs, Msg: m}
			b.emit(oc, outItem{pub: &outPub{msg: m, qos: qos, pid: pid, retain: retainFlag, subIDs: subIDs}}, nil)
		} else if len(s.Pending) < b.opts.MaxMemQueue {
			s.Pending = append(s.Pending, &sessions.Flight{QoS: qos, Retain: retainFlag, SubIDs: subIDs, Msg: m})
		} else {
			b.log.Warn("queue full: message dropped for a non-persistent session", "client", s.ClientID)
		}
		return
	}
	seq := b.nextSeq()
	e := wal.Entry{QoS: qos, Retain: retainFlag, SubIDs: subIDs, Shared: shared}
	if shared == 0 {
		e.Inline = m
	}
	if oc != nil && !s.Backlog && len(s.Inflight) < b.window(oc) {
		pid := s.NextPacketID()
		e.State, e.PacketID = wal.EntrySent, pid
		s.Inflight[pid] = &sessions.Flight{Seq: seq, PacketID: pid, State: wal.EntrySent, QoS: qos, Retain: retainFlag, SubIDs: subIDs, Shared: shared, Msg: m}
		c.txn.Set(wal.QueueKey(s.ClientID, seq), wal.AppendEntry(nil, &e, b.store.CompressThreshold()))
		b.emit(oc, outItem{pub: &outPub{msg: m, qos: qos, pid: pid, retain: retainFlag, subIDs: subIDs}}, nil)
		return
	}
	e.State = wal.EntryQueued
	c.txn.Set(wal.QueueKey(s.ClientID, seq), wal.AppendEntry(nil, &e, b.store.CompressThreshold()))
	if !s.Backlog {
		s.Backlog, s.Cursor = true, seq
	}
}

// fill moves queued messages of an online session into its window: from
// memory for a non-persistent session, streamed from disk for a persistent
// one. A message taken from disk is bound to its packet id in the current
// Txn before it is sent.
func (b *Broker) fill(s *sessions.Session) {
	oc, _ := s.Owner.(*conn)
	if oc == nil {
		return
	}
	c := &b.core
	w := b.window(oc)
	// Flights resumed from the previous connection go first, as acks make
	// room for them (see onConnect).
	for len(oc.resend) > 0 && len(s.Inflight)-len(oc.resend) < w {
		f := oc.resend[0]
		oc.resend[0] = nil
		oc.resend = oc.resend[1:]
		if s.Inflight[f.PacketID] == f { // else completed meanwhile
			b.emit(oc, outItem{pub: &outPub{msg: f.Msg, qos: f.QoS, pid: f.PacketID, dup: true, retain: f.Retain, subIDs: f.SubIDs}}, nil)
		}
	}
	nowMs := time.Now().UnixMilli()
	for len(s.Pending) > 0 && len(s.Inflight) < w {
		f := s.Pending[0]
		s.Pending[0] = nil
		s.Pending = s.Pending[1:]
		if expired(f.Msg, nowMs) {
			continue // expired while waiting for the window [MQTT-3.3.2-5]
		}
		f.PacketID, f.State = s.NextPacketID(), wal.EntrySent
		s.Inflight[f.PacketID] = f
		b.emit(oc, outItem{pub: &outPub{msg: f.Msg, qos: f.QoS, pid: f.PacketID, retain: f.Retain, subIDs: f.SubIDs}}, nil)
	}
	if !s.Persistent || !s.Backlog {
		return
	}
	// Pull until the window is full or the queue is drained: entries that
	// take no slot (dropped as expired or too big, or QoS 0) leave room
	// that no ack will come to fill.
	for {
		room := w - len(s.Inflight)
		// Pull in chunks, not one message per ack: each pull is a disk scan.
		if room <= 0 || (len(s.Inflight) > 0 && room < min(w/4, 64)) {
			return
		}
		pulled, err := c.sessions.Pull(s, room)
		if err != nil {
			b.log.Error("reading session queue", "client", s.ClientID, "err", err)
			return
		}
		for _, p := range pulled {
			s.Cursor = p.Seq + 1
			key := wal.QueueKey(s.ClientID, p.Seq)
			if p.Msg == nil || expired(p.Msg, nowMs) || !fits(oc, p.Msg, p.Entry.QoS, p.Entry.SubIDs) {
				// Message expiry counted while queued [MQTT-3.3.2-5].
				c.txn.Delete(key)
				c.sessions.Release(c.txn, p.Entry.Shared)
				continue
			}
			if p.Entry.QoS == 0 {
				c.txn.Delete(key)
				b.emit(oc, outItem{pub: &outPub{msg: p.Msg, retain: p.Entry.Retain, subIDs: p.Entry.SubIDs}}, nil)
				continue
			}
			pid := s.NextPacketID()
			e := p.Entry
			e.State, e.PacketID = wal.EntrySent, pid
			c.txn.Set(key, wal.AppendEntry(nil, &e, b.store.CompressThreshold()))
			s.Inflight[pid] = &sessions.Flight{Seq: p.Seq, PacketID: pid, State: wal.EntrySent, QoS: e.QoS, Retain: e.Retain, SubIDs: e.SubIDs, Shared: e.Shared, Msg: p.Msg}
			b.emit(oc, outItem{pub: &outPub{msg: p.Msg, qos: e.QoS, pid: pid, retain: e.Retain, subIDs: e.SubIDs}}, nil)
		}
		if len(pulled) < room {
			if c.txn.Len() > c.lazyOps || b.pending.Load() > 0 {
				// Entries still in an uncommitted Txn are not visible yet:
				// look again after the next commit. (Held completions are
				// only deletes of entries behind the cursor.)
				c.repull[s] = struct{}{}
				b.pullsWait.Store(true)
			} else {
				s.Backlog = false
			}
			return
		}
	}
}

func (b *Broker) retryPulls() {
	c := &b.core
	b.pullsWait.Store(false) // fill sets it again for a pull that must wait more
	for s := range c.repull {
		delete(c.repull, s)
		b.fill(s)
	}
}

// onAck handles PUBACK, PUBREC, PUBREL and PUBCOMP from a client.
func (b *Broker) onAck(c *conn, a *packet.Ack) {
	if !active(c) {
		return
	}
	s := c.sess
	core := &b.core
	pid := a.PacketID
	switch a.Kind {
	case packet.PUBACK:
		f := s.Inflight[pid]
		if f == nil || f.QoS != 1 {
			return // an unknown id is ignored
		}
		b.complete(s, f)
	case packet.PUBREC:
		f := s.Inflight[pid]
		if f == nil || f.QoS != 2 {
			if c.version == packet.V5 {
				b.emit(c, outItem{pkt: &packet.Ack{Kind: packet.PUBREL, PacketID: pid, ReasonCode: packet.CodePacketIDNotFound}}, nil)
			}
			return
		}
		if a.ReasonCode >= 0x80 {
			// 5.0: a failed PUBREC ends the flow [MQTT-4.3.3-?]; the
			// message is done for this session.
			b.complete(s, f)
			return
		}
		if f.State == wal.EntrySent {
			// Row "PUBREC in": binding -> released, the message
			// reference dropped, then PUBREL.
			f.State = wal.EntryReleased
			f.Msg = nil
			if s.Persistent {
				e := wal.Entry{State: wal.EntryReleased, PacketID: pid, QoS: 2}
				core.txn.Set(wal.QueueKey(s.ClientID, f.Seq), wal.AppendEntry(nil, &e, 0))
				core.sessions.Release(core.txn, f.Shared)
				f.Shared = 0
			}
		}
		b.emit(c, outItem{pkt: &packet.Ack{Kind: packet.PUBREL, PacketID: pid}}, nil)
	case packet.PUBREL:
		// Row "PUBREL in": forget the inbound id, then PUBCOMP.
		if _, ok := s.InQoS2[pid]; ok {
			delete(s.InQoS2, pid)
			if s.Persistent {
				core.txn.Delete(wal.InboundKey(s.ClientID, pid))
			}
			b.emit(c, outItem{pkt: &packet.Ack{Kind: packet.PUBCOMP, PacketID: pid}}, nil)
			return
		}
		comp := &packet.Ack{Kind: packet.PUBCOMP, PacketID: pid}
		if c.version == packet.V5 {
			comp.ReasonCode = packet.CodePacketIDNotFound
		}
		b.emit(c, outItem{pkt: comp}, nil)
	case packet.PUBCOMP:
		f := s.Inflight[pid]
		if f == nil || f.QoS != 2 {
			return
		}
		b.complete(s, f)
	}
}

// complete ends an outbound flow: the binding and its queue entry go.
func (b *Broker) complete(s *sessions.Session, f *sessions.Flight) {
	core := &b.core
	delete(s.Inflight, f.PacketID)
	if s.Persistent {
		n := core.txn.Len()
		core.txn.Delete(wal.QueueKey(s.ClientID, f.Seq))
		core.sessions.Release(core.txn, f.Shared)
		core.lazyOps += core.txn.Len() - n
	}
	b.fill(s)
}
