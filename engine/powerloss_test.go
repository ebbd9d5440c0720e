package engine

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/keelmq/keel/engine/packet"
)

// TestPowerLossRandomized pipelines publishes into persistent sessions and
// cuts the power at a random moment, keeping a random part of what was
// written but not synced (as a real power loss may). After restart every
// acknowledged message must be delivered: exactly once at QoS 2, in order,
// and the broker must serve again.
func TestPowerLossRandomized(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 7))
	rounds := 12
	if testing.Short() {
		rounds = 4
	}
	for round := 0; round < rounds; round++ {
		qos := byte(1 + round%2)
		keep := rng.IntN(101)
		t.Run(fmt.Sprintf("round=%d/qos=%d/unsynced_kept=%d%%", round, qos, keep), func(t *testing.T) {
			tb := startBroker(t, Options{})
			sub := dialRaw(t, tb.addr, packet.V5)
			sub.connect("s", false, nil)
			sub.subscribe(1, "p/#", qos)
			sub.send(&packet.Disconnect{})

			pub := dialRaw(t, tb.addr, packet.V311)
			pub.connect("p", false, nil)
			const n = 300
			crashAfter := 1 + rng.IntN(n)
			// Pipeline everything, then read acks until the crash point.
			go func() {
				for i := 1; i <= n; i++ {
					buf, _ := (&packet.Publish{QoS: qos, PacketID: uint16(i), Topic: "p/x", Payload: []byte(strconv.Itoa(i))}).Append(nil, packet.V311)
					if _, err := pub.nc.Write(buf); err != nil {
						return
					}
				}
			}()
			acked := 0
			for acked < crashAfter {
				p := pub.recv()
				if a, ok := p.(*packet.Ack); ok && (a.Kind == packet.PUBACK || a.Kind == packet.PUBREC) {
					if int(a.PacketID) != acked+1 {
						t.Fatalf("ack for %d, want %d: acks out of order", a.PacketID, acked+1)
					}
					acked++
				}
			}
			mem := tb.fs.(*vfs.MemFS)
			img := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: keep, RNG: rand.New(rand.NewPCG(seed, uint64(round)))})
			tb.stop()
			tb.fs = img
			tb.start()

			sub = dialRaw(t, tb.addr, packet.V5)
			if !sub.connect("s", false, nil).SessionPresent {
				t.Fatal("session lost")
			}
			seen := map[int]int{}
			last := 0
			for {
				p, err := sub.tryRecv(700 * time.Millisecond)
				if err != nil {
					break
				}
				switch p := p.(type) {
				case *packet.Publish:
					i, _ := strconv.Atoi(string(p.Payload))
					seen[i]++
					if seen[i] == 1 {
						if i < last {
							t.Errorf("message %d after %d: out of order", i, last)
						}
						last = i
					}
					if p.QoS == 1 {
						sub.send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
					} else {
						sub.send(&packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID})
					}
				case *packet.Ack:
					if p.Kind == packet.PUBREL {
						sub.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: p.PacketID})
					}
				}
			}
			for i := 1; i <= acked; i++ {
				if seen[i] == 0 {
					t.Fatalf("acknowledged message %d lost (acked %d, kept %d%% of unsynced data)", i, acked, keep)
				}
			}
			for i, c := range seen {
				if qos == 2 && c > 1 {
					t.Errorf("QoS 2 message %d delivered %d times", i, c)
				}
			}
			// The broker serves again.
			p2 := dialRaw(t, tb.addr, packet.V5)
			p2.connect("p2", true, nil)
			p2.publish(1, "p/after", 1, "0")
			p2.expectAck(packet.PUBACK, 1)
		})
	}
}
