package engine

import (
	"fmt"
	"testing"
)

// 3.1.1 clients over max_publish_rate are slowed, never dropped: every
// publish of a Paho 3.1.1 client sending faster than the rate is
// acknowledged and delivered, in order, some of them after a wait
// (counted in PublishesThrottled), and none is refused.
func TestPublishRate311SlowedNotDropped(t *testing.T) {
	tb := startBroker(t, Options{MaxPublishRate: 50, MaxPublishBurst: 1})
	sub := dialPaho3(t, tb.addr, "sub", true, nil)
	sub.sub(t, "r/#", 1)
	pub := dialPaho3(t, tb.addr, "pub", true, nil)
	const n = 10
	for i := range n {
		pub.Publish("r/a", byte(i%2), false, fmt.Sprint(i)) // pipelined, QoS 0 and 1
	}
	for i := range n {
		m := sub.in.next(t)
		if m.payload != fmt.Sprint(i) {
			t.Fatalf("message %d: got %q, want %q", i, m.payload, fmt.Sprint(i))
		}
	}
	if got := tb.b.Stats().PublishesThrottled; got == 0 {
		t.Fatalf("PublishesThrottled = 0, want > 0 (%d publishes at once over a rate of 50/s with a burst of 1)", n)
	}
	wantCount(t, tb, "refused", "publish_rate", 0)
}
