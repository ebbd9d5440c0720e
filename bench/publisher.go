package main

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keelmq/keel/engine/packet"
)

// Payload layout, little endian; the rest of the payload is filler.
//
//	0      8       12      16
//	+------+-------+-------+---------
//	| sent | pub   | seq   | filler
//	+------+-------+-------+---------
//
// sent is the publisher's clock() when it encoded the message: nanoseconds on
// the monotonic clock since the process started. Publishers and subscribers
// live in one process, so end-to-end latency is exact and immune to wall
// clock steps.
const payloadHeader = 16

// ackEvent is an acknowledgement handed from a publisher's read loop to its
// write loop.
type ackEvent struct {
	kind packet.Type
	id   uint16
	code packet.ReasonCode
	at   int64 // clock() when it was read
}

// publisher drives one connection: its loop is the only writer; its read
// loop hands acknowledgements over through events.
type publisher struct {
	idx   int
	c     *conn
	topic string
	cfg   *config

	window int

	// Owned by the write loop (run).
	pub      packet.Publish
	payload  []byte
	freeIDs  []uint16 // packet ids not in flight
	sentAt   []int64  // by packet id: clock() at encode time
	seqOf    []uint32 // by packet id: message sequence number
	inflight int
	seq      uint32 // next sequence number
	acked    bitmap // sequence numbers acknowledged (PUBACK / PUBREC)
	ackHist  hist   // PUBLISH -> PUBACK (QoS 1) or PUBREC (QoS 2)
	doneHist hist   // PUBLISH -> PUBCOMP (QoS 2)
	rejected int64  // acks with a failure reason code
	bogus    int64  // acks for packet ids not in flight
	ackedWin int64  // acks received after the warm-up
	lastAck  int64  // clock() of the last ack
	sendErr  error

	sent   atomic.Int64 // progress; written by run only
	nacked atomic.Int64 // progress; written by run only

	mu struct {
		sync.Mutex
		events []ackEvent
		err    error // the read loop's end
		done   bool
	}
	spare []ackEvent // owned by run: swapped with mu.events
	wake  chan struct{}
}

func newPublisher(idx int, c *conn, topic string, cfg *config) *publisher {
	w := cfg.window
	if cfg.qos > 0 && w > c.recvMax {
		w = c.recvMax
	}
	if w > 65535 {
		w = 65535
	}
	p := &publisher{
		idx:     idx,
		c:       c,
		topic:   topic,
		cfg:     cfg,
		window:  w,
		payload: make([]byte, cfg.size),
		wake:    make(chan struct{}, 1),
	}
	for i := range p.payload[payloadHeader:] {
		p.payload[payloadHeader+i] = byte('a' + i%26)
	}
	binary.LittleEndian.PutUint32(p.payload[8:], uint32(idx))
	if cfg.qos > 0 {
		p.sentAt = make([]int64, w+1)
		p.seqOf = make([]uint32, w+1)
		for i := range p.sentAt {
			p.sentAt[i] = -1
		}
		p.freeIDs = make([]uint16, 0, w)
		for id := w; id >= 1; id-- {
			p.freeIDs = append(p.freeIDs, uint16(id))
		}
	}
	p.pub = packet.Publish{QoS: cfg.qos, Topic: topic}
	return p
}

// readLoop reads acknowledgements until the connection ends.
func (p *publisher) readLoop() {
	err := p.readAcks()
	p.mu.Lock()
	p.mu.err = err
	p.mu.done = true
	p.mu.Unlock()
	p.signal()
}

func (p *publisher) readAcks() error {
	for {
		first, body, err := p.c.next()
		if err != nil {
			return err
		}
		switch t := packet.Type(first >> 4); t {
		case packet.PUBACK, packet.PUBREC, packet.PUBCOMP:
			id, code, err := parseAck(body, p.c.version)
			if err != nil {
				return err
			}
			p.mu.Lock()
			p.mu.events = append(p.mu.events, ackEvent{kind: t, id: id, code: code, at: clock()})
			n := len(p.mu.events)
			p.mu.Unlock()
			// One wake-up per burst of acks, not one per ack.
			if n >= 256 || p.c.idle() {
				p.signal()
			}
		case packet.PINGRESP:
		case packet.DISCONNECT:
			return fmt.Errorf("publisher %d: server sent DISCONNECT % x", p.idx, body)
		default:
			return fmt.Errorf("publisher %d: unexpected packet type %d", p.idx, t)
		}
	}
}

func (p *publisher) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// run publishes until ctl stops it (or -count is reached), then waits for
// the outstanding acknowledgements. It returns an error only when the
// connection fails or acknowledgements do not come; the run's figures live
// in p.
func (p *publisher) run(ctl *control) error {
	cfg := p.cfg
	var ackDeadline <-chan time.Time
	stopped := false
	for {
		rerr, rdone := p.collect()
		if p.sendErr != nil {
			return p.sendErr
		}

		if !stopped && (ctl.stopped() || p.countReached()) {
			stopped = true
			ackDeadline = time.After(cfg.ackTimeout)
		}
		if stopped && p.inflight == 0 {
			return p.c.wr.Flush()
		}
		if rdone {
			if rerr == nil {
				rerr = fmt.Errorf("publisher %d: connection closed", p.idx)
			}
			return rerr
		}
		if !stopped {
			if cfg.qos == 0 {
				// No flow control at QoS 0: write a batch and let TCP
				// push back; bufio writes whenever its buffer fills.
				for i := 0; i < 64 && !p.countReached(); i++ {
					if err := p.send(); err != nil {
						return err
					}
				}
				continue
			}
			for p.inflight < p.window && !p.countReached() {
				if err := p.send(); err != nil {
					return err
				}
			}
		}
		if err := p.c.wr.Flush(); err != nil {
			return fmt.Errorf("publisher %d: %w", p.idx, err)
		}
		if stopped {
			select {
			case <-p.wake:
			case <-ackDeadline:
				return fmt.Errorf("publisher %d: %d acknowledgements still outstanding %v after the end", p.idx, p.inflight, cfg.ackTimeout)
			}
		} else {
			select {
			case <-p.wake:
			case <-ctl.stop:
			}
		}
	}
}

// collect handles the acknowledgements the read loop has queued, and
// reports whether the read loop has ended, and why.
func (p *publisher) collect() (readErr error, readDone bool) {
	p.mu.Lock()
	events := p.mu.events
	p.mu.events = p.spare[:0]
	readErr, readDone = p.mu.err, p.mu.done
	p.mu.Unlock()
	for i := range events {
		p.handle(&events[i])
	}
	p.spare = events
	return readErr, readDone
}

// sendOne sends the next message, first waiting (flushed) for a free slot
// in the window: a step of a load driven from outside, as testing.B does.
func (p *publisher) sendOne() error {
	for p.cfg.qos > 0 && p.inflight >= p.window {
		if err := p.c.wr.Flush(); err != nil {
			return err
		}
		<-p.wake
		if err, done := p.collect(); done {
			return fmt.Errorf("publisher %d: read loop ended: %v", p.idx, err)
		}
		if p.sendErr != nil {
			return p.sendErr
		}
	}
	return p.send()
}

// finish flushes and waits until every sent message is acknowledged.
func (p *publisher) finish(timeout time.Duration) error {
	deadline := time.After(timeout)
	for {
		if err := p.c.wr.Flush(); err != nil {
			return err
		}
		if p.inflight == 0 {
			return nil
		}
		select {
		case <-p.wake:
		case <-deadline:
			return fmt.Errorf("publisher %d: %d acknowledgements outstanding after %v", p.idx, p.inflight, timeout)
		}
		if err, done := p.collect(); done && p.inflight > 0 {
			return fmt.Errorf("publisher %d: read loop ended: %v", p.idx, err)
		}
		if p.sendErr != nil {
			return p.sendErr
		}
	}
}

func (p *publisher) countReached() bool {
	return p.cfg.count > 0 && int64(p.seq) >= p.cfg.count
}

// send encodes one PUBLISH into the write buffer.
func (p *publisher) send() error {
	now := clock()
	seq := p.seq
	p.seq++
	binary.LittleEndian.PutUint64(p.payload[0:], uint64(now))
	binary.LittleEndian.PutUint32(p.payload[12:], seq)
	p.pub.Payload = p.payload
	if p.cfg.qos > 0 {
		id := p.freeIDs[len(p.freeIDs)-1]
		p.freeIDs = p.freeIDs[:len(p.freeIDs)-1]
		p.pub.PacketID = id
		p.sentAt[id] = now
		p.seqOf[id] = seq
		p.inflight++
	}
	if err := p.c.writePacket(&p.pub); err != nil {
		return fmt.Errorf("publisher %d: %w", p.idx, err)
	}
	n := p.sent.Add(1)
	if p.cfg.qos == 0 {
		p.acked.set(seq)
		p.nacked.Store(n)
		if now >= measureStart {
			p.ackedWin++
			p.lastAck = now
		}
	}
	return nil
}

func (p *publisher) handle(e *ackEvent) {
	id := e.id
	if int(id) >= len(p.sentAt) || id == 0 || p.sentAt[id] < 0 {
		p.bogus++
		return
	}
	want := packet.PUBACK
	if p.cfg.qos == 2 {
		want = packet.PUBREC
		if p.seqOf[id]&pubrelSent != 0 {
			want = packet.PUBCOMP
		}
	}
	if e.kind != want {
		p.bogus++
		return
	}
	sent := p.sentAt[id]
	measured := sent >= measureStart
	switch e.kind {
	case packet.PUBACK, packet.PUBREC:
		if e.code >= 0x80 {
			p.rejected++
			p.release(id)
			return
		}
		if measured {
			p.ackHist.record(e.at - sent)
		}
		p.acked.set(p.seqOf[id])
		p.nacked.Add(1)
		if e.at >= measureStart {
			p.ackedWin++
			p.lastAck = e.at
		}
		if e.kind == packet.PUBACK {
			p.release(id)
			return
		}
		p.seqOf[id] |= pubrelSent
		if err := p.c.writeAck(packet.PUBREL, id); err != nil && p.sendErr == nil {
			p.sendErr = err
		}
	case packet.PUBCOMP:
		if measured {
			p.doneHist.record(e.at - sent)
		}
		p.release(id)
	}
}

// pubrelSent marks, in seqOf, a QoS 2 flow whose PUBREC has arrived.
// Sequence numbers stay below it (a run of 2^31 messages is not bench-sized).
const pubrelSent = 1 << 31

func (p *publisher) release(id uint16) {
	p.sentAt[id] = -1
	p.freeIDs = append(p.freeIDs, id)
	p.inflight--
}
