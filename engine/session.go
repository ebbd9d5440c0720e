package engine

import (
	"crypto/rand"
	"encoding/hex"
	"time"

	"github.com/keelmq/keel/engine/auth"
	"github.com/keelmq/keel/engine/packet"
	"github.com/keelmq/keel/sessions"
	"github.com/keelmq/keel/wal"
)

// onConnect accepts a CONNECT that passed the handshake (commit-before-send
// rows "CONNECT that creates or resumes a persistent session" and "CONNECT
// clean start over an existing persistent session").
func (b *Broker) onConnect(c *conn, cp *packet.Connect, reply chan bool) {
	core := &b.core
	id := cp.ClientID
	assigned := false
	if id == "" {
		// [MQTT-3.1.3-6] a server-assigned identifier; 5.0 returns it
		// in Assigned Client Identifier [MQTT-3.2.2-16].
		var r [12]byte
		rand.Read(r[:])
		id = "keel-" + hex.EncodeToString(r[:])
		assigned = true
	}
	c.clientID = id
	c.log = c.log.With("client", id)
	if b.flapped(c, cp.ClientID) { // flapping.go
		reply <- false
		return
	}

	if s := core.sessions.Sessions[id]; s != nil && b.opts.SessionOwners && !ownedBy(s, c) {
		// The session, online or stored, belongs to another user: it is
		// neither taken over nor discarded, and keeps its queue.
		b.stats.reasons.refuse(refuseNotAuthorized)
		c.setEndReason("session belongs to another user")
		c.log.Warn("connect refused: the session belongs to another user",
			"username", c.id.Username, "anonymous", c.id.Anonymous,
			"owner", s.Creator.Username, "owner_anonymous", s.Creator.Anonymous)
		c.refuseConnack(packet.CodeNotAuthorized)
		reply <- false
		return
	}

	if b.diskLow() && wantsPersistent(c, cp) {
		if s := core.sessions.Sessions[id]; s == nil || !s.Persistent {
			// A new persistent session while the disk is low (disk.go):
			// refused before anything, a takeover included, happens.
			b.refuseConnectDiskLow(c)
			reply <- false
			return
		}
	}

	if old := core.online[id]; old != nil {
		// [MQTT-3.1.4-3] a second connection with the same id takes the
		// session over; the first is closed (5.0: reason 0x8E).
		old.setEndReason("session taken over by a new connection")
		if old.version == packet.V5 {
			old.send(outItem{pkt: &packet.Disconnect{ReasonCode: packet.CodeSessionTakenOver}}, outItem{close: true})
		} else {
			old.kill()
		}
		b.detach(old, false, true)
	}

	var expiry uint32
	if c.version == packet.V5 {
		expiry = cp.Props.SessionExpiry // absent means 0 [MQTT-3.1.2-11]
	} else if !cp.CleanStart {
		expiry = sessions.NeverExpire
	}

	now := b.now()
	s := core.sessions.Sessions[id]
	if s != nil && cp.CleanStart {
		// [MQTT-3.1.2-4] clean start discards the existing session.
		b.endSessions(s)
		s = nil
	}
	present := s != nil && s.Persistent // [MQTT-3.2.2-2]/[MQTT-3.2.2-3]
	if s == nil {
		s = sessions.New[target](id)
		core.sessions.Sessions[id] = s
	}
	b.cancelTimer(s) // resuming cancels a pending will [MQTT-3.1.3-9] and expiry
	s.Protocol = c.version
	s.Expiry = expiry
	s.Will = willOf(cp, now)
	if s.Creator == nil {
		// A new session, or one from a format-1 record: its first client
		// since is its owner.
		s.Creator = &wal.Owner{Anonymous: c.id.Anonymous, Username: c.id.Username}
	}
	s.DisconnectedAt = time.Time{}
	b.resolveLimits(s) // quotaoverride.go
	core.sessions.Attach(s, c, expiry > 0)
	s.Resend = nil
	c.sess = s
	core.online[id] = c
	core.sessions.Save(core.txn, s)

	// 3.1 has no session-present flag: that byte is reserved there.
	ack := &packet.Connack{SessionPresent: present && c.version != packet.V31}
	if c.version == packet.V5 {
		pr := &ack.Props
		if assigned {
			pr.AssignedClientID = id
			pr.Set(packet.PropAssignedClientID)
		}
		pr.ReceiveMaximum = b.opts.ReceiveMaximum
		pr.Set(packet.PropReceiveMaximum)
		pr.TopicAliasMaximum = b.opts.TopicAliasMaximum
		pr.Set(packet.PropTopicAliasMaximum)
		if c.keepAlive != cp.KeepAlive {
			pr.ServerKeepAlive = c.keepAlive // [MQTT-3.2.2-21]
			pr.Set(packet.PropServerKeepAlive)
		}
		if c.authMethod != "" {
			pr.AuthMethod = c.authMethod // [MQTT-4.12.0-5]
			pr.Set(packet.PropAuthMethod)
			if c.authData != nil {
				pr.AuthData = c.authData
				pr.Set(packet.PropAuthData)
			}
		}
		if b.opts.MaxPacketSize < packet.MaxPacketSize {
			pr.MaximumPacketSize = b.opts.MaxPacketSize
			pr.Set(packet.PropMaximumPacketSize)
		}
		if b.opts.MaximumQoS < 2 {
			pr.MaximumQoS = b.opts.MaximumQoS
			pr.Set(packet.PropMaximumQoS)
		}
	}
	nack := &packet.Connack{ReasonCode: packet.RetServerUnavailable}
	if c.version == packet.V5 {
		nack.ReasonCode = packet.CodeUnspecifiedError
	}
	b.emit(c, outItem{pkt: ack}, nack)

	if present {
		// [MQTT-4.4.0-1] resend unacknowledged PUBLISH with DUP=1 and the
		// same packet id, and PUBREL for released ones, in order. Every
		// one of them counts against the new connection's Receive Maximum
		// [MQTT-3.3.4-9]: PUBLISHes beyond it wait in s.Resend for acks.
		flights := s.InflightInOrder()
		room := c.window()
		for _, f := range flights {
			if f.State == sessions.Released {
				room--
			}
		}
		for _, f := range flights {
			if f.State == sessions.Released {
				b.emit(c, outItem{pkt: &packet.Ack{Kind: packet.PUBREL, PacketID: f.PacketID}}, nil)
				continue
			}
			if f.Msg == nil {
				continue
			}
			if room <= 0 {
				s.Resend = append(s.Resend, f)
				continue
			}
			room--
			b.emit(c, outItem{pub: &outPub{msg: f.Msg, qos: f.QoS, pid: f.PacketID, dup: true, retain: f.Retain, subIDs: f.SubIDs}}, nil)
		}
	}
	b.fill(s)
	c.connected = true
	c.present = present
	b.stats.connected.Add(1)
	reply <- true
}

// willOf is the will message of a CONNECT, or nil.
func willOf(cp *packet.Connect, now time.Time) *wal.Will {
	if !cp.WillFlag {
		return nil
	}
	p := &packet.Publish{QoS: cp.WillQoS, Retain: cp.WillRetain, Topic: cp.WillTopic, Payload: cp.WillPayload, Props: cp.WillProps}
	w := &wal.Will{Message: *toMessage(p, cp.ProtocolLevel, fixedClock(now))}
	if cp.ProtocolLevel == packet.V5 && cp.WillProps.Has(packet.PropWillDelay) {
		w.DelaySeconds = cp.WillProps.WillDelay
	}
	if w.Message.ExpireAt != 0 {
		// A will's expiry counts from when it is published; keep the
		// interval until then.
		w.Message.ExpireAt = int64(cp.WillProps.MessageExpiry) * 1000
	}
	return w
}

// onClosed handles the end of a connection.
func (b *Broker) onClosed(c *conn, graceful, willOnDisconnect bool) {
	if !c.connected {
		return
	}
	c.connected = false
	b.stats.connected.Add(-1)
	b.detach(c, graceful && !willOnDisconnect, false)
}

// detach takes c off its session. dropWill is true for a normal DISCONNECT
// [MQTT-3.1.2-10]; takeover is true when a new connection takes the
// session (its will, if any, replaces this one's).
func (b *Broker) detach(c *conn, dropWill, takeover bool) {
	core := &b.core
	s := c.sess
	if s == nil || s.Owner != target(c) {
		return
	}
	if core.online[s.ClientID] == c {
		delete(core.online, s.ClientID)
	}
	core.sessions.Detach(s)
	delete(core.repull, s)
	now := b.now()
	if dropWill {
		s.Will = nil
	}
	// Messages of a non-persistent session waiting in memory die with it;
	// in-flight ones of a persistent session stay bound on disk.
	s.Pending, s.Resend = nil, nil
	if s.Expiry == 0 {
		// The session ends with the connection: publish the will now
		// (its delay cannot outlive the session) [MQTT-3.1.3-9].
		if s.Will != nil && (!takeover || s.Will.DelaySeconds == 0) {
			b.publishWill(s, now)
		}
		b.endSessions(s)
		return
	}
	s.DisconnectedAt = now
	if takeover && s.Will != nil && s.Will.DelaySeconds == 0 {
		b.publishWill(s, now)
	}
	if !takeover {
		core.sessions.Save(core.txn, s)
		b.armTimers(s, now)
	}
}

// publishWill publishes s's will and forgets it.
func (b *Broker) publishWill(s *session, now time.Time) {
	w := s.Will
	s.Will = nil
	m := w.Message
	if !b.topicFits(m.Topic) {
		b.stats.reasons.refuse(refuseTopicLimits)
		b.log.Info("will not published: topic over max_topic_levels or max_topic_length", "client", s.ClientID)
		return
	}
	if live := b.opts.Authorizer; live != nil && s.Creator != nil {
		// Checked again as it is published: a right revoked since the
		// CONNECT (a reload) holds for the will too.
		id := auth.Identity{Username: s.Creator.Username, Anonymous: s.Creator.Anonymous}
		if !live.Allow(id, s.ClientID, m.Topic, auth.Write) {
			b.stats.reasons.drop(dropNotAuthorized)
			b.log.Info("will not published: not authorized", "client", s.ClientID, "topic", m.Topic)
			return
		}
	}
	if m.ExpireAt != 0 {
		m.ExpireAt = now.UnixMilli() + m.ExpireAt // stored as the interval until now
	}
	b.stats.received.Add(1)
	b.publish(&m, nil)
}

// endSessions deletes sessions: memory, subscriptions, and their durable
// state, without waiting for any I/O. A persistent session's keys go with
// one range deletion in the current Txn; the references its queue held to
// shared bodies are released later by the sweeper, from a snapshot taken
// here after everything so far was submitted (so the snapshot and the
// reference counts agree). A session whose queue references no shared
// body needs neither: each sweep's scan costs Pebble a new fragmentation
// of every range deletion in the memtable, so a burst of clean starts
// sweeping for nothing grew quadratic (issue 9's burst).
func (b *Broker) endSessions(list ...*session) {
	core := &b.core
	var toSweep []string // persistent sessions whose queues reference shared bodies
	for _, s := range list {
		for f := range s.Subs {
			b.trieRemove(s, f)
		}
		b.cancelTimer(s)
		delete(core.repull, s)
		delete(core.dropLog, s)
		if s.Persistent && s.SharesBodies() {
			toSweep = append(toSweep, s.ClientID)
		}
	}
	var snap wal.Snapshot
	if len(toSweep) > 0 {
		b.flush(true)
		var err error
		if snap, err = b.store.Snapshot(); err != nil {
			// The store is closed or failed: its references are left to
			// the next Load, which collects unreferenced bodies.
			b.log.Error("ending sessions: snapshot", "err", err)
		}
	}
	for _, s := range list {
		core.sessions.End(core.txn, s)
	}
	if snap != nil {
		b.sweeper.add(sweep{snap: snap, clients: toSweep})
	}
}

// onSubscribe handles SUBSCRIBE (row "SUBSCRIBE on a persistent session").
// denied, if not nil, marks the filters the Authorizer refused.
func (b *Broker) onSubscribe(c *conn, p *packet.Subscribe, denied []bool) {
	if !active(c) {
		return
	}
	core := &b.core
	s := c.sess
	var subID uint32
	if len(p.Props.SubscriptionIDs) > 0 {
		subID = p.Props.SubscriptionIDs[0]
	}
	codes := make([]packet.ReasonCode, len(p.Subs))
	type retainedReq struct {
		filter string
		opts   sessions.Subscription
	}
	var wantRetained []retainedReq
	for i, sub := range p.Subs {
		if denied != nil && denied[i] {
			b.stats.reasons.refuse(refuseNotAuthorized)
			codes[i] = packet.CodeUnspecifiedError // 3.1.1: 0x80 failure
			if c.version == packet.V5 {
				codes[i] = packet.CodeNotAuthorized
			}
			continue
		}
		if packet.ValidTopicFilter(sub.Filter) != nil {
			// A filter the broker refuses gets 0x80 / 0x8F in SUBACK,
			// not a dropped connection.
			codes[i] = packet.CodeUnspecifiedError
			if c.version == packet.V5 {
				codes[i] = packet.CodeTopicFilterInvalid
			}
			continue
		}
		if why, ok := b.subscriptionFits(s, sub.Filter); !ok {
			// Over a limit: 0x97 (5.0) / 0x80 (3.1.1) for that filter.
			b.stats.reasons.refuse(why)
			b.refusedLog.log(c.log, "subscription refused", "reason", refuseNames[why])
			codes[i] = packet.CodeUnspecifiedError
			if c.version == packet.V5 {
				codes[i] = packet.CodeQuotaExceeded
			}
			continue
		}
		_, _, shared := packet.ParseShared(sub.Filter)
		if shared && sub.NoLocal {
			// [MQTT-3.8.3-4] No Local on a shared subscription is a
			// protocol error.
			c.send(outItem{pkt: &packet.Disconnect{ReasonCode: packet.CodeProtocolError}}, outItem{close: true})
			return
		}
		qos := min(sub.QoS, b.opts.MaximumQoS)
		// A bridge that said so (try_private) gets nothing it published
		// back, as from Mosquitto: No Local for 3.1.1.
		// Retained flags as published, too, so that the bridge can
		// retain here what was retained there.
		noLocal := sub.NoLocal || c.bridge && !shared
		opts := sessions.Subscription{QoS: qos, NoLocal: noLocal, RetainAsPublished: sub.RetainAsPublished || c.bridge, RetainHandling: sub.RetainHandling, SubID: subID}
		existed := core.sessions.Subscribe(core.txn, s, sub.Filter, opts)
		b.trieAdd(s, sub.Filter, opts)
		codes[i] = packet.ReasonCode(qos) // [MQTT-3.9.3-1] granted QoS
		// Retained messages on subscribe [MQTT-3.3.1-9]; 5.0 Retain
		// Handling 1: only for a new subscription, 2: never
		// [MQTT-3.3.1-10]; never for a shared subscription.
		if !shared && (sub.RetainHandling == 0 || (sub.RetainHandling == 1 && !existed)) {
			wantRetained = append(wantRetained, retainedReq{filter: sub.Filter, opts: opts})
		}
	}
	nackCodes := make([]packet.ReasonCode, len(codes))
	for i := range nackCodes {
		nackCodes[i] = packet.CodeUnspecifiedError
	}
	b.emit(c, outItem{pkt: &packet.Suback{PacketID: p.PacketID, Codes: codes}}, &packet.Suback{PacketID: p.PacketID, Codes: nackCodes})
	nowMs := b.now().UnixMilli()
	for _, r := range wantRetained {
		var subIDs []uint32
		if r.opts.SubID != 0 {
			subIDs = []uint32{r.opts.SubID}
		}
		core.retained.Match(r.filter, nowMs, func(m *wal.Message) {
			// [MQTT-3.3.1-8] retained messages go out with RETAIN set.
			b.deliver(s, sessions.Delivery{Msg: m, QoS: min(m.QoS, r.opts.QoS), Retain: true, SubIDs: subIDs})
		})
	}
}

// onUnsubscribe handles UNSUBSCRIBE (row "UNSUBSCRIBE on a persistent
// session").
func (b *Broker) onUnsubscribe(c *conn, p *packet.Unsubscribe) {
	if !active(c) {
		return
	}
	core := &b.core
	s := c.sess
	codes := make([]packet.ReasonCode, len(p.Filters))
	for i, f := range p.Filters {
		if !core.sessions.Unsubscribe(core.txn, s, f) {
			codes[i] = packet.CodeNoSubscriptionExisted
			continue
		}
		b.trieRemove(s, f)
	}
	ack := &packet.Unsuback{PacketID: p.PacketID}
	if c.version == packet.V5 {
		ack.Codes = codes
	}
	b.emit(c, outItem{pkt: ack}, nil)
}

// onSessionExpiry applies a 5.0 DISCONNECT's Session Expiry Interval.
func (b *Broker) onSessionExpiry(c *conn, d *packet.Disconnect) {
	s := c.sess
	if !c.connected || s == nil || s.Owner != target(c) {
		return
	}
	if s.Expiry == 0 && d.Props.SessionExpiry != 0 {
		// [MQTT-3.14.2-2] a protocol error; the connection is closing
		// anyway, keep the session non-persistent.
		return
	}
	s.Expiry = d.Props.SessionExpiry
}

// trieAdd indexes a subscription of s.
func (b *Broker) trieAdd(s *session, filter string, o sessions.Subscription) {
	group, inner, shared := packet.ParseShared(filter)
	if !shared {
		inner = filter
	}
	b.core.subs.Add(inner, subKey{s: s, group: group}, subValue{opts: o, filter: filter})
}

// trieRemove drops a subscription of s from the index.
func (b *Broker) trieRemove(s *session, filter string) {
	group, inner, shared := packet.ParseShared(filter)
	if !shared {
		inner = filter
	}
	b.core.subs.Remove(inner, subKey{s: s, group: group})
}

// active reports whether c is the live connection of its session: packets
// of a connection that was taken over are ignored.
// ownedBy says whether c's client may use s: s's creator is the same
// identity, or s has none (a format-1 record).
func ownedBy(s *session, c *conn) bool {
	o := s.Creator
	return o == nil || (o.Anonymous == c.id.Anonymous && o.Username == c.id.Username)
}

func active(c *conn) bool {
	return c.connected && !c.refused && c.sess != nil && c.sess.Owner == target(c)
}
