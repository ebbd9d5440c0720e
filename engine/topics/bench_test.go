package topics

import (
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"testing"
)

// sub is a subscription's data as the engine might keep it.
type sub struct {
	qos   byte
	subID uint32
}

// realistic builds a trie of n subscriptions, one client each:
//
//	80%    devices/{id}/+/state          (a device watching its own state)
//	20%    sensors/{building}/{floor}/{id}
//	0.01%  wildcards (100 monitors): devices/+/+/state, sensors/{b}/#,
//	       devices/{id}/#, $SYS/#, sensors/+/f3/+
//
// It also returns the heap bytes the trie holds per subscription.
var realistic = sync.OnceValues(func() (*Trie[uint64, sub], realisticInfo) {
	const n = 1_000_000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	t := New[uint64, sub]()
	for i := range uint64(n) {
		var f string
		switch r := i % 100; {
		case i%10_000 == 9_999:
			switch (i / 10_000) % 5 {
			case 0:
				f = "devices/+/+/state"
			case 1:
				f = fmt.Sprintf("sensors/b%d/#", i%50)
			case 2:
				f = fmt.Sprintf("devices/d%d/#", i)
			case 3:
				f = "$SYS/#"
			case 4:
				f = "sensors/+/f3/+"
			}
		case r < 80:
			f = fmt.Sprintf("devices/d%d/+/state", i)
		default:
			f = fmt.Sprintf("sensors/b%d/f%d/s%d", i%50, i%20, i)
		}
		t.Add(f, i, sub{qos: 1, subID: uint32(i)})
	}
	topics := []string{
		"devices/d4242/temp/state",  // one own filter + the shared wildcards
		"sensors/b33/f3/s1083",      // one literal + sensors/+/f3/+
		"devices/d9999999/x/state",  // no such device: wildcards only
		"$SYS/broker/clients/total", // '$': leading wildcards skipped
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	return t, realisticInfo{topics, float64(after.HeapAlloc-before.HeapAlloc) / n}
})

type realisticInfo struct {
	topics       []string
	heapPerEntry float64
}

func BenchmarkMatch(b *testing.B) {
	t, info := realistic()
	b.Run("subs=1000000", func(b *testing.B) {
		for _, topic := range info.topics {
			b.Run("topic="+topic, func(b *testing.B) {
				b.ReportAllocs()
				n := 0
				fn := func(string, uint64, sub) { n++ }
				for b.Loop() {
					t.Match(topic, fn)
				}
				b.ReportMetric(float64(n)/float64(b.N), "matches/op")
				b.ReportMetric(info.heapPerEntry, "heapB/sub")
			})
		}
	})
}

// BenchmarkFanout matches one topic to many subscribers of one filter and
// of overlapping filters.
func BenchmarkFanout(b *testing.B) {
	for _, subs := range []int{1000} {
		b.Run("subs="+strconv.Itoa(subs)+"/filters=1", func(b *testing.B) {
			t := New[uint64, sub]()
			for i := range uint64(subs) {
				t.Add("chat/room1", i, sub{})
			}
			benchFanout(b, t, "chat/room1", subs)
		})
		b.Run("subs="+strconv.Itoa(subs)+"/filters=4", func(b *testing.B) {
			t := New[uint64, sub]()
			filters := []string{"chat/room1", "chat/+", "chat/#", "#"}
			for i := range uint64(subs) {
				t.Add(filters[i%4], i, sub{})
			}
			benchFanout(b, t, "chat/room1", subs)
		})
	}
}

func benchFanout(b *testing.B, t *Trie[uint64, sub], topic string, want int) {
	b.ReportAllocs()
	n := 0
	fn := func(string, uint64, sub) { n++ }
	for b.Loop() {
		n = 0
		t.Match(topic, fn)
	}
	if n != want {
		b.Fatalf("matched %d, want %d", n, want)
	}
}

// BenchmarkAddRemove adds and removes one subscription in a trie that
// already holds subs others, so the path is partly shared and partly new.
func BenchmarkAddRemove(b *testing.B) {
	for _, subs := range []int{1000, 1_000_000} {
		b.Run("subs="+strconv.Itoa(subs), func(b *testing.B) {
			t := New[uint64, sub]()
			for i := range uint64(subs) {
				t.Add(fmt.Sprintf("devices/d%d/+/state", i), i, sub{})
			}
			filters := make([]string, 1024)
			for i := range filters {
				filters[i] = fmt.Sprintf("devices/new%d/+/state", i)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				f := filters[i%len(filters)]
				t.Add(f, uint64(i), sub{})
				t.Remove(f, uint64(i))
				i++
			}
		})
	}
}

// BenchmarkAddRemoveExisting adds and removes a second subscriber of an
// existing filter: no node is created or pruned, only an entry.
func BenchmarkAddRemoveExisting(b *testing.B) {
	t := New[uint64, sub]()
	for i := range uint64(1000) {
		t.Add(fmt.Sprintf("devices/d%d/+/state", i), i, sub{})
	}
	b.ReportAllocs()
	for b.Loop() {
		t.Add("devices/d7/+/state", 1<<40, sub{})
		t.Remove("devices/d7/+/state", 1<<40)
	}
}
