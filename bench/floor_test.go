package main

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/keelmq/keel/engine/packet"
)

// Each floor variant acknowledges every synchronous QoS 1 publish and
// delivers it, under the load generator that syncfloor.sh uses.
func TestFloorServesTheSyncLoad(t *testing.T) {
	for _, c := range []struct {
		name            string
		pebble, handoff bool
	}{{"bare", false, false}, {"handoff", false, true}, {"pebble", true, false}} {
		t.Run(c.name, func(t *testing.T) {
			s, err := newFloor(t.TempDir(), c.pebble, c.handoff)
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go s.acceptLoop(ln)
			defer func() { ln.Close(); s.close() }()

			cfg := &config{
				addr: ln.Addr().String(), version: packet.V5, pubs: 1, subs: 1, qos: 1, size: 64, window: 1,
				persistent: true, pattern: "fanin", count: 200, drain: 300 * time.Millisecond,
				ackTimeout: 5 * time.Second, quiet: true,
			}
			r, err := runLoad(cfg, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if r.Acked != 200 || r.Delivered != 200 || r.Lost != 0 || r.failed() {
				t.Errorf("acked %d, delivered %d, lost %d; want 200, 200, 0", r.Acked, r.Delivered, r.Lost)
			}
			if c.pebble {
				n := 0
				it, err := s.db.NewIter(nil)
				if err != nil {
					t.Fatal(err)
				}
				for it.First(); it.Valid(); it.Next() {
					n++
				}
				it.Close()
				if n != 200 {
					t.Errorf("%d records in Pebble, want 200", n)
				}
			} else if fi, err := s.log.Stat(); err != nil || fi.Size() == 0 {
				t.Errorf("log file: size %v, err %v; want the records", fi, err)
			}
		})
	}
}
