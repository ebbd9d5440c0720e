package retain

import (
	"container/heap"
	"strings"

	"github.com/keelmq/keel/wal"
)

// maxList is the number of children of a node kept in a slice and searched
// linearly; past it they move to a map.
const maxList = 8

// index is the retained set in memory: a tree with one node per topic
// level, holding at each node the message retained on the topic that ends
// there, and a heap of the nodes whose message expires, soonest first.
//
// A filter walks only the branches it can match: a literal level is one
// lookup, '+' visits each child, '#' visits the subtree.
type index struct {
	root     rnode // not a level: its children are the first levels
	n        int   // nodes with a message
	expiring expiryHeap
}

type rnode struct {
	level string

	// Children: in list while there are at most maxList of them, then in
	// byLevel (and list is nil).
	list    []*rnode
	byLevel map[string]*rnode

	msg *wal.Message // the message retained on this topic; nil if none

	// hi is 1 + this node's position in index.expiring, or 0 when it is
	// not there. A node is in the heap iff msg != nil && msg.ExpireAt != 0.
	hi int
}

// set makes m the retained message of m.Topic, replacing any other.
func (x *index) set(m *wal.Message) {
	n := &x.root
	for i := 0; i <= len(m.Topic); {
		level, next := nextLevel(m.Topic, i)
		n = n.childOrCreate(level)
		i = next
	}
	if n.msg == nil {
		x.n++
	}
	n.msg = m
	switch {
	case n.hi != 0 && m.ExpireAt != 0:
		heap.Fix(&x.expiring, n.hi-1)
	case n.hi != 0:
		heap.Remove(&x.expiring, n.hi-1)
	case m.ExpireAt != 0:
		heap.Push(&x.expiring, n)
	}
}

// clear removes the message retained on topic, pruning the nodes left
// empty, and returns it (nil if there was none).
func (x *index) clear(topic string) *wal.Message {
	m, _ := x.root.clear(x, topic, 0)
	return m
}

func (n *rnode) clear(x *index, topic string, i int) (m *wal.Message, empty bool) {
	if i > len(topic) {
		m = n.msg
		if m != nil {
			if n.hi != 0 {
				heap.Remove(&x.expiring, n.hi-1)
			}
			n.msg = nil
			x.n--
		}
		return m, n.empty()
	}
	level, next := nextLevel(topic, i)
	c := n.child(level)
	if c == nil {
		return nil, false
	}
	m, cEmpty := c.clear(x, topic, next)
	if cEmpty {
		n.removeChild(c)
	}
	return m, n.empty()
}

// get returns the message retained on topic, or nil.
func (x *index) get(topic string) *wal.Message {
	n := &x.root
	for i := 0; i <= len(topic) && n != nil; {
		level, next := nextLevel(topic, i)
		n = n.child(level)
		i = next
	}
	if n == nil {
		return nil
	}
	return n.msg
}

// match calls fn for every retained message whose topic matches filter and
// which has not expired at nowMs.
func (x *index) match(filter string, nowMs int64, fn func(*wal.Message)) {
	level, next := nextLevel(filter, 0)
	if level != "+" && level != "#" {
		x.root.match(filter, 0, nowMs, fn)
		return
	}
	for _, c := range x.root.list {
		c.matchFirst(level, filter, next, nowMs, fn)
	}
	for _, c := range x.root.byLevel {
		c.matchFirst(level, filter, next, nowMs, fn)
	}
}

// matchFirst matches the first level n of a topic against the first level
// of filter, a wildcard, and goes on below n.
func (n *rnode) matchFirst(wildcard, filter string, next int, nowMs int64, fn func(*wal.Message)) {
	if strings.HasPrefix(n.level, "$") {
		return // [MQTT-4.7.2-1] A leading wildcard does not match '$' topics.
	}
	if wildcard == "#" {
		n.all(nowMs, fn)
		return
	}
	n.match(filter, next, nowMs, fn)
}

// match reports the messages under n matching filter[i:], where n has
// consumed the levels of filter before i; i == len(filter)+1 means every
// level is consumed.
func (n *rnode) match(filter string, i int, nowMs int64, fn func(*wal.Message)) {
	if i > len(filter) {
		n.report(nowMs, fn)
		return
	}
	level, next := nextLevel(filter, i)
	switch level {
	case "#":
		// '#' matches the parent level too: "sport/#" matches "sport"
		// [MQTT-4.7.1-2].
		n.all(nowMs, fn)
	case "+":
		for _, c := range n.list {
			c.match(filter, next, nowMs, fn)
		}
		for _, c := range n.byLevel {
			c.match(filter, next, nowMs, fn)
		}
	default:
		if c := n.child(level); c != nil {
			c.match(filter, next, nowMs, fn)
		}
	}
}

// all reports n's message and every message below n.
func (n *rnode) all(nowMs int64, fn func(*wal.Message)) {
	n.report(nowMs, fn)
	for _, c := range n.list {
		c.all(nowMs, fn)
	}
	for _, c := range n.byLevel {
		c.all(nowMs, fn)
	}
}

func (n *rnode) report(nowMs int64, fn func(*wal.Message)) {
	if m := n.msg; m != nil && !expired(m, nowMs) {
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
	return x.expiring[0].msg.ExpireAt, true
}

// popExpired clears every message expired at nowMs, soonest first, and
// calls fn with each.
func (x *index) popExpired(nowMs int64, fn func(*wal.Message)) {
	for len(x.expiring) > 0 && expired(x.expiring[0].msg, nowMs) {
		m := x.expiring[0].msg
		x.clear(m.Topic)
		fn(m)
	}
}

// nextLevel returns the level of s starting at i and the start of the
// level after it, which is len(s)+1 when the level is the last.
//
// REQUIRES: 0 <= i <= len(s).
func nextLevel(s string, i int) (level string, next int) {
	if j := strings.IndexByte(s[i:], '/'); j >= 0 {
		return s[i : i+j], i + j + 1
	}
	return s[i:], len(s) + 1
}

func (n *rnode) child(level string) *rnode {
	if n.byLevel != nil {
		return n.byLevel[level]
	}
	for _, c := range n.list {
		if c.level == level {
			return c
		}
	}
	return nil
}

func (n *rnode) childOrCreate(level string) *rnode {
	if c := n.child(level); c != nil {
		return c
	}
	c := &rnode{level: level}
	switch {
	case n.byLevel != nil:
		n.byLevel[level] = c
	case len(n.list) < maxList:
		n.list = append(n.list, c)
	default:
		n.byLevel = make(map[string]*rnode, 2*maxList)
		for _, o := range n.list {
			n.byLevel[o.level] = o
		}
		n.byLevel[level] = c
		n.list = nil
	}
	return c
}

func (n *rnode) removeChild(c *rnode) {
	if n.byLevel != nil {
		delete(n.byLevel, c.level)
		return
	}
	for i, o := range n.list {
		if o == c {
			last := len(n.list) - 1
			n.list[i] = n.list[last]
			n.list[last] = nil
			n.list = n.list[:last]
			if last == 0 {
				n.list = nil
			}
			return
		}
	}
}

func (n *rnode) empty() bool {
	return n.msg == nil && len(n.list) == 0 && len(n.byLevel) == 0
}

// expiryHeap orders nodes by their message's ExpireAt (container/heap).
type expiryHeap []*rnode

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].msg.ExpireAt < h[j].msg.ExpireAt }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hi = i + 1
	h[j].hi = j + 1
}
func (h *expiryHeap) Push(x any) {
	n := x.(*rnode)
	n.hi = len(*h) + 1
	*h = append(*h, n)
}
func (h *expiryHeap) Pop() any {
	old := *h
	n := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	n.hi = 0
	return n
}
