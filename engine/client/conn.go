package client

import (
	"encoding/binary"
	"errors"
	"io"
	"time"

	"github.com/keelmq/keel/engine/packet"
)

// readState is owned by the reader goroutine.
type readState struct {
	pending  int    // bytes of the last body still to discard from c.rd
	big      []byte // body buffer for packets larger than c.rd's buffer
	pub      packet.Publish
	ackPub   packet.Publish
	ackEvent Ack
	ack      packet.Ack
	queued   bool              // acknowledgements queued since the writer was last woken
	aliases  map[uint16]string // topic aliases the server assigned on this connection
}

func (c *Client) readLoop() {
	defer c.wg.Done()
	var rs readState
	err := c.read(&rs)
	if errors.Is(err, io.EOF) || c.Err() != nil {
		err = ErrClosed
	}
	c.fail(err)
}

func (c *Client) read(rs *readState) error {
	for {
		first, body, err := c.next(rs)
		if err != nil {
			return err
		}
		switch t := packet.Type(first >> 4); t {
		case packet.PUBLISH:
			if err := packet.DecodePublish(first, body, c.version, &rs.pub); err != nil {
				return err
			}
			if rs.pub.Props.Has(packet.PropTopicAlias) {
				if err := c.resolveAlias(rs, &rs.pub); err != nil {
					return err
				}
			}
			c.inbound(rs, &rs.pub)
		case packet.PUBACK, packet.PUBREC, packet.PUBCOMP:
			id, code, err := parseAck(body, c.version)
			if err != nil {
				return err
			}
			c.outboundAck(rs, t, id, code)
		case packet.PUBREL:
			id, _, err := parseAck(body, c.version)
			if err != nil {
				return err
			}
			// The id is free again: a later PUBLISH with it is a new
			// message [MQTT-4.3.3-12]; answer with PUBCOMP [MQTT-4.3.3-11].
			c.sess.Forget(id)
			c.queueAck(rs, packet.PUBCOMP, id, 0)
		case packet.SUBACK, packet.UNSUBACK:
			p, err := packet.Decode(first, append([]byte(nil), body...), c.version)
			if err != nil {
				return err
			}
			var id uint16
			if sa, ok := p.(*packet.Suback); ok {
				id = sa.PacketID
			} else {
				id = p.(*packet.Unsuback).PacketID
			}
			c.mu.Lock()
			reply, ok := c.mu.subs[id]
			delete(c.mu.subs, id)
			c.mu.Unlock()
			if !ok {
				c.oddity(protocolErr("%v for packet id %d not in flight", t, id))
				break
			}
			reply <- p
		case packet.PINGRESP:
			c.ping.outstanding.Store(false)
		case packet.DISCONNECT:
			p, err := packet.Decode(first, body, c.version)
			if err != nil {
				return err
			}
			d := p.(*packet.Disconnect)
			return &DisconnectError{Code: d.ReasonCode, Reason: d.Props.ReasonString}
		default:
			return protocolErr("unexpected %v", t)
		}
		// One wake-up of the writer per burst of input, not per ack.
		if rs.queued && c.rd.Buffered() == rs.pending {
			rs.queued = false
			c.signal()
		}
	}
}

// resolveAlias sets the topic name of a PUBLISH that carries a topic alias
// (5.0): an empty name is the one last given with that alias, a name sets
// the alias to it.
func (c *Client) resolveAlias(rs *readState, p *packet.Publish) error {
	a := p.Props.TopicAlias // never 0: the codec refuses it [MQTT-3.3.2-8]
	if a > c.aliasMax {
		// [MQTT-3.3.2-11] the server must stay within our maximum.
		return protocolErr("topic alias %d above our Topic Alias Maximum %d", a, c.aliasMax)
	}
	if p.Topic == "" {
		t, ok := rs.aliases[a]
		if !ok {
			return protocolErr("topic alias %d used before it was given a topic", a)
		}
		p.Topic = t
		return nil
	}
	if rs.aliases == nil {
		rs.aliases = make(map[uint16]string)
	}
	if rs.aliases[a] != p.Topic {
		rs.aliases[a] = string([]byte(p.Topic)) // p.Topic aliases the read buffer
	}
	return nil
}

// inbound hands a PUBLISH to the application and queues its
// acknowledgement after OnMessage has returned.
func (c *Client) inbound(rs *readState, p *packet.Publish) {
	switch p.QoS {
	case 0:
		c.deliver(p)
	case 1:
		c.deliver(p)
		c.queueAck(rs, packet.PUBACK, p.PacketID, 0)
	case 2:
		// A held id is a resend: acknowledged again, not delivered again
		// [MQTT-4.3.3-10]; a new one is delivered once, then PUBREC
		// [MQTT-4.3.3-8].
		if c.sess.Receive(p.PacketID) {
			c.deliver(p)
		}
		c.queueAck(rs, packet.PUBREC, p.PacketID, 0)
	}
}

func (c *Client) deliver(p *packet.Publish) {
	if c.opts.OnMessage != nil {
		c.opts.OnMessage(p)
	}
}

func (c *Client) oddity(err error) {
	if c.opts.OnProtocolError != nil {
		c.opts.OnProtocolError(err)
	}
}

// queueAck appends PUBACK, PUBREC, PUBREL or PUBCOMP to the write buffer;
// the read loop wakes the writer at the end of the burst.
func (c *Client) queueAck(rs *readState, kind packet.Type, id uint16, code packet.ReasonCode) {
	rs.ack = packet.Ack{Kind: kind, PacketID: id, ReasonCode: code}
	c.mu.Lock()
	if c.mu.err == nil && !c.mu.closing {
		c.mu.out, _ = rs.ack.Append(c.mu.out, c.version)
	}
	big := len(c.mu.out) >= ioBufSize
	c.mu.Unlock()
	rs.queued = true
	if big {
		rs.queued = false
		c.signal()
	}
}

// outboundAck handles PUBACK, PUBREC and PUBCOMP for an outbound flow.
func (c *Client) outboundAck(rs *readState, kind packet.Type, id uint16, code packet.ReasonCode) {
	pub, released, ok := c.sess.Flow(id)
	qos := byte(0)
	if ok {
		qos = pub[0] >> 1 & 3
	}
	switch {
	case !ok && kind == packet.PUBREC:
		// Not ours: release it so the server can finish (5.0: Packet
		// Identifier not found).
		c.oddity(protocolErr("PUBREC for packet id %d not in flight", id))
		rc := packet.ReasonCode(0)
		if c.version == packet.V5 {
			rc = packet.CodePacketIDNotFound
		}
		c.queueAck(rs, packet.PUBREL, id, rc)
		return
	case !ok,
		kind == packet.PUBACK && qos != 1,
		kind == packet.PUBREC && qos != 2,
		kind == packet.PUBCOMP && (qos != 2 || !released):
		c.oddity(protocolErr("%v for packet id %d not in that state", kind, id))
		return
	case kind == packet.PUBREC && released:
		// A repeated PUBREC: the PUBREL may have been lost.
		c.queueAck(rs, packet.PUBREL, id, 0)
		return
	}
	refused := code >= 0x80
	final := kind != packet.PUBREC || refused
	if kind == packet.PUBREC && !refused {
		// Released before the PUBREL leaves [MQTT-4.3.3-4].
		c.sess.Release(id)
		c.queueAck(rs, packet.PUBREL, id, 0)
	}
	if final {
		// The server has acknowledged it: the slot is free before OnAck
		// runs, so a publisher woken by OnAck finds it free. A refused
		// PUBLISH is treated as acknowledged and not resent
		// [MQTT-4.4.0-2].
		c.mu.Lock()
		if len(c.mu.backlog) > 0 {
			// The slot goes to the oldest resend still waiting.
			c.mu.out = append(c.mu.out, c.mu.backlog[0]...)
			c.mu.backlog = c.mu.backlog[1:]
			rs.queued = true
		} else {
			c.mu.inflight--
		}
		c.mu.Unlock()
		c.spaceSignal()
	}
	if c.opts.OnAck != nil {
		a := &rs.ackEvent // not a fresh one: that would allocate per ack
		*a = Ack{Kind: kind, ID: id, Code: code, Final: final, More: c.rd.Buffered() > rs.pending}
		if decodeStored(pub, c.version, &rs.ackPub) == nil {
			a.Publish = &rs.ackPub
		}
		c.opts.OnAck(a)
	}
	if kind != packet.PUBCOMP {
		var err error
		if refused {
			err = &AckError{Kind: kind, ID: id, Code: code}
		}
		c.mu.Lock()
		w := c.mu.waiters[id]
		delete(c.mu.waiters, id)
		c.mu.Unlock()
		if w != nil {
			w <- result{code: code, err: err}
		}
	}
	if final {
		// After OnAck, which reads the Session's copy.
		c.sess.Complete(id)
	}
}

// decodeStored decodes a PUBLISH as the Session holds it (the whole
// packet) into p, aliasing b.
func decodeStored(b []byte, version byte, p *packet.Publish) error {
	if len(b) < 2 {
		return errMalformed
	}
	i := 1
	for ; i < len(b) && i < 5 && b[i]&0x80 != 0; i++ {
	}
	if i+1 > len(b) {
		return errMalformed
	}
	return packet.DecodePublish(b[0], b[i+1:], version, p)
}

var errMalformed = &packet.Error{Code: packet.CodeMalformedPacket, Msg: "client: malformed packet"}

// next reads one packet: its fixed header byte and its body. The body
// aliases the reader's buffers and is valid until the next call, which
// keeps the hot path free of allocations.
func (c *Client) next(rs *readState) (first byte, body []byte, err error) {
	if rs.pending > 0 {
		c.rd.Discard(rs.pending)
		rs.pending = 0
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
			if max := c.opts.MaxPacketSize; max > 0 && uint64(n+i+2) > uint64(max) {
				return 0, nil, &packet.Error{Code: packet.CodePacketTooLarge, Msg: "client: packet larger than the maximum packet size"}
			}
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
		rs.pending = n
		return first, body, nil
	}
	if cap(rs.big) < n {
		rs.big = make([]byte, n)
	}
	body = rs.big[:n]
	if _, err := io.ReadFull(c.rd, body); err != nil {
		return 0, nil, err
	}
	return first, body, nil
}

// parseAck reads the packet id and, in 5.0, the reason code of PUBACK,
// PUBREC, PUBREL or PUBCOMP, which share one layout (3.4-3.7), without
// packet.Decode's allocation.
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

// writeLoop is the only writer of the socket after CONNECT. It swaps the
// write buffer out under c.mu and writes it unlocked, so everything queued
// during a write leaves in the next one.
func (c *Client) writeLoop() {
	defer c.wg.Done()
	var buf []byte
	var tick <-chan time.Time
	if c.keepAlive > 0 {
		t := time.NewTicker(c.keepAlive / 2)
		defer t.Stop()
		tick = t.C
	}
	lastWrite := time.Now()
	var pingAt time.Time
	for {
		select {
		case <-c.wake:
		case <-c.dead:
			return
		case now := <-tick:
			if c.ping.outstanding.Load() && now.Sub(pingAt) >= c.keepAlive {
				c.fail(ErrKeepAlive)
				return
			}
			if now.Sub(lastWrite) >= c.keepAlive/2 && !c.ping.outstanding.Load() {
				// Nothing sent for a while: PINGREQ keeps the connection
				// alive [MQTT-3.1.2-20].
				c.mu.Lock()
				c.mu.out = append(c.mu.out, byte(packet.PINGREQ)<<4, 0)
				c.mu.Unlock()
				c.ping.outstanding.Store(true)
				pingAt = now
			}
		}
		c.mu.Lock()
		buf, c.mu.out = c.mu.out, buf[:0]
		closing := c.mu.closing
		c.mu.Unlock()
		if len(buf) > 0 {
			lastWrite = time.Now()
			c.nc.SetWriteDeadline(lastWrite.Add(c.opts.WriteTimeout))
			if _, err := c.nc.Write(buf); err != nil {
				c.fail(err)
				return
			}
			select {
			case c.written <- struct{}{}:
			default:
			}
		}
		if closing {
			c.fail(ErrClosed)
			return
		}
	}
}
