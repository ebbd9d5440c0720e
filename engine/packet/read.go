package packet

import (
	"bufio"
	"io"
)

// readChunk bounds how much Read allocates ahead of the bytes that have
// arrived: a body is read into a buffer that starts at most this big and
// at most doubles, so a header claiming 256 MB followed by silence costs
// 64 KiB, not 256 MB.
const readChunk = 64 << 10

// read implements Read.
func read(r *bufio.Reader, version byte, maxSize uint32) (Packet, error) {
	first, body, err := readFrame(r, version, maxSize, nil)
	if err != nil {
		return nil, err
	}
	return decode(first, body, version)
}

// ReadFrame reads one packet's fixed header and body from r without
// decoding it, for callers that decode with DecodePublish into a reused
// struct or store raw packets. The body is read into buf's backing array
// when it is big enough (buf[:0] is reused), else into a new buffer grown
// as bytes arrive. maxSize bounds the whole packet as in Read (0 means
// MaxPacketSize). Errors are as Read's. No version check is
// made: checking that the first packet is CONNECT is the caller's.
func ReadFrame(r *bufio.Reader, maxSize uint32, buf []byte) (first byte, body []byte, err error) {
	return readFrame(r, V5, maxSize, buf)
}

func readFrame(r *bufio.Reader, version byte, maxSize uint32, buf []byte) (byte, []byte, error) {
	first, err := r.ReadByte()
	if err != nil {
		return 0, nil, err // io.EOF before any byte stays io.EOF
	}
	if version == 0 && Type(first>>4) != CONNECT {
		// The first packet sent from the Client to the Server MUST be a
		// CONNECT packet [MQTT-3.1.0-1]. Refused before the body is read.
		return 0, nil, errProtocol("first packet is not CONNECT [MQTT-3.1.0-1]")
	}
	var rem uint32
	hdr := 1
	for n := 0; ; n++ {
		if n == 4 {
			return 0, nil, errMalformed("remaining length longer than 4 bytes [MQTT-1.5.5-1]")
		}
		c, err := r.ReadByte()
		if err != nil {
			return 0, nil, unexpected(err)
		}
		hdr++
		rem |= uint32(c&0x7f) << (7 * n)
		if c&0x80 == 0 {
			break
		}
	}
	if maxSize == 0 {
		maxSize = MaxPacketSize
	}
	if uint64(hdr)+uint64(rem) > uint64(maxSize) {
		return 0, nil, &Error{Code: CodePacketTooLarge, Msg: Type(first>>4).String() + ": packet larger than the maximum packet size"}
	}
	size := int(rem)
	if cap(buf) >= size {
		buf = buf[:size]
		if _, err := io.ReadFull(r, buf); err != nil {
			return 0, nil, unexpected(err)
		}
		return first, buf, nil
	}
	buf = make([]byte, 0, min(size, readChunk))
	for len(buf) < size {
		if len(buf) == cap(buf) {
			nb := make([]byte, len(buf), min(size, 2*cap(buf)))
			copy(nb, buf)
			buf = nb
		}
		m, err := io.ReadFull(r, buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err != nil {
			return 0, nil, unexpected(err)
		}
	}
	return first, buf, nil
}

// unexpected maps an end of stream in the middle of a packet to
// io.ErrUnexpectedEOF; other errors (timeouts, resets) pass unchanged.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
