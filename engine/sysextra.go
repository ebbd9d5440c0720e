package engine

import (
	"strings"

	"github.com/keelmq/keel/wal"
)

// SessionQueue is a stored session's queue, as the engine counts it.
type SessionQueue struct {
	Entries  int64 // stored entries: queued and in flight
	Bytes    int64 // as stored, a shared body counted for each entry that references it
	Inflight int   // sent, not yet acknowledged
}

// SessionQueue reports the queue of client id's stored session, asked of
// the core goroutine (one event, no I/O; the bridges' metrics use it).
// ok is false when there is no such session or the broker is closed.
func (b *Broker) SessionQueue(clientID string) (q SessionQueue, ok bool) {
	type answer struct {
		q  SessionQueue
		ok bool
	}
	done := make(chan answer, 1)
	b.post(event{kind: evFunc, fn: func() {
		s := b.core.sessions.Sessions[clientID]
		if s == nil {
			done <- answer{}
			return
		}
		e, by := s.Queued()
		done <- answer{SessionQueue{Entries: e, Bytes: by, Inflight: len(s.Inflight)}, true}
	}})
	select {
	case a := <-done:
		return a.q, a.ok
	case <-b.quit:
		return SessionQueue{}, false
	}
}

// SetSys sets the retained $SYS topic to value, as the broker's own
// $SYS/broker/... topics: in memory only, published to its subscribers,
// never stored. For what the engine does not know itself (a bridge's
// state). A topic outside $SYS/ is ignored. Safe from any goroutine but
// the core's; it waits only for the event to be taken (as a connection's
// reader does), not for it to be handled.
func (b *Broker) SetSys(topic, value string) {
	if !strings.HasPrefix(topic, "$SYS/") {
		return
	}
	b.post(event{kind: evFunc, fn: func() { b.setSys(topic, value) }})
}

// setSys runs on the core goroutine.
func (b *Broker) setSys(topic, value string) {
	if b.core.retained == nil {
		return
	}
	if b.core.sysExtra == nil {
		b.core.sysExtra = map[string]struct{}{}
	}
	if _, ok := b.core.sysExtra[topic]; !ok {
		b.core.sysExtra[topic] = struct{}{}
		b.stats.sysRetained.Add(1)
	}
	scratch := &wal.Txn{}
	m := &wal.Message{Topic: topic, Payload: []byte(value), Retain: true}
	b.core.retained.Set(scratch, m)
	b.admit(m, nil, false)
	b.route(m)
}

// ConnectedFrom reports whether client id is connected here over a
// connection whose remote address is addr: a bridge asks it with its own
// socket's local address, and a yes means it dialled this very broker.
// One map lookup on the core goroutine; false if the broker is closed.
func (b *Broker) ConnectedFrom(clientID, addr string) bool {
	done := make(chan bool, 1)
	b.post(event{kind: evFunc, fn: func() {
		c := b.core.online[clientID]
		done <- c != nil && c.info.Remote != nil && c.info.Remote.String() == addr
	}})
	select {
	case ok := <-done:
		return ok
	case <-b.quit:
		return false
	}
}
