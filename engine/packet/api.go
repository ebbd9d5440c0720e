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
//
// Errors: io.EOF when the stream ends before the packet's first byte;
// io.ErrUnexpectedEOF when it ends inside a packet; other errors of r
// unchanged; an *Error for anything wrong with the bytes. With version 0 a
// first byte that is not CONNECT fails at once with CodeProtocolError,
// before the rest of the packet is read.
//
// CONNECT: once its protocol name and level are read, a failing CONNECT
// still returns the *Connect decoded so far together with the error. An
// unknown protocol name or level fails with CodeUnsupportedProtocolVersion
// and a *Connect whose ProtocolName and ProtocolLevel say what the client
// asked for, so the caller can answer with a 3.1.1 CONNACK (return code
// RetUnacceptableVersion) or a 5.0 one (CodeUnsupportedProtocolVersion).
// For every other packet type the Packet is nil when err is not.
func Read(r *bufio.Reader, version byte, maxSize uint32) (Packet, error) {
	return read(r, version, maxSize)
}

// Decode decodes one packet whose fixed header byte is first and whose
// remaining bytes are body (exactly the remaining length). version is as
// for Read, and so are the errors (a *Connect may accompany an error).
//
// The packet aliases body: its strings are unsafe.String views of body's
// bytes and its byte slices are subslices of body. body must not be
// modified, or reused for another packet, while the packet (or any string
// taken from it) is in use. Decode never panics, whatever the input.
func Decode(first byte, body []byte, version byte) (Packet, error) {
	return decode(first, body, version)
}

// DecodePublish decodes a PUBLISH into p without allocating (beyond what
// p's slices need for several subscription identifiers or user properties).
// p aliases body, as for Decode. Every field of p is overwritten; the
// backing arrays of p.Props.SubscriptionIDs and p.Props.User are reused,
// so slices taken from an earlier decode into p must not be kept.
// version 0 fails with CodeProtocolError (only CONNECT precedes CONNECT).
func DecodePublish(first byte, body []byte, version byte, p *Publish) error {
	return decodePublish(first, body, version, p)
}
