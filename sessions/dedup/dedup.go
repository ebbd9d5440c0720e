// Package dedup is the dedup window: the message ids each publisher scope
// (a client id, or a username) has routed in the last Window, so that a
// QoS 1 producer's retry of a message it already delivered, with a new
// packet id and perhaps a new connection, is acknowledged and not routed
// again (what Kafka's idempotent producer and NATS JetStream's Nats-Msg-Id
// window do for theirs).
//
// A record is written in the same Txn as the message it was seen with, so
// the window is on disk exactly when the message is: after kill -9 or a
// power cut, a retry of an acknowledged message is still recognised, and
// one of a message that was never acknowledged is not taken for a
// duplicate. Records outlive the publisher's session (a clean start does
// not clear them) and expire after Window; expired records are deleted as
// later Txns pass (unsynced: a deleted record that comes back after a
// crash is expired anyway).
//
// The Window is owned by the engine's core goroutine: not safe for
// concurrent use.
package dedup

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/keelmq/keel/wal"
)

// Window is the set of message ids seen, per scope.
type Window struct {
	ttl    time.Duration
	max    int // ids per scope
	scopes map[string]*scope
	list   []*scope // every scope, for the sweep
	rr     int      // the next scope the sweep visits
	n      int      // ids held, all scopes

	// Hits counts the duplicates found.
	Hits uint64
	// Evicted counts the ids forgotten before their time because their
	// scope held max.
	Evicted uint64
}

type scope struct {
	name string
	ids  map[string]int64 // id -> expiry, Unix ms
	fifo []item           // insertion order = expiry order (one ttl)
	head int
	pos  int // index in Window.list
}

type item struct {
	id  string
	exp int64
}

// New returns an empty window of ttl keeping at most max ids per scope
// (max <= 0: no cap).
func New(ttl time.Duration, max int) *Window {
	return &Window{ttl: ttl, max: max, scopes: map[string]*scope{}}
}

// Load returns the window stored in r, without what expired by now (whose
// records it deletes in txn).
func Load(r wal.Reader, txn *wal.Txn, ttl time.Duration, max int, now time.Time) (*Window, error) {
	w := New(ttl, max)
	nowMs := now.UnixMilli()
	err := r.Scan(wal.DedupPrefix(), wal.PrefixEnd(wal.DedupPrefix()), func(k, v []byte) error {
		sc, id, ok := wal.ParseDedupKey(k)
		if !ok || len(v) != 8 {
			return fmt.Errorf("dedup: bad record %q", k)
		}
		exp := int64(binary.BigEndian.Uint64(v))
		if exp <= nowMs || exp > nowMs+ttl.Milliseconds() {
			// Expired, or from a longer window than this one: forgotten.
			txn.Delete(bytes.Clone(k)) // k is the scan's
			return nil
		}
		s := w.scope(string(sc))
		s.ids[string(id)] = exp
		w.n++
		s.fifo = append(s.fifo, item{string(id), exp})
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, s := range w.list {
		slices.SortFunc(s.fifo, func(a, b item) int { return int(a.exp - b.exp) })
		for w.max > 0 && len(s.ids) > w.max {
			w.evict(txn, s) // a smaller cap than the run that wrote them
		}
	}
	return w, nil
}

// Len is the number of ids remembered.
func (w *Window) Len() int { return w.n }

// Seen reports whether scope routed id in the window; if not, it records
// id now (in txn, with the message). It also sweeps expired ids.
func (w *Window) Seen(txn *wal.Txn, scopeName, id string, now time.Time) bool {
	nowMs := now.UnixMilli()
	s := w.scope(scopeName)
	w.expire(txn, s, nowMs)
	if len(w.list) > 1 {
		// One other scope a turn, so that the ids of a publisher gone
		// quiet expire too.
		w.rr = (w.rr + 1) % len(w.list)
		if o := w.list[w.rr]; o != s {
			w.sweep(txn, o, nowMs)
		}
	}
	if exp, ok := s.ids[id]; ok && exp > nowMs {
		w.Hits++
		return true
	}
	exp := nowMs + w.ttl.Milliseconds()
	if _, stale := s.ids[id]; !stale {
		w.n++
	}
	s.ids[id] = exp
	s.fifo = append(s.fifo, item{id, exp})
	txn.Set(wal.DedupKey(scopeName, id), binary.BigEndian.AppendUint64(nil, uint64(exp)))
	if w.max > 0 && len(s.ids) > w.max {
		w.evict(txn, s)
		w.Evicted++
	}
	return false
}

// Has reports whether scope routed id in the window, as Seen does, but
// records and sweeps nothing.
func (w *Window) Has(scopeName, id string, now time.Time) bool {
	s := w.scopes[scopeName]
	if s == nil {
		return false
	}
	exp, ok := s.ids[id]
	return ok && exp > now.UnixMilli()
}

func (w *Window) scope(name string) *scope {
	s := w.scopes[name]
	if s == nil {
		s = &scope{name: name, ids: map[string]int64{}, pos: len(w.list)}
		w.scopes[name] = s
		w.list = append(w.list, s)
	}
	return s
}

// expire forgets s's expired ids.
func (w *Window) expire(txn *wal.Txn, s *scope, nowMs int64) {
	for s.head < len(s.fifo) && s.fifo[s.head].exp <= nowMs {
		w.forget(txn, s)
	}
}

// sweep is expire, and forgets s itself once it is empty.
func (w *Window) sweep(txn *wal.Txn, s *scope, nowMs int64) {
	w.expire(txn, s, nowMs)
	if len(s.ids) == 0 {
		w.drop(s)
	}
}

// evict forgets s's oldest id.
func (w *Window) evict(txn *wal.Txn, s *scope) {
	for s.head < len(s.fifo) {
		it := s.fifo[s.head]
		e, ok := s.ids[it.id]
		live := ok && e == it.exp
		w.forget(txn, s)
		if live {
			return
		}
	}
}

// forget drops the head of s's fifo, and its id if the head is its
// latest record (an id seen again after it expired has a later one).
func (w *Window) forget(txn *wal.Txn, s *scope) {
	it := s.fifo[s.head]
	s.fifo[s.head] = item{}
	s.head++
	if e, ok := s.ids[it.id]; ok && e == it.exp {
		delete(s.ids, it.id)
		w.n--
		txn.Delete(wal.DedupKey(s.name, it.id))
	}
	if s.head > 64 && s.head*2 > len(s.fifo) {
		s.fifo = append(s.fifo[:0], s.fifo[s.head:]...)
		s.head = 0
	}
}

// drop removes an empty scope.
func (w *Window) drop(s *scope) {
	last := w.list[len(w.list)-1]
	w.list[s.pos] = last
	last.pos = s.pos
	w.list = w.list[:len(w.list)-1]
	delete(w.scopes, s.name)
	if w.rr >= len(w.list) {
		w.rr = 0
	}
}
