package wal

import "encoding/binary"

// The key schema: drawn in the package doc (doc.go, "Keys"). Part of the
// on-disk format: changing any byte here needs a new FormatVersion.
const (
	nsFormat  = 0x00
	nsMessage = 'm'
	nsRetain  = 'r'
	nsSession = 's'
	nsDedup   = 'd'

	KindSession      = 'M'
	KindSubscription = 'S'
	KindQueue        = 'Q'
	KindInbound      = 'I'
)

// FormatKey holds the data directory's format version.
var FormatKey = []byte("\x00format")

// MessageKey is the key of a shared message body.
func MessageKey(id uint64) []byte {
	k := make([]byte, 9)
	k[0] = nsMessage
	binary.BigEndian.PutUint64(k[1:], id)
	return k
}

// MessagePrefix bounds all shared message bodies.
func MessagePrefix() []byte { return []byte{nsMessage} }

// RetainKey is the key of the retained message on topic.
func RetainKey(topic string) []byte {
	k := make([]byte, 1+len(topic))
	k[0] = nsRetain
	copy(k[1:], topic)
	return k
}

// RetainPrefix bounds the retained set.
func RetainPrefix() []byte { return []byte{nsRetain} }

// SessionPrefix bounds everything of one session. Client identifiers are at
// most 65,535 bytes (an MQTT string), so the length fits two bytes.
func SessionPrefix(client string) []byte {
	k := make([]byte, 0, 4+len(client)+16)
	k = append(k, nsSession, byte(len(client)>>8), byte(len(client)))
	return append(k, client...)
}

// AllSessionsPrefix bounds every session's state.
func AllSessionsPrefix() []byte { return []byte{nsSession} }

// SessionKey is the key of a session's own record.
func SessionKey(client string) []byte { return append(SessionPrefix(client), KindSession) }

// SubscriptionKey is the key of one subscription of a session.
func SubscriptionKey(client, filter string) []byte {
	return append(append(SessionPrefix(client), KindSubscription), filter...)
}

// SubscriptionPrefix bounds a session's subscriptions.
func SubscriptionPrefix(client string) []byte { return append(SessionPrefix(client), KindSubscription) }

// QueueKey is the key of a session's queue entry seq.
func QueueKey(client string, seq uint64) []byte {
	k := append(SessionPrefix(client), KindQueue, 0, 0, 0, 0, 0, 0, 0, 0)
	binary.BigEndian.PutUint64(k[len(k)-8:], seq)
	return k
}

// QueuePrefix bounds a session's queue.
func QueuePrefix(client string) []byte { return append(SessionPrefix(client), KindQueue) }

// InboundKey is the key recording that inbound QoS 2 packet id pid of the
// session was received and not yet released.
func InboundKey(client string, pid uint16) []byte {
	return append(SessionPrefix(client), KindInbound, byte(pid>>8), byte(pid))
}

// InboundPrefix bounds a session's inbound QoS 2 packet ids.
func InboundPrefix(client string) []byte { return append(SessionPrefix(client), KindInbound) }

// DedupKey is the key recording that message id id was routed for the
// dedup scope (a client id or a username, sessions/dedup); its value is
// the Unix ms the record expires at (8 bytes, BE). Format 2.
func DedupKey(scope, id string) []byte {
	k := make([]byte, 0, 3+len(scope)+len(id))
	k = append(k, nsDedup, byte(len(scope)>>8), byte(len(scope)))
	return append(append(k, scope...), id...)
}

// DedupPrefix bounds every dedup record.
func DedupPrefix() []byte { return []byte{nsDedup} }

// ParseDedupKey splits a dedup key into its scope and message id
// (aliasing k).
func ParseDedupKey(k []byte) (scope, id []byte, ok bool) {
	if len(k) < 3 || k[0] != nsDedup {
		return nil, nil, false
	}
	n := int(k[1])<<8 | int(k[2])
	if len(k) < 3+n {
		return nil, nil, false
	}
	return k[3 : 3+n], k[3+n:], true
}

// PrefixEnd returns the smallest key greater than every key with prefix p.
func PrefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil // p is all 0xff: no upper bound
}

// ParseSessionKeyBytes splits a key under AllSessionsPrefix into the
// client id (aliasing k), the kind byte (KindSession, KindSubscription,
// KindQueue, KindInbound) and the rest. ok is false for a key that is not
// a session key.
func ParseSessionKeyBytes(k []byte) (client []byte, kind byte, rest []byte, ok bool) {
	if len(k) < 4 || k[0] != nsSession {
		return nil, 0, nil, false
	}
	n := int(k[1])<<8 | int(k[2])
	if len(k) < 3+n+1 {
		return nil, 0, nil, false
	}
	return k[3 : 3+n], k[3+n], k[3+n+1:], true
}

// ParseQueueSeq returns the seq of a queue key.
func ParseQueueSeq(k []byte) (uint64, bool) {
	_, kind, rest, ok := ParseSessionKeyBytes(k)
	if !ok || kind != KindQueue || len(rest) != 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(rest), true
}

// ParseMessageKey returns the id of a shared body's key.
func ParseMessageKey(k []byte) (uint64, bool) {
	if len(k) != 9 || k[0] != nsMessage {
		return 0, false
	}
	return binary.BigEndian.Uint64(k[1:]), true
}
