package engine

import (
	"testing"

	"github.com/keelmq/keel/engine/packet"
	"github.com/keelmq/keel/wal"
)

// Ending a persistent session whose queue references a shared body
// releases the reference without a restart (the sweeper); the last
// reference deletes the body. A session with inline entries only needs no
// sweep at all (SharesBodies), and its end leaves nothing behind either.
func TestSessionEndReleasesSharedBodies(t *testing.T) {
	tb := startBroker(t, Options{})
	for _, id := range []string{"a", "b"} {
		c := dialRaw(t, tb.addr, packet.V5)
		c.connect(id, false, func(cp *packet.Connect) { cp.Props.SessionExpiry = 3600; cp.Props.Set(packet.PropSessionExpiry) })
		c.subscribe(1, "shared", 1)
		c.subscribe(2, "own/"+id, 1)
		c.send(&packet.Disconnect{})
	}
	p := dialRaw(t, tb.addr, packet.V5)
	p.connect("p", true, nil)
	p.publish(1, "shared", 1, "queued for a and b: one shared body")
	p.expectAck(packet.PUBACK, 1)
	p.publish(2, "own/a", 1, "queued for a alone: inline")
	p.expectAck(packet.PUBACK, 2)
	p.send(&packet.Disconnect{})

	bodies := func() int {
		done := make(chan int, 1)
		tb.b.post(event{kind: evFunc, fn: func() {
			tb.b.flush(true)
			n := 0
			tb.b.store.Scan(wal.MessagePrefix(), wal.PrefixEnd(wal.MessagePrefix()), func(k, v []byte) error {
				n++
				return nil
			})
			done <- n
		}})
		return <-done
	}
	if n := bodies(); n != 1 {
		t.Fatalf("%d shared bodies stored, want 1", n)
	}
	cleanStart := func(id string) {
		c := dialRaw(t, tb.addr, packet.V5)
		c.send(&packet.Connect{ProtocolName: "MQTT", ProtocolLevel: packet.V5, CleanStart: true, ClientID: id})
		if ca, ok := c.recv().(*packet.Connack); !ok || ca.ReasonCode != 0 || ca.SessionPresent {
			t.Fatalf("%s: got %+v, want CONNACK 0 without a session", id, ca)
		}
		c.send(&packet.Disconnect{})
	}
	cleanStart("a")
	if n := bodies(); n != 1 {
		t.Fatalf("after a's clean start: %d shared bodies, want 1 (b still has it)", n)
	}
	cleanStart("b")
	waitFor(t, "the shared body to go with its last reference", func() bool { return bodies() == 0 })
}
