// Package retain keeps the broker's retained messages: one message per
// topic, stored in the wal under wal.RetainKey(topic) and mirrored in memory
// as a tree of topic levels, so that a new subscription's filter finds its
// retained messages by walking only the branches it can match.
//
// Durability: Set and Expire only add writes to a wal.Txn and apply them in
// memory at once. The caller commits the Txn, and acknowledges the PUBLISH
// only after the commit (DESIGN.md, "Commit-before-send rules"). If the
// commit fails the memory is ahead of the disk; the wal then reports a
// fatal error and the broker restarts from the disk (Load).
//
// A Store is owned by the routing goroutine and has no locks; only Len may
// be called from other goroutines.
package retain

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"

	"github.com/keelmq/keel/wal"
)

// Store is the set of retained messages.
type Store struct {
	log   wal.Store
	index index
	n     atomic.Int64 // index.n, readable from any goroutine
	bytes atomic.Int64 // index.bytes, readable from any goroutine
}

// Size is what a retained message counts against the retained byte
// limits: its topic and payload.
func Size(m *wal.Message) int64 { return int64(len(m.Topic) + len(m.Payload)) }

// Bytes is the Size of every retained message, summed, including expired
// ones not yet deleted by Expire. It is safe to call from any goroutine.
func (s *Store) Bytes() int64 { return s.bytes.Load() }

// New returns an empty Store that encodes for l (its compression
// threshold). It does not read l: use Load to open an existing set.
func New(l wal.Store) *Store { return &Store{log: l} }

// Load reads the retained set of l. Messages whose ExpireAt has passed at
// nowMs (Unix ms) are not loaded, and their deletion is committed before
// Load returns.
func Load(l wal.Store, nowMs int64) (*Store, error) {
	s := New(l)
	var gone wal.Txn
	lower := wal.RetainPrefix()
	err := l.Scan(lower, wal.PrefixEnd(lower), func(k, v []byte) error {
		m, err := wal.DecodeMessage(v) // copies: v is the scan's
		if err != nil {
			return fmt.Errorf("key %q: %w", k, err)
		}
		if m.Topic != string(k[len(lower):]) {
			// Set writes a message under its own topic: anything else
			// would be matched under one topic and deleted under another.
			return fmt.Errorf("key %q holds a message of topic %q: %w", k, m.Topic, wal.ErrCorruptRecord)
		}
		if expired(&m, nowMs) {
			gone.Delete(bytes.Clone(k))
			return nil
		}
		s.index.set(&m)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("retain: load: %w", err)
	}
	if gone.Len() > 0 {
		if err := wal.Commit(context.Background(), l, &gone); err != nil {
			return nil, fmt.Errorf("retain: load: delete expired: %w", err)
		}
	}
	s.n.Store(int64(s.index.n))
	s.bytes.Store(s.index.bytes)
	return s, nil
}

// Set records in txn the retained update of a PUBLISH with RETAIN set, and
// applies it in memory: an empty payload clears m.Topic's retained message
// [MQTT-3.3.1-10] [MQTT-3.3.1-11]; any other replaces it [MQTT-3.3.1-5].
//
// The Store keeps a copy of *m that shares m's slices (Payload,
// CorrelationData, User): the caller must not modify them afterwards.
func (s *Store) Set(txn *wal.Txn, m *wal.Message) {
	key := wal.RetainKey(m.Topic)
	if len(m.Payload) == 0 {
		// Written even if nothing is retained in memory: the disk must
		// not keep what the memory does not.
		txn.Delete(key)
		s.index.clear(m.Topic)
	} else {
		txn.Set(key, wal.AppendMessage(nil, m, s.compressThreshold()))
		c := *m
		s.index.set(&c)
	}
	s.n.Store(int64(s.index.n))
	s.bytes.Store(s.index.bytes)
}

func (s *Store) compressThreshold() int {
	if s.log == nil {
		return -1 // no log to ask: do not compress
	}
	return s.log.CompressThreshold()
}

// Match calls fn for each retained message whose topic matches filter, by
// the rules of topic filters: '+' is one level (possibly empty), '#' is the
// parent level and everything below [MQTT-4.7.1-2], and a filter starting
// with a wildcard does not match topics starting with '$' [MQTT-4.7.2-1].
// The order is unspecified.
//
// Messages expired at nowMs (Unix ms) are skipped; they stay on disk until
// Expire deletes them (NextExpiry says when to call it). fn must not modify
// the message or the Store. A stored message is never modified (a
// replacement is a new Message), so fn may keep m, for instance to hand it
// to a subscriber's write loop.
//
// REQUIRES: filter is a valid topic filter, without a "$share/group/"
// prefix.
func (s *Store) Match(filter string, nowMs int64, fn func(m *wal.Message)) {
	s.index.match(filter, nowMs, fn)
}

// Get returns the message retained on topic, expired or not. The message
// must not be modified; it may be kept (see Match).
func (s *Store) Get(topic string) (*wal.Message, bool) {
	m := s.index.get(topic)
	return m, m != nil
}

// Len is the number of retained messages, including expired ones not yet
// deleted by Expire. It is safe to call from any goroutine.
func (s *Store) Len() int { return int(s.n.Load()) }

// Expire records in txn the deletion of every message expired at nowMs,
// removes them from memory, and returns how many there were.
func (s *Store) Expire(txn *wal.Txn, nowMs int64) int {
	count := 0
	s.index.popExpired(nowMs, func(m *wal.Message) {
		txn.Delete(wal.RetainKey(m.Topic))
		count++
	})
	if count > 0 {
		s.n.Store(int64(s.index.n))
		s.bytes.Store(s.index.bytes)
	}
	return count
}

// NextExpiry returns the earliest expiry deadline (Unix ms) among the
// retained messages, so the caller can schedule Expire; ok is false when
// none expires.
func (s *Store) NextExpiry() (atMs int64, ok bool) { return s.index.nextExpiry() }
