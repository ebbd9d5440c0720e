package engine

import (
	"fmt"
	"testing"
	"time"

	"github.com/keelmq/keel/engine/packet"
)

// Each test drives a flow with our own codec, crashes the store (only what
// was synced survives), restarts the broker on what is left, and checks
// the exact state the protocol must see.

func TestOfflineQueueSurvivesCrash(t *testing.T) {
	for _, v := range []byte{packet.V311, packet.V5} {
		t.Run(fmt.Sprintf("v=%d", v), func(t *testing.T) {
			tb := startBroker(t, Options{})
			sub := dialRaw(t, tb.addr, v)
			sub.connect("sub", false, nil)
			if got := sub.subscribe(1, "q/#", 1).Codes[0]; got != 1 {
				t.Fatalf("granted %v, want 1", got)
			}
			sub.send(&packet.Disconnect{})

			pub := dialRaw(t, tb.addr, v)
			pub.connect("pub", true, nil)
			const n = 50
			for i := 1; i <= n; i++ {
				pub.publish(uint16(i), "q/a", 1, fmt.Sprint(i))
			}
			for i := 1; i <= n; i++ {
				pub.expectAck(packet.PUBACK, uint16(i))
			}
			// Every PUBACK is out: all 50 must survive a power loss.
			tb.crash()

			sub = dialRaw(t, tb.addr, v)
			if ca := sub.connect("sub", false, nil); !ca.SessionPresent {
				t.Fatalf("session present = false after crash, want true")
			}
			for i := 1; i <= n; i++ {
				p := sub.expectPublish()
				if got := string(p.Payload); got != fmt.Sprint(i) {
					t.Fatalf("message %d: got payload %q, want %q", i, got, fmt.Sprint(i))
				}
				sub.send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
			}
			sub.expectNothing(200 * time.Millisecond)
		})
	}
}

func TestInboundQoS2ResendAfterCrashNotRoutedTwice(t *testing.T) {
	tb := startBroker(t, Options{})
	sub := dialRaw(t, tb.addr, packet.V311)
	sub.connect("s", false, nil)
	sub.subscribe(1, "x", 2)
	sub.send(&packet.Disconnect{})

	pub := dialRaw(t, tb.addr, packet.V311)
	pub.connect("p", false, nil)
	pub.publish(7, "x", 2, "once")
	pub.expectAck(packet.PUBREC, 7)
	// Crash between PUBREC and PUBREL.
	tb.crash()

	pub = dialRaw(t, tb.addr, packet.V311)
	if ca := pub.connect("p", false, nil); !ca.SessionPresent {
		t.Fatal("publisher session lost")
	}
	// The client did not see PUBCOMP: it may resend the PUBLISH (DUP) and
	// then PUBREL. The broker must not route it again.
	pub.send(&packet.Publish{Dup: true, QoS: 2, PacketID: 7, Topic: "x", Payload: []byte("once")})
	pub.expectAck(packet.PUBREC, 7)
	pub.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 7})
	pub.expectAck(packet.PUBCOMP, 7)

	sub = dialRaw(t, tb.addr, packet.V311)
	sub.connect("s", false, nil)
	p := sub.expectPublish()
	if string(p.Payload) != "once" || p.QoS != 2 {
		t.Fatalf("got %q qos %d, want %q qos 2", p.Payload, p.QoS, "once")
	}
	sub.send(&packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID})
	sub.expectAck(packet.PUBREL, p.PacketID)
	sub.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: p.PacketID})
	sub.expectNothing(300 * time.Millisecond)
}

func TestReleasedOutboundResentAsPubrel(t *testing.T) {
	tb := startBroker(t, Options{SyncCompletions: true})
	sub := dialRaw(t, tb.addr, packet.V5)
	sub.connect("s", false, nil)
	sub.subscribe(1, "x", 2)

	pub := dialRaw(t, tb.addr, packet.V5)
	pub.connect("p", true, nil)
	pub.publish(1, "x", 2, "m")
	pub.expectAck(packet.PUBREC, 1)

	p := sub.expectPublish()
	sub.send(&packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID})
	sub.expectAck(packet.PUBREL, p.PacketID)
	// Crash before PUBCOMP: the binding is "released".
	tb.crash()

	sub = dialRaw(t, tb.addr, packet.V5)
	if ca := sub.connect("s", false, nil); !ca.SessionPresent {
		t.Fatal("subscriber session lost")
	}
	// Resent as PUBREL, never as PUBLISH [MQTT-4.4.0-1].
	sub.expectAck(packet.PUBREL, p.PacketID)
	sub.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: p.PacketID})
	sub.expectNothing(300 * time.Millisecond)

	// And the flow is gone for good.
	tb.crash()
	sub = dialRaw(t, tb.addr, packet.V5)
	sub.connect("s", false, nil)
	sub.expectNothing(300 * time.Millisecond)
}

func TestUnackedOutboundResentWithDupAfterCrash(t *testing.T) {
	tb := startBroker(t, Options{})
	sub := dialRaw(t, tb.addr, packet.V311)
	sub.connect("s", false, nil)
	sub.subscribe(1, "x", 1)

	pub := dialRaw(t, tb.addr, packet.V311)
	pub.connect("p", true, nil)
	pub.publish(1, "x", 1, "m")
	pub.expectAck(packet.PUBACK, 1)
	first := sub.expectPublish()
	if first.Dup {
		t.Fatal("first delivery has DUP set")
	}
	tb.crash()

	sub = dialRaw(t, tb.addr, packet.V311)
	sub.connect("s", false, nil)
	again := sub.expectPublish()
	if !again.Dup || again.PacketID != first.PacketID || string(again.Payload) != "m" {
		t.Fatalf("resend: got dup=%v id=%d payload=%q, want dup=true id=%d payload=%q",
			again.Dup, again.PacketID, again.Payload, first.PacketID, "m")
	}
	sub.send(&packet.Ack{Kind: packet.PUBACK, PacketID: again.PacketID})
	sub.expectNothing(200 * time.Millisecond)
}

func TestSubscriptionSurvivesCrash(t *testing.T) {
	tb := startBroker(t, Options{})
	sub := dialRaw(t, tb.addr, packet.V5)
	sub.connect("s", false, nil)
	sub.subscribe(1, "a/+/c", 1)
	// SUBACK is out: the subscription must survive.
	tb.crash()

	sub = dialRaw(t, tb.addr, packet.V5)
	if !sub.connect("s", false, nil).SessionPresent {
		t.Fatal("session lost")
	}
	pub := dialRaw(t, tb.addr, packet.V5)
	pub.connect("p", true, nil)
	pub.publish(1, "a/b/c", 1, "hit")
	pub.expectAck(packet.PUBACK, 1)
	if p := sub.expectPublish(); string(p.Payload) != "hit" {
		t.Fatalf("got %q, want %q", p.Payload, "hit")
	}
}

func TestRetainedSurvivesCrash(t *testing.T) {
	tb := startBroker(t, Options{})
	pub := dialRaw(t, tb.addr, packet.V311)
	pub.connect("p", true, nil)
	pub.send(&packet.Publish{QoS: 1, PacketID: 1, Retain: true, Topic: "r/1", Payload: []byte("v1")})
	pub.expectAck(packet.PUBACK, 1)
	pub.send(&packet.Publish{QoS: 1, PacketID: 2, Retain: true, Topic: "r/2", Payload: []byte("v2")})
	pub.expectAck(packet.PUBACK, 2)
	// Clear r/2 with an empty payload [MQTT-3.3.1-10].
	pub.send(&packet.Publish{QoS: 1, PacketID: 3, Retain: true, Topic: "r/2"})
	pub.expectAck(packet.PUBACK, 3)
	tb.crash()

	sub := dialRaw(t, tb.addr, packet.V311)
	sub.connect("s", true, nil)
	sub.subscribe(1, "r/#", 1)
	p := sub.expectPublish()
	if p.Topic != "r/1" || string(p.Payload) != "v1" || !p.Retain {
		t.Fatalf("got %s %q retain=%v, want r/1 \"v1\" retain=true", p.Topic, p.Payload, p.Retain)
	}
	sub.expectNothing(200 * time.Millisecond)
}

func TestCleanStartDiscardsStoredSession(t *testing.T) {
	tb := startBroker(t, Options{})
	sub := dialRaw(t, tb.addr, packet.V311)
	sub.connect("s", false, nil)
	sub.subscribe(1, "x", 1)
	sub.send(&packet.Disconnect{})
	pub := dialRaw(t, tb.addr, packet.V311)
	pub.connect("p", true, nil)
	pub.publish(1, "x", 1, "old")
	pub.expectAck(packet.PUBACK, 1)

	sub = dialRaw(t, tb.addr, packet.V311)
	if sub.connect("s", true, nil).SessionPresent {
		t.Fatal("clean session: session present = true, want false")
	}
	sub.expectNothing(200 * time.Millisecond)
	sub.send(&packet.Disconnect{})
	tb.crash()

	sub = dialRaw(t, tb.addr, packet.V311)
	if sub.connect("s", false, nil).SessionPresent {
		t.Fatal("discarded session came back after crash")
	}
	sub.expectNothing(200 * time.Millisecond)
}

func TestWillOfSessionConnectedAtCrash(t *testing.T) {
	tb := startBroker(t, Options{})
	w := dialRaw(t, tb.addr, packet.V311)
	w.connect("w", false, func(cp *packet.Connect) {
		cp.WillFlag, cp.WillTopic, cp.WillPayload, cp.WillQoS, cp.WillRetain = true, "wills/w", []byte("gone"), 1, true
	})
	// The broker dies while w is connected: after restart its connection
	// is lost without DISCONNECT, so the will is published.
	tb.crash()
	sub := dialRaw(t, tb.addr, packet.V311)
	sub.connect("s", true, nil)
	sub.subscribe(1, "wills/#", 1)
	p := sub.expectPublish()
	if p.Topic != "wills/w" || string(p.Payload) != "gone" {
		t.Fatalf("got %s %q, want wills/w \"gone\"", p.Topic, p.Payload)
	}
}
