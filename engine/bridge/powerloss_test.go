package bridge

import (
	"fmt"
	"github.com/keelmq/keel/engine/packet"
	"sync"
	"testing"

	"github.com/keelmq/keel/engine/enginetest"
)

// A power cut of the edge, on Pebble's crash-simulating filesystem (only
// what was synced survives), at a moment chosen so that each piece of the
// bridge's own state is in it: an outbound binding released (the remote's
// PUBREC came in, PUBREL went out), two outbound bindings sent and
// unacknowledged (their queue entries), and an inbound QoS 2 id (the edge
// sent PUBREC for the remote's PUBLISH, which the remote treats as lost).
// After the restart the remote, a scripted server that keeps its session,
// must see the released one resent as PUBREL, never PUBLISH, the other two
// as PUBLISH with DUP and their ids [MQTT-4.4.0-1], and its own resent
// PUBLISH must not be routed twice [MQTT-4.3.3-10].
func TestBridgePowerLossOwnState(t *testing.T) {
	type pkt struct {
		kind string // "PUBLISH" or the ack's kind
		id   uint16
		dup  bool
	}
	var mu sync.Mutex
	var round2 []pkt               // what the bridge sent in the second connection, in order
	ready := make(chan struct{})   // round 1: the state is there
	settled := make(chan struct{}) // round 2: every flow over
	var readyOnce, settledOnce sync.Once
	round := 0
	fake := startFakeRemote(t, func(l *link) {
		mu.Lock()
		round++
		r := round
		mu.Unlock()
		l.send(&packet.Connack{SessionPresent: r > 1})
		var pubs []uint16 // round 1: out PUBLISH ids
		relSeen, rec7 := false, false
		done := map[uint16]bool{} // round 2: out flows completed
		in7done := false
		for {
			p, err := l.next()
			if err != nil {
				return
			}
			switch p := p.(type) {
			case *packet.Subscribe:
				l.send(&packet.Suback{PacketID: p.PacketID, Codes: []packet.ReasonCode{2}})
				// Round 1: a new message; round 2: its resend, as if the
				// edge's PUBREC had been lost.
				l.send(&packet.Publish{QoS: 2, PacketID: 7, Dup: r > 1, Topic: "down/y", Payload: []byte("1")})
			case *packet.Publish:
				if r == 1 {
					pubs = append(pubs, p.PacketID)
					if len(pubs) == 1 {
						l.send(&packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID})
					}
				} else {
					mu.Lock()
					round2 = append(round2, pkt{"PUBLISH", p.PacketID, p.Dup})
					mu.Unlock()
					l.send(&packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID})
				}
			case *packet.Ack:
				switch {
				case p.Kind == packet.PUBREC && p.PacketID == 7:
					if r == 1 {
						rec7 = true // "lost": no PUBREL
					} else {
						l.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 7})
					}
				case p.Kind == packet.PUBCOMP && p.PacketID == 7:
					in7done = true
					// A new message after it: the sink gets it once the
					// resend was handled, so a second copy of "1" would
					// come before it.
					l.send(&packet.Publish{QoS: 2, PacketID: 8, Topic: "down/y", Payload: []byte("2")})
				case p.Kind == packet.PUBCOMP && p.PacketID == 8:
				case p.Kind == packet.PUBREC && p.PacketID == 8:
					l.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 8})
				case p.Kind == packet.PUBREL && r == 1:
					relSeen = true
				case p.Kind == packet.PUBREL:
					mu.Lock()
					round2 = append(round2, pkt{"PUBREL", p.PacketID, false})
					mu.Unlock()
					l.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: p.PacketID})
					done[p.PacketID] = true
				}
			}
			if r == 1 && relSeen && rec7 && len(pubs) == 3 {
				readyOnce.Do(func() { close(ready) })
			}
			if r > 1 && in7done && len(done) == 3 {
				settledOnce.Do(func() { close(settled) })
			}
		}
	})
	// The sink subscribes before the bridge starts: the remote's first
	// message comes with the bridge's SUBSCRIBE.
	e := &edge{t: t, b: enginetest.Start(t, enginetest.Options{}), cfg: bridgeConfig(t, fake.Addr(), packet.V5, "up/# out 2", "down/# in 2")}
	e.f = enginetest.NewFront(t, e.b.Addr)
	down := newSink(t, e.Addr(), "down-sink", "down/#", packet.V5)
	e.startBridge()
	t.Cleanup(func() { e.br.Close() })
	connected(t, e.br)
	pe := newSource(t, e.Addr(), "edge-pub")
	pe.publish("up/x", 1, 3)
	<-ready
	down.waitN(1)

	e.crash(0, 1)
	q, ok := e.b.Engine.SessionQueue(LocalClientID("c"))
	// Three bindings, each with its entry (the released one keeps only its
	// packet id, no message: sessions.MarkReleased).
	if !ok || q.Entries != 3 || q.Inflight != 3 {
		t.Fatalf("the bridge's session after the power cut: %+v (found %t); want 3 queue entries, 3 bindings", q, ok)
	}
	down.reconnect()
	<-settled
	checkSeq(t, down.waitN(2), "down/y", 2)

	mu.Lock()
	got := fmt.Sprint(round2[:min(3, len(round2))]) // then the PUBRELs for the remote's PUBRECs
	mu.Unlock()
	if want := fmt.Sprint([]pkt{{"PUBREL", 1, false}, {"PUBLISH", 2, true}, {"PUBLISH", 3, true}}); got != want {
		t.Fatalf("resent after the power cut: %s, want %s", got, want)
	}
	waitFor(t, "the bridge's queue empty", func() bool {
		q, _ := e.b.Engine.SessionQueue(LocalClientID("c"))
		return q.Entries == 0 && q.Inflight == 0
	})
}
