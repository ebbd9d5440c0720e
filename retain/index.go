package retain

import (
	"container/heap"
	"strings"

	"github.com/keelmq/keel/retain/topictree"
	"github.com/keelmq/keel/wal"
)

// index is the retained set in memory: a tree with one node per topic
// level, holding at each node the message retained on the topic that ends
// there, and a heap of the nodes whose message expires, soonest first.
//
// A filter walks only the branches it can match: a literal level is one
// lookup, '+' visits each child, '#' visits the subtree.
type index struct {
	root     rnode // not a level: its children are the first levels
	n        int   // nodes with a message
	bytes    int64 // their Size, summed
	expiring expiryHeap
}

// rnode is one topic level; its data is rdata.
type rnode = topictree.Node[rdata]

type rdata struct {
	msg *wal.Message // the message retained on this topic; nil if none

	// hi is 1 + this node's position in index.expiring, or 0 when it is
	// not there. A node is in the heap iff msg != nil && msg.ExpireAt != 0.
	hi int
}

// set makes m the retained message of m.Topic, replacing any other.
func (x *index) set(m *wal.Message) {
	n := &x.root
	for i := 0; i <= len(m.Topic); {
		level, next := topictree.NextLevel(m.Topic, i)
		n = n.ChildOrCreate(level)
		i = next
	}
	d := &n.Val
	if d.msg == nil {
		x.n++
	} else {
		x.bytes -= Size(d.msg)
	}
	x.bytes += Size(m)
	d.msg = m
	switch {
	case d.hi != 0 && m.ExpireAt != 0:
		heap.Fix(&x.expiring, d.hi-1)
	case d.hi != 0:
		heap.Remove(&x.expiring, d.hi-1)
	case m.ExpireAt != 0:
		heap.Push(&x.expiring, n)
	}
}

// clear removes the message retained on topic, pruning the nodes left
// empty, and returns it (nil if there was none).
func (x *index) clear(topic string) *wal.Message {
	m, _ := x.clearBelow(&x.root, topic, 0)
	return m
}

// clearBelow clears the message of the topic whose levels from topic[i:]
// lie below n. It returns the message and whether n is now empty.
func (x *index) clearBelow(n *rnode, topic string, i int) (m *wal.Message, isEmpty bool) {
	if i > len(topic) {
		d := &n.Val
		m = d.msg
		if m != nil {
			if d.hi != 0 {
				heap.Remove(&x.expiring, d.hi-1)
			}
			d.msg = nil
			x.n--
			x.bytes -= Size(m)
		}
		return m, empty(n)
	}
	level, next := topictree.NextLevel(topic, i)
	c := n.Child(level)
	if c == nil {
		return nil, false
	}
	m, cEmpty := x.clearBelow(c, topic, next)
	if cEmpty {
		n.RemoveChild(c)
	}
	return m, empty(n)
}

// get returns the message retained on topic, or nil.
func (x *index) get(topic string) *wal.Message {
	n := &x.root
	for i := 0; i <= len(topic) && n != nil; {
		level, next := topictree.NextLevel(topic, i)
		n = n.Child(level)
		i = next
	}
	if n == nil {
		return nil
	}
	return n.Val.msg
}

// match calls fn for every retained message whose topic matches filter and
// which has not expired at nowMs.
func (x *index) match(filter string, nowMs int64, fn func(*wal.Message)) {
	level, next := topictree.NextLevel(filter, 0)
	if level != "+" && level != "#" {
		match(&x.root, filter, 0, nowMs, fn)
		return
	}
	for c := range x.root.Children() {
		matchFirst(c, level, filter, next, nowMs, fn)
	}
}

// matchFirst matches the first level n of a topic against the first level
// of filter, a wildcard, and goes on below n.
func matchFirst(n *rnode, wildcard, filter string, next int, nowMs int64, fn func(*wal.Message)) {
	if strings.HasPrefix(n.Level, "$") {
		return // [MQTT-4.7.2-1] A leading wildcard does not match '$' topics.
	}
	if wildcard == "#" {
		all(n, nowMs, fn)
		return
	}
	match(n, filter, next, nowMs, fn)
}

// match reports the messages under n matching filter[i:], where n has
// consumed the levels of filter before i; i == len(filter)+1 means every
// level is consumed.
func match(n *rnode, filter string, i int, nowMs int64, fn func(*wal.Message)) {
	if i > len(filter) {
		report(n, nowMs, fn)
		return
	}
	level, next := topictree.NextLevel(filter, i)
	switch level {
	case "#":
		// '#' matches the parent level too: "sport/#" matches "sport"
		// [MQTT-4.7.1-2].
		all(n, nowMs, fn)
	case "+":
		for c := range n.Children() {
			match(c, filter, next, nowMs, fn)
		}
	default:
		if c := n.Child(level); c != nil {
			match(c, filter, next, nowMs, fn)
		}
	}
}

// all reports n's message and every message below n.
func all(n *rnode, nowMs int64, fn func(*wal.Message)) {
	report(n, nowMs, fn)
	for c := range n.Children() {
		all(c, nowMs, fn)
	}
}

func report(n *rnode, nowMs int64, fn func(*wal.Message)) {
	if m := n.Val.msg; m != nil && !expired(m, nowMs) {
		fn(m)
	}
}

// expired reports whether m's Message Expiry deadline has passed at nowMs.
func expired(m *wal.Message, nowMs int64) bool {
	return m.ExpireAt != 0 && m.ExpireAt <= nowMs
}

// nextExpiry returns the earliest ExpireAt of the set.
func (x *index) nextExpiry() (int64, bool) {
	if len(x.expiring) == 0 {
		return 0, false
	}
	return x.expiring[0].Val.msg.ExpireAt, true
}

// popExpired clears every message expired at nowMs, soonest first, and
// calls fn with each.
func (x *index) popExpired(nowMs int64, fn func(*wal.Message)) {
	for len(x.expiring) > 0 && expired(x.expiring[0].Val.msg, nowMs) {
		m := x.expiring[0].Val.msg
		x.clear(m.Topic)
		fn(m)
	}
}

// empty reports whether n has neither a message nor children, so it can be
// pruned.
func empty(n *rnode) bool { return n.Val.msg == nil && !n.HasChildren() }

// expiryHeap orders nodes by their message's ExpireAt (container/heap).
type expiryHeap []*rnode

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].Val.msg.ExpireAt < h[j].Val.msg.ExpireAt }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].Val.hi = i + 1
	h[j].Val.hi = j + 1
}
func (h *expiryHeap) Push(x any) {
	n := x.(*rnode)
	n.Val.hi = len(*h) + 1
	*h = append(*h, n)
}
func (h *expiryHeap) Pop() any {
	old := *h
	n := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	n.Val.hi = 0
	return n
}
