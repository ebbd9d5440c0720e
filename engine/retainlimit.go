package engine

import (
	"github.com/keelmq/keel/engine/packet"
	"github.com/keelmq/keel/retain"
	"github.com/keelmq/keel/wal"
)

// Retained limits. The retained set lives in memory as well as on disk,
// so it is bounded: Options.MaxRetainedMessages (the clients' retained
// topics), MaxRetainedBytes (their topics and payloads together) and
// MaxRetainedMessageSize (one message's topic and payload). A retained
// update is over them when storing it would pass a bound; replacing a
// topic's message counts the difference, and deleting one (an empty
// payload [MQTT-3.3.1-10]) is always allowed. Over them:
//
//   - 5.0, QoS 1/2: refused, PUBACK/PUBREC 0x97 Quota exceeded, and not
//     routed at all (a retry would be refused again, so the connection
//     stays, as for the topic limits); counted refused retained_full.
//   - 3.1, 3.1.1 (no reason codes), and QoS 0 of any version (no ack to
//     carry one), and wills: accepted and routed as a non-retained message;
//     the retained set does not change. Counted dropped retained_full and
//     logged (rate-limited) with the topic.
//
// While the disk is below its low-water mark (disk.go) a retained update
// that gets this far (QoS 0, or a will) is not kept either, counted
// dropped disk_low.

// fitsRetained reports whether a retained message of size bytes (topic and
// payload, retain.Size) on topic is within the limits.
func (b *Broker) fitsRetained(topic string, size int64) bool {
	if max := b.opts.MaxRetainedMessageSize; max > 0 && size > max {
		return false
	}
	old, has := b.core.retained.Get(topic)
	if max := b.opts.MaxRetainedMessages; max > 0 && !has && int64(b.retainedLen()) >= max {
		return false
	}
	if max := b.opts.MaxRetainedBytes; max > 0 {
		cur := b.retainedBytes()
		if has {
			cur -= retain.Size(old)
		}
		if cur+size > max {
			return false
		}
	}
	return true
}

// refusesRetained reports whether a client's QoS 1/2 PUBLISH p is to be
// refused for the retained limits: a 5.0 one whose retained update is
// over them.
func (b *Broker) refusesRetained(c *conn, p *packet.Publish) bool {
	return c.version == packet.V5 && p.Retain && len(p.Payload) > 0 &&
		!b.fitsRetained(p.Topic, int64(len(p.Topic)+len(p.Payload)))
}

// refuseRetained answers a 5.0 QoS 1/2 retained PUBLISH over the limits
// with PUBACK/PUBREC 0x97: nothing is stored or routed. The QoS 2 flow
// ends with that PUBREC [MQTT-4.3.3-4].
func (b *Broker) refuseRetained(c *conn, p *packet.Publish) {
	b.stats.reasons.refuse(refuseRetainedFull)
	b.refusedLog.log(c.log, "publish refused: over max_retained_messages, max_retained_bytes or max_retained_message_size",
		"topic", p.Topic, "bytes", len(p.Topic)+len(p.Payload), "reason", refuseNames[refuseRetainedFull])
	kind := packet.PUBACK
	if p.QoS == 2 {
		kind = packet.PUBREC
		c.freeQoS2(p.PacketID)
	}
	b.emit(c, outItem{pkt: &packet.Ack{Kind: kind, PacketID: p.PacketID, ReasonCode: packet.CodeQuotaExceeded}, decIn: true}, nil)
}

// keepRetained reports whether m's retained update (a RETAIN PUBLISH that
// was accepted) is stored. When it is not, m is routed as a non-retained
// message: the drop is counted and logged.
func (b *Broker) keepRetained(m *wal.Message) bool {
	if len(m.Payload) == 0 {
		return true // a deletion frees space: always allowed
	}
	why := dropRetainedFull
	switch {
	case !b.fitsRetained(m.Topic, retain.Size(m)):
	case b.diskLow():
		why = dropDiskLow
	default:
		return true
	}
	b.stats.reasons.drop(why)
	b.refusedLog.log(b.log, "retained update not kept: routed as a non-retained message", "topic", m.Topic,
		"bytes", retain.Size(m), "reason", dropNames[why])
	return false
}

// retainedBytes is the Size of the clients' retained messages ($SYS topics
// not counted).
func (b *Broker) retainedBytes() int64 {
	if b.core.retained == nil {
		return 0
	}
	return b.core.retained.Bytes() - b.stats.sysRetainedBytes.Load()
}
