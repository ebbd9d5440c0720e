package main

import (
	"encoding/binary"
	"fmt"
	"sync"
)

// msgKey names one test message. For the publishers of the online, offline
// and replay-crash modes, pub is the publisher and seq its sequence number.
// In many-sessions mode pub is the target session. For retained values pub
// is the topic index and seq the version; for wills pub is the will client
// and seq the connection generation.
type msgKey struct{ pub, seq uint32 }

func (k msgKey) String() string { return fmt.Sprintf("(%d,%d)", k.pub, k.seq) }

// Payload layout (big-endian), then zero padding up to Config.PayloadSize:
//
//	+------+------+----------------+----------+----------+
//	| 'K'  | 'C'  | run nonce (8)  | pub (4)  | seq (4)  |
//	+------+------+----------------+----------+----------+
//
// The nonce ties a message to one run, so that a reused data directory's
// stale retained messages or queued messages are not mistaken for ours.
const payloadHeader = 2 + 8 + 4 + 4

func encodePayload(dst []byte, nonce uint64, k msgKey, size int) []byte {
	dst = append(dst, 'K', 'C')
	dst = binary.BigEndian.AppendUint64(dst, nonce)
	dst = binary.BigEndian.AppendUint32(dst, k.pub)
	dst = binary.BigEndian.AppendUint32(dst, k.seq)
	for len(dst) < size {
		dst = append(dst, 0)
	}
	return dst
}

func decodePayload(b []byte, nonce uint64) (msgKey, bool) {
	if len(b) < payloadHeader || b[0] != 'K' || b[1] != 'C' ||
		binary.BigEndian.Uint64(b[2:]) != nonce {
		return msgKey{}, false
	}
	return msgKey{binary.BigEndian.Uint32(b[10:]), binary.BigEndian.Uint32(b[14:])}, true
}

// via says how a delivery arrived, for the examples of violations.
type via struct {
	conn int // the receiving client's connection number, from 1
	pid  uint16
	dup  bool
}

func (v via) String() string { return fmt.Sprintf("conn %d id %d dup %t", v.conn, v.pid, v.dup) }

// maxExamples bounds how many examples of each violation are kept.
const maxExamples = 5

// ledger records what one receiving session handed to its application: one
// record per delivery that the client's protocol layer passed up (a QoS 2
// packet id once until its PUBREL; every QoS 1 delivery, duplicates
// included).
type ledger struct {
	name string

	// changed gets a token (non-blocking) after every first delivery, for
	// waiters that drain one session.
	changed chan struct{}

	mu struct {
		sync.Mutex
		counts    map[msgKey]uint32
		maxFirst  map[uint32]uint32 // per pub: highest seq among first deliveries
		maxVia    map[uint32]via    // how that one arrived
		distinct  int
		dups      int
		reordered int
		examples  []string
	}
}

func newLedger(name string) *ledger {
	l := &ledger{name: name, changed: make(chan struct{}, 1)}
	l.mu.counts = make(map[msgKey]uint32)
	l.mu.maxFirst = make(map[uint32]uint32)
	l.mu.maxVia = make(map[uint32]via)
	return l
}

// record notes one delivery of k and reports whether it was the first.
//
// Order is checked among first deliveries only: a redelivered (duplicate)
// older message after a newer one is a duplicate, not a reorder; a first
// delivery whose seq is below the highest first-delivered seq of the same
// pub is a reorder.
func (l *ledger) record(k msgKey, v via) bool {
	l.mu.Lock()
	n := l.mu.counts[k]
	l.mu.counts[k] = n + 1
	first := n == 0
	if first {
		l.mu.distinct++
		if hi, ok := l.mu.maxFirst[k.pub]; ok && k.seq < hi {
			l.mu.reordered++
			l.exampleLocked("reordered: %s: first got %v (%v) after seq %d (%v)", l.name, k, v, hi, l.mu.maxVia[k.pub])
		} else {
			l.mu.maxFirst[k.pub] = k.seq
			l.mu.maxVia[k.pub] = v
		}
	} else {
		l.mu.dups++
	}
	l.mu.Unlock()
	if first {
		select {
		case l.changed <- struct{}{}:
		default:
		}
	}
	return first
}

// REQUIRES: l.mu held.
func (l *ledger) exampleLocked(format string, args ...any) {
	if len(l.mu.examples) < maxExamples {
		l.mu.examples = append(l.mu.examples, fmt.Sprintf(format, args...))
	}
}

func (l *ledger) has(k msgKey) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.counts[k] > 0
}

// missing counts the keys of want that l has not received.
func (l *ledger) missing(want []msgKey) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, k := range want {
		if l.mu.counts[k] == 0 {
			n++
		}
	}
	return n
}

func (l *ledger) distinct() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.distinct
}

// acceptSet holds the messages the broker accepted (PUBACK for QoS 1,
// PUBREC for QoS 2): those must be delivered.
type acceptSet struct {
	mu struct {
		sync.Mutex
		keys []msgKey // in acceptance order, each once
		seen map[msgKey]struct{}
	}
}

func newAcceptSet() *acceptSet {
	s := &acceptSet{}
	s.mu.seen = make(map[msgKey]struct{})
	return s
}

func (s *acceptSet) add(k msgKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.mu.seen[k]; ok {
		return
	}
	s.mu.seen[k] = struct{}{}
	s.mu.keys = append(s.mu.keys, k)
}

// snapshot returns the accepted keys so far. The slice must not be
// modified; later adds do not change it.
func (s *acceptSet) snapshot() []msgKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.keys[:len(s.mu.keys):len(s.mu.keys)]
}

// tally is what one verification adds to the result.
type tally struct {
	accepted, delivered, lost, duplicated, reordered int
	examples                                         []string
}

func (t *tally) example(format string, args ...any) {
	if len(t.examples) < maxExamples {
		t.examples = append(t.examples, fmt.Sprintf(format, args...))
	}
}

// verify checks the ledgers against the accepted messages: every accepted
// key must be in each ledger that receiversOf names. accepted counts each
// accepted message once; delivered counts distinct (receiver, message)
// pairs.
func verify(accepted []msgKey, ledgers []*ledger, receiversOf func(msgKey) []int) tally {
	var t tally
	t.accepted = len(accepted)
	for _, l := range ledgers {
		l.mu.Lock()
	}
	defer func() {
		for _, l := range ledgers {
			l.mu.Unlock()
		}
	}()
	for _, k := range accepted {
		for _, i := range receiversOf(k) {
			l := ledgers[i]
			if l.mu.counts[k] == 0 {
				t.lost++
				t.example("lost: %s never got accepted message %v", l.name, k)
			}
		}
	}
	for _, l := range ledgers {
		t.delivered += l.mu.distinct
		t.duplicated += l.mu.dups
		t.reordered += l.mu.reordered
		for _, e := range l.mu.examples {
			t.example("%s", e)
		}
	}
	return t
}
