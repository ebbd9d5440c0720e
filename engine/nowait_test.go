package engine

import (
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/keelmq/keel/engine/packet"
	"github.com/keelmq/keel/wal"
	"github.com/keelmq/keel/wal/waltest"
)

// coreRuns reports whether the core goroutine runs a function within d.
func coreRuns(tb *testBroker, d time.Duration) bool {
	ran := make(chan struct{})
	go tb.b.post(event{kind: evFunc, fn: func() { close(ran) }})
	select {
	case <-ran:
		return true
	case <-time.After(d):
		return false
	}
}

// The core never waits for a sync: with every WAL sync held at a gate, a
// clean start over a stored session and a mass expiry of stored sessions
// still leave the core free to take the next event. Their acks wait for
// the sync, as they must.
func TestCoreNeverWaitsForASync(t *testing.T) {
	mem := vfs.NewCrashableMem()
	gate := waltest.NewGateFS(mem)
	tb := &testBroker{t: t, fs: gate, dir: "data"}
	tb.start()
	t.Cleanup(func() { gate.Release(); tb.stop() })

	// Stored sessions with queued messages: one to clean-start over, and
	// 50 that expire one second after they disconnect.
	old := dialRaw(t, tb.addr, packet.V5)
	old.connect("old", false, nil)
	old.subscribe(1, "q", 1)
	old.send(&packet.Disconnect{})
	for i := range 50 {
		c := dialRaw(t, tb.addr, packet.V5)
		c.connect(fmt.Sprintf("exp%d", i), false, func(cp *packet.Connect) { cp.Props.SessionExpiry = 1 })
		c.subscribe(1, "q", 1)
		c.send(&packet.Disconnect{})
	}
	p := dialRaw(t, tb.addr, packet.V5)
	p.connect("p", true, nil)
	p.publish(1, "q", 1, "queued for 51 sessions")
	p.expectAck(packet.PUBACK, 1)

	gate.Hold()
	c := dialRaw(t, tb.addr, packet.V5)
	c.send(&packet.Connect{ProtocolName: "MQTT", ProtocolLevel: packet.V5, CleanStart: true, ClientID: "old"})
	gate.AwaitBlocked(1) // the clean start's commit waits at the gate
	if !coreRuns(tb, 5*time.Second) {
		t.Fatal("the core is blocked behind a held sync after a clean start over a stored session")
	}
	// The expiry clocks run out while the sync is held (the timers use
	// the system clock here: one second).
	waitFor(t, "the 50 sessions to expire", func() bool {
		done := make(chan int, 1)
		tb.b.post(event{kind: evFunc, fn: func() { done <- len(tb.b.core.sessions.Sessions) }})
		return <-done <= 2 // old's new, clean session and p
	})
	if !coreRuns(tb, 5*time.Second) {
		t.Fatal("the core is blocked behind a held sync after a mass expiry")
	}
	gate.Release()
	if ca, ok := c.recv().(*packet.Connack); !ok || ca.ReasonCode != 0 || ca.SessionPresent {
		t.Fatalf("got %+v, want CONNACK 0 without a session", ca)
	}
	c.send(&packet.Disconnect{})
	p.send(&packet.Disconnect{})
	// Nothing of the ended sessions survives a restart, bodies included
	// (released by the sweeper, or collected at start).
	tb.restart()
	done := make(chan [2]int, 1)
	tb.b.post(event{kind: evFunc, fn: func() {
		tb.b.flush(true) // the collection at start is submitted
		bodies := 0
		tb.b.store.Scan(wal.MessagePrefix(), wal.PrefixEnd(wal.MessagePrefix()), func(k, v []byte) error {
			bodies++
			return nil
		})
		done <- [2]int{len(tb.b.core.sessions.Sessions), bodies}
	}})
	if got := <-done; got != [2]int{0, 0} {
		t.Fatalf("after restart: %d sessions, %d message bodies; want none", got[0], got[1])
	}
}
