package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/keelmq/keel/engine/packet"
)

// conn is one MQTT client connection. Exactly one goroutine writes it at a
// time (the publisher loop, or a subscriber's read loop, or the run's
// teardown after those have returned); one goroutine reads it.
type conn struct {
	nc      net.Conn
	rd      *bufio.Reader
	wr      *bufio.Writer
	version byte

	// recvMax is the server's Receive Maximum (5.0 CONNACK), 65535 when the
	// server sets none: how many QoS 1/2 publishes may be unacknowledged.
	recvMax int

	pending int    // bytes of the last body still to discard from rd
	big     []byte // body buffer for packets larger than rd's buffer
	ack     packet.Ack
}

type connOptions struct {
	addr       string
	version    byte
	clientID   string
	persistent bool   // 3.1.1: clean session 0; 5.0: session expiry > 0
	expiry     uint32 // 5.0 session expiry for persistent sessions, seconds
	cleanOnly  bool   // connect with a clean, non-persistent session (teardown)
}

const ioBufSize = 64 << 10

// dial opens a connection and completes CONNECT/CONNACK.
func dial(o connOptions) (*conn, error) {
	nc, err := net.DialTimeout("tcp", o.addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c := &conn{
		nc:      nc,
		rd:      bufio.NewReaderSize(nc, ioBufSize),
		wr:      bufio.NewWriterSize(nc, ioBufSize),
		version: o.version,
		recvMax: 65535,
	}
	cp := &packet.Connect{
		ProtocolName:  "MQTT",
		ProtocolLevel: o.version,
		ClientID:      o.clientID,
		// Keep alive 0 turns the mechanism off [MQTT-3.1.2-10]: a QoS 0
		// subscriber sends nothing for the whole run.
		KeepAlive: 0,
	}
	switch {
	case o.cleanOnly || !o.persistent:
		cp.CleanStart = true
	case o.version == packet.V5:
		// A fresh persistent session: clean start, then expiry > 0.
		cp.CleanStart = true
		cp.Props.SessionExpiry = o.expiry
		cp.Props.Set(packet.PropSessionExpiry)
	default:
		cp.CleanStart = false // client ids are unique per run
	}
	if o.version == packet.V5 {
		cp.Props.ReceiveMaximum = 65535
		cp.Props.Set(packet.PropReceiveMaximum)
	}
	if err := c.writePacket(cp); err != nil {
		nc.Close()
		return nil, fmt.Errorf("connect %s: %w", o.clientID, err)
	}
	if err := c.wr.Flush(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("connect %s: %w", o.clientID, err)
	}
	p, err := c.readSetup(packet.CONNACK)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("connect %s: %w", o.clientID, err)
	}
	ca := p.(*packet.Connack)
	if ca.ReasonCode != 0 {
		nc.Close()
		return nil, fmt.Errorf("connect %s: refused, code 0x%02x", o.clientID, byte(ca.ReasonCode))
	}
	if o.version == packet.V5 && ca.Props.Has(packet.PropReceiveMaximum) && ca.Props.ReceiveMaximum > 0 {
		c.recvMax = int(ca.Props.ReceiveMaximum)
	}
	return c, nil
}

// subscribe sends one SUBSCRIBE and waits for its SUBACK. It must be called
// before the connection's read loop starts.
func (c *conn) subscribe(filter string, qos byte) error {
	s := &packet.Subscribe{PacketID: 1, Subs: []packet.Subscription{{Filter: filter, QoS: qos}}}
	if err := c.writePacket(s); err != nil {
		return err
	}
	if err := c.wr.Flush(); err != nil {
		return err
	}
	p, err := c.readSetup(packet.SUBACK)
	if err != nil {
		return fmt.Errorf("subscribe %q: %w", filter, err)
	}
	sa := p.(*packet.Suback)
	if len(sa.Codes) != 1 || sa.Codes[0] >= 0x80 {
		return fmt.Errorf("subscribe %q: refused, codes %v", filter, sa.Codes)
	}
	if byte(sa.Codes[0]) != qos {
		return fmt.Errorf("subscribe %q: granted QoS %d, want %d", filter, sa.Codes[0], qos)
	}
	return nil
}

// readSetup reads the next packet during the handshake, before the read
// loop owns the reader, and checks its type.
func (c *conn) readSetup(want packet.Type) (packet.Packet, error) {
	c.nc.SetReadDeadline(time.Now().Add(15 * time.Second))
	defer c.nc.SetReadDeadline(time.Time{})
	p, err := packet.Read(c.rd, c.version, 0)
	if err != nil {
		return nil, err
	}
	if p.Type() != want {
		if d, ok := p.(*packet.Disconnect); ok {
			return nil, fmt.Errorf("server sent DISCONNECT, code 0x%02x", byte(d.ReasonCode))
		}
		return nil, fmt.Errorf("got packet type %d, want %d", p.Type(), want)
	}
	return p, nil
}

// writePacket appends p to the write buffer without flushing.
func (c *conn) writePacket(p packet.Packet) error {
	b, err := p.Append(c.wr.AvailableBuffer(), c.version)
	if err != nil {
		return err
	}
	_, err = c.wr.Write(b)
	return err
}

// writeAck buffers PUBACK, PUBREC, PUBREL or PUBCOMP for id.
func (c *conn) writeAck(kind packet.Type, id uint16) error {
	c.ack = packet.Ack{Kind: kind, PacketID: id}
	return c.writePacket(&c.ack)
}

// idle reports whether every byte received so far has been consumed: the
// moment to flush what the read loop has buffered for writing.
func (c *conn) idle() bool { return c.rd.Buffered() == c.pending }

var errMalformed = errors.New("malformed packet")

// next reads one packet: its fixed header byte and its body. The body
// aliases the connection's buffers and is valid until the next call; this
// keeps the hot path free of allocations (packet.Read allocates one buffer
// per packet).
func (c *conn) next() (first byte, body []byte, err error) {
	if c.pending > 0 {
		c.rd.Discard(c.pending)
		c.pending = 0
	}
	first, err = c.rd.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, shift := 0, 0
	for i := 0; ; i++ {
		b, err := c.rd.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n |= int(b&0x7f) << shift
		if b&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, nil, errMalformed
		}
		shift += 7
	}
	if n <= c.rd.Size() {
		body, err = c.rd.Peek(n)
		if err != nil {
			return 0, nil, err
		}
		c.pending = n
		return first, body, nil
	}
	if cap(c.big) < n {
		c.big = make([]byte, n)
	}
	body = c.big[:n]
	if _, err := io.ReadFull(c.rd, body); err != nil {
		return 0, nil, err
	}
	return first, body, nil
}

// parseAck reads the packet id and, in 5.0, the reason code of PUBACK,
// PUBREC, PUBREL or PUBCOMP. The four share this layout (3.4-3.7), and
// decoding it here avoids packet.Decode's allocation on the hottest path.
func parseAck(body []byte, version byte) (id uint16, code packet.ReasonCode, err error) {
	if len(body) < 2 {
		return 0, 0, errMalformed
	}
	id = binary.BigEndian.Uint16(body)
	if version == packet.V5 && len(body) >= 3 {
		code = packet.ReasonCode(body[2])
	}
	return id, code, nil
}

// disconnect sends DISCONNECT and closes the connection. For a persistent
// 5.0 session it sets the session expiry to 0, so the broker forgets the
// session (a run leaves no state behind). REQUIRES: no other goroutine
// writes c.
func (c *conn) disconnect(dropSession bool) error {
	d := &packet.Disconnect{}
	if dropSession && c.version == packet.V5 {
		d.Props.SessionExpiry = 0
		d.Props.Set(packet.PropSessionExpiry)
	}
	c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	err := c.writePacket(d)
	if err == nil {
		err = c.wr.Flush()
	}
	if cerr := c.nc.Close(); err == nil {
		err = cerr
	}
	return err
}
