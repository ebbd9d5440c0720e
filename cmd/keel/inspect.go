package main

import (
	"cmp"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/keelmq/keel/sessions"
	"github.com/keelmq/keel/wal"
)

// What keel inspect and the admin API show of a store: built from one
// consistent view (a stopped broker's read-only store, or a Pebble
// snapshot of a live one) by the code the broker rebuilds its state with
// (sessions.Load), plus scans with wal's own key and record decoders for
// what Load does not keep (queued entries stay on disk; retained messages
// are retain's). Nothing here writes: the store is a wal.View or a
// wal.ReadOnly, whose Submit fails.
//
// The JSON field names are the admin API's and keel inspect --json's:
// changing one breaks scripts.

// inspection is everything inspect shows, gathered at At.
type inspection struct {
	At       time.Time     `json:"at"`
	Dir      string        `json:"dir,omitempty"`
	Live     bool          `json:"live"` // read through a running broker's admin listener
	Stats    inspectStats  `json:"stats"`
	Sessions []sessionInfo `json:"sessions"` // by client id
	Retained []retainInfo  `json:"retained"` // by topic
}

type inspectStats struct {
	FormatVersion   uint32     `json:"format_version"` // 0: an empty store that has none yet
	Sessions        int        `json:"sessions"`
	Subscriptions   int        `json:"subscriptions"`
	QueueEntries    int64      `json:"queue_entries"` // queued and in flight, all sessions
	Queued          int64      `json:"queued"`        // waiting to be sent
	Inflight        int        `json:"inflight"`      // sent, not yet acknowledged (QoS 1/2 out)
	InboundQoS2     int        `json:"inbound_qos2"`  // inbound QoS 2 ids not yet released
	Wills           int        `json:"wills"`
	SharedBodies    int        `json:"shared_bodies"` // message bodies stored once for several queues
	SharedBodyBytes int64      `json:"shared_body_bytes"`
	Retained        int        `json:"retained"`
	RetainedBytes   int64      `json:"retained_bytes"` // payload bytes
	Store           *storeInfo `json:"store,omitempty"`
}

type storeInfo struct {
	DiskBytes     uint64      `json:"disk_bytes"`
	WALFiles      int64       `json:"wal_files"`
	WALBytes      uint64      `json:"wal_bytes"`
	MemtableBytes uint64      `json:"memtable_bytes"`
	ReadAmp       int         `json:"read_amp"`
	Levels        []levelInfo `json:"levels"`
	Pebble        string      `json:"pebble"` // Pebble's own metrics table
}

type levelInfo struct {
	Level     int     `json:"level"`
	Sublevels int32   `json:"sublevels"`
	Tables    int64   `json:"tables"`
	Bytes     int64   `json:"bytes"`
	Score     float64 `json:"score"`
}

type sessionInfo struct {
	ClientID      string `json:"client_id"`
	Protocol      string `json:"protocol"` // "3.1", "3.1.1", "5.0"
	ProtocolLevel byte   `json:"protocol_level"`
	Persistent    bool   `json:"persistent"` // always true: only persistent sessions are stored
	ExpirySeconds uint32 `json:"expiry_seconds"`
	NeverExpires  bool   `json:"never_expires"`
	// Owner is the username of the client that created the session
	// (OwnerAnonymous: a client without one); absent for a session
	// stored by format 1, which its next client claims.
	Owner          *string `json:"owner,omitempty"`
	OwnerAnonymous bool    `json:"owner_anonymous,omitempty"`
	// Connected: the store records no disconnect. On a stopped broker, the
	// client was connected when keel stopped (a crash, or a stop that had
	// no time to record it); its expiry clock starts at the next start.
	Connected      bool       `json:"connected"`
	DisconnectedAt *time.Time `json:"disconnected_at,omitempty"`
	ExpiresAt      *time.Time `json:"expires_at,omitempty"`

	Subscriptions []subInfo `json:"subscriptions"`
	Queue         queueInfo `json:"queue"`
	Inflight      []flight  `json:"inflight"`     // by queue order
	InboundQoS2   []uint16  `json:"inbound_qos2"` // ascending
	Will          *willInfo `json:"will,omitempty"`
}

type subInfo struct {
	Filter            string `json:"filter"`
	QoS               byte   `json:"qos"`
	NoLocal           bool   `json:"no_local"`
	RetainAsPublished bool   `json:"retain_as_published"`
	RetainHandling    byte   `json:"retain_handling"`
	SubscriptionID    uint32 `json:"subscription_id"`
}

type queueInfo struct {
	Entries  int64 `json:"entries"`  // stored entries: queued and in flight
	Queued   int64 `json:"queued"`   // waiting to be sent
	Inflight int   `json:"inflight"` // sent, waiting for the client's ack
	// Bytes is what the queue holds on disk: its entries, and each shared
	// body they reference (a body queued for several sessions is counted
	// in each).
	Bytes int64 `json:"bytes"`
	// OldestSeq is the queue position of the oldest entry (0: empty).
	// The format stores no enqueue time, so no age can be derived.
	OldestSeq uint64 `json:"oldest_seq"`
}

type flight struct {
	PacketID uint16 `json:"packet_id"`
	State    string `json:"state"` // "sent" (waiting for PUBACK/PUBREC) or "released" (PUBREL sent, waiting for PUBCOMP)
	QoS      byte   `json:"qos"`
	Topic    string `json:"topic,omitempty"` // none once released
	Seq      uint64 `json:"seq"`
}

type willInfo struct {
	Topic        string `json:"topic"`
	QoS          byte   `json:"qos"`
	Retain       bool   `json:"retain"`
	PayloadBytes int    `json:"payload_bytes"`
	DelaySeconds uint32 `json:"delay_seconds"`
}

type retainInfo struct {
	Topic        string     `json:"topic"`
	QoS          byte       `json:"qos"`
	PayloadBytes int        `json:"payload_bytes"`
	StoredBytes  int        `json:"stored_bytes"` // the record, compressed if it was worth it
	ExpiresAt    *time.Time `json:"expires_at,omitempty"`
	Expired      bool       `json:"expired"` // deleted at the broker's next start
}

// queueScan is what one scan of the queue keys finds for a session.
type queueScan struct {
	queued int64
	oldest uint64
	bodies map[uint64]struct{}
}

// inspect reads store (read-only: a wal.ReadOnly or a wal.View) as of now.
func inspect(store wal.Store, now time.Time) (*inspection, error) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := sessions.Load[struct{}](store, quiet, now)
	if err != nil {
		return nil, err
	}
	// Queue entries: Load keeps only a cursor for the queued ones.
	queues := map[string]*queueScan{}
	err = store.Scan(wal.AllSessionsPrefix(), wal.PrefixEnd(wal.AllSessionsPrefix()), func(k, v []byte) error {
		seq, ok := wal.ParseQueueSeq(k)
		if !ok {
			return nil // not a queue key
		}
		client, _, _, _ := wal.ParseSessionKeyBytes(k)
		q := queues[string(client)]
		if q == nil {
			q = &queueScan{oldest: seq, bodies: map[uint64]struct{}{}}
			queues[string(client)] = q
		}
		h, err := wal.PeekEntry(v)
		if err != nil {
			return fmt.Errorf("queue entry %d of %q: %w", seq, client, err)
		}
		if h.State == wal.EntryQueued {
			q.queued++
		}
		if h.Shared != 0 {
			q.bodies[h.Shared] = struct{}{}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	bodies := map[uint64]int64{}
	var in inspection
	err = store.Scan(wal.MessagePrefix(), wal.PrefixEnd(wal.MessagePrefix()), func(k, v []byte) error {
		if id, ok := wal.ParseMessageKey(k); ok {
			bodies[id] = int64(len(v))
			in.Stats.SharedBodyBytes += int64(len(v))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	in.At = now.UTC()
	in.Stats.SharedBodies = len(bodies)
	for _, s := range st.Sessions {
		info := sessionView(s, queues[s.ClientID], bodies)
		in.Sessions = append(in.Sessions, info)
		in.Stats.Subscriptions += len(info.Subscriptions)
		in.Stats.QueueEntries += info.Queue.Entries
		in.Stats.Queued += info.Queue.Queued
		in.Stats.Inflight += info.Queue.Inflight
		in.Stats.InboundQoS2 += len(info.InboundQoS2)
		if info.Will != nil {
			in.Stats.Wills++
		}
	}
	slices.SortFunc(in.Sessions, func(a, b sessionInfo) int { return strings.Compare(a.ClientID, b.ClientID) })
	in.Stats.Sessions = len(in.Sessions)

	nowMs := now.UnixMilli()
	lower := wal.RetainPrefix()
	err = store.Scan(lower, wal.PrefixEnd(lower), func(k, v []byte) error {
		m, err := wal.DecodeMessage(v)
		if err != nil {
			return fmt.Errorf("retained %q: %w", k[len(lower):], err)
		}
		r := retainInfo{Topic: m.Topic, QoS: m.QoS, PayloadBytes: len(m.Payload), StoredBytes: len(v)}
		if m.ExpireAt != 0 {
			t := time.UnixMilli(m.ExpireAt).UTC()
			r.ExpiresAt, r.Expired = &t, m.ExpireAt <= nowMs
		}
		in.Retained = append(in.Retained, r)
		in.Stats.Retained++
		in.Stats.RetainedBytes += int64(r.PayloadBytes)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &in, nil
}

func sessionView(s *sessions.Session[struct{}], q *queueScan, bodies map[uint64]int64) sessionInfo {
	info := sessionInfo{
		ClientID:      s.ClientID,
		Protocol:      protocolName(s.Protocol),
		ProtocolLevel: s.Protocol,
		Persistent:    s.Persistent,
		ExpirySeconds: s.Expiry,
		NeverExpires:  s.Expiry == sessions.NeverExpire,
		Connected:     s.DisconnectedAt.IsZero(),
		Subscriptions: []subInfo{},
		Inflight:      []flight{},
		InboundQoS2:   []uint16{},
	}
	if o := s.Creator; o != nil {
		info.Owner, info.OwnerAnonymous = &o.Username, o.Anonymous
	}
	if !info.Connected {
		t := s.DisconnectedAt.UTC()
		info.DisconnectedAt = &t
		if !info.NeverExpires {
			e := t.Add(time.Duration(s.Expiry) * time.Second)
			info.ExpiresAt = &e
		}
	}
	for filter, sub := range s.Subs {
		info.Subscriptions = append(info.Subscriptions, subInfo{Filter: filter, QoS: sub.QoS, NoLocal: sub.NoLocal,
			RetainAsPublished: sub.RetainAsPublished, RetainHandling: sub.RetainHandling, SubscriptionID: sub.SubID})
	}
	slices.SortFunc(info.Subscriptions, func(a, b subInfo) int { return strings.Compare(a.Filter, b.Filter) })
	for _, f := range s.InflightInOrder() {
		fl := flight{PacketID: f.PacketID, State: "sent", QoS: f.QoS, Seq: f.Seq}
		if f.State == sessions.Released {
			fl.State = "released"
		}
		if f.Msg != nil {
			fl.Topic = f.Msg.Topic
		}
		info.Inflight = append(info.Inflight, fl)
	}
	for id := range s.InQoS2 {
		info.InboundQoS2 = append(info.InboundQoS2, id)
	}
	slices.Sort(info.InboundQoS2)
	entries, bytes := s.Queued()
	info.Queue = queueInfo{Entries: entries, Inflight: len(s.Inflight), Bytes: bytes}
	if q != nil {
		info.Queue.Queued, info.Queue.OldestSeq = q.queued, q.oldest
		for id := range q.bodies {
			info.Queue.Bytes += bodies[id]
		}
	}
	if w := s.Will; w != nil {
		info.Will = &willInfo{Topic: w.Topic, QoS: w.QoS, Retain: w.Retain, PayloadBytes: len(w.Payload), DelaySeconds: w.DelaySeconds}
	}
	return info
}

func protocolName(level byte) string {
	switch level {
	case 3:
		return "3.1"
	case 4:
		return "3.1.1"
	case 5:
		return "5.0"
	}
	return fmt.Sprintf("level %d", level)
}

func storeView(m wal.StoreMetrics) *storeInfo {
	s := &storeInfo{DiskBytes: m.DiskSize, WALFiles: m.WALFiles, WALBytes: m.WALSize, MemtableBytes: m.MemTableSize,
		ReadAmp: m.ReadAmp, Pebble: m.Summary}
	for _, l := range m.Levels {
		s.Levels = append(s.Levels, levelInfo{Level: l.Level, Sublevels: l.Sublevels, Tables: l.Tables, Bytes: l.Bytes, Score: l.Score})
	}
	return s
}

// page is a filter and a window over a sorted list: names with prefix,
// after the name after (exclusive), at most limit (0: all).
type page struct {
	prefix, after string
	limit         int
}

func pageOf[T any](items []T, name func(T) string, p page) []T {
	out := []T{}
	for _, it := range items {
		n := name(it)
		if !strings.HasPrefix(n, p.prefix) || (p.after != "" && n <= p.after) {
			continue
		}
		if p.limit > 0 && len(out) == p.limit {
			break
		}
		out = append(out, it)
	}
	return out
}

// largestQueues is the sessions with a non-empty queue, largest first
// (then by client id).
func largestQueues(in []sessionInfo) []sessionInfo {
	var out []sessionInfo
	for _, s := range in {
		if s.Queue.Entries > 0 {
			out = append(out, s)
		}
	}
	slices.SortStableFunc(out, func(a, b sessionInfo) int { return cmp.Compare(b.Queue.Entries, a.Queue.Entries) })
	return out
}
