// Package topics is the broker's subscription index: a trie from MQTT topic
// filters to subscribers.
//
// The trie has no locks: a trie that changes is owned by one goroutine (the
// broker's core). Match only reads, so a trie nobody changes any more (an
// ACL's rules, swapped whole on reload) may be matched from many goroutines
// at once.
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

import "github.com/keelmq/keel/retain/topictree"

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

// node is one filter level. Its literal children are the topictree
// node's children; '+' and '#' are kept apart in its data.
type node[K comparable, V any] = topictree.Node[data[K, V]]

type data[K comparable, V any] struct {
	plus *topictree.Node[data[K, V]] // the '+' child
	hash *topictree.Node[data[K, V]] // the '#' child; it never has children

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
		level, next := topictree.NextLevel(filter, i)
		n = childOrCreate(n, level)
		i = next
	}
	d := &n.Val
	if i, ok := find(d, k); ok {
		d.subs[i].v = v
		return true
	}
	if len(d.subs) == 0 {
		d.filter = filter
	}
	d.subs = append(d.subs, entry[K, V]{k, v})
	if d.index != nil {
		d.index[k] = len(d.subs) - 1
	} else if len(d.subs) > maxScan {
		d.index = make(map[K]int, len(d.subs))
		for i, e := range d.subs {
			d.index[e.k] = i
		}
	}
	t.n++
	return false
}

// Remove deletes k's entry for filter and prunes the nodes left empty. It
// reports whether there was such an entry.
func (t *Trie[K, V]) Remove(filter string, k K) (removed bool) {
	removed, _ = remove(&t.root, filter, 0, k)
	if removed {
		t.n--
	}
	return removed
}

// Get returns k's data for filter.
func (t *Trie[K, V]) Get(filter string, k K) (V, bool) {
	if n := t.lookup(filter); n != nil {
		if i, ok := find(&n.Val, k); ok {
			return n.Val.subs[i].v, true
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
		level, next := topictree.NextLevel(topic, 0)
		if c := r.Child(level); c != nil {
			match(c, topic, next, fn)
		}
		return
	}
	match(r, topic, 0, fn)
}

// match reports the entries under n that match topic[i:], where n has
// consumed the levels of topic before i. i == len(topic)+1 means every
// level is consumed (i == len(topic) is a last, empty level: "a/").
func match[K comparable, V any](n *node[K, V], topic string, i int, fn func(string, K, V)) {
	if h := n.Val.hash; h != nil {
		// '#' matches the parent level too: "sport/#" matches "sport".
		report(h, fn)
	}
	if i > len(topic) {
		report(n, fn)
		return
	}
	level, next := topictree.NextLevel(topic, i)
	if c := n.Child(level); c != nil {
		match(c, topic, next, fn)
	}
	if p := n.Val.plus; p != nil {
		match(p, topic, next, fn)
	}
}

func report[K comparable, V any](n *node[K, V], fn func(string, K, V)) {
	for _, e := range n.Val.subs {
		fn(n.Val.filter, e.k, e.v)
	}
}

// lookup returns the node of filter, or nil.
func (t *Trie[K, V]) lookup(filter string) *node[K, V] {
	n := &t.root
	for i := 0; i <= len(filter) && n != nil; {
		level, next := topictree.NextLevel(filter, i)
		n = filterChild(n, level)
		i = next
	}
	return n
}

// filterChild is the child for one level of a filter ("+" and "#" are
// their own children), or nil. Wildcards are never literal children.
func filterChild[K comparable, V any](n *node[K, V], level string) *node[K, V] {
	switch level {
	case "+":
		return n.Val.plus
	case "#":
		return n.Val.hash
	}
	return n.Child(level)
}

func childOrCreate[K comparable, V any](n *node[K, V], level string) *node[K, V] {
	switch level {
	case "+":
		if n.Val.plus == nil {
			n.Val.plus = &node[K, V]{Level: level}
		}
		return n.Val.plus
	case "#":
		if n.Val.hash == nil {
			n.Val.hash = &node[K, V]{Level: level}
		}
		return n.Val.hash
	}
	return n.ChildOrCreate(level)
}

// removeChild unlinks the child c of n.
func removeChild[K comparable, V any](n, c *node[K, V]) {
	switch c {
	case n.Val.plus:
		n.Val.plus = nil
	case n.Val.hash:
		n.Val.hash = nil
	default:
		n.RemoveChild(c)
	}
}

// empty reports whether n has neither entries nor children, so it can be
// pruned.
func empty[K comparable, V any](n *node[K, V]) bool {
	return len(n.Val.subs) == 0 && n.Val.plus == nil && n.Val.hash == nil && !n.HasChildren()
}

// remove removes k's entry for the filter whose levels from filter[i:] lie
// below n. It reports whether it removed one and whether n is now empty.
// i == len(filter)+1 means n is the filter's node.
func remove[K comparable, V any](n *node[K, V], filter string, i int, k K) (removed, isEmpty bool) {
	if i > len(filter) {
		removed = removeEntry(&n.Val, k)
		return removed, empty(n)
	}
	level, next := topictree.NextLevel(filter, i)
	c := filterChild(n, level)
	if c == nil {
		return false, false
	}
	removed, cEmpty := remove(c, filter, next, k)
	if cEmpty {
		removeChild(n, c)
	}
	return removed, empty(n)
}

func find[K comparable, V any](d *data[K, V], k K) (int, bool) {
	if d.index != nil {
		i, ok := d.index[k]
		return i, ok
	}
	for i := range d.subs {
		if d.subs[i].k == k {
			return i, true
		}
	}
	return 0, false
}

func removeEntry[K comparable, V any](d *data[K, V], k K) bool {
	i, ok := find(d, k)
	if !ok {
		return false
	}
	last := len(d.subs) - 1
	if i != last {
		d.subs[i] = d.subs[last]
		if d.index != nil {
			d.index[d.subs[i].k] = i
		}
	}
	d.subs[last] = entry[K, V]{} // drop references to k and v
	d.subs = d.subs[:last]
	if d.index != nil {
		delete(d.index, k)
		if len(d.subs) <= maxScan/2 {
			d.index = nil
		}
	}
	if len(d.subs) == 0 {
		d.subs = nil
		d.filter = ""
	}
	return true
}
