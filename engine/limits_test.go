package engine

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/keelmq/keel/engine/auth"
	"github.com/keelmq/keel/engine/packet"
)

var limitOpts = Options{MaxTopicLevels: 3, MaxTopicLength: 20, MaxSubscriptions: 2}

// 5.0: a filter over the topic limits or beyond max_subscriptions gets
// SUBACK 0x97, a publish over the topic limits PUBACK/PUBREC 0x97; the
// rest of the packet and the connection go on.
func TestTopicAndSubscriptionLimits5(t *testing.T) {
	tb := startBroker(t, limitOpts)
	sub := dialPaho5(t, tb.addr, &paho.Connect{ClientID: "sub", CleanStart: true}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), pahoWait)
	defer cancel()
	sa, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "a/b/c", QoS: 1},
		{Topic: "a/b/c/d", QoS: 1},                      // 4 levels
		{Topic: "a/" + strings.Repeat("b", 20), QoS: 1}, // 22 bytes
		{Topic: "x/#", QoS: 1},
		{Topic: "y", QoS: 1}, // a third subscription
	}})
	if sa == nil {
		t.Fatalf("subscribe: %v", err)
	}
	got := sa.Reasons
	want := []byte{1, 0x97, 0x97, 1, 0x97}
	if string(got) != string(want) {
		t.Fatalf("SUBACK: got % x, want % x", got, want)
	}
	if got := sub.sub(t, paho.SubscribeOptions{Topic: "x/#", QoS: 2}); got[0] != 2 {
		t.Fatalf("replacing a subscription at the limit: got %#x, want 2", got[0])
	}
	wantCount(t, tb, "refused", "topic_limits", 2)
	wantCount(t, tb, "refused", "max_subscriptions", 1)

	pub := dialPaho5(t, tb.addr, &paho.Connect{ClientID: "pub", CleanStart: true}, nil)
	for _, tc := range []struct {
		topic string
		qos   byte
	}{{"x/b/c/d", 1}, {"x/b/c/d", 2}, {"x/" + strings.Repeat("b", 20), 1}} {
		if rc := pub5(t, pub, tc.topic, tc.qos, false, "over"); rc != byte(packet.CodeQuotaExceeded) {
			t.Fatalf("publish %s QoS %d: reason %#x, want 0x97", tc.topic, tc.qos, rc)
		}
	}
	pub.publish(t, "x/b/c/d", 0, false, "over")
	pub.publish(t, "x/b/c", 2, false, "fits")
	sub.in.expect(t, msg{topic: "x/b/c", payload: "fits", qos: 2})
	sub.in.expectNone(t, 100*time.Millisecond)
	wantCount(t, tb, "refused", "topic_limits", 6)
}

// 3.1.1: SUBACK 0x80 for a filter over a limit; a publish over the topic
// limits is acknowledged and dropped (a resend would be refused again),
// counted; a will on such a topic is not published.
func TestTopicAndSubscriptionLimits311(t *testing.T) {
	tb := startBroker(t, limitOpts)
	sub := dialPaho3(t, tb.addr, "sub", true, nil)
	if rc := sub.sub(t, "a/b/c/d", 1); rc != 0x80 {
		t.Fatalf("SUBACK for 4 levels: got %#x, want 0x80", rc)
	}
	if rc := sub.sub(t, "a/#", 1); rc != 1 {
		t.Fatalf("SUBACK for a/#: got %#x, want 1", rc)
	}
	sub.sub(t, "b", 1)
	if rc := sub.sub(t, "c", 1); rc != 0x80 {
		t.Fatalf("SUBACK for a third subscription: got %#x, want 0x80", rc)
	}
	wantCount(t, tb, "refused", "max_subscriptions", 1)

	w := dialPaho3(t, tb.addr, "w", true, func(o *mqtt.ClientOptions) { o.SetWill("a/b/c/will", "lost", 1, false) })
	w.cut()
	waitFor(t, "the will's refusal", func() bool { return tb.b.Stats().Refused["topic_limits"] == 2 })

	pub := dialPaho3(t, tb.addr, "pub", true, nil)
	pub.pub(t, "a/b/c/d", 1, false, "over") // acknowledged
	pub.pub(t, "a/b/c/d", 2, false, "over")
	pub.pub(t, "a/b/c", 1, false, "fits")
	sub.in.expect(t, msg{topic: "a/b/c", payload: "fits", qos: 1})
	sub.in.expectNone(t, 100*time.Millisecond)
	wantCount(t, tb, "refused", "topic_limits", 4)
}

// Over max_publish_rate a 5.0 QoS 1/2 PUBLISH gets PUBACK/PUBREC 0x97 and
// goes nowhere (0x96 is a DISCONNECT reason only); its packet id is free
// again.
func TestPublishRate5(t *testing.T) {
	// A burst of 2, then one token an hour: within the test, the third
	// publish is over the rate.
	tb := startBroker(t, Options{MaxPublishRate: 1.0 / 3600, MaxPublishBurst: 2})
	watch := dialRaw(t, tb.addr, packet.V5)
	watch.connect("watch", true, nil)
	watch.subscribe(1, "r/#", 2)
	c := dialRaw(t, tb.addr, packet.V5)
	c.connect("pub", true, nil)
	c.pubAcked(1, "r/a", "one")
	c.publish(2, "r/a", 2, "two")
	if a := c.expectAck(packet.PUBREC, 2); a.ReasonCode != 0 {
		t.Fatalf("PUBREC within the burst: reason %#x, want 0", a.ReasonCode)
	}
	c.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 2})
	c.expectAck(packet.PUBCOMP, 2)
	c.publish(3, "r/a", 1, "over")
	if a := c.expectAck(packet.PUBACK, 3); a.ReasonCode != packet.CodeQuotaExceeded {
		t.Fatalf("PUBACK over the rate: reason %#x, want 0x97", a.ReasonCode)
	}
	c.publish(4, "r/a", 2, "over")
	if a := c.expectAck(packet.PUBREC, 4); a.ReasonCode != packet.CodeQuotaExceeded {
		t.Fatalf("PUBREC over the rate: reason %#x, want 0x97", a.ReasonCode)
	}
	c.publish(4, "r/a", 2, "over again") // the id is free: a new message, refused again
	if a := c.expectAck(packet.PUBREC, 4); a.ReasonCode != packet.CodeQuotaExceeded {
		t.Fatalf("PUBREC on the freed id: reason %#x, want 0x97", a.ReasonCode)
	}
	c.ping() // the connection stays
	watch.expectPub("r/a", "one")
	watch.expectPub("r/a", "two")
	watch.expectNothing(100 * time.Millisecond)
	wantCount(t, tb, "refused", "publish_rate", 3)

	// Paho 5.0, with a bucket of its own.
	pc := dialPaho5(t, tb.addr, &paho.Connect{ClientID: "paho", CleanStart: true}, nil)
	for i, want := range []byte{0, 0, 0x97} {
		if rc := pub5(t, pc, "r/p", 1, false, "p"); rc != want {
			t.Fatalf("Paho publish %d: reason %#x, want %#x", i, rc, want)
		}
	}
	wantCount(t, tb, "refused", "publish_rate", 4)
}

// 3.1.1 over max_publish_rate is slowed, not refused: the broker stops
// reading the connection (a PINGREQ behind the waiting PUBLISH is not
// answered) and drops nothing.
func TestPublishRate311BackPressure(t *testing.T) {
	tb := startBroker(t, Options{MaxPublishRate: 1.0 / 3600, MaxPublishBurst: 1})
	c := dialRaw(t, tb.addr, packet.V311)
	c.connect("pub", true, nil)
	c.pubAcked(1, "r/a", "one")
	c.publish(2, "r/a", 1, "waits")
	c.send(&packet.Pingreq{})
	c.expectNothing(200 * time.Millisecond)
	if n := tb.b.Stats().PublishesThrottled; n != 1 {
		t.Fatalf("PublishesThrottled = %d, want 1", n)
	}
	wantCount(t, tb, "refused", "publish_rate", 0)
}

// A QoS 2 PUBLISH refused with PUBREC 0x97 (here: its topic is too deep)
// ends its flow: the client may use the packet id for a new message
// [MQTT-4.3.3-9], which is a new message to the broker too, checked by
// the ACL like any other.
func TestRefusedQoS2IDIsFree(t *testing.T) {
	acl, err := auth.ParseACL("acl", strings.NewReader("topic readwrite q/#\ntopic read w/#\n"))
	if err != nil {
		t.Fatal(err)
	}
	tb := startBroker(t, Options{MaxTopicLevels: 3, Authorizer: auth.NewLive(acl)})
	c := dialRaw(t, tb.addr, packet.V5)
	c.connect("pub", true, nil)
	c.publish(8, "q/a/b/c", 2, "too deep")
	if a := c.expectAck(packet.PUBREC, 8); a.ReasonCode != packet.CodeQuotaExceeded {
		t.Fatalf("PUBREC for 4 levels: reason %#x, want 0x97", a.ReasonCode)
	}
	c.publish(8, "w/a", 2, "not allowed") // a new message with the same id
	if a := c.expectAck(packet.PUBREC, 8); a.ReasonCode != packet.CodeNotAuthorized {
		t.Fatalf("PUBREC for a denied topic on the freed id: reason %#x, want 0x87", a.ReasonCode)
	}
	c.ping()
}
