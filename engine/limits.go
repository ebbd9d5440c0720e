package engine

import (
	"strings"

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
		"listener", c.info.Listener, "levels", levels(p.Topic), "length", len(p.Topic))
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
