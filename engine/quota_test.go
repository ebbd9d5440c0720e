package engine

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/keelmq/keel/engine/packet"
)

// These tests fill a session's queue to its quota with real clients and
// check what every side sees under each queue_full policy: the publisher's
// acks and reason codes, the counters, and, once the session reconnects,
// exactly the messages that were accepted for it, in order.

// offline makes a persistent 5.0 session id subscribed to filter at qos,
// and leaves it offline.
func offline(t *testing.T, tb *testBroker, id, filter string, qos byte) {
	t.Helper()
	c := dialRaw(t, tb.addr, packet.V5)
	c.connect(id, false, nil)
	c.subscribe(1, filter, qos)
	c.disconnect(tb)
}

// drain resumes persistent session id, acknowledges everything it is
// sent until nothing more comes, and returns the payloads in order.
func drain(t *testing.T, tb *testBroker, id string) []string {
	t.Helper()
	c := dialRaw(t, tb.addr, packet.V5)
	if ca := c.connect(id, false, nil); !ca.SessionPresent {
		t.Fatalf("resume %s: session present = false, want true", id)
	}
	var got []string
	for {
		p, err := c.tryRecv(200 * time.Millisecond)
		if err != nil {
			break
		}
		switch p := p.(type) {
		case *packet.Publish:
			got = append(got, string(p.Payload))
			kind := packet.PUBACK
			if p.QoS == 2 {
				kind = packet.PUBREC
			}
			c.send(&packet.Ack{Kind: kind, PacketID: p.PacketID})
		case *packet.Ack:
			if p.Kind != packet.PUBREL {
				t.Fatalf("drain %s: got %s, want PUBLISH or PUBREL", id, p.Kind.String())
			}
			c.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: p.PacketID})
		default:
			t.Fatalf("drain %s: got %T %+v, want PUBLISH or PUBREL", id, p, p)
		}
	}
	tb.waitIdle(id)
	c.disconnect(tb)
	return got
}

func wantPayloads(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("%s: got %q, want %q", what, got, want)
	}
}

func wantCount(t *testing.T, tb *testBroker, kind, reason string, want uint64) {
	t.Helper()
	st := tb.b.Stats()
	m := st.Dropped
	if kind == "refused" {
		m = st.Refused
	}
	if got := m[reason]; got != want {
		t.Fatalf("%s[%s] = %d, want %d (dropped %v, refused %v)", kind, reason, got, want, st.Dropped, st.Refused)
	}
}

// pub5 publishes with Paho 5.0 and returns the reason code of the ack.
func pub5(t *testing.T, pc *paho5, topic string, qos byte, retain bool, payload string) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), pahoWait)
	defer cancel()
	r, err := pc.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Retain: retain, Payload: []byte(payload)})
	if r == nil {
		t.Fatalf("publish %s %q: %v", topic, payload, err)
	}
	if qos == 1 && (err != nil) != (r.ReasonCode >= 0x80) { // Paho: a QoS 2 failure is no error
		t.Fatalf("publish %s %q: reason %#x with error %v", topic, payload, r.ReasonCode, err)
	}
	return r.ReasonCode
}

// refused5 publishes with a fresh Paho 5.0 client and checks the refusal:
// PUBACK/PUBREC 0x97, then DISCONNECT 0x97.
func refused5(t *testing.T, tb *testBroker, topic string, qos byte, retain bool, payload string) {
	t.Helper()
	pc := dialPaho5(t, tb.addr, &paho.Connect{ClientID: "refused", CleanStart: true}, nil)
	if rc := pub5(t, pc, topic, qos, retain, payload); rc != byte(packet.CodeQuotaExceeded) {
		t.Fatalf("publish %s %q QoS %d over the quota: reason %#x, want 0x97", topic, payload, qos, rc)
	}
	select {
	case d := <-pc.disc:
		if d.ReasonCode != byte(packet.CodeQuotaExceeded) {
			t.Fatalf("DISCONNECT after the refusal: reason %#x, want 0x97", d.ReasonCode)
		}
	case <-time.After(pahoWait):
		t.Fatalf("no DISCONNECT after the refusal")
	}
}

// refuse: a 5.0 publish for a full session gets PUBACK/PUBREC 0x97 and is
// delivered to nobody, retained nowhere; what was accepted arrives once
// the session drains, and the queue takes messages again.
func TestQueueFullRefuse5(t *testing.T) {
	tb := startBroker(t, Options{MaxQueuedMessages: 3, QueueQoS0: true})
	offline(t, tb, "full", "q/#", 2)
	watch := dialPaho5(t, tb.addr, &paho.Connect{ClientID: "watch", CleanStart: true}, nil)
	watch.sub(t, paho.SubscribeOptions{Topic: "q/#", QoS: 2})
	pub := dialPaho5(t, tb.addr, &paho.Connect{ClientID: "pub", CleanStart: true}, nil)

	for i, qos := range []byte{1, 2, 1} {
		if rc := pub5(t, pub, "q/a", qos, false, fmt.Sprint(i)); rc != 0 {
			t.Fatalf("publish %d: reason %#x, want 0", i, rc)
		}
		watch.in.expect(t, msg{topic: "q/a", payload: fmt.Sprint(i), qos: qos})
	}
	// The queue holds 3: QoS 1 and QoS 2 (and a retained one) are
	// refused, and the publisher disconnected (its later packets are not
	// taken, so nothing it pipelined overtakes the refused one).
	refused5(t, tb, "q/a", 1, false, "x1")
	refused5(t, tb, "q/a", 2, false, "x2")
	refused5(t, tb, "q/r", 1, true, "x3")
	// QoS 0 cannot be refused: the full session (which queues QoS 0)
	// loses it, counted; the
	// others get it.
	pub.publish(t, "q/a", 0, false, "zero")
	watch.in.expect(t, msg{topic: "q/a", payload: "zero", qos: 0})
	watch.in.expectNone(t, 100*time.Millisecond) // nothing refused reached anyone
	wantCount(t, tb, "refused", "queue_full", 3)
	wantCount(t, tb, "dropped", "queue_full", 1)

	late := dialRaw(t, tb.addr, packet.V5)
	late.connect("late", true, nil)
	late.subscribe(1, "q/r", 1)
	late.expectNothing(100 * time.Millisecond) // the refused retained message was not stored

	wantPayloads(t, "drained", drain(t, tb, "full"), "0", "1", "2")
	// Room again: accepted.
	if rc := pub5(t, pub, "q/a", 2, false, "after"); rc != 0 {
		t.Fatalf("after the drain: reason %#x, want 0", rc)
	}
	watch.in.expect(t, msg{topic: "q/a", payload: "after", qos: 2})
	wantPayloads(t, "drained again", drain(t, tb, "full"), "after")
	wantCount(t, tb, "refused", "queue_full", 3)
}

// refuse, 3.1.1: the publisher is disconnected without an ack; what it
// pipelined after the refused publish is not routed; Paho resends from its
// session once it reconnects and there is room.
func TestQueueFullRefuse311(t *testing.T) {
	tb := startBroker(t, Options{MaxQueuedMessages: 2})
	offline(t, tb, "full", "q/#", 1)
	watch := dialRaw(t, tb.addr, packet.V5)
	watch.connect("watch", true, nil)
	watch.subscribe(1, "w/#", 1)

	raw := dialRaw(t, tb.addr, packet.V311)
	raw.connect("raw", true, nil)
	raw.pubAcked(1, "q/a", "0")
	raw.pubAcked(2, "q/a", "1")
	raw.publish(3, "q/a", 1, "refused")
	raw.publish(4, "w/a", 1, "after the refused one") // not for the full session
	if p := raw.expectClosed(); p != nil {
		t.Fatalf("refused 3.1.1 publish: got %T %+v before the close, want nothing", p, p)
	}
	watch.expectNothing(100 * time.Millisecond)
	wantCount(t, tb, "refused", "queue_full", 1)

	// Paho 3.1.1 with a persistent session: the refused message stays in
	// its store and is resent when it reconnects.
	pc := dialPaho3(t, tb.addr, "paho", false, nil)
	tok := pc.Publish("q/a", 1, false, "paho-1")
	waitFor(t, "the publisher to be disconnected", func() bool { return !pc.IsConnected() })
	if tok.WaitTimeout(10 * time.Millisecond) {
		t.Fatalf("refused publish: the token completed (%v), want it pending in the session", tok.Error())
	}
	wantCount(t, tb, "refused", "queue_full", 2)
	wantPayloads(t, "drained", drain(t, tb, "full"), "0", "1")

	wait3(t, pc.Connect(), "reconnect")
	wait3(t, tok, "the resent publish")
	wait3(t, pc.Publish("q/a", 1, false, "paho-2"), "publish after the reconnect")
	wantPayloads(t, "drained again", drain(t, tb, "full"), "paho-1", "paho-2")
	wantCount(t, tb, "refused", "queue_full", 2)
}

// drop_new: every publish is accepted; the full session keeps what it had
// and the rest is counted.
func TestQueueFullDropNew(t *testing.T) {
	pahoVersions(t, func(t *testing.T, dial pahoDialer) {
		tb := startBroker(t, Options{MaxQueuedMessages: 3, QueueFull: QueueDropNew})
		offline(t, tb, "full", "q/#", 2)
		pub := dial(t, tb.addr, "pub", nil)
		for i := range 6 {
			pub.publish(t, "q/a", byte(1+i%2), false, fmt.Sprint(i))
		}
		wantCount(t, tb, "dropped", "queue_full", 3)
		wantCount(t, tb, "refused", "queue_full", 0)
		wantPayloads(t, "drained", drain(t, tb, "full"), "0", "1", "2")
	})
}

// drop_oldest: every publish is accepted; the full session keeps the
// newest, in order, across a power cut; bodies shared by two full sessions
// are freed once both have drained.
func TestQueueFullDropOldest(t *testing.T) {
	pahoVersions(t, func(t *testing.T, dial pahoDialer) {
		tb := startBroker(t, Options{MaxQueuedMessages: 3, QueueFull: QueueDropOldest})
		offline(t, tb, "a", "q/#", 2)
		offline(t, tb, "b", "q/#", 1)
		pub := dial(t, tb.addr, "pub", nil)
		for i := range 7 {
			pub.publish(t, "q/x", byte(1+i%2), false, fmt.Sprint(i))
		}
		wantCount(t, tb, "dropped", "queue_full_oldest", 8) // 4 for each
		if st := tb.b.Stats(); st.QueuedMessages != 6 {
			t.Fatalf("queued entries: got %d, want 6", st.QueuedMessages)
		}
		tb.crash() // every publish was acknowledged: the evictions and entries are synced
		wantPayloads(t, "a after the crash", drain(t, tb, "a"), "4", "5", "6")
		pub = dial(t, tb.addr, "pub", nil)
		pub.publish(t, "q/x", 1, false, "7")
		wantPayloads(t, "b after the crash", drain(t, tb, "b"), "5", "6", "7")
		wantPayloads(t, "a again", drain(t, tb, "a"), "7")
		if st := tb.b.Stats(); st.QueuedMessages != 0 || st.QueuedBytes != 0 {
			t.Fatalf("after both drained: %d entries, %d bytes queued, want 0 and 0", st.QueuedMessages, st.QueuedBytes)
		}
	})
}

// drop_oldest when the oldest entry was written in the drain being built:
// pipelined publishes into a queue of one leave only the last.
func TestQueueFullDropOldestInOneDrain(t *testing.T) {
	tb := startBroker(t, Options{MaxQueuedMessages: 1, QueueFull: QueueDropOldest})
	offline(t, tb, "one", "q/#", 1)
	c := dialRaw(t, tb.addr, packet.V5)
	c.connect("pub", true, nil)
	const n = 50
	for i := 1; i <= n; i++ {
		c.publish(uint16(i), "q/a", 1, fmt.Sprint(i))
	}
	for i := 1; i <= n; i++ {
		if a := c.expectAck(packet.PUBACK, uint16(i)); a.ReasonCode != 0 {
			t.Fatalf("PUBACK %d: reason %#x, want 0", i, a.ReasonCode)
		}
	}
	wantCount(t, tb, "dropped", "queue_full_oldest", n-1)
	wantPayloads(t, "drained", drain(t, tb, "one"), fmt.Sprint(n))
}

// max_queued_bytes: the queue is full when one more message would pass
// the bound; a message larger than the bound by itself is refused too.
func TestQueueBytesQuota(t *testing.T) {
	tb := startBroker(t, Options{MaxQueuedBytes: 3500})
	offline(t, tb, "full", "q/#", 1)
	pub := dialPaho5(t, tb.addr, &paho.Connect{ClientID: "pub", CleanStart: true}, nil)
	kb := func(c byte) string { return strings.Repeat(string(c), 1000) }
	for _, c := range []byte("abc") {
		if rc := pub5(t, pub, "q/a", 1, false, kb(c)); rc != 0 {
			t.Fatalf("publish %c: reason %#x, want 0", c, rc)
		}
	}
	refused5(t, tb, "q/a", 1, false, kb('d'))
	if rc := pub5(t, pub, "q/a", 1, false, "small"); rc != 0 {
		t.Fatalf("a small one that fits: reason %#x, want 0", rc)
	}
	wantCount(t, tb, "refused", "queue_full", 1)
	wantPayloads(t, "drained", drain(t, tb, "full"), kb('a'), kb('b'), kb('c'), "small")
}

// The memory queue of an online non-persistent session (messages waiting
// for its Receive Maximum) follows the same policy.
func TestMemoryQueueFull(t *testing.T) {
	for _, tc := range []struct {
		policy QueueFullPolicy
		codes  []packet.ReasonCode // of the publishes 1..5
		got    []string            // what the subscriber gets
		reason string              // counted
		n      uint64
	}{
		{QueueRefuse, []packet.ReasonCode{0, 0, 0, 0x97, 0x97}, []string{"1", "2", "3"}, "refused/memory_queue_full", 2}, // each refusal disconnects
		{QueueDropNew, []packet.ReasonCode{0, 0, 0, 0, 0}, []string{"1", "2", "3"}, "dropped/memory_queue_full", 2},
		{QueueDropOldest, []packet.ReasonCode{0, 0, 0, 0, 0}, []string{"1", "4", "5"}, "dropped/memory_queue_full_oldest", 2},
	} {
		t.Run("policy="+tc.policy.String(), func(t *testing.T) {
			tb := startBroker(t, Options{MaxMemQueue: 2, QueueFull: tc.policy})
			sub := dialRaw(t, tb.addr, packet.V5)
			sub.connect("sub", true, func(cp *packet.Connect) {
				cp.Props.ReceiveMaximum = 1
				cp.Props.Set(packet.PropReceiveMaximum)
			})
			sub.subscribe(1, "m/#", 1)
			pub := dialRaw(t, tb.addr, packet.V5)
			pub.connect("pub", true, nil)
			first := (*packet.Publish)(nil)
			for i := 1; i <= 5; i++ {
				pub.publish(uint16(i), "m/a", 1, fmt.Sprint(i))
				if a := pub.expectAck(packet.PUBACK, uint16(i)); a.ReasonCode != tc.codes[i-1] {
					t.Fatalf("PUBACK %d: reason %#x, want %#x", i, a.ReasonCode, tc.codes[i-1])
				}
				if tc.codes[i-1] != 0 {
					pub.expectDisconnect(packet.CodeQuotaExceeded)
					pub = dialRaw(t, tb.addr, packet.V5)
					pub.connect("pub", true, nil)
				}
				if i == 1 {
					first = sub.expectPublish() // in the window; not acked yet
				}
			}
			kind, reason, _ := strings.Cut(tc.reason, "/")
			wantCount(t, tb, kind, reason, tc.n)
			got := []string{string(first.Payload)}
			sub.ackPub(first)
			for len(got) < len(tc.got) {
				p := sub.expectPublish()
				got = append(got, string(p.Payload))
				sub.ackPub(p)
			}
			sub.expectNothing(100 * time.Millisecond)
			wantPayloads(t, "subscriber", got, tc.got...)
		})
	}
}

// A 5.0 refusal for a full queue ends the connection after the PUBREC
// 0x97 and its DISCONNECT 0x97: a PUBLISH pipelined behind the refused one
// is neither acknowledged nor routed, so it cannot overtake it.
func TestQueueFullRefuseIgnoresTheRest5(t *testing.T) {
	tb := startBroker(t, Options{MaxQueuedMessages: 1})
	offline(t, tb, "full", "q/#", 2)
	watch := dialRaw(t, tb.addr, packet.V5)
	watch.connect("watch", true, nil)
	watch.subscribe(1, "w/#", 1)
	c := dialRaw(t, tb.addr, packet.V5)
	c.connect("pub", true, nil)
	c.pubAcked(7, "q/a", "kept")
	c.publish(8, "q/a", 2, "refused")
	c.publish(9, "w/a", 1, "behind the refused one")
	if a := c.expectAck(packet.PUBREC, 8); a.ReasonCode != packet.CodeQuotaExceeded {
		t.Fatalf("PUBREC over the quota: reason %#x, want 0x97", a.ReasonCode)
	}
	c.expectDisconnect(packet.CodeQuotaExceeded)
	watch.expectNothing(100 * time.Millisecond)
	wantCount(t, tb, "refused", "queue_full", 1)
	wantPayloads(t, "drained", drain(t, tb, "full"), "kept")
}

// With the dedup window: a retry of a message already stored is
// acknowledged even when the queue is full (it takes no room), and a
// publish refused for a full queue leaves no id behind, so its retry
// once there is room is routed.
func TestQueueFullWithDedup(t *testing.T) {
	tb := startBroker(t, Options{MaxQueuedMessages: 1, DedupWindow: time.Hour})
	offline(t, tb, "full", "q/#", 1)
	c := dialRaw(t, tb.addr, packet.V5)
	c.connect("meter", true, nil)
	c.pubID(1, 1, "q/a", "one", "id-1")
	c.expectAck(packet.PUBACK, 1)
	c.pubID(2, 1, "q/a", "one (retry)", "id-1")
	if a := c.expectAck(packet.PUBACK, 2); a.ReasonCode != 0 {
		t.Fatalf("a duplicate into a full queue: reason %#x, want 0", a.ReasonCode)
	}
	c.pubID(3, 1, "q/a", "two", "id-2")
	if a := c.expectAck(packet.PUBACK, 3); a.ReasonCode != packet.CodeQuotaExceeded {
		t.Fatalf("a new message into a full queue: reason %#x, want 0x97", a.ReasonCode)
	}
	c.expectDisconnect(packet.CodeQuotaExceeded)
	wantPayloads(t, "drained", drain(t, tb, "full"), "one")
	c = dialRaw(t, tb.addr, packet.V5)
	c.connect("meter", true, nil)
	c.pubID(4, 1, "q/a", "two (retry)", "id-2")
	if a := c.expectAck(packet.PUBACK, 4); a.ReasonCode != 0 {
		t.Fatalf("the refused message's retry: reason %#x, want 0", a.ReasonCode)
	}
	wantPayloads(t, "drained again", drain(t, tb, "full"), "two (retry)")
}
