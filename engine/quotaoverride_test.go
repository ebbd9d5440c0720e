package engine

import (
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Options.QueueLimits gives sessions bounds of their own, from their
// client id and creating username, kept across a power cut (they are
// resolved again for the restored sessions); Paho 3.1.1 publishers see
// the small one refuse (disconnected without an ack) where the default
// accepts, and draining gives exactly what was accepted.
func TestQueueLimitsOverride(t *testing.T) {
	limits := func(id, user string) (int64, int64, bool) {
		switch {
		case id == "tiny":
			return 1, 0, true
		case user == "big":
			return -1, 0, true // no limit
		}
		return 0, 0, false
	}
	tb := startBroker(t, Options{MaxQueuedMessages: 2, QueueLimits: limits})
	offline(t, tb, "tiny", "t/#", 1)
	offline(t, tb, "other", "o/#", 1)
	pc := dialPaho3(t, tb.addr, "big-sess", false, nil)
	pc.sub(t, "b/#", 1)
	pc.Disconnect(100)
	// big-sess connected without a username: the default applies until a
	// session created by user big exists.
	tb.inCore(func() {
		s := tb.b.core.sessions.Sessions["big-sess"]
		if n, _ := tb.b.queueLimits(s); n != 2 {
			t.Errorf("anonymous session's bound %d, want the default 2", n)
		}
	})
	ub := dialPaho3(t, tb.addr, "user-big", false, func(o *mqtt.ClientOptions) { o.SetUsername("big") })
	ub.Disconnect(100)
	tb.crash()

	pub := dialPaho3(t, tb.addr, "pub", true, nil)
	pub.pub(t, "t/a", 1, false, "t0")
	tok := pub.Publish("t/a", 1, false, "t1")
	waitFor(t, "the publisher to be disconnected", func() bool { return !pub.IsConnected() })
	if tok.WaitTimeout(10*time.Millisecond) && tok.Error() == nil {
		t.Fatal("publish over tiny's bound of 1: acknowledged, want refused")
	}
	wantCount(t, tb, "refused", "queue_full", 1)
	pub = dialPaho3(t, tb.addr, "pub", true, nil)
	pub.pub(t, "o/a", 1, false, "o0")
	pub.pub(t, "o/a", 1, false, "o1")
	wantPayloads(t, "tiny", drain(t, tb, "tiny"), "t0")
	wantPayloads(t, "other", drain(t, tb, "other"), "o0", "o1")
	tb.inCore(func() {
		s := tb.b.core.sessions.Sessions["user-big"]
		if n, _ := tb.b.queueLimits(s); n != -1 {
			t.Errorf("user big's session after the restart: bound %d, want -1 (none)", n)
		}
	})
}
