package engine

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/keelmq/keel/engine/clock"
	"github.com/keelmq/keel/engine/packet"
	"github.com/keelmq/keel/wal"
)

// crashAtNextSync arms the broker to take a power-loss image of the store
// right after the next synced commit and before that commit's packets are
// released: the moment between "committed first" and "then sent" of
// DESIGN.md's table. It returns a function that waits for the image and
// restarts the broker on it.
func (tb *testBroker) crashAtNextSync() (restartOnImage func()) {
	var once sync.Once
	taken := make(chan *vfs.MemFS, 1)
	mem := tb.fs.(*vfs.MemFS)
	h := func() {
		once.Do(func() { taken <- mem.CrashClone(vfs.CrashCloneCfg{}) })
	}
	tb.b.afterSync.Store(&h)
	return func() {
		tb.t.Helper()
		var img *vfs.MemFS
		select {
		case img = <-taken:
		case <-time.After(5 * time.Second):
			tb.t.Fatal("no commit happened")
		}
		tb.b.afterSync.Store(nil)
		tb.stop()
		tb.fs = img
		tb.start()
	}
}

// Each row of the commit-before-send table: the action's state is synced,
// the power fails before its ack leaves, and after restart the state is
// exactly as if the ack had been seen. (Crashes right after the ack are in
// durability_test.go.)
func TestCommitBeforeSendRows(t *testing.T) {
	const v = packet.V5

	t.Run("row=CONNECT persistent", func(t *testing.T) {
		tb := startBroker(t, Options{})
		restart := tb.crashAtNextSync()
		c := dialRaw(t, tb.addr, v)
		c.connect("s", false, nil)
		restart()
		c = dialRaw(t, tb.addr, v)
		if !c.connect("s", false, nil).SessionPresent {
			t.Fatal("session present = false, want true")
		}
	})

	t.Run("row=CONNECT clean start over stored session", func(t *testing.T) {
		tb := startBroker(t, Options{})
		c := dialRaw(t, tb.addr, v)
		c.connect("s", false, nil)
		c.subscribe(1, "x", 1)
		c.send(&packet.Disconnect{})
		p := dialRaw(t, tb.addr, v)
		p.connect("p", true, nil)
		p.publish(1, "x", 1, "queued")
		p.expectAck(packet.PUBACK, 1)

		restart := tb.crashAtNextSync()
		c = dialRaw(t, tb.addr, v)
		c.connect("s", true, func(cp *packet.Connect) {
			cp.Props.SessionExpiry = 0xFFFFFFFF
			cp.Props.Set(packet.PropSessionExpiry)
		})
		restart()
		c = dialRaw(t, tb.addr, v)
		// The new, empty session is there; the old one's queue is not.
		if !c.connect("s", false, nil).SessionPresent {
			t.Fatal("session present = false, want true (the clean-start session)")
		}
		c.expectNothing(200 * time.Millisecond)
		p = dialRaw(t, tb.addr, v)
		p.connect("p", true, nil)
		p.publish(2, "x", 1, "after")
		p.expectAck(packet.PUBACK, 2)
		c.expectNothing(200 * time.Millisecond) // the subscription went with it
	})

	t.Run("row=SUBSCRIBE", func(t *testing.T) {
		tb := startBroker(t, Options{})
		c := dialRaw(t, tb.addr, v)
		c.connect("s", false, nil)
		restart := tb.crashAtNextSync()
		c.send(&packet.Subscribe{PacketID: 1, Subs: []packet.Subscription{{Filter: "x/+", QoS: 1}}})
		restart()
		c = dialRaw(t, tb.addr, v)
		c.connect("s", false, nil)
		p := dialRaw(t, tb.addr, v)
		p.connect("p", true, nil)
		p.publish(1, "x/y", 1, "m")
		p.expectAck(packet.PUBACK, 1)
		if got := c.expectPublish(); string(got.Payload) != "m" {
			t.Fatalf("got %q, want %q", got.Payload, "m")
		}
	})

	t.Run("row=UNSUBSCRIBE", func(t *testing.T) {
		tb := startBroker(t, Options{})
		c := dialRaw(t, tb.addr, v)
		c.connect("s", false, nil)
		c.subscribe(1, "x", 1)
		restart := tb.crashAtNextSync()
		c.send(&packet.Unsubscribe{PacketID: 2, Filters: []string{"x"}})
		restart()
		c = dialRaw(t, tb.addr, v)
		c.connect("s", false, nil)
		p := dialRaw(t, tb.addr, v)
		p.connect("p", true, nil)
		p.publish(1, "x", 1, "m")
		p.expectAck(packet.PUBACK, 1)
		c.expectNothing(200 * time.Millisecond)
	})

	for _, qos := range []byte{1, 2} {
		name := map[byte]string{1: "row=PUBLISH QoS 1 in", 2: "row=PUBLISH QoS 2 in"}[qos]
		t.Run(name, func(t *testing.T) {
			tb := startBroker(t, Options{})
			s := dialRaw(t, tb.addr, v)
			s.connect("s", false, nil)
			s.subscribe(1, "x", 2)
			s.send(&packet.Disconnect{})
			p := dialRaw(t, tb.addr, v)
			p.connect("p", false, nil)
			restart := tb.crashAtNextSync()
			p.publish(9, "x", qos, "m")
			restart()
			// The publisher never saw its ack: it resends with DUP.
			p = dialRaw(t, tb.addr, v)
			p.connect("p", false, nil)
			p.send(&packet.Publish{Dup: true, QoS: qos, PacketID: 9, Topic: "x", Payload: []byte("m")})
			if qos == 1 {
				p.expectAck(packet.PUBACK, 9)
			} else {
				p.expectAck(packet.PUBREC, 9)
				p.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 9})
				p.expectAck(packet.PUBCOMP, 9)
			}
			s = dialRaw(t, tb.addr, v)
			s.connect("s", false, nil)
			got := s.expectPublish()
			if string(got.Payload) != "m" {
				t.Fatalf("got %q, want %q", got.Payload, "m")
			}
			if qos == 2 {
				// Exactly once: the resend was not routed again.
				s.send(&packet.Ack{Kind: packet.PUBREC, PacketID: got.PacketID})
				s.expectAck(packet.PUBREL, got.PacketID)
				s.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: got.PacketID})
				s.expectNothing(300 * time.Millisecond)
			}
		})
	}

	t.Run("row=PUBREL in", func(t *testing.T) {
		tb := startBroker(t, Options{})
		p := dialRaw(t, tb.addr, v)
		p.connect("p", false, nil)
		p.publish(3, "x", 2, "m")
		p.expectAck(packet.PUBREC, 3)
		restart := tb.crashAtNextSync()
		p.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 3})
		restart()
		p = dialRaw(t, tb.addr, v)
		p.connect("p", false, nil)
		// The id was released before the crash: a resent PUBREL finds
		// nothing [MQTT-4.3.3-?] and 5.0 says so with 0x92.
		p.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 3})
		if a := p.expectAck(packet.PUBCOMP, 3); a.ReasonCode != packet.CodePacketIDNotFound {
			t.Fatalf("PUBCOMP reason %v, want %v", a.ReasonCode, packet.CodePacketIDNotFound)
		}
	})

	// Outbound rows: s receives one message, then acts.
	outbound := func(t *testing.T, qos byte) (*testBroker, *rawClient, *packet.Publish) {
		// Exactness of the completion rows needs SyncCompletions; the
		// default lets them ride the next sync (TestLazyCompletions).
		tb := startBroker(t, Options{SyncCompletions: true})
		s := dialRaw(t, tb.addr, v)
		s.connect("s", false, nil)
		s.subscribe(1, "x", qos)
		p := dialRaw(t, tb.addr, v)
		p.connect("p", true, nil)
		p.publish(1, "x", qos, "m")
		got := s.expectPublish()
		return tb, s, got
	}

	t.Run("row=PUBLISH out", func(t *testing.T) {
		tb := startBroker(t, Options{})
		s := dialRaw(t, tb.addr, v)
		s.connect("s", false, nil)
		s.subscribe(1, "x", 1)
		p := dialRaw(t, tb.addr, v)
		p.connect("p", true, nil)
		restart := tb.crashAtNextSync()
		p.publish(1, "x", 1, "m")
		restart()
		s = dialRaw(t, tb.addr, v)
		s.connect("s", false, nil)
		// The binding was committed with the message: it comes back
		// with its packet id, as a resend.
		got := s.expectPublish()
		if !got.Dup || string(got.Payload) != "m" {
			t.Fatalf("got dup=%v %q, want dup=true %q", got.Dup, got.Payload, "m")
		}
	})

	t.Run("row=PUBACK in", func(t *testing.T) {
		tb, s, got := outbound(t, 1)
		restart := tb.crashAtNextSync()
		s.send(&packet.Ack{Kind: packet.PUBACK, PacketID: got.PacketID})
		restart()
		s = dialRaw(t, tb.addr, v)
		s.connect("s", false, nil)
		s.expectNothing(300 * time.Millisecond)
	})

	t.Run("row=PUBREC in", func(t *testing.T) {
		tb, s, got := outbound(t, 2)
		restart := tb.crashAtNextSync()
		s.send(&packet.Ack{Kind: packet.PUBREC, PacketID: got.PacketID})
		restart()
		s = dialRaw(t, tb.addr, v)
		s.connect("s", false, nil)
		s.expectAck(packet.PUBREL, got.PacketID)
	})

	t.Run("row=PUBCOMP in", func(t *testing.T) {
		tb, s, got := outbound(t, 2)
		s.send(&packet.Ack{Kind: packet.PUBREC, PacketID: got.PacketID})
		s.expectAck(packet.PUBREL, got.PacketID)
		restart := tb.crashAtNextSync()
		s.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: got.PacketID})
		restart()
		s = dialRaw(t, tb.addr, v)
		s.connect("s", false, nil)
		s.expectNothing(300 * time.Millisecond)
	})

	t.Run("row=clean disconnect of a non-persistent session", func(t *testing.T) {
		// A 5.0 session whose expiry was set to 0 at DISCONNECT ends
		// then: its stored state is deleted.
		tb := startBroker(t, Options{})
		s := dialRaw(t, tb.addr, v)
		s.connect("s", false, nil)
		s.subscribe(1, "x", 1)
		restart := tb.crashAtNextSync()
		d := &packet.Disconnect{}
		d.Props.SessionExpiry = 0
		d.Props.Set(packet.PropSessionExpiry)
		s.send(d)
		restart()
		s = dialRaw(t, tb.addr, v)
		if s.connect("s", false, nil).SessionPresent {
			t.Fatal("session present = true, want false")
		}
	})
}

// By default the deletion after a subscriber's PUBACK or PUBCOMP is not
// synced by itself. A crash may bring the flow back, only as the protocol
// allows: a QoS 1 message resent with DUP and its packet id, a QoS 2 flow
// as PUBREL. Once acknowledged again it is gone.
func TestLazyCompletions(t *testing.T) {
	for _, qos := range []byte{1, 2} {
		t.Run(fmt.Sprintf("qos=%d", qos), func(t *testing.T) {
			tb := startBroker(t, Options{})
			s := dialRaw(t, tb.addr, packet.V5)
			s.connect("s", false, nil)
			s.subscribe(1, "x", qos)
			p := dialRaw(t, tb.addr, packet.V5)
			p.connect("p", true, nil)
			p.publish(1, "x", qos, "m")
			got := s.expectPublish()
			if qos == 1 {
				s.send(&packet.Ack{Kind: packet.PUBACK, PacketID: got.PacketID})
			} else {
				s.send(&packet.Ack{Kind: packet.PUBREC, PacketID: got.PacketID})
				s.expectAck(packet.PUBREL, got.PacketID)
				s.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: got.PacketID})
			}
			tb.waitIdle("s") // the completion has reached the core
			tb.crash()

			s = dialRaw(t, tb.addr, packet.V5)
			s.connect("s", false, nil)
			pk, err := s.tryRecv(300 * time.Millisecond)
			if err == nil {
				switch a := pk.(type) {
				case *packet.Publish:
					if qos != 1 || !a.Dup || a.PacketID != got.PacketID {
						t.Fatalf("after crash: got PUBLISH qos %d dup %v id %d, want only a QoS 1 DUP resend of id %d", a.QoS, a.Dup, a.PacketID, got.PacketID)
					}
					s.send(&packet.Ack{Kind: packet.PUBACK, PacketID: a.PacketID})
				case *packet.Ack:
					if qos != 2 || a.Kind != packet.PUBREL || a.PacketID != got.PacketID {
						t.Fatalf("after crash: got %+v, want only PUBREL %d", a, got.PacketID)
					}
					s.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: a.PacketID})
				default:
					t.Fatalf("after crash: got %T", pk)
				}
			}
			s.expectNothing(300 * time.Millisecond)
		})
	}
}

// queued counts the queue entries of client on the store (Pebble's view:
// what has been applied, synced or not).
func queued(t *testing.T, l *wal.Log, client string) int {
	t.Helper()
	n := 0
	p := wal.QueuePrefix(client)
	if err := l.Scan(p, wal.PrefixEnd(p), func(k, v []byte) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// A completion is held in memory (Options.CompletionHold) and written by
// the next commit that writes anything: on its own it costs no WAL write.
func TestCompletionRidesTheNextCommit(t *testing.T) {
	tb := startBroker(t, Options{CompletionHold: time.Hour})
	s := dialRaw(t, tb.addr, packet.V5)
	s.connect("s", false, nil)
	s.subscribe(1, "x", 1)
	p := dialRaw(t, tb.addr, packet.V5)
	p.connect("p", true, nil)

	p.publish(1, "x", 1, "m1")
	p.expectAck(packet.PUBACK, 1)
	got := s.expectPublish()
	if n := queued(t, tb.l, "s"); n != 1 {
		t.Fatalf("%d queue entries after the delivery, want 1", n)
	}
	s.send(&packet.Ack{Kind: packet.PUBACK, PacketID: got.PacketID})
	s.ping() // the core has handled the PUBACK: it came first
	if n := queued(t, tb.l, "s"); n != 1 {
		t.Fatalf("%d queue entries after the PUBACK, want 1: the completion was written on its own", n)
	}

	p.publish(2, "x", 1, "m2")
	p.expectAck(packet.PUBACK, 2)
	if n := queued(t, tb.l, "s"); n != 1 {
		t.Fatalf("%d queue entries after the next commit, want 1 (m2 only): the held completion was not carried", n)
	}
	s.expectPublish()
}

// With nothing else to commit, a held completion is written after
// CompletionHold.
func TestCompletionHoldExpires(t *testing.T) {
	clk := clock.NewFake(time.Now())
	tb := startBroker(t, Options{CompletionHold: 5 * time.Millisecond, Clock: clk})
	s := dialRaw(t, tb.addr, packet.V5)
	s.connect("s", false, nil)
	s.subscribe(1, "x", 2)
	p := dialRaw(t, tb.addr, packet.V5)
	p.connect("p", true, nil)
	p.publish(1, "x", 2, "m1")
	p.expectAck(packet.PUBREC, 1)
	p.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 1})
	p.expectAck(packet.PUBCOMP, 1)
	got := s.expectPublish()
	s.send(&packet.Ack{Kind: packet.PUBREC, PacketID: got.PacketID})
	s.expectAck(packet.PUBREL, got.PacketID)
	s.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: got.PacketID})
	tb.waitIdle("s")
	// Held: nothing else writes, so the deletion waits in memory ...
	if n := queued(t, tb.l, "s"); n != 1 {
		t.Fatalf("%d entries stored before the hold ran out, want the held one", n)
	}
	// ... until the hold runs out.
	clk.Advance(5 * time.Millisecond)
	waitFor(t, "the held deletion to be written", func() bool { return queued(t, tb.l, "s") == 0 })
	// And a clean restart keeps it deleted: nothing is resent before the
	// next message.
	tb.restart()
	s = dialRaw(t, tb.addr, packet.V5)
	s.connect("s", false, nil)
	p = dialRaw(t, tb.addr, packet.V5)
	p.connect("p", true, nil)
	p.pubAcked(1, "x", "m2")
	if got := s.expectPublish(); string(got.Payload) != "m2" {
		t.Fatalf("after restart: got %q (dup %v), want m2", got.Payload, got.Dup)
	}
}

// A pull that found fewer entries than the window, while its own drain's
// writes were not submitted yet, is retried once they are: the session leaves
// backlog mode without an ack from the client, so a message published
// afterwards is delivered to a client that acks nothing.
func TestPullRetriedAfterCommit(t *testing.T) {
	tb := startBroker(t, Options{})
	s := dialRaw(t, tb.addr, packet.V5)
	s.connect("s", false, nil)
	s.subscribe(1, "x", 1)
	s.disconnect(tb)

	p := dialRaw(t, tb.addr, packet.V5)
	p.connect("p", true, nil)
	for i := range 3 {
		p.publish(uint16(i+1), "x", 1, fmt.Sprintf("m%d", i+1))
		p.expectAck(packet.PUBACK, uint16(i+1))
	}

	s = dialRaw(t, tb.addr, packet.V5)
	s.connect("s", false, nil) // the backlog of 3 is pulled from disk
	for i := range 3 {
		if got := s.expectPublish(); string(got.Payload) != fmt.Sprintf("m%d", i+1) {
			t.Fatalf("got %q, want m%d", got.Payload, i+1)
		}
	}
	p.publish(4, "x", 1, "m4")
	p.expectAck(packet.PUBACK, 4)
	if got := s.expectPublish(); string(got.Payload) != "m4" {
		t.Fatalf("got %q, want m4", got.Payload)
	}
}
