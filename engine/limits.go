package engine

import (
	"math"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/keelmq/keel/engine/packet"
)

// Topic and subscription limits: Options.MaxTopicLevels and MaxTopicLength
// bound every topic name a client publishes to and every filter it
// subscribes to; Options.MaxSubscriptions bounds a session's
// subscriptions. Beyond them a SUBSCRIBE filter gets 0x97 Quota exceeded
// (3.1.1: 0x80) in SUBACK, a PUBLISH is refused (5.0: PUBACK/PUBREC 0x97;
// 3.1.1, which has no reason codes: acknowledged and dropped, as for an
// ACL refusal, since a resend would be refused again), a will is not
// published; each is counted (topic_limits, max_subscriptions) and the
// connection stays.

// levels is the number of levels of a topic name or filter.
func levels(topic string) int { return strings.Count(topic, "/") + 1 }

// topicFits reports whether a topic name is within the limits.
func (b *Broker) topicFits(topic string) bool {
	if len(topic) > b.opts.MaxTopicLength {
		return false
	}
	return b.opts.MaxTopicLevels < 0 || levels(topic) <= b.opts.MaxTopicLevels
}

// subscriptionFits reports whether s may subscribe to filter: within the
// topic limits (a shared subscription's levels counted without
// "$share/GROUP/"), and a new filter within MaxSubscriptions (replacing
// one s has is always allowed).
func (b *Broker) subscriptionFits(s *session, filter string) (refuseReason, bool) {
	inner := filter
	if _, f, shared := packet.ParseShared(filter); shared {
		inner = f
	}
	if len(filter) > b.opts.MaxTopicLength || (b.opts.MaxTopicLevels >= 0 && levels(inner) > b.opts.MaxTopicLevels) {
		return refuseTopicLimits, false
	}
	if _, has := s.Subs[filter]; !has && b.opts.MaxSubscriptions > 0 && len(s.Subs) >= b.opts.MaxSubscriptions {
		return refuseMaxSubscriptions, false
	}
	return 0, true
}

// refuseTopic answers a PUBLISH whose topic is over the limits: nothing is
// stored or routed.
func (b *Broker) refuseTopic(c *conn, p *packet.Publish) {
	b.stats.reasons.refuse(refuseTopicLimits)
	b.refusedLog.log(c.log, "publish refused: topic over max_topic_levels or max_topic_length",
		"levels", levels(p.Topic), "length", len(p.Topic))
	code := packet.CodeSuccess
	if c.version == packet.V5 {
		code = packet.CodeQuotaExceeded
	}
	switch p.QoS {
	case 1:
		b.emit(c, outItem{pkt: &packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID, ReasonCode: code}, decIn: true}, nil)
	case 2:
		if code != 0 {
			c.freeQoS2(p.PacketID) // the flow ends with this PUBREC
		}
		b.emit(c, outItem{pkt: &packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID, ReasonCode: code}, decIn: code != 0}, nil)
	}
}

// publishLimiter is a new connection's token bucket for MaxPublishRate,
// or nil.
func (b *Broker) publishLimiter() *rate.Limiter {
	r := b.opts.MaxPublishRate
	if r <= 0 {
		return nil
	}
	burst := b.opts.MaxPublishBurst
	if burst <= 0 {
		burst = max(1, int(math.Ceil(r)))
	}
	return rate.NewLimiter(rate.Limit(r), burst)
}

// throttlePublish applies MaxPublishRate to p on the reader. A 5.0 QoS 1/2
// PUBLISH over the rate is to be refused (it reports true; the core
// answers 0x97 in order with the other acks); its QoS 2 flow ends with
// that PUBREC, so its id is free again here, and its Receive Maximum slot
// is given back when the PUBREC leaves (decIn). Anything else over the
// rate waits here, before the connection is read further: 3.1.1 has no
// reason code for it, and a QoS 0 PUBLISH no ack, so the client is slowed
// rather than refused (counted in Stats.PublishesThrottled). The wait
// ends early when the broker closes the connection.
func (c *conn) throttlePublish(p *packet.Publish) (refuse bool) {
	if c.version == packet.V5 && p.QoS > 0 {
		if c.pubRate.Allow() {
			return false
		}
		if p.QoS == 2 {
			delete(c.qos2Open, p.PacketID)
		}
		return true
	}
	d := c.pubRate.Reserve().Delay()
	if d <= 0 {
		return false
	}
	c.b.stats.throttled.Add(1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.done:
	}
	return false
}

// refuseRate answers a 5.0 QoS 1/2 PUBLISH over MaxPublishRate with
// PUBACK/PUBREC 0x97 (Quota exceeded): nothing is stored or routed. 0x96
// (Message rate too high) would say it better, but 5.0 allows it only in
// DISCONNECT, not in PUBACK or PUBREC (section 3.4.2.1, 3.5.2.1).
func (b *Broker) refuseRate(c *conn, p *packet.Publish) {
	if !active(c) {
		return
	}
	b.stats.received.Add(1)
	b.stats.reasons.refuse(refusePublishRate)
	b.refusedLog.log(c.log, "publish refused: over max_publish_rate")
	kind := packet.PUBACK
	if p.QoS == 2 {
		kind = packet.PUBREC
	}
	b.emit(c, outItem{pkt: &packet.Ack{Kind: kind, PacketID: p.PacketID, ReasonCode: packet.CodeQuotaExceeded}, decIn: true}, nil)
}
