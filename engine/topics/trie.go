// Package topics is the broker's subscription index: a trie from MQTT topic
// filters to subscribers.
//
// The trie is owned by the routing goroutine; it has no locks and must not
// be used from two goroutines at once.
//
// Each node is one filter level. A node's literal children are kept apart
// from its '+' and '#' children, so matching a topic costs one lookup per
// level plus one step into each wildcard branch that exists:
//
//	root
//	├── "sport" ─┬── "tennis" ── "player1"   sport/tennis/player1
//	│            ├── '+' ─────── "score"     sport/+/score
//	│            └── '#'                     sport/#
//	├── '+' ─── "status"                     +/status
//	└── '#'                                  #
//
// A node holds the entries of exactly one filter (the path from the root),
// so a topic reaches it at most once and each (filter, k) is reported at
// most once per Match, however many filters overlap.
package topics

import "strings"

// maxList is the number of literal children kept in a slice and searched
// linearly; past it they move to a map. Most nodes of a real subscription
// set have one child (a device id under "devices", a fixed "state" under
// it), and a slice of one costs far less than a map.
const maxList = 8

// maxScan is the number of entries of one node found by a linear search;
// past it the node keeps an index from subscriber to position.
const maxScan = 16

// Trie maps topic filters to subscribers. K identifies a subscriber, V is
// its subscription data. There is at most one entry per (filter, k).
//
// The zero value is not usable; call New.
type Trie[K comparable, V any] struct {
	root node[K, V]
	n    int
}

type node[K comparable, V any] struct {
	level string // this node's filter level; "" for the root

	// Literal children: in list while there are at most maxList of them,
	// then in byLevel (and list is nil). Exactly one of the two is used.
	list    []*node[K, V]
	byLevel map[string]*node[K, V]

	plus *node[K, V] // the '+' child
	hash *node[K, V] // the '#' child; it never has children

	filter string // the stored filter of subs; set while len(subs) > 0
	subs   []entry[K, V]
	index  map[K]int // k -> position in subs; nil while len(subs) <= maxScan
}

type entry[K comparable, V any] struct {
	k K
	v V
}

// New returns an empty trie.
func New[K comparable, V any]() *Trie[K, V] { return &Trie[K, V]{} }

// Len is the number of (filter, k) entries.
func (t *Trie[K, V]) Len() int { return t.n }

// Add subscribes k to filter with data v. If k already had an entry for
// filter, its data is replaced by v and Add reports replaced = true.
//
// REQUIRES: filter is a valid MQTT topic filter. It is stored verbatim: a
// shared subscription's "$share/group/" prefix must already be stripped.
func (t *Trie[K, V]) Add(filter string, k K, v V) (replaced bool) {
	n := &t.root
	for i := 0; i <= len(filter); {
		level, next := nextLevel(filter, i)
		n = n.childOrCreate(level)
		i = next
	}
	if i, ok := n.find(k); ok {
		n.subs[i].v = v
		return true
	}
	if len(n.subs) == 0 {
		n.filter = filter
	}
	n.subs = append(n.subs, entry[K, V]{k, v})
	if n.index != nil {
		n.index[k] = len(n.subs) - 1
	} else if len(n.subs) > maxScan {
		n.index = make(map[K]int, len(n.subs))
		for i, e := range n.subs {
			n.index[e.k] = i
		}
	}
	t.n++
	return false
}

// Remove deletes k's entry for filter and prunes the nodes left empty. It
// reports whether there was such an entry.
func (t *Trie[K, V]) Remove(filter string, k K) (removed bool) {
	removed, _ = t.root.remove(filter, 0, k)
	if removed {
		t.n--
	}
	return removed
}

// Get returns k's data for filter.
func (t *Trie[K, V]) Get(filter string, k K) (V, bool) {
	if n := t.lookup(filter); n != nil {
		if i, ok := n.find(k); ok {
			return n.subs[i].v, true
		}
	}
	var zero V
	return zero, false
}

// Match calls fn once for every (filter, k) whose filter matches topic,
// passing the filter as it was given to Add. The order is unspecified. fn
// must not modify the trie.
//
// Rules: levels are separated by '/', and empty levels are levels ("a//b"
// has three); '+' matches exactly one level, which may be empty; '#'
// matches its parent level and any number of levels below it ("sport/#"
// matches "sport") [MQTT-4.7.1-2]; a topic that begins with '$' is not
// matched by a filter whose first level is '+' or '#' [MQTT-4.7.2-1].
//
// REQUIRES: topic is a valid topic name (no wildcards).
func (t *Trie[K, V]) Match(topic string, fn func(filter string, k K, v V)) {
	r := &t.root
	if len(topic) > 0 && topic[0] == '$' {
		// [MQTT-4.7.2-1] Only literal first levels can match.
		level, next := nextLevel(topic, 0)
		if c := r.child(level); c != nil {
			c.match(topic, next, fn)
		}
		return
	}
	r.match(topic, 0, fn)
}

// match reports the entries under n that match topic[i:], where n has
// consumed the levels of topic before i. i == len(topic)+1 means every
// level is consumed (i == len(topic) is a last, empty level: "a/").
func (n *node[K, V]) match(topic string, i int, fn func(string, K, V)) {
	if h := n.hash; h != nil {
		// '#' matches the parent level too: "sport/#" matches "sport".
		h.report(fn)
	}
	if i > len(topic) {
		n.report(fn)
		return
	}
	level, next := nextLevel(topic, i)
	if c := n.child(level); c != nil {
		c.match(topic, next, fn)
	}
	if p := n.plus; p != nil {
		p.match(topic, next, fn)
	}
}

func (n *node[K, V]) report(fn func(string, K, V)) {
	for _, e := range n.subs {
		fn(n.filter, e.k, e.v)
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

// lookup returns the node of filter, or nil.
func (t *Trie[K, V]) lookup(filter string) *node[K, V] {
	n := &t.root
	for i := 0; i <= len(filter) && n != nil; {
		level, next := nextLevel(filter, i)
		n = n.filterChild(level)
		i = next
	}
	return n
}

// child returns the literal child of n for level, or nil. Wildcard levels
// are not literal children: "+" finds nothing here.
func (n *node[K, V]) child(level string) *node[K, V] {
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

// filterChild is the child for one level of a filter ("+" and "#" are
// their own children), or nil.
func (n *node[K, V]) filterChild(level string) *node[K, V] {
	switch level {
	case "+":
		return n.plus
	case "#":
		return n.hash
	}
	return n.child(level)
}

func (n *node[K, V]) childOrCreate(level string) *node[K, V] {
	switch level {
	case "+":
		if n.plus == nil {
			n.plus = &node[K, V]{level: level}
		}
		return n.plus
	case "#":
		if n.hash == nil {
			n.hash = &node[K, V]{level: level}
		}
		return n.hash
	}
	if c := n.child(level); c != nil {
		return c
	}
	c := &node[K, V]{level: level}
	switch {
	case n.byLevel != nil:
		n.byLevel[level] = c
	case len(n.list) < maxList:
		n.list = append(n.list, c)
	default:
		n.byLevel = make(map[string]*node[K, V], 2*maxList)
		for _, o := range n.list {
			n.byLevel[o.level] = o
		}
		n.byLevel[level] = c
		n.list = nil
	}
	return c
}

// removeChild unlinks the child c of n.
func (n *node[K, V]) removeChild(c *node[K, V]) {
	switch {
	case c == n.plus:
		n.plus = nil
	case c == n.hash:
		n.hash = nil
	case n.byLevel != nil:
		delete(n.byLevel, c.level)
		// A map never shrinks back to a list: a node that once had many
		// children is likely to have many again.
	default:
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
}

// empty reports whether n has neither entries nor children, so it can be
// pruned.
func (n *node[K, V]) empty() bool {
	return len(n.subs) == 0 && n.plus == nil && n.hash == nil &&
		len(n.list) == 0 && len(n.byLevel) == 0
}

// remove removes k's entry for the filter whose levels from filter[i:] lie
// below n. It reports whether it removed one and whether n is now empty.
// i == len(filter)+1 means n is the filter's node.
func (n *node[K, V]) remove(filter string, i int, k K) (removed, empty bool) {
	if i > len(filter) {
		removed = n.removeEntry(k)
		return removed, n.empty()
	}
	level, next := nextLevel(filter, i)
	c := n.filterChild(level)
	if c == nil {
		return false, false
	}
	removed, cEmpty := c.remove(filter, next, k)
	if cEmpty {
		n.removeChild(c)
	}
	return removed, n.empty()
}

func (n *node[K, V]) find(k K) (int, bool) {
	if n.index != nil {
		i, ok := n.index[k]
		return i, ok
	}
	for i := range n.subs {
		if n.subs[i].k == k {
			return i, true
		}
	}
	return 0, false
}

func (n *node[K, V]) removeEntry(k K) bool {
	i, ok := n.find(k)
	if !ok {
		return false
	}
	last := len(n.subs) - 1
	if i != last {
		n.subs[i] = n.subs[last]
		if n.index != nil {
			n.index[n.subs[i].k] = i
		}
	}
	n.subs[last] = entry[K, V]{} // drop references to k and v
	n.subs = n.subs[:last]
	if n.index != nil {
		delete(n.index, k)
		if len(n.subs) <= maxScan/2 {
			n.index = nil
		}
	}
	if len(n.subs) == 0 {
		n.subs = nil
		n.filter = ""
	}
	return true
}
