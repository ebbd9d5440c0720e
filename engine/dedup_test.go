package engine

import (
	"testing"
	"time"

	"github.com/keelmq/keel/engine/clock"
	"github.com/keelmq/keel/engine/packet"
)

// pubID publishes with the dedup property set to id.
func (rc *rawClient) pubID(pid uint16, qos byte, topic, payload, id string) {
	rc.t.Helper()
	p := &packet.Publish{QoS: qos, PacketID: pid, Topic: topic, Payload: []byte(payload)}
	p.Props.User = []packet.UserProperty{{Key: "trace", Value: "x"}, {Key: "msg-id", Value: id}}
	rc.send(p)
}

// A QoS 1 producer that retries with new packet ids, across a reconnect
// with clean start and a power cut, delivers each message once while
// every retry is acknowledged; QoS 2 likewise; the window expires; a
// message without the property, or from another client, is not held to
// another's ids.
func TestDedupWindow(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_800_000_000, 0))
	tb := startBroker(t, Options{Clock: clk, SysInterval: -1})
	sub := dialRaw(t, tb.addr, packet.V5)
	sub.connect("sub", false, nil)
	sub.subscribe(1, "m/#", 1)
	sub.disconnect(tb)

	pub := dialRaw(t, tb.addr, packet.V5)
	pub.connect("meter", true, nil)
	pub.pubID(1, 1, "m/1", "first", "reading-1")
	pub.expectAck(packet.PUBACK, 1)
	pub.pubID(2, 1, "m/1", "first (retry)", "reading-1")
	if a := pub.expectAck(packet.PUBACK, 2); a.ReasonCode != 0 {
		t.Fatalf("a duplicate's PUBACK %v, want success", a.ReasonCode)
	}
	pub.disconnect(tb)
	pub = dialRaw(t, tb.addr, packet.V5)
	pub.connect("meter", true, nil) // a clean start keeps the window
	pub.pubID(1, 1, "m/1", "first (after reconnect)", "reading-1")
	pub.expectAck(packet.PUBACK, 1)
	pub.pubID(2, 2, "m/1", "second", "reading-2")
	pub.expectAck(packet.PUBREC, 2)
	pub.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 2})
	pub.expectAck(packet.PUBCOMP, 2)
	tb.crash() // a power cut: only what was synced is left

	pub = dialRaw(t, tb.addr, packet.V5)
	pub.connect("meter", true, nil)
	pub.pubID(3, 2, "m/1", "second (retry after the crash)", "reading-2")
	pub.expectAck(packet.PUBREC, 3)
	pub.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 3})
	pub.expectAck(packet.PUBCOMP, 3)
	other := dialRaw(t, tb.addr, packet.V5)
	other.connect("other-meter", true, nil)
	other.pubID(1, 1, "m/2", "another client's reading-1", "reading-1")
	other.expectAck(packet.PUBACK, 1)
	pub.publish(4, "m/1", 1, "no id") // no property: never a duplicate
	pub.expectAck(packet.PUBACK, 4)
	pub.publish(5, "m/1", 1, "no id")
	pub.expectAck(packet.PUBACK, 5)
	clk.Advance(10*time.Minute + time.Second)
	pub.pubID(6, 1, "m/1", "first (after the window)", "reading-1")
	pub.expectAck(packet.PUBACK, 6)

	if got := tb.b.Stats().DedupHits; got != 1 { // counted since the restart
		t.Errorf("DedupHits = %d, want 1", got)
	}
	sub = dialRaw(t, tb.addr, packet.V5)
	sub.connect("sub", false, nil)
	for _, want := range []struct{ topic, payload string }{
		{"m/1", "first"}, {"m/1", "second"}, {"m/2", "another client's reading-1"},
		{"m/1", "no id"}, {"m/1", "no id"}, {"m/1", "first (after the window)"},
	} {
		p := sub.expectPub(want.topic, want.payload)
		sub.ackPub(p)
	}
	sub.ping() // and nothing else before the PINGRESP
}

// 3.1.1 has no user properties: nothing is deduplicated.
func TestDedupNeedsV5(t *testing.T) {
	tb := startBroker(t, Options{})
	sub := dialRaw(t, tb.addr, packet.V311)
	sub.connect("sub", true, nil)
	sub.subscribe(1, "m/#", 0)
	pub := dialRaw(t, tb.addr, packet.V311)
	pub.connect("p", true, nil)
	for i := uint16(1); i <= 2; i++ {
		pub.publish(i, "m/x", 1, "same")
		pub.expectAck(packet.PUBACK, i)
	}
	sub.expectPub("m/x", "same")
	sub.expectPub("m/x", "same")
}
