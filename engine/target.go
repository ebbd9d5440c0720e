package engine

import (
	"github.com/keelmq/keel/sessions"
	"github.com/keelmq/keel/wal"
)

// session is a session whose live end is a target.
type session = sessions.Session[target]

// target is an online session's live end, where its packets go once their
// drain has committed: a client connection today (*conn), a bridge link
// tomorrow. The core calls window and fits; release and refuse call the
// rest from the commit's completion. Implementations must not block.
type target interface {
	// window is how many outbound QoS 1/2 messages may be in flight to it.
	window() int
	// fits reports whether m at qos with subIDs fits the receiver's
	// Maximum Packet Size [MQTT-3.1.2-24].
	fits(m *wal.Message, qos byte, subIDs []uint32) bool
	// allowRead reports whether the receiver may read topic (the ACL's
	// read check, at every delivery).
	allowRead(topic string) bool
	// protocol is the MQTT version it speaks (packet.V311, packet.V5...).
	protocol() byte
	// send queues items in order; sendNow may write control packets at
	// once (see conn.sendNow); kill ends it without sending anything more.
	send(items ...outItem)
	sendNow(items []outItem)
	kill()
	// grouping is groupByConn's scratch space; core goroutine only.
	grouping() *grouping
}

// grouping is a target's scratch for groupByConn.
type grouping struct {
	gen uint64
	n   int
	off int
}

var _ target = (*conn)(nil)

func (c *conn) protocol() byte      { return c.version }
func (c *conn) grouping() *grouping { return &c.group }
