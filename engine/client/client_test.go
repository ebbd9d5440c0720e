package client_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/keelmq/keel/engine"
	"github.com/keelmq/keel/engine/client"
	"github.com/keelmq/keel/engine/enginetest"
	"github.com/keelmq/keel/engine/packet"
)

// startKeel starts a real keel on a free loopback port over a real Pebble
// (on its memory filesystem) and returns its address.
func startKeel(t *testing.T, opts engine.Options) string {
	t.Helper()
	return enginetest.Start(t, enginetest.Options{Engine: opts}).Addr
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func connect(t *testing.T, o client.Options) *client.Client {
	t.Helper()
	c, err := client.Connect(ctxT(t), o)
	if err != nil {
		t.Fatalf("connect %s: %v", o.ClientID, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func subscribe(t *testing.T, c *client.Client, filter string, qos byte) {
	t.Helper()
	sa, err := c.Subscribe(ctxT(t), &packet.Subscribe{Subs: []packet.Subscription{{Filter: filter, QoS: qos}}})
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if len(sa.Codes) != 1 || byte(sa.Codes[0]) != qos {
		t.Fatalf("SUBACK codes %v, want [%d]", sa.Codes, qos)
	}
}

// inbox collects deliveries (copies: OnMessage's packet aliases the read
// buffer).
type inbox struct {
	mu   sync.Mutex
	msgs []packet.Publish
	ch   chan struct{}
}

func newInbox() *inbox { return &inbox{ch: make(chan struct{}, 1)} }

func (b *inbox) onMessage(p *packet.Publish) {
	b.mu.Lock()
	b.msgs = append(b.msgs, packet.Publish{Dup: p.Dup, QoS: p.QoS, Topic: p.Topic, PacketID: p.PacketID, Payload: append([]byte(nil), p.Payload...)})
	b.mu.Unlock()
	select {
	case b.ch <- struct{}{}:
	default:
	}
}

// wait waits until n messages arrived.
func (b *inbox) wait(t *testing.T, n int) []packet.Publish {
	t.Helper()
	ctx := ctxT(t)
	for {
		b.mu.Lock()
		got := append([]packet.Publish(nil), b.msgs...)
		b.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-b.ch:
		case <-ctx.Done():
			t.Fatalf("got %d messages, want %d", len(got), n)
		}
	}
}

func (b *inbox) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.msgs)
}

func versions() map[string]byte { return map[string]byte{"3.1.1": packet.V311, "5.0": packet.V5} }

func TestQoSBothDirections(t *testing.T) {
	addr := startKeel(t, engine.Options{})
	for vname, v := range versions() {
		for qos := byte(0); qos <= 2; qos++ {
			t.Run(fmt.Sprintf("v=%s/qos=%d", vname, qos), func(t *testing.T) {
				topic := fmt.Sprintf("t/%d/%d", v, qos)
				in := newInbox()
				sub := connect(t, client.Options{Addr: addr, Version: v, ClientID: "sub-" + topic, CleanStart: true, OnMessage: in.onMessage})
				subscribe(t, sub, topic, qos)

				var mu sync.Mutex
				kinds := map[packet.Type]int{}
				finals := make(chan struct{}, 64)
				pub := connect(t, client.Options{Addr: addr, Version: v, ClientID: "pub-" + topic, CleanStart: true,
					OnAck: func(a *client.Ack) {
						mu.Lock()
						kinds[a.Kind]++
						mu.Unlock()
						if a.Final {
							finals <- struct{}{}
						}
						if a.Publish == nil || a.Publish.Topic != topic {
							t.Errorf("OnAck: Publish %v, want one on %q", a.Publish, topic)
						}
					}})
				const n = 20
				for i := range n {
					p := &packet.Publish{QoS: qos, Topic: topic, Payload: []byte{byte(i)}}
					if i%2 == 0 {
						if _, err := pub.PublishWait(ctxT(t), p); err != nil {
							t.Fatalf("PublishWait %d: %v", i, err)
						}
					} else if err := pub.Publish(ctxT(t), p); err != nil {
						t.Fatalf("Publish %d: %v", i, err)
					}
				}
				got := in.wait(t, n)
				for i, m := range got {
					if len(m.Payload) != 1 || m.Payload[0] != byte(i) || m.QoS != qos {
						t.Fatalf("message %d: payload %v QoS %d, want [%d] QoS %d", i, m.Payload, m.QoS, i, qos)
					}
				}
				if qos > 0 {
					for range n {
						<-finals
					}
				}
				if err := pub.Disconnect(ctxT(t), nil); err != nil {
					t.Fatalf("Disconnect: %v", err)
				}
				mu.Lock()
				defer mu.Unlock()
				want := map[packet.Type]int{}
				switch qos {
				case 1:
					want[packet.PUBACK] = n
				case 2:
					want[packet.PUBREC], want[packet.PUBCOMP] = n, n
				}
				if fmt.Sprint(kinds) != fmt.Sprint(want) {
					t.Fatalf("acks %v, want %v", kinds, want)
				}
				if pub.Inflight() != 0 {
					t.Fatalf("%d flows left in the session", pub.Inflight())
				}
			})
		}
	}
}

func TestConnectRefused(t *testing.T) {
	addr := startKeel(t, engine.Options{})
	_, err := client.Connect(ctxT(t), client.Options{Addr: addr, Version: packet.V311})
	var ce *client.ConnectError
	if !errors.As(err, &ce) || ce.Code != packet.RetIdentifierRejected {
		t.Fatalf("3.1.1, empty client id, clean session 0: got %v, want return code 2", err)
	}
	o := client.Options{Addr: addr, Version: packet.V5, ClientID: "auth"}
	o.Props.AuthMethod = "SCRAM-SHA-1"
	o.Props.Set(packet.PropAuthMethod)
	_, err = client.Connect(ctxT(t), o)
	if !errors.As(err, &ce) || ce.Code != packet.CodeBadAuthenticationMethod {
		t.Fatalf("5.0 with an authentication method: got %v, want %v", err, packet.CodeBadAuthenticationMethod)
	}
}

// proxy sits between the client and keel and sees every packet. drop
// decides, per packet, whether it is forwarded; seen records what passed
// or was dropped, per connection.
type proxy struct {
	t      *testing.T
	target string

	mu struct {
		sync.Mutex
		drop  func(toServer bool, f frame) bool
		conns []*proxyConn
	}
	events chan frame // every frame, as it is handled
}

type frame struct {
	conn     int
	toServer bool
	typ      packet.Type
	dup      bool
	id       uint16
	dropped  bool
}

type proxyConn struct{ a, b net.Conn }

func newProxy(t *testing.T, target string) *proxy {
	return &proxy{t: t, target: target, events: make(chan frame, 1024)}
}

func (p *proxy) setDrop(f func(toServer bool, f frame) bool) {
	p.mu.Lock()
	p.mu.drop = f
	p.mu.Unlock()
}

// dial is a client.Options.Dial through the proxy.
func (p *proxy) dial(version byte) func(ctx context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		up, err := d.DialContext(ctx, "tcp", p.target)
		if err != nil {
			return nil, err
		}
		cl, srv := net.Pipe()
		p.mu.Lock()
		n := len(p.mu.conns)
		p.mu.conns = append(p.mu.conns, &proxyConn{srv, up})
		p.mu.Unlock()
		go p.pump(n, srv, up, true, version)
		go p.pump(n, up, srv, false, version)
		return cl, nil
	}
}

// cut closes every proxied connection, as a network failure would.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.mu.conns {
		c.a.Close()
		c.b.Close()
	}
}

func (p *proxy) pump(n int, from, to net.Conn, toServer bool, version byte) {
	defer to.Close()
	defer from.Close()
	r := bufio.NewReader(from)
	for {
		first, body, err := packet.ReadFrame(r, 0, nil)
		if err != nil {
			return
		}
		f := frame{conn: n, toServer: toServer, typ: packet.Type(first >> 4)}
		switch f.typ {
		case packet.PUBLISH:
			f.dup = first&0x08 != 0
			if qos := first >> 1 & 3; qos > 0 && len(body) >= 2 {
				tl := int(binary.BigEndian.Uint16(body))
				if len(body) >= 4+tl {
					f.id = binary.BigEndian.Uint16(body[2+tl:])
				}
			}
		case packet.PUBACK, packet.PUBREC, packet.PUBREL, packet.PUBCOMP:
			f.id = binary.BigEndian.Uint16(body)
		}
		p.mu.Lock()
		drop := p.mu.drop
		p.mu.Unlock()
		f.dropped = drop != nil && drop(toServer, f)
		p.events <- f
		if f.dropped {
			continue
		}
		hdr := packet.AppendVarInt([]byte{first}, uint32(len(body)))
		if _, err := to.Write(append(hdr, body...)); err != nil {
			return
		}
	}
}

// next returns the next frame for which match is true.
func (p *proxy) next(t *testing.T, match func(f frame) bool) frame {
	t.Helper()
	ctx := ctxT(t)
	for {
		select {
		case f := <-p.events:
			if match(f) {
				return f
			}
		case <-ctx.Done():
			t.Fatal("timed out waiting for a packet at the proxy")
		}
	}
}

func TestResumeResendsPublishWithDup(t *testing.T) {
	for vname, v := range versions() {
		t.Run("v="+vname, func(t *testing.T) {
			addr := startKeel(t, engine.Options{})
			topic := "resume/" + vname
			in := newInbox()
			sub := connect(t, client.Options{Addr: addr, Version: v, ClientID: "s", CleanStart: true, OnMessage: in.onMessage})
			subscribe(t, sub, topic, 1)

			px := newProxy(t, addr)
			// The server's PUBACKs never reach the client: all three stay
			// unacknowledged.
			px.setDrop(func(toServer bool, f frame) bool { return !toServer && f.typ == packet.PUBACK })
			sess := client.NewMemorySession()
			o := client.Options{Dial: px.dial(v), Version: v, ClientID: "p", SessionExpiry: 3600, Session: sess}
			pub, err := client.Connect(ctxT(t), o)
			if err != nil {
				t.Fatal(err)
			}
			var ids []uint16
			for i := range 3 {
				p := &packet.Publish{QoS: 1, Topic: topic, Payload: []byte{byte(i)}}
				if err := pub.Publish(ctxT(t), p); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, p.PacketID)
			}
			for range 3 {
				px.next(t, func(f frame) bool { return f.typ == packet.PUBACK && f.dropped })
			}
			px.cut()
			<-pub.Done()
			pub.Close()
			if sess.Len() != 3 {
				t.Fatalf("session holds %d flows, want 3", sess.Len())
			}

			px.setDrop(nil)
			acked := make(chan uint16, 3)
			o.OnAck = func(a *client.Ack) { acked <- a.ID }
			pub2 := connect(t, o)
			if !pub2.SessionPresent() {
				t.Fatal("session present = 0 on resumption")
			}
			for i, id := range ids {
				f := px.next(t, func(f frame) bool { return f.conn == 1 && f.toServer && f.typ == packet.PUBLISH })
				if f.id != id || !f.dup {
					t.Fatalf("resend %d: PUBLISH id %d DUP %v, want id %d DUP true [MQTT-4.4.0-1]", i, f.id, f.dup, id)
				}
			}
			for range ids {
				<-acked
			}
			if pub2.Inflight() != 0 {
				t.Fatalf("%d flows left after the resends were acknowledged", pub2.Inflight())
			}
			got := in.wait(t, 3)
			for i := range 3 {
				if got[i].Payload[0] != byte(i) {
					t.Fatalf("delivery %d: payload %v", i, got[i].Payload)
				}
			}
		})
	}
}

func TestResumeResendsPubrelForReleased(t *testing.T) {
	addr := startKeel(t, engine.Options{})
	in := newInbox()
	sub := connect(t, client.Options{Addr: addr, ClientID: "s", CleanStart: true, OnMessage: in.onMessage})
	subscribe(t, sub, "rel", 2)

	px := newProxy(t, addr)
	px.setDrop(func(toServer bool, f frame) bool { return !toServer && f.typ == packet.PUBCOMP })
	sess := client.NewMemorySession()
	o := client.Options{Dial: px.dial(packet.V5), ClientID: "p", SessionExpiry: 3600, Session: sess}
	pub, err := client.Connect(ctxT(t), o)
	if err != nil {
		t.Fatal(err)
	}
	p := &packet.Publish{QoS: 2, Topic: "rel", Payload: []byte("once")}
	if _, err := pub.PublishWait(ctxT(t), p); err != nil {
		t.Fatal(err)
	}
	px.next(t, func(f frame) bool { return f.typ == packet.PUBCOMP && f.dropped })
	px.cut()
	<-pub.Done()
	pub.Close()
	if _, released, ok := sess.Flow(p.PacketID); !ok || !released {
		t.Fatalf("flow %d: in session %v released %v, want released", p.PacketID, ok, released)
	}

	px.setDrop(nil)
	done := make(chan struct{})
	o.OnAck = func(a *client.Ack) {
		if a.Kind == packet.PUBCOMP && a.ID == p.PacketID {
			close(done)
		}
	}
	connect(t, o)
	f := px.next(t, func(f frame) bool { return f.conn == 1 && f.toServer && f.typ != packet.CONNECT })
	if f.typ != packet.PUBREL || f.id != p.PacketID {
		t.Fatalf("first packet after CONNECT: %v id %d, want PUBREL id %d [MQTT-4.3.3-6]", f.typ, f.id, p.PacketID)
	}
	<-done
	if got := in.wait(t, 1); len(got) != 1 || string(got[0].Payload) != "once" {
		t.Fatalf("deliveries %v, want one", got)
	}
	if sess.Len() != 0 {
		t.Fatalf("session holds %d flows after PUBCOMP", sess.Len())
	}
	// One more message through the same subscriber proves nothing
	// else is queued behind: a second copy of "once" would come first.
	pub3 := connect(t, client.Options{Addr: addr, ClientID: "p3", CleanStart: true})
	if _, err := pub3.PublishWait(ctxT(t), &packet.Publish{QoS: 2, Topic: "rel", Payload: []byte("after")}); err != nil {
		t.Fatal(err)
	}
	if got := in.wait(t, 2); string(got[1].Payload) != "after" {
		t.Fatalf("deliveries %q, want once then after", []string{string(got[0].Payload), string(got[1].Payload)})
	}
}

func TestInboundQoS2NotDeliveredTwice(t *testing.T) {
	for vname, v := range versions() {
		t.Run("v="+vname, func(t *testing.T) {
			addr := startKeel(t, engine.Options{})
			px := newProxy(t, addr)
			// The subscriber's PUBREC never reaches the server, which
			// must resend the PUBLISH on resumption.
			px.setDrop(func(toServer bool, f frame) bool { return toServer && f.typ == packet.PUBREC })
			in := newInbox()
			sess := client.NewMemorySession()
			o := client.Options{Dial: px.dial(v), Version: v, ClientID: "s", SessionExpiry: 3600, Session: sess, OnMessage: in.onMessage}
			sub, err := client.Connect(ctxT(t), o)
			if err != nil {
				t.Fatal(err)
			}
			subscribe(t, sub, "q2", 2)
			pub := connect(t, client.Options{Addr: addr, Version: v, ClientID: "p", CleanStart: true})
			if _, err := pub.PublishWait(ctxT(t), &packet.Publish{QoS: 2, Topic: "q2", Payload: []byte("x")}); err != nil {
				t.Fatal(err)
			}
			first := px.next(t, func(f frame) bool { return f.typ == packet.PUBREC && f.dropped })
			in.wait(t, 1)
			px.cut()
			<-sub.Done()
			sub.Close()

			px.setDrop(nil)
			connect(t, o)
			re := px.next(t, func(f frame) bool { return f.conn == 1 && !f.toServer && f.typ == packet.PUBLISH })
			if re.id != first.id || !re.dup {
				t.Fatalf("server resent id %d DUP %v, want id %d DUP true", re.id, re.dup, first.id)
			}
			px.next(t, func(f frame) bool { return f.conn == 1 && f.toServer && f.typ == packet.PUBCOMP && f.id == first.id })
			if n := in.count(); n != 1 {
				t.Fatalf("delivered %d times, want once [MQTT-4.3.3-10]", n)
			}
		})
	}
}

func TestReceiveMaximum(t *testing.T) {
	addr := startKeel(t, engine.Options{ReceiveMaximum: 2})
	px := newProxy(t, addr)
	var mu sync.Mutex
	var inflight, most int
	release := make(chan struct{})
	px.setDrop(func(toServer bool, f frame) bool {
		if !toServer && f.typ == packet.PUBACK {
			<-release // hold the acknowledgements back
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case toServer && f.typ == packet.PUBLISH:
			inflight++
			most = max(most, inflight)
		case !toServer && f.typ == packet.PUBACK:
			inflight--
		}
		return false
	})
	acks := make(chan uint16, 16)
	c := connect(t, client.Options{Dial: px.dial(packet.V5), ClientID: "rm", CleanStart: true,
		OnAck: func(a *client.Ack) { acks <- a.ID }})
	if c.Window() != 2 {
		t.Fatalf("window %d, want the server's Receive Maximum 2", c.Window())
	}
	pub := func(ctx context.Context, i int) error {
		return c.Publish(ctx, &packet.Publish{QoS: 1, Topic: "rm", Payload: []byte{byte(i)}})
	}
	for i := range 2 {
		if err := pub(ctxT(t), i); err != nil {
			t.Fatal(err)
		}
	}
	// The window is full and no PUBACK can arrive: a third publish waits.
	ctx, cancel := context.WithTimeout(ctxT(t), 50*time.Millisecond)
	err := pub(ctx, 2)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third publish with two unacknowledged: got %v, want it to wait [MQTT-3.3.4-7]", err)
	}
	close(release)
	const n = 10
	for i := 2; i < n; i++ {
		if err := pub(ctxT(t), i); err != nil {
			t.Fatal(err)
		}
	}
	for range n - 1 {
		<-acks
	}
	mu.Lock()
	defer mu.Unlock()
	if most != 2 {
		t.Fatalf("at most %d QoS 1 publishes in flight at once, want 2 [MQTT-3.3.4-7]", most)
	}
}

func TestKeepAlivePings(t *testing.T) {
	addr := startKeel(t, engine.Options{})
	px := newProxy(t, addr)
	c := connect(t, client.Options{Dial: px.dial(packet.V5), ClientID: "ka", CleanStart: true, KeepAlive: 1})
	// Nothing else is sent: within the keep alive the client must ping
	// [MQTT-3.1.2-20], and the server answers.
	px.next(t, func(f frame) bool { return f.toServer && f.typ == packet.PINGREQ })
	px.next(t, func(f frame) bool { return !f.toServer && f.typ == packet.PINGRESP })
	select {
	case <-c.Done():
		t.Fatalf("connection ended: %v", c.Err())
	default:
	}
}

func TestMaximumPacketSize(t *testing.T) {
	addr := startKeel(t, engine.Options{MaxPacketSize: 256})
	c := connect(t, client.Options{Addr: addr, ClientID: "mps", CleanStart: true})
	for qos := byte(0); qos <= 1; qos++ {
		err := c.Publish(ctxT(t), &packet.Publish{QoS: qos, Topic: "big", Payload: make([]byte, 300)})
		if !errors.Is(err, client.ErrPacketTooLarge) {
			t.Fatalf("QoS %d PUBLISH over the server's Maximum Packet Size: got %v, want ErrPacketTooLarge [MQTT-3.2.2-15]", qos, err)
		}
	}
	if c.Inflight() != 0 {
		t.Fatalf("a refused publish left %d flows in the session", c.Inflight())
	}
	if _, err := c.PublishWait(ctxT(t), &packet.Publish{QoS: 1, Topic: "small", Payload: make([]byte, 100)}); err != nil {
		t.Fatalf("a publish under the limit: %v", err)
	}
}
