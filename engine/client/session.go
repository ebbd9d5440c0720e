package client

import "sync"

// Session is the client's half of an MQTT session state (5.0 section 4.1):
// what must outlive one network connection for QoS 1 and 2 to keep their
// promises.
//
//   - outbound flows, in the order their PUBLISH was first sent: packet id
//     -> the encoded PUBLISH while it is unacknowledged, or "released" once
//     PUBREC came and PUBREL was sent;
//   - inbound QoS 2 packet ids received (PUBREC sent) and not yet released
//     by a PUBREL.
//
// The Client calls a Session from its reader and from Publish, never with
// its own mutex held, and only after the state change the call records is
// decided and before the packet that depends on it is sent: Store before
// the PUBLISH leaves, Release before the PUBREL, Receive before the PUBREC,
// Forget before the PUBCOMP. A durable Session (the bridge's) can therefore
// make each call durable before returning, and a client restarted on it
// resumes exactly where the last one stopped. The in-memory one is
// NewMemorySession.
//
// Implementations must be safe for concurrent use. One Session belongs to
// one client id on one server, and to one Client at a time.
type Session interface {
	// Store records an outbound QoS 1/2 PUBLISH, encoded with DUP=0 for the
	// session's protocol version, as the newest flow. The Session copies
	// publish.
	Store(id uint16, publish []byte)
	// Release records that PUBREC came for id: from now on the flow is
	// resent as PUBREL, never as PUBLISH [MQTT-4.3.3-6].
	Release(id uint16)
	// Complete ends the flow of id (PUBACK, PUBCOMP, or a refusal): the
	// packet id is free again.
	Complete(id uint16)
	// Flow reports the flow of id. publish is valid until Complete(id).
	Flow(id uint16) (publish []byte, released, ok bool)
	// Flows calls f for every outbound flow in the order the PUBLISH
	// packets were first sent, until f returns false.
	Flows(f func(id uint16, publish []byte, released bool) bool)
	// Len is the number of outbound flows.
	Len() int

	// Receive records an inbound QoS 2 packet id and reports whether it
	// is new; false means the PUBLISH is a resend of one already handed to
	// the application [MQTT-4.3.3-10].
	Receive(id uint16) (isNew bool)
	// Forget drops an inbound QoS 2 id on its PUBREL: a later PUBLISH with
	// that id is a new message [MQTT-4.3.3-12].
	Forget(id uint16)

	// Clear discards the whole state: the server has no session, or the
	// client starts a new one [MQTT-3.2.2-5] [MQTT-3.1.2-4].
	Clear()
}

// memSession is the in-memory Session: flows in a doubly linked list kept
// in send order, indexed by packet id; finished flows are recycled with
// their buffers, so a steady load allocates nothing.
type memSession struct {
	mu struct {
		sync.Mutex
		byID       map[uint16]*memFlow
		head, tail *memFlow // oldest, newest
		free       *memFlow // recycled, linked through next
		in         map[uint16]struct{}
	}
}

type memFlow struct {
	id         uint16
	released   bool
	publish    []byte
	prev, next *memFlow
}

// NewMemorySession returns an empty in-memory Session. Pass the same one
// to every Connect of a client id to resume its session.
func NewMemorySession() Session {
	s := &memSession{}
	s.mu.byID = make(map[uint16]*memFlow)
	s.mu.in = make(map[uint16]struct{})
	return s
}

func (s *memSession) Store(id uint16, publish []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.mu.byID[id]; ok {
		panic("client: Store of a packet id already in flight")
	}
	f := s.mu.free
	if f != nil {
		s.mu.free = f.next
	} else {
		f = &memFlow{}
	}
	f.id, f.released = id, false
	f.publish = append(f.publish[:0], publish...)
	f.prev, f.next = s.mu.tail, nil
	if s.mu.tail != nil {
		s.mu.tail.next = f
	} else {
		s.mu.head = f
	}
	s.mu.tail = f
	s.mu.byID[id] = f
}

func (s *memSession) Release(id uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.mu.byID[id]; f != nil {
		f.released = true
	}
}

func (s *memSession) Complete(id uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.mu.byID[id]
	if f == nil {
		return
	}
	delete(s.mu.byID, id)
	if f.prev != nil {
		f.prev.next = f.next
	} else {
		s.mu.head = f.next
	}
	if f.next != nil {
		f.next.prev = f.prev
	} else {
		s.mu.tail = f.prev
	}
	f.prev, f.next = nil, s.mu.free
	s.mu.free = f
}

func (s *memSession) Flow(id uint16) ([]byte, bool, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.mu.byID[id]
	if f == nil {
		return nil, false, false
	}
	return f.publish, f.released, true
}

func (s *memSession) Flows(fn func(id uint16, publish []byte, released bool) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for f := s.mu.head; f != nil; f = f.next {
		if !fn(f.id, f.publish, f.released) {
			return
		}
	}
}

func (s *memSession) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.mu.byID)
}

func (s *memSession) Receive(id uint16) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.mu.in[id]; ok {
		return false
	}
	s.mu.in[id] = struct{}{}
	return true
}

func (s *memSession) Forget(id uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.mu.in, id)
}

func (s *memSession) Clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.mu.head != nil {
		f := s.mu.head
		s.mu.head = f.next
		f.prev, f.next = nil, s.mu.free
		s.mu.free = f
	}
	s.mu.tail = nil
	clear(s.mu.byID)
	clear(s.mu.in)
}
