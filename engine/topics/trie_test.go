package topics

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// matched runs Match and returns the reported "filter k" pairs, sorted.
func matched[V any](t *Trie[string, V], topic string) []string {
	var got []string
	t.Match(topic, func(filter, k string, _ V) { got = append(got, filter+" "+k) })
	slices.Sort(got)
	return got
}

func TestMatch(t *testing.T) {
	filters := []string{
		"#",
		"+",
		"+/+",
		"+/+/#",
		"/+",
		"+/",
		"sport/#",
		"sport/+",
		"sport/tennis/player1",
		"sport/tennis/+",
		"sport/+/player1",
		"a//b",
		"a/+/b",
		"a/#",
		"$SYS/#",
		"$SYS/+",
		"$SYS",
		"+/$x",
		"$",
	}
	tr := New[string, int]()
	for i, f := range filters {
		tr.Add(f, "c", i)
	}
	tests := []struct {
		topic string
		want  []string
	}{
		{"sport", []string{"#", "+", "sport/#"}},
		// '#' matches the parent level [MQTT-4.7.1-2]; '+' matches the empty level.
		{"sport/", []string{"#", "+/", "+/+", "+/+/#", "sport/#", "sport/+"}},
		{"sport/tennis", []string{"#", "+/+", "+/+/#", "sport/#", "sport/+"}},
		{"sport/tennis/player1", []string{"#", "+/+/#", "sport/#", "sport/+/player1", "sport/tennis/+", "sport/tennis/player1"}},
		{"sport/tennis/player2", []string{"#", "+/+/#", "sport/#", "sport/tennis/+"}},
		{"sport/tennis/player1/ranking", []string{"#", "+/+/#", "sport/#"}},
		{"sports", []string{"#", "+"}},
		{"/", []string{"#", "+/", "+/+", "+/+/#", "/+"}},
		{"/finance", []string{"#", "+/+", "+/+/#", "/+"}},
		{"//", []string{"#", "+/+/#"}},
		// Empty levels are levels.
		{"a//b", []string{"#", "+/+/#", "a/#", "a//b", "a/+/b"}},
		{"a/b", []string{"#", "+/+", "+/+/#", "a/#"}},
		{"a", []string{"#", "+", "a/#"}},
		// [MQTT-4.7.2-1] '$' topics are not matched by a leading wildcard.
		{"$SYS", []string{"$SYS", "$SYS/#"}},
		{"$SYS/broker/uptime", []string{"$SYS/#"}},
		{"$SYS/uptime", []string{"$SYS/#", "$SYS/+"}},
		{"$", []string{"$"}},
		{"$other/x", nil},
		// The rule is about the topic's first character only.
		{"b/$x", []string{"#", "+/$x", "+/+", "+/+/#"}},
		{"x$/y", []string{"#", "+/+", "+/+/#"}},
	}
	for _, tt := range tests {
		t.Run(tt.topic, func(t *testing.T) {
			var want []string
			for _, f := range tt.want {
				want = append(want, f+" c")
			}
			slices.Sort(want)
			if got := matched(tr, tt.topic); !slices.Equal(got, want) {
				t.Errorf("Match(%q) = %q, want %q", tt.topic, got, want)
			}
		})
	}
}

func TestMatchOverlapping(t *testing.T) {
	tr := New[string, int]()
	// Two subscribers on overlapping filters, and two on the same filter:
	// each (filter, k) is reported exactly once.
	for _, f := range []string{"a/b", "a/+", "a/#", "#", "+/b"} {
		tr.Add(f, "x", 1)
		tr.Add(f, "y", 2)
	}
	got := matched(tr, "a/b")
	want := []string{"# x", "# y", "+/b x", "+/b y", "a/# x", "a/# y", "a/+ x", "a/+ y", "a/b x", "a/b y"}
	if !slices.Equal(got, want) {
		t.Errorf("Match = %q, want %q", got, want)
	}
}

func TestMatchValue(t *testing.T) {
	tr := New[int, string]()
	tr.Add("a/+", 1, "one")
	tr.Add("a/+", 2, "two")
	got := map[int]string{}
	tr.Match("a/b", func(filter string, k int, v string) {
		if filter != "a/+" {
			t.Errorf("filter = %q, want %q", filter, "a/+")
		}
		got[k] = v
	})
	if len(got) != 2 || got[1] != "one" || got[2] != "two" {
		t.Errorf("got %v, want map[1:one 2:two]", got)
	}
}

func TestAddGetRemove(t *testing.T) {
	tr := New[string, int]()
	if tr.Add("a/+/c", "k", 1) {
		t.Fatal("first Add: replaced = true, want false")
	}
	if !tr.Add("a/+/c", "k", 2) {
		t.Fatal("second Add: replaced = false, want true")
	}
	if got := tr.Len(); got != 1 {
		t.Fatalf("Len = %d, want 1", got)
	}
	if v, ok := tr.Get("a/+/c", "k"); !ok || v != 2 {
		t.Fatalf("Get = %d, %t, want 2, true", v, ok)
	}
	// Get and Remove take the filter literally.
	for _, f := range []string{"a/b/c", "a/+", "a/+/c/d", "a/#", "a/+/c/"} {
		if _, ok := tr.Get(f, "k"); ok {
			t.Errorf("Get(%q) found an entry", f)
		}
		if tr.Remove(f, "k") {
			t.Errorf("Remove(%q) = true, want false", f)
		}
	}
	tr.Add("a/+/c", "j", 3)
	tr.Add("a/#", "k", 4)
	if got := tr.Len(); got != 3 {
		t.Fatalf("Len = %d, want 3", got)
	}
	if !tr.Remove("a/+/c", "k") {
		t.Fatal("Remove = false, want true")
	}
	if tr.Remove("a/+/c", "k") {
		t.Fatal("second Remove = true, want false")
	}
	if v, ok := tr.Get("a/+/c", "j"); !ok || v != 3 {
		t.Fatalf("Get(j) = %d, %t, want 3, true", v, ok)
	}
	tr.Remove("a/+/c", "j")
	tr.Remove("a/#", "k")
	if got := tr.Len(); got != 0 {
		t.Fatalf("Len = %d, want 0", got)
	}
	if !empty(&tr.root) {
		t.Fatal("root not pruned after removing every entry")
	}
}

func TestPrune(t *testing.T) {
	tr := New[string, int]()
	tr.Add("a/b/c/d", "k", 1)
	tr.Add("a/b", "k", 1)
	tr.Remove("a/b/c/d", "k")
	// "a/b" stays, everything below it goes.
	b := tr.lookup("a/b")
	if b == nil {
		t.Fatal("a/b pruned while it has an entry")
	}
	if !(b.Val.plus == nil && b.Val.hash == nil && !b.HasChildren()) {
		t.Fatal("a/b kept its empty children")
	}
	tr.Remove("a/b", "k")
	if !empty(&tr.root) {
		t.Fatal("root not pruned")
	}
}

// TestManyChildrenAndEntries crosses the list-to-map and scan-to-index
// thresholds in both directions.
func TestManyChildrenAndEntries(t *testing.T) {
	tr := New[int, int]()
	const n = 100
	for i := range n {
		tr.Add(fmt.Sprintf("a/%d", i), i, i)
		tr.Add("a/+", i, i)
	}
	if got := tr.Len(); got != 2*n {
		t.Fatalf("Len = %d, want %d", got, 2*n)
	}
	for i := range n {
		count := 0
		tr.Match(fmt.Sprintf("a/%d", i), func(f string, k, v int) {
			count++
			if f == "a/+" || k == i {
				return
			}
			t.Errorf("topic a/%d: got (%q, %d)", i, f, k)
		})
		if count != n+1 {
			t.Fatalf("topic a/%d: %d matches, want %d", i, count, n+1)
		}
	}
	for i := range n {
		if !tr.Remove(fmt.Sprintf("a/%d", i), i) || !tr.Remove("a/+", i) {
			t.Fatalf("Remove %d failed", i)
		}
		for j := i + 1; j < n; j++ {
			if _, ok := tr.Get("a/+", j); !ok {
				t.Fatalf("after removing %d: Get(a/+, %d) not found", i, j)
			}
		}
	}
	if tr.Len() != 0 || !empty(&tr.root) {
		t.Fatalf("Len = %d, root empty = %t after removing all", tr.Len(), empty(&tr.root))
	}
}

// matches is the reference: MQTT matching by splitting, as the spec reads.
func matches(filter, topic string) bool {
	if topic != "" && topic[0] == '$' && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	fl, tl := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, f := range fl {
		if f == "#" {
			return true
		}
		if i >= len(tl) || (f != "+" && f != tl[i]) {
			return false
		}
	}
	return len(fl) == len(tl)
}

// TestRandom compares the trie with the reference matcher and a map, over
// random adds and removes of filters and topics from a small alphabet (so
// that they collide).
func TestRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	levels := []string{"", "a", "b", "$s"}
	var gen func(wild bool) string
	gen = func(wild bool) string {
		n := 1 + r.IntN(4)
		var sb strings.Builder
		for i := range n {
			if i > 0 {
				sb.WriteByte('/')
			}
			switch x := r.IntN(10); {
			case wild && x == 0 && i == n-1:
				sb.WriteString("#")
			case wild && x <= 2:
				sb.WriteString("+")
			default:
				l := levels[r.IntN(len(levels))]
				if l == "$s" && i > 0 && r.IntN(2) == 0 {
					l = "s"
				}
				sb.WriteString(l)
			}
		}
		if sb.Len() == 0 {
			return gen(wild) // topics and filters are at least one character
		}
		return sb.String()
	}
	type key struct {
		filter string
		k      int
	}
	tr := New[int, int]()
	model := map[key]int{}
	for step := range 20000 {
		f, k := gen(true), r.IntN(3)
		if r.IntN(3) == 0 {
			_, had := model[key{f, k}]
			if got := tr.Remove(f, k); got != had {
				t.Fatalf("step %d: Remove(%q, %d) = %t, want %t", step, f, k, got, had)
			}
			delete(model, key{f, k})
		} else {
			_, had := model[key{f, k}]
			if got := tr.Add(f, k, step); got != had {
				t.Fatalf("step %d: Add(%q, %d) = %t, want %t", step, f, k, got, had)
			}
			model[key{f, k}] = step
		}
		if tr.Len() != len(model) {
			t.Fatalf("step %d: Len = %d, want %d", step, tr.Len(), len(model))
		}
		if step%10 != 0 {
			continue
		}
		topic := gen(false)
		got := map[key]int{}
		tr.Match(topic, func(f string, k, v int) {
			if _, dup := got[key{f, k}]; dup {
				t.Fatalf("step %d: Match(%q) reported (%q, %d) twice", step, topic, f, k)
			}
			got[key{f, k}] = v
		})
		for kk, v := range model {
			gv, ok := got[kk]
			if want := matches(kk.filter, topic); ok != want {
				t.Fatalf("step %d: Match(%q) reported (%q, %d) = %t, want %t", step, topic, kk.filter, kk.k, ok, want)
			}
			if ok && gv != v {
				t.Fatalf("step %d: Match(%q) value %d, want %d", step, topic, gv, v)
			}
		}
		if len(got) > len(model) {
			t.Fatalf("step %d: Match(%q) reported entries not in the trie", step, topic)
		}
	}
	for kk := range model {
		if !tr.Remove(kk.filter, kk.k) {
			t.Fatalf("Remove(%q, %d) = false", kk.filter, kk.k)
		}
	}
	if tr.Len() != 0 || !empty(&tr.root) {
		t.Fatalf("Len = %d, root empty = %t after removing all", tr.Len(), empty(&tr.root))
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	tr := New[int, int]()
	for i := range 100 {
		tr.Add(fmt.Sprintf("devices/%d/+/state", i), i, i)
		tr.Add(fmt.Sprintf("devices/%d/#", i), i, i)
	}
	for i := range 20 {
		tr.Add("devices/+/+/state", i, i)
	}
	n := 0
	fn := func(string, int, int) { n++ }
	allocs := testing.AllocsPerRun(100, func() { tr.Match("devices/42/temp/state", fn) })
	if allocs != 0 {
		t.Errorf("Match allocates %v times per call, want 0", allocs)
	}
}
