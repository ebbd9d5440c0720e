package packet

import (
	"strings"
	"unicode/utf8"
	"unsafe"
)

// This file holds the wire primitives both directions share: the
// variable byte integer, two-byte-length strings and binary data, and the
// body parser.
//
// Primitive encodings (MQTT 5.0 section 1.5, same in 3.1.1):
//
//	Two Byte Integer        big-endian uint16
//	Four Byte Integer       big-endian uint32
//	Variable Byte Integer   7 bits per byte, least significant group first,
//	                        high bit = "more follows", at most 4 bytes
//	UTF-8 Encoded String    Two Byte Integer length N, then N bytes
//	Binary Data             Two Byte Integer length N, then N bytes
//	UTF-8 String Pair       two UTF-8 Encoded Strings

// MaxVarInt is the largest value a Variable Byte Integer can carry (four
// bytes of seven bits).
const MaxVarInt = 268435455

// maxString is the largest length of a UTF-8 Encoded String or Binary Data.
const maxString = 65535

// VarIntLen returns the number of bytes AppendVarInt writes for v: 1 to 4
// for v <= MaxVarInt.
func VarIntLen(v uint32) int {
	switch {
	case v < 1<<7:
		return 1
	case v < 1<<14:
		return 2
	case v < 1<<21:
		return 3
	case v < 1<<28:
		return 4
	}
	return 5
}

// AppendVarInt appends v as a Variable Byte Integer, using the minimum
// number of bytes [MQTT-1.5.5-1].
//
// REQUIRES: v <= MaxVarInt. A larger value is written with a fifth byte,
// which no receiver accepts; the encoders in this package check first.
func AppendVarInt(dst []byte, v uint32) []byte {
	for v >= 0x80 {
		dst = append(dst, byte(v)|0x80)
		v >>= 7
	}
	return append(dst, byte(v))
}

// ValidUTF8String reports whether s may be carried in an MQTT UTF-8 Encoded
// String: well-formed UTF-8 without surrogate code points [MQTT-1.5.4-1],
// without U+0000 [MQTT-1.5.4-2], and at most 65,535 bytes long. Other
// control characters and non-characters are allowed: a receiver must not
// reject them. The error is an *Error with CodeMalformedPacket.
func ValidUTF8String(s string) error {
	if len(s) > maxString {
		return errMalformed("UTF-8 string longer than 65535 bytes")
	}
	if !validUTF8(s) {
		return errMalformed("invalid UTF-8 string [MQTT-1.5.4-1] [MQTT-1.5.4-2]")
	}
	return nil
}

// validUTF8 is the allocation-free core of ValidUTF8String (without the
// length rule, which the wire format enforces by construction).
func validUTF8(s string) bool {
	// utf8.ValidString refuses ill-formed sequences, overlong forms and
	// the surrogates U+D800..U+DFFF [MQTT-1.5.4-1]; both calls have fast
	// paths for ASCII.
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 // [MQTT-1.5.4-2]
}

func errMalformed(msg string) *Error { return &Error{Code: CodeMalformedPacket, Msg: msg} }
func errProtocol(msg string) *Error  { return &Error{Code: CodeProtocolError, Msg: msg} }

// parser walks a packet body. Every method fails with an *Error (Code
// CodeMalformedPacket) rather than reading past the end.
type parser struct {
	b []byte
	i int
}

func (p *parser) rest() int { return len(p.b) - p.i }

func truncated(what string) error { return errMalformed(what + ": truncated") }

func (p *parser) u8(what string) (byte, error) {
	if p.i >= len(p.b) {
		return 0, truncated(what)
	}
	c := p.b[p.i]
	p.i++
	return c, nil
}

func (p *parser) u16(what string) (uint16, error) {
	if len(p.b)-p.i < 2 {
		return 0, truncated(what)
	}
	v := uint16(p.b[p.i])<<8 | uint16(p.b[p.i+1])
	p.i += 2
	return v, nil
}

func (p *parser) u32(what string) (uint32, error) {
	if len(p.b)-p.i < 4 {
		return 0, truncated(what)
	}
	b := p.b[p.i:]
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	p.i += 4
	return v, nil
}

// varint reads a Variable Byte Integer. Non-minimal encodings are
// accepted; a fifth byte is malformed [MQTT-1.5.5-1].
func (p *parser) varint(what string) (uint32, error) {
	var v uint32
	for n := 0; n < 4; n++ {
		if p.i >= len(p.b) {
			return 0, truncated(what)
		}
		c := p.b[p.i]
		p.i++
		v |= uint32(c&0x7f) << (7 * n)
		if c&0x80 == 0 {
			return v, nil
		}
	}
	return 0, errMalformed(what + ": variable byte integer longer than 4 bytes")
}

// binary reads Binary Data. The result aliases the body, with its capacity
// clipped so an append by the caller cannot overwrite what follows; an
// empty value is nil.
func (p *parser) binary(what string) ([]byte, error) {
	n, err := p.u16(what)
	if err != nil {
		return nil, err
	}
	if int(n) > len(p.b)-p.i {
		return nil, truncated(what)
	}
	if n == 0 {
		return nil, nil
	}
	b := p.b[p.i : p.i+int(n) : p.i+int(n)]
	p.i += int(n)
	return b, nil
}

// str reads a UTF-8 Encoded String, aliasing the body (no copy): the
// string is valid only as long as the body is not modified.
func (p *parser) str(what string) (string, error) {
	n, err := p.u16(what)
	if err != nil {
		return "", err
	}
	if int(n) > len(p.b)-p.i {
		return "", truncated(what)
	}
	if n == 0 {
		return "", nil
	}
	s := unsafe.String(&p.b[p.i], int(n))
	if !validUTF8(s) {
		return "", errMalformed(what + ": invalid UTF-8 [MQTT-1.5.4-1] [MQTT-1.5.4-2]")
	}
	p.i += int(n)
	return s, nil
}

// end fails if bytes are left over: a body must be consumed exactly.
func (p *parser) end(what string) error {
	if p.i != len(p.b) {
		return errMalformed(what + ": trailing bytes after packet")
	}
	return nil
}

func appendU16(dst []byte, v uint16) []byte { return append(dst, byte(v>>8), byte(v)) }

func appendU32(dst []byte, v uint32) []byte {
	return append(dst, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// appendString appends a UTF-8 Encoded String. REQUIRES: len(s) <= 65535.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, byte(len(s)>>8), byte(len(s)))
	return append(dst, s...)
}

// appendBinary appends Binary Data. REQUIRES: len(b) <= 65535.
func appendBinary(dst []byte, b []byte) []byte {
	dst = append(dst, byte(len(b)>>8), byte(len(b)))
	return append(dst, b...)
}
