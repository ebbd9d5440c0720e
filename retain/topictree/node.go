// Package topictree is the node of a tree with one node per MQTT topic
// level, and the level splitting both of Keel's topic trees share: the
// subscription trie (engine/topics: stored filters, matched by a topic) and
// the retained index (retain: stored topics, matched by a filter). Each
// tree puts its own data in Node.Val and its own matching on top; what is
// here is only the children of a node and how they are found, created and
// pruned.
//
// Why under retain: the code is about MQTT's topic namespace, which belongs
// with the engine, but retain may import nothing of ours but wal
// (DESIGN.md: cmd -> listener, engine -> sessions, retain -> wal), so
// engine/topics cannot host it. Of the homes both can import (wal/...,
// retain/...), retain is the lowest package whose subject is topics; wal
// sees topics only as key bytes. It imports nothing of ours, so the arrows
// hold for every importer.
//
// A Node has no locks: each tree's owner serializes access to it.
package topictree

import (
	"iter"
	"strings"
)

// maxList is the number of children kept in a slice and searched linearly;
// past it they move to a map. Most nodes of a real topic tree have one child
// (a device id under "devices", a fixed "state" under it), and a slice of
// one costs far less than a map. 16, not 8: a device's own subtree often
// has a dozen (its command and configuration topics), and a map of 16
// costs some 900 bytes where a slice costs 128 (bench conns, persistent
// sessions with 10 subscriptions each).
const maxList = 16

// Node is one topic level of a tree; the root's Level is "". Val is the
// tree's own data at this level. The zero value is a node with no children.
type Node[T any] struct {
	Level string
	Val   T

	// Children: in list while there are at most maxList of them, then in
	// byLevel (and list is nil). Exactly one of the two is used.
	list    []*Node[T]
	byLevel map[string]*Node[T]
}

// NextLevel returns the level of s starting at i and the start of the
// level after it, which is len(s)+1 when the level is the last. Levels are
// separated by '/', and empty levels are levels ("a//b" has three).
//
// REQUIRES: 0 <= i <= len(s).
func NextLevel(s string, i int) (level string, next int) {
	if j := strings.IndexByte(s[i:], '/'); j >= 0 {
		return s[i : i+j], i + j + 1
	}
	return s[i:], len(s) + 1
}

// Child returns the child of n for level, or nil. Level strings are
// compared verbatim: a wildcard is a child only if a tree stores it as one.
func (n *Node[T]) Child(level string) *Node[T] {
	if n.byLevel != nil {
		return n.byLevel[level]
	}
	for _, c := range n.list {
		if c.Level == level {
			return c
		}
	}
	return nil
}

// ChildOrCreate returns the child of n for level, adding an empty one if
// there is none.
func (n *Node[T]) ChildOrCreate(level string) *Node[T] {
	if c := n.Child(level); c != nil {
		return c
	}
	c := &Node[T]{Level: level}
	switch {
	case n.byLevel != nil:
		n.byLevel[level] = c
	case len(n.list) < maxList:
		n.list = append(n.list, c)
	default:
		n.byLevel = make(map[string]*Node[T], 2*maxList)
		for _, o := range n.list {
			n.byLevel[o.Level] = o
		}
		n.byLevel[level] = c
		n.list = nil
	}
	return c
}

// RemoveChild unlinks the child c of n (a tree prunes a child once it holds
// nothing). A map of children never shrinks back to a list: a node that
// once had many children is likely to have many again.
//
// REQUIRES: c is a child of n.
func (n *Node[T]) RemoveChild(c *Node[T]) {
	if n.byLevel != nil {
		delete(n.byLevel, c.Level)
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

// HasChildren reports whether n has any child.
func (n *Node[T]) HasChildren() bool { return len(n.list) > 0 || len(n.byLevel) > 0 }

// Children yields every child of n, in no particular order. The yield
// function must not add or remove children of n.
func (n *Node[T]) Children() iter.Seq[*Node[T]] {
	return func(yield func(*Node[T]) bool) {
		for _, c := range n.list {
			if !yield(c) {
				return
			}
		}
		for _, c := range n.byLevel {
			if !yield(c) {
				return
			}
		}
	}
}
