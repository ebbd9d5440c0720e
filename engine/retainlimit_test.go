package engine

import (
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/keelmq/keel/engine/packet"
)

// retainedOn subscribes a fresh 5.0 client to filter and returns the
// retained messages it is sent, by topic.
func retainedOn(t *testing.T, tb *testBroker, filter string) map[string]string {
	t.Helper()
	c := dialPaho5(t, tb.addr, &paho.Connect{ClientID: "late", CleanStart: true}, nil)
	c.sub(t, paho.SubscribeOptions{Topic: filter, QoS: 1})
	got := map[string]string{}
	for {
		select {
		case m := <-c.in:
			if !m.retain {
				t.Fatalf("late subscriber: got %v, want only retained messages", m)
			}
			got[m.topic] = m.payload
		case <-time.After(200 * time.Millisecond):
			c.disconnect()
			return got
		}
	}
}

func wantRetained(t *testing.T, got map[string]string, want ...string) {
	t.Helper()
	var g []string
	for i := 0; i+1 < len(want); i += 2 {
		if got[want[i]] != want[i+1] {
			t.Fatalf("retained: got %v, want %v", got, want)
		}
	}
	for k := range got {
		g = append(g, k)
	}
	if len(g) != len(want)/2 {
		t.Fatalf("retained: got %v, want %v", got, want)
	}
}

// 5.0: a retained publish over max_retained_messages or
// max_retained_message_size gets PUBACK/PUBREC 0x97 and reaches nobody;
// the connection stays; replacing and deleting are allowed; QoS 0, which
// has no ack, is routed as a non-retained message, counted.
func TestRetainedLimits5(t *testing.T) {
	tb := startBroker(t, Options{MaxRetainedMessages: 2, MaxRetainedMessageSize: 40})
	watch := dialPaho5(t, tb.addr, &paho.Connect{ClientID: "watch", CleanStart: true}, nil)
	watch.sub(t, paho.SubscribeOptions{Topic: "r/#", QoS: 2})
	pub := dialPaho5(t, tb.addr, &paho.Connect{ClientID: "pub", CleanStart: true}, nil)
	ok := func(topic string, qos byte, payload string) {
		t.Helper()
		if rc := pub5(t, pub, topic, qos, true, payload); rc != 0 {
			t.Fatalf("retained publish %s %q: reason %#x, want 0", topic, payload, rc)
		}
		watch.in.expect(t, msg{topic: topic, payload: payload, qos: qos})
	}
	refused := func(topic string, qos byte, payload string) {
		t.Helper()
		if rc := pub5(t, pub, topic, qos, true, payload); rc != byte(packet.CodeQuotaExceeded) {
			t.Fatalf("retained publish %s %q over the limits: reason %#x, want 0x97", topic, payload, rc)
		}
	}
	ok("r/1", 1, "a")
	ok("r/2", 2, "b")
	refused("r/3", 1, "c")                     // a third topic
	refused("r/3", 2, "c")                     // QoS 2: PUBREC 0x97 ends the flow
	refused("r/1", 1, strings.Repeat("x", 40)) // topic and payload over 40 bytes
	ok("r/1", 1, "a2")                         // replacing one is within the count
	watch.in.expectNone(t, 100*time.Millisecond)
	wantCount(t, tb, "refused", "retained_full", 3)
	wantRetained(t, retainedOn(t, tb, "r/#"), "r/1", "a2", "r/2", "b")

	// QoS 0 over the count: routed, not retained.
	pub.publish(t, "r/4", 0, true, "zero")
	watch.in.expect(t, msg{topic: "r/4", payload: "zero", qos: 0})
	wantCount(t, tb, "dropped", "retained_full", 1)

	// Deleting one is always allowed, and makes room.
	ok("r/2", 1, "")
	ok("r/3", 1, "c")
	wantRetained(t, retainedOn(t, tb, "r/#"), "r/1", "a2", "r/3", "c")
	wantCount(t, tb, "refused", "retained_full", 3)
	if st := tb.b.Stats(); st.Retained != 2 || st.RetainedBytes != int64(len("r/1a2r/3c")) {
		t.Fatalf("stats: %d retained, %d bytes; want 2 and %d", st.Retained, st.RetainedBytes, len("r/1a2r/3c"))
	}
	tb.restart()
	if st := tb.b.Stats(); st.Retained != 2 || st.RetainedBytes != int64(len("r/1a2r/3c")) {
		t.Fatalf("stats after a restart: %d retained, %d bytes; want 2 and %d", st.Retained, st.RetainedBytes, len("r/1a2r/3c"))
	}
}

// max_retained_bytes bounds the whole set: a new topic or a larger
// replacement that would pass it is refused; one that fits is not.
func TestRetainedBytesLimit(t *testing.T) {
	tb := startBroker(t, Options{MaxRetainedBytes: 20, SysInterval: time.Hour}) // $SYS topics do not count
	pub := dialPaho5(t, tb.addr, &paho.Connect{ClientID: "pub", CleanStart: true}, nil)
	for _, tc := range []struct {
		topic, payload string
		want           byte
	}{
		{"b/1", "0123456789", 0},                                      // 13 bytes
		{"b/2", "0123456", byte(packet.CodeQuotaExceeded)},            // 13 + 10 > 20
		{"b/1", "01234567890123456", 0},                               // replaced: 20
		{"b/1", "012345678901234567", byte(packet.CodeQuotaExceeded)}, // 21
		{"b/1", "0", 0},       // 4
		{"b/2", "0123456", 0}, // 4 + 10
	} {
		if rc := pub5(t, pub, tc.topic, 1, true, tc.payload); rc != tc.want {
			t.Fatalf("retained %s %q: reason %#x, want %#x", tc.topic, tc.payload, rc, tc.want)
		}
	}
	wantRetained(t, retainedOn(t, tb, "b/#"), "b/1", "0", "b/2", "0123456")
	wantCount(t, tb, "refused", "retained_full", 2)
}

// 3.1.1 has no reason code: a retained publish over the limits is
// acknowledged and routed as a non-retained message, counted; the
// retained set keeps what it had.
func TestRetainedLimits311(t *testing.T) {
	tb := startBroker(t, Options{MaxRetainedMessages: 1})
	watch := dialPaho5(t, tb.addr, &paho.Connect{ClientID: "watch", CleanStart: true}, nil)
	watch.sub(t, paho.SubscribeOptions{Topic: "r/#", QoS: 1, RetainAsPublished: true})
	pub := dialPaho3(t, tb.addr, "pub3", true, nil)
	pub.pub(t, "r/1", 1, true, "kept")
	watch.in.expect(t, msg{topic: "r/1", payload: "kept", qos: 1, retain: true})
	pub.pub(t, "r/2", 1, true, "routed")
	pub.pub(t, "r/3", 2, true, "routed too")
	// Retain As Published shows what was kept: these were not.
	watch.in.expect(t, msg{topic: "r/2", payload: "routed", qos: 1}, msg{topic: "r/3", payload: "routed too", qos: 1})
	wantCount(t, tb, "dropped", "retained_full", 2)
	wantCount(t, tb, "refused", "retained_full", 0)
	wantRetained(t, retainedOn(t, tb, "r/#"), "r/1", "kept")
	if !pub.IsConnected() {
		t.Fatal("the 3.1.1 publisher was disconnected, want it connected")
	}
}
