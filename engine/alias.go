package engine

import (
	"strings"

	"github.com/keelmq/keel/engine/packet"
)

// Server-assigned topic aliases (MQTT 5.0, section 3.3.2.3.4).
//
// A 5.0 client whose CONNECT carries a Topic Alias Maximum above 0 lets the
// server replace a topic name it has sent once with a two-byte alias. Keel
// assigns them per connection, on the outbound PUBLISHes it encodes:
//
//	first PUBLISH on topic T:  topic name T,  Topic Alias A  (the mapping A -> T)
//	later PUBLISHes on T:      topic name "", Topic Alias A  (3 bytes instead of len(T))
//
// Policy: the first N distinct topics the connection sends get aliases
// 1..N and keep them for the connection's life; later topics go with their
// full name and no alias. N is the client's Topic Alias Maximum, at most
// maxServerAliases. Why not an LRU with reassignment: a repeat costs one map
// lookup and nothing else (no list to reorder per packet, no eviction), the
// worst case is bounded (3 extra bytes, once, per aliased topic: a
// connection whose topics never repeat pays at most 3N bytes in all, where
// an LRU smaller than its working set pays 3 bytes on every packet), and in
// the case aliases exist for (a device receiving the same few topics over
// and over, fewer than its maximum) both give the same bytes. What first-N
// gives up: a subscriber whose topics drift over hours keeps the aliases of
// the first ones.
//
// Topics shorter than minAliasedTopic get no alias: the property costs 3
// bytes, so a shorter name saves nothing. With that floor an aliased
// repeat is never larger than the same PUBLISH unaliased (the 3-byte
// property, plus at most one byte of property length, against at least 4
// bytes of name), so a message that passed conn.fits still fits; only the
// first PUBLISH of a topic, name and alias, can exceed the client's Maximum
// Packet Size, and then it is sent without an alias and none is assigned.
//
// The mapping lives in the client the moment the bytes arrive, so aliases
// are assigned in the order the packets leave the socket: only by the
// holder of the connection's writer role (writeLoop, or sendNow's caller),
// as it encodes, in the order it writes. A new connection starts with an
// empty mapping [MQTT-3.3.2-7]: a message resent with DUP after a
// reconnect carries its topic name again.

// maxServerAliases bounds the aliases keel assigns one connection, whatever
// the client allows (up to 65535): each holds a copy of its topic name.
const maxServerAliases = 1024

// minAliasedTopic is the shortest topic name worth an alias (see above).
const minAliasedTopic = 4

// outAliases is one connection's server-assigned topic aliases. The zero
// value assigns none.
//
// REQUIRES: used only by the holder of the connection's writer role.
type outAliases struct {
	max     uint16            // aliases 1..max may be assigned; 0: none
	byTopic map[string]uint16 // assigned so far; len(byTopic) < max: room for more
}

// init enables aliases for a connection whose client allows clientMax
// [MQTT-3.1.2-26]; 0 assigns none [MQTT-3.1.2-27].
func (a *outAliases) init(clientMax uint16) {
	a.max = min(clientMax, maxServerAliases)
}

// appendPublish encodes p (a 5.0 PUBLISH to this connection) onto dst, with
// a topic alias where the policy gives one. maxPkt is the client's Maximum
// Packet Size (0: none). p's topic and properties may be changed.
func (a *outAliases) appendPublish(dst []byte, p *packet.Publish, maxPkt uint32) ([]byte, error) {
	if a.max == 0 || len(p.Topic) < minAliasedTopic {
		return p.Append(dst, packet.V5)
	}
	topic := p.Topic
	alias, known := a.byTopic[topic]
	if !known {
		if len(a.byTopic) >= int(a.max) {
			return p.Append(dst, packet.V5)
		}
		alias = uint16(len(a.byTopic) + 1) // 1..max [MQTT-3.3.2-8] [MQTT-3.3.2-11]
	} else {
		p.Topic = "" // the client maps it back
	}
	p.Props.TopicAlias = alias
	p.Props.Set(packet.PropTopicAlias)
	start := len(dst)
	out, err := p.Append(dst, packet.V5)
	if err != nil {
		return out, err
	}
	if maxPkt != 0 && len(out)-start > int(maxPkt) {
		// The name and the alias together are over the client's limit
		// [MQTT-3.1.2-24]: the plain PUBLISH, which fits, goes instead.
		p.Topic = topic
		p.Props.Clear(packet.PropTopicAlias)
		return p.Append(out[:start], packet.V5)
	}
	if !known {
		if a.byTopic == nil {
			a.byTopic = make(map[string]uint16, min(int(a.max), 16))
		}
		// A copy: the message's topic aliases the buffer of the packet
		// it came in, payload and all.
		a.byTopic[strings.Clone(topic)] = alias
	}
	return out, nil
}
