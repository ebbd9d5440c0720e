package topictree

import (
	"fmt"
	"slices"
	"testing"
)

func TestNextLevel(t *testing.T) {
	for _, c := range []struct {
		s     string
		i     int
		level string
		next  int
	}{
		{"a/b", 0, "a", 2},
		{"a/b", 2, "b", 4},
		{"a//b", 2, "", 3},
		{"a/", 2, "", 3},
		{"", 0, "", 1},
	} {
		if level, next := NextLevel(c.s, c.i); level != c.level || next != c.next {
			t.Errorf("NextLevel(%q, %d) = %q, %d, want %q, %d", c.s, c.i, level, next, c.level, c.next)
		}
	}
}

// TestChildren crosses the list-to-map threshold and prunes back to none.
func TestChildren(t *testing.T) {
	var root Node[int]
	const n = 3 * maxList
	for i := range n {
		c := root.ChildOrCreate(fmt.Sprint(i))
		c.Val = i
		if again := root.ChildOrCreate(fmt.Sprint(i)); again != c {
			t.Fatalf("ChildOrCreate(%d) made a second child", i)
		}
		if i == maxList && root.byLevel == nil {
			t.Fatalf("%d children kept in a list, want a map past %d", i+1, maxList)
		}
	}
	var got []int
	for c := range root.Children() {
		got = append(got, c.Val)
	}
	slices.Sort(got)
	var want []int
	for i := range n {
		want = append(want, i)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Children = %v, want %v", got, want)
	}
	for i := range n {
		c := root.Child(fmt.Sprint(i))
		if c == nil || c.Val != i || c.Level != fmt.Sprint(i) {
			t.Fatalf("Child(%d) = %+v", i, c)
		}
		root.RemoveChild(c)
		if root.Child(fmt.Sprint(i)) != nil {
			t.Fatalf("Child(%d) still there after RemoveChild", i)
		}
	}
	if root.HasChildren() {
		t.Fatal("HasChildren after removing every child")
	}
}

func TestRemoveFromList(t *testing.T) {
	var root Node[int]
	a, b := root.ChildOrCreate("a"), root.ChildOrCreate("b")
	root.RemoveChild(a)
	if root.Child("a") != nil || root.Child("b") != b || !root.HasChildren() {
		t.Fatal("removing a disturbed b")
	}
	root.RemoveChild(b)
	if root.HasChildren() || root.list != nil {
		t.Fatal("list not released after the last child")
	}
}
