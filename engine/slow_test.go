package engine

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/keelmq/keel/engine/packet"
)

// TestSlowConsumerCut: a subscriber that stops reading is disconnected once
// its queue passes Options.MaxOutboundBytes, rather than holding memory or
// the publisher; other clients keep working.
func TestSlowConsumerCut(t *testing.T) {
	tb := startBroker(t, Options{MaxOutboundBytes: 1 << 20})
	by := newBystander(t, tb)
	slow := dialRaw(t, tb.addr, packet.V311)
	slow.connect("slow", true, nil)
	slow.subscribe(1, "sc/#", 0)
	pub := dialRaw(t, tb.addr, packet.V311)
	pub.connect("pub", true, nil)

	// 64 MB: more than the socket buffers of both ends can hold, so the
	// broker's queue for slow must grow past 1 MB.
	payload := make([]byte, 64<<10)
	for i := 0; i < 1024; i++ {
		pub.send(&packet.Publish{Topic: "sc/x", Payload: payload})
	}
	pub.ping() // the publisher was never blocked for long
	// Draining what reached slow's socket ends in EOF or a reset, not in a
	// timeout.
	for {
		slow.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := packet.Read(slow.br, packet.V311, 0)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("slow subscriber still connected, want it cut")
			}
			break
		}
	}
	by.check()
}
