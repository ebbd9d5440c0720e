package engine

import (
	"time"

	"github.com/keelmq/keel/engine/clock"
	"github.com/keelmq/keel/engine/packet"
	"github.com/keelmq/keel/sessions"
	"github.com/keelmq/keel/wal"
)

// routeTarget is one session a message goes to, after merging every
// matching subscription of that session (one copy, at the highest granted
// QoS, carrying every matching subscription identifier).
type routeTarget struct {
	s      *session
	qos    byte
	rap    bool
	subIDs []uint32
}

// toMessage turns a received PUBLISH into a stored message. It aliases the
// packet's buffer, which nothing modifies.
func toMessage(p *packet.Publish, version byte, clk clock.Clock) *wal.Message {
	m := &wal.Message{Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain}
	if version != packet.V5 {
		return m
	}
	pr := &p.Props
	if pr.Has(packet.PropPayloadFormat) {
		m.HasPayloadFormat, m.PayloadFormat = true, pr.PayloadFormat
	}
	if pr.Has(packet.PropMessageExpiry) {
		m.ExpireAt = clk.Now().UnixMilli() + int64(pr.MessageExpiry)*1000
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
// QoS 1 in", "PUBLISH QoS 2 in" and its resend, and "PUBLISH QoS 1/2
// refused": denied by the Authorizer on the reader, or by a full queue,
// quota.go).
func (b *Broker) onPublish(c *conn, p *packet.Publish, denied bool) {
	if !active(c) {
		return
	}
	s := c.sess
	now := b.opts.Clock // read only for a message with an expiry
	b.stats.received.Add(1)
	if denied {
		b.refusePublish(c, p)
		return
	}
	if !b.topicFits(p.Topic) {
		b.refuseTopic(c, p)
		return
	}
	switch p.QoS {
	case 0:
		b.publish(toMessage(p, c.version, now), s)
	// The ack is queued before the deliveries: all are released together
	// after the same sync, and the publisher's ack is the latency that
	// waits on it. Per connection, order is unchanged. The quotas are
	// applied before either (admit): a refused publish writes nothing.
	case 1:
		m := toMessage(p, c.version, now)
		// A duplicate (dedup window) was stored and acknowledged before:
		// it is acknowledged again, never refused, and not matched.
		seen := b.seenBefore(c, p)
		if !seen {
			if b.refusesPublish(c, p) {
				return
			}
			if ok, why := b.admit(m, s, true); !ok {
				b.refuseQueueFull(c, p, why)
				return
			}
		}
		b.emit(c, outItem{pkt: &packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID}, decIn: true},
			&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID, ReasonCode: packet.CodeUnspecifiedError})
		if !b.duplicate(c, p) && !seen {
			b.publishAdmitted(m)
		}
	case 2:
		if _, resend := s.InQoS2[p.PacketID]; resend {
			// Recorded already: not routed again [MQTT-4.3.3-10].
			b.emit(c, outItem{pkt: &packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID}},
				&packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID, ReasonCode: packet.CodeUnspecifiedError})
			return
		}
		m := toMessage(p, c.version, now)
		seen := b.seenBefore(c, p)
		if !seen {
			if b.refusesPublish(c, p) {
				return
			}
			if ok, why := b.admit(m, s, true); !ok {
				b.refuseQueueFull(c, p, why)
				return
			}
		}
		b.emit(c, outItem{pkt: &packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID}},
			&packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID, ReasonCode: packet.CodeUnspecifiedError})
		// First arrival: the packet id is recorded with the message so a
		// resend, even after a crash, is not routed twice [MQTT-4.3.3-10].
		b.core.sessions.Received(b.core.txn, s, p.PacketID)
		if !b.duplicate(c, p) && !seen {
			b.publishAdmitted(m)
		}
	}
}

// duplicate reports whether p is a message its publisher's scope already
// routed within the dedup window (Options.DedupProperty); if not, its id
// is recorded in the current Txn, with the message. Its ack goes as
// usual, after the sync of what came before it: a duplicate is
// acknowledged only once the original is on disk.
func (b *Broker) duplicate(c *conn, p *packet.Publish) bool {
	scope, id, ok := b.dedupID(c, p)
	if !ok {
		return false
	}
	w := b.core.dedup
	dup := w.Seen(b.core.txn, scope, id, b.now())
	if dup {
		b.stats.dedupHits.Add(1)
	}
	b.stats.dedupIDs.Store(int64(w.Len()))
	return dup
}

// seenBefore is duplicate without recording anything: the queue quotas
// (admit) are not applied to a duplicate, which was stored already, and a
// publish they refuse must leave no id in the window.
func (b *Broker) seenBefore(c *conn, p *packet.Publish) bool {
	scope, id, ok := b.dedupID(c, p)
	return ok && b.core.dedup.Has(scope, id, b.now())
}

// dedupID is p's dedup scope and message id, if the window is on and p
// carries one.
func (b *Broker) dedupID(c *conn, p *packet.Publish) (scope, id string, ok bool) {
	if b.core.dedup == nil || c.version != packet.V5 || len(p.Props.User) == 0 {
		return "", "", false
	}
	for _, u := range p.Props.User {
		if u.Key != b.opts.DedupProperty {
			continue
		}
		return b.dedupScope(c), u.Value, true
	}
	return "", "", false
}

// dedupScope is c's scope in the dedup window: "c:" and its client id, or
// with DedupByUsername "u:" and its username (anonymous: the client id).
// Built once and kept on c while it still says the same (a
// reauthentication may change the username).
// REQUIRES: the core goroutine.
func (b *Broker) dedupScope(c *conn) string {
	prefix, name := "c:", c.clientID
	if b.opts.DedupByUsername && !c.id.Anonymous {
		prefix, name = "u:", c.id.Username
	}
	if s := c.dedupScope; len(s) != len(prefix)+len(name) || s[:2] != prefix || s[2:] != name {
		c.dedupScope = prefix + name
	}
	return c.dedupScope
}

// refusePublish answers a PUBLISH the Authorizer refused: nothing is
// stored or routed. 5.0 gets PUBACK/PUBREC 0x87 (which ends a QoS 2 flow);
// 3.1.1, which has no reason codes, gets the usual ack and the message is
// dropped, as Mosquitto does.
func (b *Broker) refusePublish(c *conn, p *packet.Publish) {
	b.stats.reasons.refuse(refuseNotAuthorized)
	code := packet.CodeSuccess
	if c.version == packet.V5 {
		code = packet.CodeNotAuthorized
	}
	switch p.QoS {
	case 1:
		b.emit(c, outItem{pkt: &packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID, ReasonCode: code}, decIn: true}, nil)
	case 2:
		b.emit(c, outItem{pkt: &packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID, ReasonCode: code}, decIn: code != 0}, nil)
	}
}

// publish stores the retained update and routes m to every matching
// session, within the queue quotas (it cannot be refused: what a full
// queue cannot take is dropped for it). from is the publishing session
// (nil for wills and $SYS).
func (b *Broker) publish(m *wal.Message, from *session) {
	b.admit(m, from, false)
	b.publishAdmitted(m)
}

// publishAdmitted stores the retained update of m and delivers it to the
// targets admit found.
func (b *Broker) publishAdmitted(m *wal.Message) {
	if m.Retain {
		if b.keepRetained(m) {
			// [MQTT-3.3.1-5] store (or, with an empty payload, clear
			// [MQTT-3.3.1-10]) the retained message for the topic.
			b.core.retained.Set(b.core.txn, m)
		} else {
			m.Retain = false // over the retained limits: routed as a plain message (retainlimit.go)
		}
	}
	b.route(m)
}

// match finds the sessions m goes to (core.targets): every matching
// subscription of a session merged into one target, one member of each
// shared subscription group.
func (b *Broker) match(m *wal.Message, from *session) {
	c := &b.core
	clear(c.scratch)
	c.targets = c.targets[:0]
	var groups map[string][]routeTarget
	add := func(t routeTarget) {
		if i, ok := c.scratch[t.s]; ok {
			if t.qos > i.qos {
				i.qos = t.qos
			}
			i.rap = i.rap || t.rap
			i.subIDs = append(i.subIDs, t.subIDs...)
			return
		}
		nt := &routeTarget{s: t.s, qos: t.qos, rap: t.rap, subIDs: t.subIDs}
		c.scratch[t.s] = nt
		c.targets = append(c.targets, nt)
	}
	c.subs.Match(m.Topic, func(filter string, k subKey, v subValue) {
		t := routeTarget{s: k.s, qos: v.opts.QoS, rap: v.opts.RetainAsPublished}
		if v.opts.SubID != 0 {
			t.subIDs = []uint32{v.opts.SubID}
		}
		if k.group != "" {
			if groups == nil {
				groups = make(map[string][]routeTarget)
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
}

// route delivers m to the targets match found (and admit kept).
func (b *Broker) route(m *wal.Message) {
	c := &b.core
	if len(c.targets) == 0 {
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
		shared = c.sessions.StoreShared(c.txn, m, durable)
	}
	for _, t := range c.targets {
		qos := min(m.QoS, t.qos)
		// [MQTT-3.3.1-12]/[MQTT-3.3.1-13]: the retain flag is kept only
		// for Retain As Published subscriptions.
		d := sessions.Delivery{Msg: m, QoS: qos, Retain: m.Retain && t.rap, SubIDs: t.subIDs}
		if t.s.Persistent && qos > 0 {
			d.Shared = shared
		}
		b.deliver(t.s, d)
	}
}

// deliver hands one copy of a message to session s (commit-before-send row
// "PUBLISH QoS 1/2 out to a persistent session": the queue entry, bound to
// its packet id when it can be sent now, rides in the current Txn).
func (b *Broker) deliver(s *session, d sessions.Delivery) {
	c := &b.core
	to := s.Owner
	if to != nil && !to.allowRead(d.Msg.Topic) {
		// The ACL's read check, at delivery; an offline session's queue
		// is checked when it is handed out (fill).
		b.stats.reasons.drop(dropNotAuthorized)
		c.sessions.Unref(c.txn, d.Shared)
		return
	}
	if to != nil && !to.fits(d.Msg, d.QoS, d.SubIDs) {
		// Discarded for that client [MQTT-3.1.2-25].
		b.stats.reasons.drop(dropTooLarge)
		c.sessions.Unref(c.txn, d.Shared)
		return
	}
	if d.QoS == 0 {
		switch {
		case to != nil:
			b.emit(to, outItem{pub: &outPub{msg: d.Msg, retain: d.Retain, subIDs: d.SubIDs}}, nil)
		case s.Persistent && b.opts.QueueQoS0:
			if b.full(s, d.Msg) {
				b.dropped(s, dropQueueFull)
				return
			}
			if b.diskLow() {
				b.dropped(s, dropDiskLow) // disk.go
				return
			}
			c.sessions.Enqueue(c.txn, s, d)
		case s.Persistent:
			b.stats.reasons.drop(dropOfflineQoS0)
		}
		return
	}
	if to == nil && !s.Persistent {
		return
	}
	now := to != nil && s.CanSendNow(to.window())
	if (s.Persistent || !now) && b.full(s, d.Msg) {
		// Still full after admit (drop_new, nothing could be evicted), or
		// a delivery admit did not see (retained on SUBSCRIBE).
		why := dropQueueFull
		if !s.Persistent {
			why = dropMemQueueFull
		}
		b.dropped(s, why)
		c.sessions.Unref(c.txn, d.Shared)
		return
	}
	if now {
		f := c.sessions.Bind(c.txn, s, d)
		b.emit(to, outItem{pub: &outPub{msg: d.Msg, qos: d.QoS, pid: f.PacketID, retain: d.Retain, subIDs: d.SubIDs}}, nil)
		return
	}
	if !c.sessions.Enqueue(c.txn, s, d) {
		b.dropped(s, dropMemQueueFull) // not reached: full said there was room
		c.sessions.Unref(c.txn, d.Shared)
	}
}

// fill moves queued messages of an online session into its window: first
// the flights resumed from the previous connection as acks make room for
// them (see onConnect), then what sessions holds queued (Refill).
func (b *Broker) fill(s *session) {
	to := s.Owner
	if to == nil {
		return
	}
	c := &b.core
	w := to.window()
	for len(s.Resend) > 0 && len(s.Inflight)-len(s.Resend) < w {
		f := s.Resend[0]
		s.Resend[0] = nil
		s.Resend = s.Resend[1:]
		if s.Inflight[f.PacketID] == f { // else completed meanwhile
			b.emit(to, outItem{pub: &outPub{msg: f.Msg, qos: f.QoS, pid: f.PacketID, dup: true, retain: f.Retain, subIDs: f.SubIDs}}, nil)
		}
	}
	if len(s.Pending) == 0 && !s.Backlog {
		return // nothing waits: the common case after an ack, kept free of allocations
	}
	nowMs := b.now().UnixMilli()
	keep := func(m *wal.Message, qos byte, subIDs []uint32) bool {
		switch {
		case expired(m, nowMs): // expiry counts while queued [MQTT-3.3.2-5]
			b.stats.reasons.drop(dropExpired)
		case !to.allowRead(m.Topic): // a right revoked while it waited
			b.stats.reasons.drop(dropNotAuthorized)
		case !to.fits(m, qos, subIDs):
			b.stats.reasons.drop(dropTooLarge)
		default:
			return true
		}
		return false
	}
	send := func(f *sessions.Flight) {
		b.emit(to, outItem{pub: &outPub{msg: f.Msg, qos: f.QoS, pid: f.PacketID, retain: f.Retain, subIDs: f.SubIDs}}, nil)
	}
	// Entries written in the current Txn are not visible until it is
	// submitted. (Held completions are only deletes of entries behind
	// the cursor.)
	unseen := c.txn.Len() > c.lazyOps
	retry, err := c.sessions.Refill(c.txn, s, w, unseen, keep, send)
	if err != nil {
		b.log.Error("reading session queue", "client", s.ClientID, "err", err)
		return
	}
	if retry {
		c.repull[s] = struct{}{}
	}
}

// retryPulls refills the sessions whose last pull stopped early: at
// entries the last Txn held (called right after a flush submitted it: a
// read sees every submitted Txn, wal.Store), or at its bound of entries
// read.
func (b *Broker) retryPulls() {
	c := &b.core
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
			// 5.0: PUBREL follows only a PUBREC below 0x80
			// [MQTT-4.3.3-4]; a failure reason ends the flow, and the
			// message is done for this session.
			b.complete(s, f)
			return
		}
		if f.State == sessions.Sent {
			// Row "PUBREC in": binding -> released, then PUBREL.
			core.sessions.MarkReleased(core.txn, s, f)
		}
		b.emit(c, outItem{pkt: &packet.Ack{Kind: packet.PUBREL, PacketID: pid}}, nil)
	case packet.PUBREL:
		// Row "PUBREL in": forget the inbound id, then PUBCOMP.
		comp := &packet.Ack{Kind: packet.PUBCOMP, PacketID: pid}
		if !core.sessions.ReleaseInbound(core.txn, s, pid) && c.version == packet.V5 {
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

// complete ends an outbound flow. Its deletion sends nothing, so it may
// wait for the next commit (lazyOps; see flush).
func (b *Broker) complete(s *session, f *sessions.Flight) {
	core := &b.core
	n := core.txn.Len()
	core.sessions.Complete(core.txn, s, f)
	core.lazyOps += core.txn.Len() - n
	b.fill(s)
}

// fixedClock is a clock stopped at t, for toMessage on a path that has
// read the time already.
type fixedClock time.Time

func (f fixedClock) Now() time.Time        { return time.Time(f) }
func (f fixedClock) NewTimer() clock.Timer { panic("engine: fixedClock has no timers") }
