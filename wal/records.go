package wal

// Records: the values stored under the keys of keys.go. Every record is
// encoded by an Append function and decoded by a Decode function; both are
// part of the on-disk format (see doc.go) and must stay readable by every
// later version.

// Message is one application message as stored: a shared body under
// MessageKey, a retained message under RetainKey, or inline in a queue entry.
// It is also the message that sessions, retain and the engine hold in
// memory: they all need it and the import arrows leave no home above wal
// for a type they share. The codec (AppendMessage, DecodeMessage) encodes
// each field explicitly, so a field added here for memory only changes
// nothing on disk; a field that must be stored needs a format change.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool

	// ExpireAt is the absolute Message Expiry deadline in Unix milliseconds;
	// 0 means the message never expires. Storing the deadline, not the
	// interval, makes expiry count down across restarts.
	ExpireAt int64

	// MQTT 5.0 properties passed through to subscribers.
	HasPayloadFormat bool
	PayloadFormat    byte
	ContentType      string
	ResponseTopic    string
	CorrelationData  []byte
	User             []UserProperty
}

// UserProperty is an MQTT 5.0 user property (key, value), kept in order.
type UserProperty struct {
	Key, Value string
}

// Queue entry states.
const (
	EntryQueued   byte = 0 // not yet sent to the session
	EntrySent     byte = 1 // sent with PacketID, waiting for PUBACK/PUBREC
	EntryReleased byte = 2 // PUBREC received, PUBREL sent, waiting for PUBCOMP
)

// Entry is one message queued for (or in flight to) a persistent session,
// stored under QueueKey(client, seq). The outbound binding "session S,
// packet id P -> message M" of DESIGN.md is an Entry in state EntrySent.
type Entry struct {
	State    byte   // EntryQueued, EntrySent or EntryReleased
	PacketID uint16 // set when State != EntryQueued
	QoS      byte   // delivery QoS (min of publish and granted QoS), 1 or 2
	Retain   bool   // retain flag to deliver (Retain As Published)
	SubIDs   []uint32

	// The message: Inline when this entry is its only reference, otherwise
	// Shared names the MessageKey(Shared) body. A released entry carries
	// neither (the message is no longer needed).
	Inline *Message
	Shared uint64
}

// Will is a session's will message with its delay.
type Will struct {
	Message
	DelaySeconds uint32 // 5.0 Will Delay Interval
}

// Session is a persistent session's own record, under SessionKey(client).
type Session struct {
	Protocol       byte   // 3, 4 or 5
	ExpirySeconds  uint32 // 3.1.1 clean session 0: 0xFFFFFFFF (never)
	Will           *Will  // nil when none
	DisconnectedAt int64  // Unix ms of the last disconnect; 0 while connected
	Owner          *Owner // who created it; nil in a record of format 1
}

// Owner is the client a persistent session belongs to: the identity that
// created it (format 2).
type Owner struct {
	Anonymous bool
	Username  string
}

// Subscription is one subscription of a persistent session, under
// SubscriptionKey(client, filter).
type Subscription struct {
	QoS               byte
	NoLocal           bool
	RetainAsPublished bool
	RetainHandling    byte
	SubID             uint32 // 0: none
}
