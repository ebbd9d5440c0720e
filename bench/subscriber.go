package main

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"

	"github.com/keelmq/keel/engine/packet"
)

// subscriber drives one subscribing connection. Its read loop is the
// connection's only writer while it runs: it answers PUBLISH with
// PUBACK/PUBREC and PUBREL with PUBCOMP, and flushes once per burst of
// input.
type subscriber struct {
	idx    int
	c      *conn
	filter string
	cfg    *config

	// pubs is the set of publishers whose messages this subscriber gets:
	// all of them on a shared topic, one in pairs.
	pubLo, pubHi int

	// Owned by the read loop until it returns.
	recv       []bitmap // by publisher: sequence numbers received
	lastSeq    []int64  // by publisher, for the order check
	e2e        hist     // publisher encode -> subscriber decode
	dups       int64
	outOfOrder int64
	bad        int64 // payloads not written by this run
	delivWin   int64 // deliveries of messages received after the warm-up
	lastDeliv  int64 // clock() of the last delivery
	pub        packet.Publish

	unique   atomic.Int64 // distinct messages received; progress and drain
	stopping atomic.Bool
}

func newSubscriber(idx int, c *conn, filter string, pubLo, pubHi int, cfg *config) *subscriber {
	s := &subscriber{idx: idx, c: c, filter: filter, cfg: cfg, pubLo: pubLo, pubHi: pubHi}
	s.recv = make([]bitmap, pubHi-pubLo)
	s.lastSeq = make([]int64, pubHi-pubLo)
	for i := range s.lastSeq {
		s.lastSeq[i] = -1
	}
	return s
}

// readLoop receives until the connection ends. An error after stop was
// requested is the end of the run, not a failure.
func (s *subscriber) readLoop() error {
	err := s.receive()
	if s.stopping.Load() {
		return nil
	}
	return err
}

func (s *subscriber) receive() error {
	c := s.c
	for {
		first, body, err := c.next()
		if err != nil {
			return err
		}
		switch t := packet.Type(first >> 4); t {
		case packet.PUBLISH:
			if err := packet.DecodePublish(first, body, c.version, &s.pub); err != nil {
				return fmt.Errorf("subscriber %d: %w", s.idx, err)
			}
			s.deliver(s.pub.Payload)
			switch s.pub.QoS {
			case 1:
				err = c.writeAck(packet.PUBACK, s.pub.PacketID)
			case 2:
				err = c.writeAck(packet.PUBREC, s.pub.PacketID)
			}
		case packet.PUBREL:
			var id uint16
			id, _, err = parseAck(body, c.version)
			if err == nil {
				err = c.writeAck(packet.PUBCOMP, id)
			}
		case packet.PINGRESP:
		case packet.DISCONNECT:
			return fmt.Errorf("subscriber %d: server sent DISCONNECT % x", s.idx, body)
		default:
			return fmt.Errorf("subscriber %d: unexpected packet type %d", s.idx, t)
		}
		if err == nil && c.idle() && c.wr.Buffered() > 0 {
			err = c.wr.Flush()
		}
		if err != nil {
			return fmt.Errorf("subscriber %d: %w", s.idx, err)
		}
	}
}

func (s *subscriber) deliver(payload []byte) {
	now := clock()
	if len(payload) != s.cfg.size {
		s.bad++
		return
	}
	sent := int64(binary.LittleEndian.Uint64(payload))
	pub := int(binary.LittleEndian.Uint32(payload[8:]))
	seq := binary.LittleEndian.Uint32(payload[12:])
	if pub < s.pubLo || pub >= s.pubHi || sent <= 0 || sent > now {
		s.bad++
		return
	}
	i := pub - s.pubLo
	if s.recv[i].set(seq) {
		s.dups++
		return
	}
	if int64(seq) < s.lastSeq[i] {
		s.outOfOrder++
	} else {
		s.lastSeq[i] = int64(seq)
	}
	s.unique.Add(1)
	if sent >= measureStart {
		s.e2e.record(now - sent)
	}
	if now >= measureStart {
		s.delivWin++
		s.lastDeliv = now
	}
}

// stop ends the read loop: it unblocks the pending read (or write) with a
// deadline in the past. After the loop has returned, the caller owns the connection.
func (s *subscriber) stop() {
	s.stopping.Store(true)
	s.c.nc.SetDeadline(pastTime) // a write blocked on a broker that stopped reading, too
}
