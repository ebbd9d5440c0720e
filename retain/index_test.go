package retain

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/keelmq/keel/wal"
)

func indexTopics(x *index, filter string, nowMs int64) []string {
	var got []string
	x.match(filter, nowMs, func(m *wal.Message) { got = append(got, m.Topic) })
	slices.Sort(got)
	return got
}

var matchTopics = []string{
	"sport",
	"sport/",
	"sport/tennis",
	"sport/tennis/player1",
	"sport/tennis/player1/ranking",
	"sport/tennis/player2",
	"sports",
	"/",
	"/finance",
	"//",
	"a//b",
	"a/b",
	"a/x/b",
	"$SYS",
	"$SYS/broker/uptime",
	"$SYS/uptime",
	"b/$x",
}

// matchTests is shared by the index and Store tests.
var matchTests = []struct {
	filter string
	want   []string
}{
	{"sport/tennis/player1", []string{"sport/tennis/player1"}},
	{"sport/tennis/+", []string{"sport/tennis/player1", "sport/tennis/player2"}},
	// '#' matches the parent level [MQTT-4.7.1-2].
	{"sport/#", []string{"sport", "sport/", "sport/tennis", "sport/tennis/player1", "sport/tennis/player1/ranking", "sport/tennis/player2"}},
	{"sport/tennis/player1/#", []string{"sport/tennis/player1", "sport/tennis/player1/ranking"}},
	// '+' matches an empty level, and only one level.
	{"sport/+", []string{"sport/", "sport/tennis"}},
	{"+", []string{"sport", "sports"}},
	{"+/+", []string{"/", "/finance", "a/b", "b/$x", "sport/", "sport/tennis"}},
	{"/+", []string{"/", "/finance"}},
	{"+/", []string{"/", "sport/"}},
	{"a//b", []string{"a//b"}},
	{"a/+/b", []string{"a//b", "a/x/b"}},
	{"a/b", []string{"a/b"}},
	{"a/b/#", []string{"a/b"}},
	{"nothing/here", nil},
	{"sport/nothing/#", nil},
	// [MQTT-4.7.2-1] A leading wildcard does not match '$' topics.
	{"#", []string{"/", "//", "/finance", "a//b", "a/b", "a/x/b", "b/$x", "sport", "sport/", "sport/tennis", "sport/tennis/player1", "sport/tennis/player1/ranking", "sport/tennis/player2", "sports"}},
	{"+/uptime", nil},
	{"+/+/uptime", nil},
	{"$SYS/#", []string{"$SYS", "$SYS/broker/uptime", "$SYS/uptime"}},
	{"$SYS/+", []string{"$SYS/uptime"}},
	{"$SYS/+/uptime", []string{"$SYS/broker/uptime"}},
	{"$SYS", []string{"$SYS"}},
	{"+/$x", []string{"b/$x"}},
}

func TestIndexMatch(t *testing.T) {
	var x index
	for _, topic := range matchTopics {
		x.set(&wal.Message{Topic: topic, Payload: []byte("p")})
	}
	for _, tt := range matchTests {
		if got := indexTopics(&x, tt.filter, 0); !slices.Equal(got, tt.want) {
			t.Errorf("match(%q) = %q, want %q", tt.filter, got, tt.want)
		}
	}
}

func TestIndexSetClear(t *testing.T) {
	var x index
	m1 := &wal.Message{Topic: "a/b/c", Payload: []byte("1")}
	x.set(m1)
	x.set(&wal.Message{Topic: "a/b", Payload: []byte("ab")})
	m2 := &wal.Message{Topic: "a/b/c", Payload: []byte("2")}
	x.set(m2)
	if x.n != 2 {
		t.Fatalf("n = %d, want 2", x.n)
	}
	if got := x.get("a/b/c"); got != m2 {
		t.Fatalf("get = %v, want the replacement", got)
	}
	for _, topic := range []string{"a", "a/b/c/d", "a/b/", "x"} {
		if got := x.get(topic); got != nil {
			t.Errorf("get(%q) = %v, want nil", topic, got)
		}
		if got := x.clear(topic); got != nil {
			t.Errorf("clear(%q) = %v, want nil", topic, got)
		}
	}
	if got := x.clear("a/b/c"); got != m2 {
		t.Fatalf("clear = %v, want the message", got)
	}
	// a/b stays, its empty child goes.
	ab := x.root.Child("a").Child("b")
	if ab == nil || ab.Val.msg == nil || ab.HasChildren() {
		t.Fatalf("after clear(a/b/c): a/b node = %+v", ab)
	}
	x.clear("a/b")
	if x.n != 0 || !empty(&x.root) {
		t.Fatalf("n = %d, root empty = %t after clearing all", x.n, empty(&x.root))
	}
}

func TestIndexExpiry(t *testing.T) {
	var x index
	x.set(&wal.Message{Topic: "t/30", ExpireAt: 30})
	x.set(&wal.Message{Topic: "t/10", ExpireAt: 10})
	x.set(&wal.Message{Topic: "t/never"})
	x.set(&wal.Message{Topic: "t/20", ExpireAt: 20})
	x.set(&wal.Message{Topic: "t/replaced", ExpireAt: 5})
	x.set(&wal.Message{Topic: "t/replaced", ExpireAt: 0}) // leaves the heap
	x.set(&wal.Message{Topic: "t/moved", ExpireAt: 50})
	x.set(&wal.Message{Topic: "t/moved", ExpireAt: 15}) // moves up the heap
	x.set(&wal.Message{Topic: "t/cleared", ExpireAt: 1})
	x.clear("t/cleared")

	if at, ok := x.nextExpiry(); !ok || at != 10 {
		t.Fatalf("nextExpiry = %d, %t, want 10, true", at, ok)
	}
	// Expired messages are not matched, whether or not they were popped.
	if got, want := indexTopics(&x, "t/+", 20), []string{"t/30", "t/never", "t/replaced"}; !slices.Equal(got, want) {
		t.Fatalf("match at 20 = %q, want %q", got, want)
	}
	var popped []string
	x.popExpired(20, func(m *wal.Message) { popped = append(popped, m.Topic) })
	if want := []string{"t/10", "t/moved", "t/20"}; !slices.Equal(popped, want) {
		t.Fatalf("popExpired(20) = %q, want %q", popped, want)
	}
	if x.n != 3 {
		t.Fatalf("n = %d, want 3", x.n)
	}
	popped = nil
	x.popExpired(1000, func(m *wal.Message) { popped = append(popped, m.Topic) })
	if want := []string{"t/30"}; !slices.Equal(popped, want) {
		t.Fatalf("popExpired(1000) = %q, want %q", popped, want)
	}
	if _, ok := x.nextExpiry(); ok {
		t.Fatal("nextExpiry: heap not empty")
	}
}

// tmatches is the reference: MQTT matching by splitting, as the spec reads.
func tmatches(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
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

// TestIndexRandom compares the index with the reference matcher and a map
// over random sets, clears and expiries, with topics from a small alphabet
// and some wide levels (to cross topictree's list-to-map threshold).
func TestIndexRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	level := func(first bool) string {
		switch x := r.IntN(12); {
		case x < 2:
			return ""
		case x < 4:
			return "a"
		case x < 5 && first:
			return "$s"
		case x < 7:
			return fmt.Sprint("w", r.IntN(20))
		default:
			return "b"
		}
	}
	gen := func(wild bool) string {
		for {
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
					sb.WriteString(level(i == 0))
				}
			}
			if sb.Len() > 0 {
				return sb.String()
			}
		}
	}
	var x index
	model := map[string]*wal.Message{}
	var now int64
	for step := range 20000 {
		now++
		switch op := r.IntN(10); {
		case op < 6:
			m := &wal.Message{Topic: gen(false)}
			if r.IntN(2) == 0 {
				m.ExpireAt = now + int64(r.IntN(200))
			}
			x.set(m)
			model[m.Topic] = m
		case op < 9:
			topic := gen(false)
			if got := x.clear(topic); got != model[topic] {
				t.Fatalf("step %d: clear(%q) = %v, want %v", step, topic, got, model[topic])
			}
			delete(model, topic)
		default:
			x.popExpired(now, func(m *wal.Message) {
				if model[m.Topic] != m || !expired(m, now) {
					t.Fatalf("step %d: popExpired gave %+v", step, m)
				}
				delete(model, m.Topic)
			})
			for _, m := range model {
				if expired(m, now) {
					t.Fatalf("step %d: %q expired but not popped", step, m.Topic)
				}
			}
		}
		if x.n != len(model) || len(x.expiring) > x.n {
			t.Fatalf("step %d: n = %d, %d expiring, want n = %d", step, x.n, len(x.expiring), len(model))
		}
		if step%10 != 0 {
			continue
		}
		filter := gen(true)
		var want []string
		for topic, m := range model {
			if tmatches(filter, topic) && !expired(m, now) {
				want = append(want, topic)
			}
		}
		slices.Sort(want)
		if got := indexTopics(&x, filter, now); !slices.Equal(got, want) {
			t.Fatalf("step %d: match(%q) = %q, want %q", step, filter, got, want)
		}
	}
	for topic := range model {
		x.clear(topic)
	}
	if x.n != 0 || len(x.expiring) != 0 || !empty(&x.root) {
		t.Fatalf("n = %d, %d expiring, root empty = %t after clearing all", x.n, len(x.expiring), empty(&x.root))
	}
}
