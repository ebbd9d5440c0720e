package main

import (
	"bufio"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/keelmq/keel/engine/packet"
)

// fakeBroker is just enough of an MQTT server (QoS 0 and 1, one level of
// topics, no sessions) to test the load generator's accounting: it
// acknowledges every publish and forwards all but every dropEvery-th.
type fakeBroker struct {
	ln        net.Listener
	dropEvery int

	mu   sync.Mutex
	subs map[string][]*fakeConn // filter -> subscribers
	n    int                    // publishes seen
	wg   sync.WaitGroup
}

type fakeConn struct {
	nc      net.Conn
	version byte
	mu      sync.Mutex // serializes writes
	w       *bufio.Writer
	nextID  uint16
}

func (c *fakeConn) send(p packet.Packet) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if pub, ok := p.(*packet.Publish); ok && pub.QoS > 0 {
		c.nextID = c.nextID%65535 + 1
		pub.PacketID = c.nextID
	}
	b, err := p.Append(nil, c.version)
	if err != nil {
		panic(err)
	}
	c.w.Write(b)
	c.w.Flush()
}

func startFakeBroker(t *testing.T, dropEvery int) *fakeBroker {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &fakeBroker{ln: ln, dropEvery: dropEvery, subs: map[string][]*fakeConn{}}
	b.wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			b.wg.Go(func() { b.serve(nc) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		for _, cs := range b.subs {
			for _, c := range cs {
				c.nc.Close()
			}
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
	return b
}

func (b *fakeBroker) serve(nc net.Conn) {
	defer nc.Close()
	r := bufio.NewReader(nc)
	c := &fakeConn{nc: nc, w: bufio.NewWriter(nc)}
	var version byte
	for {
		p, err := packet.Read(r, version, 0)
		if err != nil {
			return
		}
		switch p := p.(type) {
		case *packet.Connect:
			version = p.ProtocolLevel
			c.version = version
			c.send(&packet.Connack{})
		case *packet.Subscribe:
			codes := make([]packet.ReasonCode, len(p.Subs))
			b.mu.Lock()
			for i, s := range p.Subs {
				codes[i] = packet.ReasonCode(s.QoS)
				b.subs[s.Filter] = append(b.subs[s.Filter], c)
			}
			b.mu.Unlock()
			c.send(&packet.Suback{PacketID: p.PacketID, Codes: codes})
		case *packet.Publish:
			b.mu.Lock()
			b.n++
			drop := b.dropEvery > 0 && b.n%b.dropEvery == 0
			subs := b.subs[p.Topic]
			b.mu.Unlock()
			if !drop {
				for _, s := range subs {
					s.send(&packet.Publish{QoS: p.QoS, Topic: p.Topic, Payload: p.Payload})
				}
			}
			if p.QoS == 1 {
				c.send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
			}
		case *packet.Disconnect:
			return
		}
	}
}

func testConfig(addr string, version byte) *config {
	return &config{
		addr: addr, version: version, pubs: 2, subs: 2, qos: 1, size: 64, window: 16,
		pattern: "fanin", count: 500, drain: 300 * time.Millisecond, ackTimeout: 5 * time.Second, quiet: true,
	}
}

func TestRunCountsEveryDelivery(t *testing.T) {
	for _, v := range []byte{packet.V311, packet.V5} {
		b := startFakeBroker(t, 0)
		cfg := testConfig(b.ln.Addr().String(), v)
		if err := cfg.validate(); err != nil {
			t.Fatal(err)
		}
		r, err := runLoad(cfg, io.Discard)
		if err != nil {
			t.Fatalf("v%d: %v", v, err)
		}
		if r.Acked != 1000 || r.Expected != 2000 || r.Delivered != 2000 || r.Lost != 0 || r.failed() {
			t.Errorf("v%d: acked %d, expected %d, delivered %d, lost %d; want 1000, 2000, 2000, 0",
				v, r.Acked, r.Expected, r.Delivered, r.Lost)
		}
		if r.AckP50 <= 0 || r.E2EP50 <= 0 {
			t.Errorf("v%d: ack p50 %v, e2e p50 %v: want latencies", v, r.AckP50, r.E2EP50)
		}
	}
}

func TestRunDetectsLoss(t *testing.T) {
	b := startFakeBroker(t, 10) // acknowledges, and forwards nothing of every 10th
	cfg := testConfig(b.ln.Addr().String(), packet.V5)
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	r, err := runLoad(cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// 100 of 1000 publishes dropped, each owed to 2 subscribers.
	if r.Lost != 200 || !r.failed() {
		t.Errorf("lost %d, failed %v; want 200, true", r.Lost, r.failed())
	}
}

// The subscribers' bytes per delivery: a 60 B topic costs its length in
// every PUBLISH; with topic aliases allowed, keel sends the name once.
func TestRunCountsSubscriberBytes(t *testing.T) {
	addr := startKeel(t)
	perMsg := map[uint16]float64{}
	for _, aliases := range []uint16{0, 16} {
		cfg := testConfig(addr, packet.V5)
		cfg.pattern, cfg.pubs, cfg.subs, cfg.count = "fanout", 1, 2, 300
		cfg.topicLen, cfg.subAliases = 60, aliases
		if err := cfg.validate(); err != nil {
			t.Fatal(err)
		}
		r, err := runLoad(cfg, io.Discard)
		if err != nil {
			t.Fatalf("aliases %d: %v", aliases, err)
		}
		if r.TopicLen != 60 || r.Delivered != 600 {
			t.Fatalf("aliases %d: topic %d bytes, %d delivered; want 60, 600", aliases, r.TopicLen, r.Delivered)
		}
		perMsg[aliases] = r.SubBytesPerMsg
		t.Logf("aliases %d: %.1f bytes per delivery", aliases, r.SubBytesPerMsg)
	}
	// Unaliased, a QoS 1 PUBLISH of 64 B on a 60 B topic is 132 bytes; with
	// the alias alone, 74.
	if perMsg[0] < 132 || perMsg[16] > perMsg[0]-50 {
		t.Fatalf("bytes per delivery: %.1f without aliases, %.1f with; want at least 132, and 50 fewer with", perMsg[0], perMsg[16])
	}
}
