package engine

import (
	"bufio"
	"time"

	"github.com/keelmq/keel/engine/packet"
)

// Limits before authentication. A connection that has not finished its
// CONNECT is nobody yet, and may be one of a thousand sockets each
// declaring a 256 MB CONNECT and sending nothing. Two bounds keep what
// they hold small:
//
//   - Options.MaxConnectSize: a CONNECT whose Remaining Length is larger is
//     refused from its fixed header, before any of its body is read or
//     allocated (counted connect_size): 5.0 CONNACK 0x95 Packet too large,
//     then close [MQTT-3.2.2-7]; 3.1.1 and 3.1, which have no such return
//     code, are closed. (The version is in the first bytes of the body:
//     the ones already sent, or sent within versionWait, are looked at;
//     without them the connection is closed.) The CONNECT's fields are at
//     most 64 KiB each anyway; the default leaves room for a 5.0 CONNECT
//     with properties, a will and a password.
//   - Options.MaxPreauthBytes: a budget of bytes, all connections
//     together, held for CONNECT bodies being read or waiting for their
//     authentication. The reader reserves a CONNECT's Remaining Length from
//     its fixed header, before it allocates or reads the body; when the
//     budget cannot cover it the connection is closed at once (counted
//     preauth_budget). The reservation is released once the CONNECT is
//     decided (accepted or refused) or the connection ends.
//     A CONNECT of at most preauthFree bytes reserves nothing: its buffer
//     is smaller than the connection's own read buffer, so it is bounded
//     by the connection limits, as the connection itself is; and a budget
//     filled by large declared CONNECTs does not keep ordinary clients out.
//
// The connect deadline (Options.ConnectTimeout, or the listener's
// handshake deadline) runs from the first byte read: a connection holding
// a reservation and sending nothing is closed when it passes, and the
// reservation with it.

// preauthFree is the largest CONNECT body that reserves no budget.
const preauthFree = 4 << 10

// versionWait bounds the wait for the protocol name and level of a CONNECT
// refused for its size, to answer a 5.0 client with CONNACK 0x95. A client
// sends its CONNECT in one write: those bytes come with the fixed header.
const versionWait = time.Second

// readConnect reads the first packet under the pre-authentication limits.
// It reports ok false when it refused the packet itself (answered, or
// closed, and counted); otherwise p and err are packet.Read's. The
// reservation it takes is c.preauth, released by releasePreauth.
func (c *conn) readConnect(br *bufio.Reader) (p packet.Packet, ok bool, err error) {
	b := c.b
	if hdr, rem, peeked := peekHeader(br); peeked {
		if rem > b.opts.MaxConnectSize {
			b.stats.reasons.refuse(refuseConnectSize)
			b.refusedLog.log(c.log, "connect refused: over max_connect_size",
				"declared", rem, "max_connect_size", b.opts.MaxConnectSize)
			c.setEndReason("CONNECT over max_connect_size")
			if peekVersion(c.nc, br, hdr) == packet.V5 {
				c.version = packet.V5
				c.send(outItem{pkt: &packet.Connack{ReasonCode: packet.CodePacketTooLarge}}, outItem{close: true})
			} else {
				c.kill()
			}
			return nil, false, nil
		}
		if rem > preauthFree && !b.reservePreauth(int64(rem)) {
			b.stats.reasons.refuse(refusePreauthBudget)
			b.refusedLog.log(c.log, "connect refused: the pre-authentication budget is spent",
				"declared", rem, "max_preauth_bytes", b.opts.MaxPreauthBytes)
			c.setEndReason("pre-authentication budget spent")
			c.kill()
			return nil, false, nil
		} else if rem > preauthFree {
			c.preauth = int64(rem)
		}
	}
	p, err = packet.Read(br, 0, b.opts.MaxPacketSize)
	return p, true, err
}

// peekHeader looks at the fixed header of the next packet without
// consuming it: its length hdr and the Remaining Length rem. peeked is
// false when it is not a CONNECT's or cannot be read (packet.Read then
// reports why).
func peekHeader(br *bufio.Reader) (hdr int, rem uint32, peeked bool) {
	first, err := br.Peek(1)
	if err != nil || packet.Type(first[0]>>4) != packet.CONNECT {
		return 0, 0, false
	}
	for n := 0; n < 4; n++ {
		buf, err := br.Peek(n + 2)
		if err != nil {
			return 0, 0, false
		}
		c := buf[n+1]
		rem |= uint32(c&0x7f) << (7 * n)
		if c&0x80 == 0 {
			return n + 2, rem, true
		}
	}
	return 0, 0, false // malformed: packet.Read says so
}

// peekVersion reads the protocol level of a CONNECT whose fixed header is
// hdr bytes, without consuming anything, waiting at most versionWait for
// it; 0 if it does not come or the protocol name is not MQTT's.
func peekVersion(nc interface{ SetReadDeadline(time.Time) error }, br *bufio.Reader, hdr int) byte {
	nc.SetReadDeadline(time.Now().Add(versionWait))
	// Protocol name: a 2-byte length, "MQTT" (3.1.1, 5.0) or "MQIsdp"
	// (3.1), then the level byte.
	buf, err := br.Peek(hdr + 2)
	if err != nil {
		return 0
	}
	n := int(buf[hdr])<<8 | int(buf[hdr+1])
	if n != 4 && n != 6 {
		return 0
	}
	buf, err = br.Peek(hdr + 2 + n + 1)
	if err != nil {
		return 0
	}
	name := string(buf[hdr+2 : hdr+2+n])
	if name != "MQTT" && name != "MQIsdp" {
		return 0
	}
	return buf[hdr+2+n]
}

// reservePreauth takes n bytes of the pre-authentication budget, if they
// are left.
func (b *Broker) reservePreauth(n int64) bool {
	limit := b.opts.MaxPreauthBytes
	for {
		cur := b.preauth.Load()
		if limit >= 0 && cur+n > limit {
			return false
		}
		if b.preauth.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

// releasePreauth gives back c's reservation, once.
func (c *conn) releasePreauth() {
	if c.preauth > 0 {
		c.b.preauth.Add(-c.preauth)
		c.preauth = 0
	}
}
