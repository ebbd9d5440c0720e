// Package packet is Keel's MQTT codec: every control packet of MQTT 3.1
// (protocol level 3, name "MQIsdp"), 3.1.1 (level 4) and 5.0 (level 5),
// decoded from and encoded to bytes. It is pure: functions over bytes, no
// I/O beyond reading a bufio.Reader, no state, and nothing else of Keel's.
//
// Decoding never panics and never trusts a length before the bytes arrive.
// A malformed packet yields an *Error carrying the MQTT 5.0 reason code the
// server must answer with (0x81 malformed, 0x82 protocol error, 0x95 packet
// too large, 0x90 topic name invalid, ...).
//
// Decoded packets alias the buffer they were decoded from: strings and byte
// slices point into it (Read allocates one fresh buffer per packet, so the
// packet owns it). Callers must not modify that buffer afterwards.
package packet

// Protocol levels, as carried in CONNECT.
const (
	V31  byte = 3 // MQTT 3.1, protocol name "MQIsdp"
	V311 byte = 4 // MQTT 3.1.1, protocol name "MQTT"
	V5   byte = 5 // MQTT 5.0, protocol name "MQTT"
)

// MaxPacketSize is MQTT's own ceiling for a packet: a fixed header byte plus
// the largest remaining length a 4-byte variable byte integer can express.
const MaxPacketSize = 268435455

// Type is the control packet type, the high nibble of the first byte.
type Type byte

const (
	CONNECT     Type = 1
	CONNACK     Type = 2
	PUBLISH     Type = 3
	PUBACK      Type = 4
	PUBREC      Type = 5
	PUBREL      Type = 6
	PUBCOMP     Type = 7
	SUBSCRIBE   Type = 8
	SUBACK      Type = 9
	UNSUBSCRIBE Type = 10
	UNSUBACK    Type = 11
	PINGREQ     Type = 12
	PINGRESP    Type = 13
	DISCONNECT  Type = 14
	AUTH        Type = 15
)

// Packet is any decoded control packet. The concrete types are the pointer
// types below (*Connect, *Publish, ...).
type Packet interface {
	// Type reports the control packet type.
	Type() Type
	// Append encodes the packet for the given protocol level onto dst.
	// Properties are written only when version is V5.
	Append(dst []byte, version byte) ([]byte, error)
}

// UserProperty is one MQTT 5.0 user property; order is preserved.
type UserProperty struct {
	Key, Value string
}

// Connect is CONNECT. ProtocolLevel selects the version of everything else
// on the connection.
type Connect struct {
	ProtocolName  string // "MQTT" or, for level 3, "MQIsdp"
	ProtocolLevel byte   // V31, V311 or V5
	CleanStart    bool   // 3.1.1: Clean Session
	KeepAlive     uint16 // seconds
	Props         Properties
	// Bridge is Mosquitto's bridge flag: the high bit (0x80) of a 3.1 or
	// 3.1.1 protocol level (0x83, 0x84), which a bridge with try_private
	// sets; ProtocolLevel holds the level without it.
	Bridge bool

	ClientID string

	WillFlag    bool
	WillQoS     byte
	WillRetain  bool
	WillProps   Properties // 5.0 will properties
	WillTopic   string
	WillPayload []byte

	UsernameFlag bool
	Username     string
	PasswordFlag bool
	Password     []byte
}

// Connack is CONNACK. In 3.1/3.1.1 ReasonCode carries the connect return
// code (0 accepted, 1..5 refused).
type Connack struct {
	SessionPresent bool
	ReasonCode     ReasonCode
	Props          Properties
}

// Publish is PUBLISH.
type Publish struct {
	Dup      bool
	QoS      byte
	Retain   bool
	Topic    string
	PacketID uint16 // only when QoS > 0
	Props    Properties
	Payload  []byte
}

// Ack is PUBACK, PUBREC, PUBREL or PUBCOMP: the four share one layout.
type Ack struct {
	Kind       Type // PUBACK, PUBREC, PUBREL or PUBCOMP
	PacketID   uint16
	ReasonCode ReasonCode // 5.0 only; 0 means success
	Props      Properties
}

// Subscription is one topic filter of a SUBSCRIBE with its options.
type Subscription struct {
	Filter            string
	QoS               byte
	NoLocal           bool // 5.0
	RetainAsPublished bool // 5.0
	RetainHandling    byte // 5.0: 0, 1 or 2
}

// Subscribe is SUBSCRIBE.
type Subscribe struct {
	PacketID uint16
	Props    Properties // 5.0: Subscription Identifier, User Property
	Subs     []Subscription
}

// Suback is SUBACK: one reason code (3.1.1: granted QoS or 0x80) per filter.
type Suback struct {
	PacketID uint16
	Props    Properties
	Codes    []ReasonCode
}

// Unsubscribe is UNSUBSCRIBE.
type Unsubscribe struct {
	PacketID uint16
	Props    Properties
	Filters  []string
}

// Unsuback is UNSUBACK. Codes exist in 5.0 only (one per filter).
type Unsuback struct {
	PacketID uint16
	Props    Properties
	Codes    []ReasonCode
}

// Pingreq is PINGREQ.
type Pingreq struct{}

// Pingresp is PINGRESP.
type Pingresp struct{}

// Disconnect is DISCONNECT; reason code and properties are 5.0 only.
type Disconnect struct {
	ReasonCode ReasonCode
	Props      Properties
}

// Auth is AUTH (5.0 only).
type Auth struct {
	ReasonCode ReasonCode
	Props      Properties
}

func (*Connect) Type() Type     { return CONNECT }
func (*Connack) Type() Type     { return CONNACK }
func (*Publish) Type() Type     { return PUBLISH }
func (a *Ack) Type() Type       { return a.Kind }
func (*Subscribe) Type() Type   { return SUBSCRIBE }
func (*Suback) Type() Type      { return SUBACK }
func (*Unsubscribe) Type() Type { return UNSUBSCRIBE }
func (*Unsuback) Type() Type    { return UNSUBACK }
func (*Pingreq) Type() Type     { return PINGREQ }
func (*Pingresp) Type() Type    { return PINGRESP }
func (*Disconnect) Type() Type  { return DISCONNECT }
func (*Auth) Type() Type        { return AUTH }
