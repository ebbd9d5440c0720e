package main

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"

	"github.com/keelmq/keel/engine/client"
	"github.com/keelmq/keel/engine/packet"
)

// subscriber drives one subscribing connection. Deliveries run on the
// client's reader, which acknowledges them.
type subscriber struct {
	idx    int
	c      *client.Client
	filter string
	cfg    *config

	// pubs is the set of publishers whose messages this subscriber gets:
	// all of them on a shared topic, one in pairs.
	pubLo, pubHi int

	// Owned by the client's reader until the connection is over.
	recv       []bitmap // by publisher: sequence numbers received
	lastSeq    []int64  // by publisher, for the order check
	e2e        hist     // publisher encode -> subscriber decode
	dups       int64
	outOfOrder int64
	bad        int64 // payloads not written by this run
	delivWin   int64 // deliveries of messages received after the warm-up
	lastDeliv  int64 // clock() of the last delivery

	unique    atomic.Int64 // distinct messages received; progress and drain
	readBytes atomic.Int64 // bytes read from the broker
	stopping  atomic.Bool
}

func newSubscriber(idx int, filter string, pubLo, pubHi int, cfg *config) *subscriber {
	s := &subscriber{idx: idx, filter: filter, cfg: cfg, pubLo: pubLo, pubHi: pubHi}
	s.recv = make([]bitmap, pubHi-pubLo)
	s.lastSeq = make([]int64, pubHi-pubLo)
	for i := range s.lastSeq {
		s.lastSeq[i] = -1
	}
	return s
}

// connOptions sets the callbacks of s's connection.
func (s *subscriber) connOptions(o connOptions) connOptions {
	o.onMessage = func(p *packet.Publish) { s.deliver(p.Payload) }
	o.topicAliasMax = s.cfg.subAliases
	o.readBytes = &s.readBytes
	return o
}

// wait waits until the connection is over. An end after stop was
// requested is the end of the run, not a failure.
func (s *subscriber) wait() error {
	<-s.c.Done()
	if s.stopping.Load() {
		return nil
	}
	return fmt.Errorf("subscriber %d: %w", s.idx, s.c.Err())
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

// stop marks the end of the run: the connection closing from now on is
// not a failure.
func (s *subscriber) stop() { s.stopping.Store(true) }
