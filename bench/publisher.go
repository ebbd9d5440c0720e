package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keelmq/keel/engine/client"
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

// ackEvent is an acknowledgement handed from the client's reader (OnAck)
// to the publisher's loop.
type ackEvent struct {
	kind  packet.Type
	code  packet.ReasonCode
	final bool
	at    int64  // clock() when it was read
	sent  int64  // from the payload: clock() at encode time
	seq   uint32 // from the payload
	valid bool   // the payload was one of this publisher's
}

// publisher drives one connection: its loop publishes; the client's reader
// hands acknowledgements over through events.
type publisher struct {
	idx   int
	c     *client.Client
	topic string
	cfg   *config

	window int

	// Owned by the loop (run).
	pub      packet.Publish
	payload  []byte
	inflight int
	seq      uint32 // next sequence number
	acked    bitmap // sequence numbers acknowledged (PUBACK / PUBREC)
	ackHist  hist   // PUBLISH -> PUBACK (QoS 1) or PUBREC (QoS 2)
	doneHist hist   // PUBLISH -> PUBCOMP (QoS 2)
	rejected int64  // acks with a failure reason code
	ackedWin int64  // acks received after the warm-up
	lastAck  int64  // clock() of the last ack

	sent   atomic.Int64 // progress; written by run only
	nacked atomic.Int64 // progress; written by run only
	bogus  atomic.Int64 // acks for packet ids not in flight (from the client)

	mu struct {
		sync.Mutex
		events []ackEvent
	}
	spare []ackEvent // owned by run: swapped with mu.events

	idPrefix string // -msg-id: "p{idx}-"
	idBuf    []byte
	wake     chan struct{}
}

func newPublisher(idx int, topic string, cfg *config) *publisher {
	p := &publisher{
		idx:     idx,
		topic:   topic,
		cfg:     cfg,
		payload: make([]byte, cfg.size),
		wake:    make(chan struct{}, 1),
	}
	for i := range p.payload[payloadHeader:] {
		p.payload[payloadHeader+i] = byte('a' + i%26)
	}
	binary.LittleEndian.PutUint32(p.payload[8:], uint32(idx))
	p.pub = packet.Publish{QoS: cfg.qos, Topic: topic}
	p.idPrefix = fmt.Sprintf("p%d-", idx)
	return p
}

// connOptions sets the callbacks of p's connection.
func (p *publisher) connOptions(o connOptions) connOptions {
	o.onAck = p.onAck
	o.manualFlush = true
	o.onOddity = func(error) { p.bogus.Add(1) }
	if p.cfg.qos > 0 {
		o.window = min(p.cfg.window, 65535)
	}
	return o
}

// attach gives p its connection, once connected.
func (p *publisher) attach(c *client.Client) {
	p.c = c
	p.window = c.Window()
}

// onAck runs on the client's reader.
func (p *publisher) onAck(a *client.Ack) {
	e := ackEvent{kind: a.Kind, code: a.Code, final: a.Final, at: clock()}
	if a.Publish != nil && len(a.Publish.Payload) >= payloadHeader {
		e.sent = int64(binary.LittleEndian.Uint64(a.Publish.Payload))
		e.seq = binary.LittleEndian.Uint32(a.Publish.Payload[12:])
		e.valid = true
	}
	p.mu.Lock()
	p.mu.events = append(p.mu.events, e)
	n := len(p.mu.events)
	p.mu.Unlock()
	// One wake-up per burst of acks, not one per ack.
	if n >= 256 || !a.More {
		p.signal()
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

		if !stopped && (ctl.stopped() || p.countReached()) {
			stopped = true
			ackDeadline = time.After(cfg.ackTimeout)
		}
		if stopped && p.inflight == 0 {
			return nil
		}
		if rdone {
			if rerr == nil {
				rerr = fmt.Errorf("publisher %d: connection closed", p.idx)
			}
			return rerr
		}
		if !stopped {
			if cfg.qos == 0 {
				// No flow control at QoS 0: queue a batch and let the
				// client push back when its buffer is full.
				for i := 0; i < 64 && !p.countReached(); i++ {
					if err := p.send(); err != nil {
						return err
					}
				}
				p.c.Flush()
				continue
			}
			for p.inflight < p.window && !p.countReached() {
				if err := p.send(); err != nil {
					return err
				}
			}
		}
		p.c.Flush()
		if stopped {
			select {
			case <-p.wake:
			case <-p.c.Done():
			case <-ackDeadline:
				return fmt.Errorf("publisher %d: %d acknowledgements still outstanding %v after the end", p.idx, p.inflight, cfg.ackTimeout)
			}
		} else {
			select {
			case <-p.wake:
			case <-p.c.Done():
			case <-ctl.stop:
			}
		}
	}
}

// collect handles the acknowledgements the reader has queued, and reports
// whether the connection has ended, and why.
func (p *publisher) collect() (readErr error, readDone bool) {
	p.mu.Lock()
	events := p.mu.events
	p.mu.events = p.spare[:0]
	p.mu.Unlock()
	for i := range events {
		p.handle(&events[i])
	}
	p.spare = events
	select {
	case <-p.c.Done():
		return p.c.Err(), true
	default:
		return nil, false
	}
}

// sendOne sends the next message, first waiting for a free slot in the
// window: a step of a load driven from outside, as testing.B does.
func (p *publisher) sendOne() error {
	for p.cfg.qos > 0 && p.inflight >= p.window {
		p.c.Flush()
		select {
		case <-p.wake:
		case <-p.c.Done():
		}
		if err, done := p.collect(); done {
			return fmt.Errorf("publisher %d: connection ended: %v", p.idx, err)
		}
	}
	return p.send()
}

// finish waits until every sent message is acknowledged.
func (p *publisher) finish(timeout time.Duration) error {
	deadline := time.After(timeout)
	for {
		p.c.Flush()
		if p.inflight == 0 {
			return nil
		}
		select {
		case <-p.wake:
		case <-p.c.Done():
		case <-deadline:
			return fmt.Errorf("publisher %d: %d acknowledgements outstanding after %v", p.idx, p.inflight, timeout)
		}
		if err, done := p.collect(); done && p.inflight > 0 {
			return fmt.Errorf("publisher %d: connection ended: %v", p.idx, err)
		}
	}
}

func (p *publisher) countReached() bool {
	return p.cfg.count > 0 && int64(p.seq) >= p.cfg.count
}

// send queues one PUBLISH.
func (p *publisher) send() error {
	now := clock()
	seq := p.seq
	p.seq++
	binary.LittleEndian.PutUint64(p.payload[0:], uint64(now))
	binary.LittleEndian.PutUint32(p.payload[12:], seq)
	p.pub.Payload = p.payload
	if p.cfg.msgID != "" {
		// Unique per publisher and message: the window holds every one.
		p.idBuf = strconv.AppendUint(append(p.idBuf[:0], p.idPrefix...), uint64(seq), 10)
		p.pub.Props.User = append(p.pub.Props.User[:0], packet.UserProperty{Key: p.cfg.msgID, Value: string(p.idBuf)})
	}
	if p.cfg.qos > 0 {
		p.inflight++
	}
	if err := p.c.Publish(context.Background(), &p.pub); err != nil {
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
	if e.final {
		p.inflight--
	}
	if !e.valid {
		p.bogus.Add(1)
		return
	}
	measured := e.sent >= measureStart
	switch e.kind {
	case packet.PUBACK, packet.PUBREC:
		if e.code >= 0x80 {
			p.rejected++
			return
		}
		if measured {
			p.ackHist.record(e.at - e.sent)
		}
		p.acked.set(e.seq)
		p.nacked.Add(1)
		if e.at >= measureStart {
			p.ackedWin++
			p.lastAck = e.at
		}
	case packet.PUBCOMP:
		if measured {
			p.doneHist.record(e.at - e.sent)
		}
	}
}
