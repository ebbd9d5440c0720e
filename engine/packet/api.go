package packet

import "bufio"

// This file fixes the codec's exported API; the implementation lives in the
// other files of the package.

// Error is a decoding (or protocol) error with the MQTT 5.0 reason code the
// server must answer with. Compare with errors.As.
type Error struct {
	Code ReasonCode
	Msg  string
}

func (e *Error) Error() string { return "packet: " + e.Msg }

// Read reads exactly one control packet from r.
//
// version is the connection's protocol level, known after CONNECT; pass 0
// before CONNECT (then only CONNECT is accepted and its level decides how it
// is decoded). maxSize bounds the whole packet (fixed header included); 0
// means MaxPacketSize. A packet whose declared size exceeds maxSize fails
// with Code CodePacketTooLarge without reading its body. Read never
// allocates a declared size before the bytes arrive: it grows its buffer as
// bytes come in. The returned packet owns a fresh buffer.
func Read(r *bufio.Reader, version byte, maxSize uint32) (Packet, error) {
	return read(r, version, maxSize)
}

// Decode decodes one packet whose fixed header byte is first and whose
// remaining bytes are body (exactly the remaining length). The packet
// aliases body.
func Decode(first byte, body []byte, version byte) (Packet, error) {
	return decode(first, body, version)
}

// DecodePublish decodes a PUBLISH into p without allocating (beyond what
// p's slices need for several subscription identifiers or user properties).
// p aliases body.
func DecodePublish(first byte, body []byte, version byte, p *Publish) error {
	return decodePublish(first, body, version, p)
}
