package engine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/keelmq/keel/engine/packet"
)

// Options.MaxKeepAlive: 65535 by default, so every 5.0 connection has a
// keep alive; 3.1.1 above it is refused.

func TestServerKeepAliveByDefault(t *testing.T) {
	for _, c := range []struct {
		opts    Options
		ka      uint16
		present bool
		want    uint16
	}{
		{Options{}, 0, true, 65535}, // none asked: the default limit [MQTT-3.2.2-21]
		{Options{}, 60, false, 0},
		{Options{}, 65535, false, 0},
		{Options{MaxKeepAlive: -1}, 0, false, 0}, // no limit: 0 stands
		{Options{MaxKeepAlive: 70000}, 0, true, 65535},
	} {
		t.Run(fmt.Sprintf("max=%d/ka=%d", c.opts.MaxKeepAlive, c.ka), func(t *testing.T) {
			tb := startBroker(t, c.opts)
			rc := dialRaw(t, tb.addr, packet.V5)
			ca := rc.connect("ka", true, func(cp *packet.Connect) { cp.KeepAlive = c.ka })
			has := ca.Props.Has(packet.PropServerKeepAlive)
			if ca.ReasonCode != 0 || has != c.present || ca.Props.ServerKeepAlive != c.want {
				t.Fatalf("got CONNACK %v, Server Keep Alive %d (present %v), want success, %d (present %v)",
					ca.ReasonCode, ca.Props.ServerKeepAlive, has, c.want, c.present)
			}
			rc.ping()
		})
	}
}

// 3.1.1 and 3.1 have no Server Keep Alive: a keep alive above the limit is
// refused with return code 2 (as Mosquitto does) and counted; 0 is taken.
func TestMaxKeepAlive311(t *testing.T) {
	tb := startBroker(t, Options{MaxKeepAlive: 10})
	refused := 0
	for _, v := range []byte{packet.V311, packet.V31} {
		for _, c := range []struct {
			ka     uint16
			refuse bool
		}{{11, true}, {65535, true}, {10, false}, {1, false}, {0, false}} {
			rc := dialRaw(t, tb.addr, v)
			ca := rc.connect(fmt.Sprintf("ka-%d-%d", v, c.ka), true, func(cp *packet.Connect) { cp.KeepAlive = c.ka })
			if c.refuse {
				refused++
				if ca.ReasonCode != packet.RetIdentifierRejected {
					t.Fatalf("v%d keep alive %d: got return code %d, want 2", v, c.ka, ca.ReasonCode)
				}
				rc.expectEOF()
				continue
			}
			if ca.ReasonCode != 0 {
				t.Fatalf("v%d keep alive %d: got return code %d, want 0", v, c.ka, ca.ReasonCode)
			}
			rc.ping()
		}
	}
	if got := tb.b.Stats().Refused["keep_alive"]; got != uint64(refused) {
		t.Fatalf("refused keep_alive = %d, want %d", got, refused)
	}
	// With the default limit no 3.1.1 keep alive is over it.
	def := startBroker(t, Options{})
	rc := dialRaw(t, def.addr, packet.V311)
	if ca := rc.connect("max", true, func(cp *packet.Connect) { cp.KeepAlive = 65535 }); ca.ReasonCode != 0 {
		t.Fatalf("keep alive 65535, default limit: got return code %d, want 0", ca.ReasonCode)
	}
}

// Paho 3.1.1 sees the refusal as "identifier rejected".
func TestPahoMaxKeepAlive311(t *testing.T) {
	tb := startBroker(t, Options{MaxKeepAlive: 10})
	o := mqtt.NewClientOptions().AddBroker("tcp://" + tb.addr).SetClientID("paho-ka").
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).
		SetKeepAlive(60 * time.Second).SetConnectTimeout(pahoWait)
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(pahoWait) {
		t.Fatal("connect: timed out")
	}
	if err := tok.Error(); !errors.Is(err, packets.ErrorRefusedIDRejected) {
		t.Fatalf("connect with keep alive 60 over a limit of 10: got %v, want %v", err, packets.ErrorRefusedIDRejected)
	}
	pc := dialPaho3(t, tb.addr, "paho-ka-ok", true, func(o *mqtt.ClientOptions) { o.SetKeepAlive(10 * time.Second) })
	pc.sub(t, "ok", 0)
}

// Paho 5.0 asking for no keep alive is told the limit, and keeps it: it
// pings within it.
func TestPahoServerKeepAlive(t *testing.T) {
	for _, max := range []int{0, 1} {
		t.Run(fmt.Sprintf("max=%d", max), func(t *testing.T) {
			tb := startBroker(t, Options{MaxKeepAlive: max})
			nc, err := net.Dial("tcp", tb.addr)
			if err != nil {
				t.Fatal(err)
			}
			c := paho.NewClient(paho.ClientConfig{Conn: nc, PacketTimeout: pahoWait})
			ctx, cancel := context.WithTimeout(context.Background(), pahoWait)
			defer cancel()
			ca, err := c.Connect(ctx, &paho.Connect{ClientID: "paho-ska", CleanStart: true, KeepAlive: 0})
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}); <-c.Done() })
			want := uint16(max)
			if max == 0 {
				want = 65535
			}
			if ca.Properties == nil || ca.Properties.ServerKeepAlive == nil || *ca.Properties.ServerKeepAlive != want {
				t.Fatalf("got CONNACK properties %+v, want Server Keep Alive %d", ca.Properties, want)
			}
			if max == 1 {
				// Paho sends nothing but its pings: packets read after
				// CONNECT are PINGREQs, sent because of the 1 s it was
				// told. Three of them outlast the 1.5 s the server waits.
				waitFor(t, "three PINGREQs from Paho", func() bool { return tb.b.stats.recvPackets.Load() >= 3 })
				select {
				case <-c.Done():
					t.Fatal("connection closed, want it kept by the pings")
				default:
				}
			}
		})
	}
}
