package retain

import (
	"fmt"
	"testing"

	"github.com/keelmq/keel/wal"
)

// benchStore holds 100,000 retained topics, in memory only:
//
//	25%  a/{i}/c
//	25%  a/{i}/d
//	25%  devices/d{i}/state
//	25%  sensors/b{i%50}/f{i%20}/s{i}
func benchStore(b *testing.B) *Store {
	s := New(nil)
	var txn wal.Txn
	for i := range 100_000 {
		var topic string
		switch i % 4 {
		case 0:
			topic = fmt.Sprintf("a/%d/c", i/4)
		case 1:
			topic = fmt.Sprintf("a/%d/d", i/4)
		case 2:
			topic = fmt.Sprintf("devices/d%d/state", i)
		case 3:
			topic = fmt.Sprintf("sensors/b%d/f%d/s%d", i%50, i%20, i)
		}
		s.Set(&txn, &wal.Message{Topic: topic, Payload: []byte("retained"), QoS: 1, Retain: true})
		txn.Reset()
	}
	if s.Len() != 100_000 {
		b.Fatalf("Len = %d, want 100000", s.Len())
	}
	return s
}

func BenchmarkMatch(b *testing.B) {
	s := benchStore(b)
	for _, bc := range []struct {
		filter string
		want   int
	}{
		{"#", 100_000},
		{"a/+/c", 25_000},
		{"sensors/b7/#", 1000},
		{"devices/d42/state", 1},
	} {
		b.Run("topics=100000/filter="+bc.filter, func(b *testing.B) {
			b.ReportAllocs()
			n := 0
			fn := func(*wal.Message) { n++ }
			for b.Loop() {
				n = 0
				s.Match(bc.filter, 0, fn)
			}
			if n != bc.want {
				b.Fatalf("matched %d, want %d", n, bc.want)
			}
			b.ReportMetric(float64(n), "matches/op")
		})
	}
}
