package bridge

import (
	"bufio"
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keelmq/keel/engine"
	"github.com/keelmq/keel/engine/auth"
	"github.com/keelmq/keel/engine/client"
	"github.com/keelmq/keel/engine/enginetest"
	"github.com/keelmq/keel/engine/packet"
)

// wait bounds every wait on a condition in these tests.
const wait = 30 * time.Second

// waitFor polls cond until it holds, or fails the test after wait.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// remote is a Keel broker behind a front.
type remote struct {
	b *enginetest.Broker
	f *enginetest.Front
}

func startRemote(t *testing.T) *remote {
	b := enginetest.Start(t, enginetest.Options{})
	return &remote{b: b, f: enginetest.NewFront(t, b.Addr)}
}

func (r *remote) Addr() string { return r.f.Addr() }

func (r *remote) stop() { r.f.Cut(); r.b.Stop() }

func (r *remote) restart() { r.b.Restart(); r.f.Retarget(r.b.Addr) }

// crash cuts the power: no connection gets anything more, then only what
// was synced (and keep% of the rest) is left, and it starts again.
func (r *remote) crash(keep int, seed uint64) {
	r.f.Cut()
	r.b.Crash(keep, seed)
	r.f.Retarget(r.b.Addr)
}

// edge is a Keel broker with a bridge to a remote: the bridge is started
// again on the new engine after Restart or Crash, as a process restart
// would.
type edge struct {
	t   *testing.T
	b   *enginetest.Broker
	f   *enginetest.Front
	cfg Config
	br  *Bridge
}

func startEdge(t *testing.T, cfg Config) *edge {
	t.Helper()
	e := &edge{t: t, b: enginetest.Start(t, enginetest.Options{}), cfg: cfg}
	e.f = enginetest.NewFront(t, e.b.Addr)
	e.startBridge()
	t.Cleanup(func() { e.br.Close() })
	return e
}

func (e *edge) startBridge() {
	e.t.Helper()
	cfg := e.cfg
	cfg.Logger = enginetest.Logger()
	br, err := New(cfg, e.b.Engine)
	if err != nil {
		e.t.Fatalf("bridge.New: %v", err)
	}
	br.Start()
	e.br = br
}

// crash cuts the power of the edge, bridge included (nothing more is sent
// by either), keeping keep% of the unsynced writes, and starts both again.
func (e *edge) crash(keep int, seed uint64) {
	e.f.Cut()
	e.br.kill()
	e.b.Crash(keep, seed)
	e.f.Retarget(e.b.Addr)
	e.startBridge()
}

func (e *edge) Addr() string { return e.f.Addr() }

func topics(t *testing.T, lines ...string) []Topic {
	t.Helper()
	var out []Topic
	for _, l := range lines {
		tp, err := ParseTopic(l)
		if err != nil {
			t.Fatalf("ParseTopic(%q): %v", l, err)
		}
		out = append(out, tp)
	}
	return out
}

// sink is a persistent-session subscriber that records every message
// handed to it, and reconnects (resuming its session) when asked.
type sink struct {
	t       *testing.T
	addr    string
	id      string
	filter  string
	version byte
	sess    client.Session
	c       *client.Client

	mu   sync.Mutex
	msgs []string // "topic payload"
}

func newSink(t *testing.T, addr string, id, filter string, version byte) *sink {
	s := &sink{t: t, addr: addr, id: id, filter: filter, version: version, sess: client.NewMemorySession()}
	s.connect(true)
	t.Cleanup(func() {
		if s.c != nil {
			s.c.Close()
		}
	})
	return s
}

func (s *sink) connect(subscribe bool) {
	s.t.Helper()
	c, err := client.Connect(context.Background(), client.Options{
		Addr: s.addr, Version: s.version, ClientID: s.id, SessionExpiry: 3600, Session: s.sess,
		OnMessage: func(p *packet.Publish) {
			s.mu.Lock()
			s.msgs = append(s.msgs, p.Topic+" "+string(p.Payload))
			s.mu.Unlock()
		},
	})
	if err != nil {
		s.t.Fatalf("sink %s: connect: %v", s.id, err)
	}
	s.c = c
	if subscribe {
		sa, err := c.Subscribe(context.Background(), &packet.Subscribe{Subs: []packet.Subscription{{Filter: s.filter, QoS: 2}}})
		if err != nil || sa.Codes[0] >= 0x80 {
			s.t.Fatalf("sink %s: subscribe: %v %v", s.id, err, sa)
		}
	}
}

// reconnect resumes the session after its broker restarted.
func (s *sink) reconnect() {
	s.c.Close()
	s.connect(false)
}

func (s *sink) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.msgs...)
}

// waitN waits for n messages.
func (s *sink) waitN(n int) []string {
	s.t.Helper()
	deadline := time.Now().Add(wait)
	for len(s.got()) < n {
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out waiting for %d messages at %s: have %d", n, s.id, len(s.got()))
		}
		time.Sleep(5 * time.Millisecond)
	}
	return s.got()
}

// checkSeq asserts that got is topic 1..n, each once, in order.
func checkSeq(t *testing.T, got []string, topic string, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("got %d messages, want %d (first %v)", len(got), n, got[:min(len(got), 5)])
	}
	for i, m := range got {
		if want := topic + " " + strconv.Itoa(i+1); m != want {
			t.Fatalf("message %d: got %q, want %q", i, m, want)
		}
	}
}

// source publishes numbered QoS 2 messages from a persistent session.
type source struct {
	t    *testing.T
	addr string
	id   string
	sess client.Session
	c    *client.Client
	acks chan uint16
}

func newSource(t *testing.T, addr string, id string) *source {
	s := &source{t: t, addr: addr, id: id, sess: client.NewMemorySession(), acks: make(chan uint16, 100000)}
	s.connect()
	t.Cleanup(func() { s.c.Close() })
	return s
}

func (s *source) connect() {
	s.t.Helper()
	c, err := client.Connect(context.Background(), client.Options{
		Addr: s.addr, ClientID: s.id, SessionExpiry: 3600, Session: s.sess,
		OnAck: func(a *client.Ack) {
			if a.Kind == packet.PUBREC {
				s.acks <- a.ID
			}
		},
	})
	if err != nil {
		s.t.Fatalf("source %s: connect: %v", s.id, err)
	}
	s.c = c
}

// publish sends topic 'from'..'to' pipelined; it returns once each is
// handed to the client's session (which resends it after a reconnect).
func (s *source) publish(topic string, from, to int) {
	s.t.Helper()
	for i := from; i <= to; i++ {
		if err := s.c.Publish(context.Background(), &packet.Publish{QoS: 2, Topic: topic, Payload: []byte(strconv.Itoa(i))}); err != nil {
			s.t.Fatalf("publish %d: %v", i, err)
		}
	}
}

// settle waits until the session has no flow in flight: every message
// acknowledged by the broker (PUBCOMP).
func (s *source) settle() {
	s.t.Helper()
	waitFor(s.t, "publisher's flows to complete", func() bool { return s.sess.Len() == 0 })
}

func connected(t *testing.T, br *Bridge) {
	t.Helper()
	waitFor(t, "bridge connected", func() bool { return br.State().Connected })
}

func TestBridgeKeelToKeelBothWays(t *testing.T) {
	for _, v := range []struct {
		name    string
		version byte
	}{{"mqttv50", packet.V5}, {"mqttv311", packet.V311}} {
		t.Run(v.name, func(t *testing.T) {
			central := startRemote(t)
			centralAddr := central.Addr()
			e := startEdge(t, bridgeConfig(t, centralAddr, v.version, "up/# out 2", "down/# in 2"))
			edgeAddr := e.Addr()
			connected(t, e.br)

			up := newSink(t, centralAddr, "up-sink", "up/#", packet.V5)
			down := newSink(t, edgeAddr, "down-sink", "down/#", packet.V311)
			const n = 300
			pe := newSource(t, edgeAddr, "edge-pub")
			pc := newSource(t, centralAddr, "central-pub")
			pe.publish("up/x", 1, n)
			pc.publish("down/y", 1, n)
			checkSeq(t, up.waitN(n), "up/x", n)
			checkSeq(t, down.waitN(n), "down/y", n)
			pe.settle()
			pc.settle()
			// Nothing more comes: no copies, no echoes.
			e.br.Close()
			checkSeq(t, up.got(), "up/x", n)
			checkSeq(t, down.got(), "down/y", n)
			if st := e.br.Stats(); st.Forwarded < n || st.Received < n || st.Dropped != 0 {
				t.Fatalf("stats %+v: want forwarded and received >= %d, none dropped", st, n)
			}
		})
	}
}

func bridgeConfig(t *testing.T, addr string, version byte, lines ...string) Config {
	return Config{Name: "c", Addresses: []string{addr}, Version: version, Topics: topics(t, lines...),
		RestartBase: 10 * time.Millisecond, RestartCap: 50 * time.Millisecond}
}

// The remote is down for a while: what the edge acknowledged waits in the
// bridge's queue on disk, through a power cut of the edge, and arrives
// once, in order, when the remote is back.
func TestBridgeRemoteDownQueueOnDisk(t *testing.T) {
	central := startRemote(t)
	centralAddr := central.Addr()
	e := startEdge(t, bridgeConfig(t, centralAddr, packet.V5, "up/# out 2"))
	edgeAddr := e.Addr()
	connected(t, e.br)
	up := newSink(t, centralAddr, "up-sink", "up/#", packet.V5)
	pe := newSource(t, edgeAddr, "edge-pub")
	pe.publish("up/x", 1, 50)
	up.waitN(50)
	waitFor(t, "the first messages' flows to end", func() bool { return e.b.Engine.Stats().QueuedMessages == 0 })

	central.stop()
	waitFor(t, "bridge down", func() bool { return !e.br.State().Connected && e.br.State().LastError != "" })
	const n = 500
	pe.publish("up/x", 51, n)
	pe.settle() // every message acknowledged by the edge: on its disk
	if q := e.b.Engine.Stats().QueuedMessages; q != n-50 {
		t.Fatalf("edge queue: got %d entries, want %d", q, n-50)
	}
	// Power cut at the edge: only what was synced is left.
	e.crash(0, 1)
	if q := e.b.Engine.Stats().QueuedMessages; q != n-50 {
		t.Fatalf("edge queue after a power cut: got %d entries, want %d", q, n-50)
	}

	central.restart()
	up.reconnect()
	checkSeq(t, up.waitN(n), "up/x", n)
	waitFor(t, "edge queue empty", func() bool { return e.b.Engine.Stats().QueuedMessages == 0 })
	checkSeq(t, up.got(), "up/x", n)
}

// A power cut of either broker in the middle of the stream, both ways:
// nothing acknowledged is lost, nothing is delivered twice, order is kept.
func TestBridgeCrashMidStream(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version byte
		crash   string // "edge" or "central"
		keep    int    // % of unsynced writes that survive
	}{
		{"mqttv50/edge", packet.V5, "edge", 0},
		{"mqttv50/edge-keep50", packet.V5, "edge", 50},
		{"mqttv50/central", packet.V5, "central", 0},
		{"mqttv311/edge", packet.V311, "edge", 30},
		{"mqttv311/central", packet.V311, "central", 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			central := startRemote(t)
			centralAddr := central.Addr()
			cfg := bridgeConfig(t, centralAddr, tc.version, "up/# out 2", "down/# in 2")
			// Room in flight beyond what the first half may leave there:
			// the held acks below cannot block the window.
			cfg.window311 = 1024
			e := startEdge(t, cfg)
			edgeAddr := e.Addr()
			connected(t, e.br)
			up := newSink(t, centralAddr, "up-sink", "up/#", packet.V5)
			down := newSink(t, edgeAddr, "down-sink", "down/#", packet.V5)
			pe := newSource(t, edgeAddr, "edge-pub")
			pc := newSource(t, centralAddr, "central-pub")

			const n = 1000
			pe.publish("up/x", 1, n/2)
			pc.publish("down/y", 1, n/2)
			up.waitN(n / 2)
			down.waitN(n / 2)
			// Hold what the central sends (its PUBREC/PUBCOMP to the bridge,
			// its PUBLISHes to it, its acks to its publisher) so that the
			// crash finds flows in flight across the bridge both ways.
			base := central.b.Engine.Stats().MessagesReceived
			central.f.Hold()
			pe.publish("up/x", n/2+1, n)
			pc.publish("down/y", n/2+1, n)
			waitFor(t, "messages in flight across the bridge", func() bool {
				return central.b.Engine.Stats().MessagesReceived >= base+n/2+10
			})
			for i := 0; i < 2; i++ {
				// Twice: the second falls in the resends of the first.
				if tc.crash == "edge" {
					e.crash(tc.keep, uint64(i+1))
					central.f.Release() // what the old bridge was to get goes to its closed connection
				} else {
					central.crash(tc.keep, uint64(i+1))
				}
			}
			// The clients of the crashed broker resume their sessions.
			if tc.crash == "edge" {
				pe.reconnect()
				down.reconnect()
			} else {
				pc.reconnect()
				up.reconnect()
			}
			checkSeqEventually(t, up, "up/x", n)
			checkSeqEventually(t, down, "down/y", n)
		})
	}
}

// reconnect resumes the publisher's session: what the broker had not
// acknowledged is resent with DUP, as any client does.
func (s *source) reconnect() {
	s.c.Close()
	s.connect()
}

// checkSeqEventually waits for n messages, lets the flows settle, and
// checks each arrived once, in order.
func checkSeqEventually(t *testing.T, s *sink, topic string, n int) {
	t.Helper()
	s.waitN(n)
	checkSeq(t, s.got(), topic, n)
}

// rawSession leaves QoS 2 flows half done in client id's session at addr:
// PUBLISH ids 1..n to topic, PUBREC received, no PUBREL, then the
// connection drops. The ids stay held by the server [MQTT-4.3.3-10].
func rawSession(t *testing.T, addr, id, topic string, n int) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cp := &packet.Connect{ProtocolLevel: packet.V5, ClientID: id}
	cp.Props.SessionExpiry = 0xFFFFFFFF
	cp.Props.Set(packet.PropSessionExpiry)
	raw, _ := connectBytes(cp, false)
	l, _, err := handshake("raw", nc, packet.V5, raw, time.Now().Add(wait))
	if err != nil {
		t.Fatal(err)
	}
	l.start()
	for i := 1; i <= n; i++ {
		l.send(&packet.Publish{QoS: 2, PacketID: uint16(i), Topic: topic, Payload: []byte("old")})
	}
	for i := 1; i <= n; i++ {
		p, err := l.next()
		if err != nil {
			t.Fatal(err)
		}
		if a, ok := p.(*packet.Ack); !ok || a.Kind != packet.PUBREC {
			t.Fatalf("got %v, want PUBREC", p)
		}
	}
	l.close(nil)
}

// The remote has no session for the bridge while the local session holds
// QoS 2 ids of the remote's old flows (a remote restarted without
// persistence): new messages reusing those ids must not be taken for
// resends. Without the release of those ids, messages 1..5 here are lost.
func TestBridgeRemoteLostSession(t *testing.T) {
	central := startRemote(t)
	cfg := bridgeConfig(t, central.Addr(), packet.V5, "down/# in 2")
	e := &edge{t: t, b: enginetest.Start(t, enginetest.Options{}), cfg: cfg}
	e.f = enginetest.NewFront(t, e.b.Addr)
	rawSession(t, e.b.Addr, LocalClientID("c"), "down/old", 5)
	down := newSink(t, e.Addr(), "down-sink", "down/#", packet.V5)
	e.startBridge()
	t.Cleanup(func() { e.br.Close() })
	connected(t, e.br)
	pc := newSource(t, central.Addr(), "central-pub")
	pc.publish("down/y", 1, 20)
	checkSeq(t, down.waitN(20), "down/y", 20)
}

// The local session is new (a first start, a wiped data directory) while
// the remote holds the bridge's session with QoS 2 ids of an earlier local
// state: the bridge starts the remote session afresh, or the local
// broker's first ids would be taken for resends there.
func TestBridgeLocalStateNew(t *testing.T) {
	central := startRemote(t)
	rawSession(t, central.b.Addr, "edge-1", "up/old", 5)
	cfg := bridgeConfig(t, central.Addr(), packet.V5, "up/# out 2")
	cfg.ClientID = "edge-1"
	e := startEdge(t, cfg)
	connected(t, e.br)
	up := newSink(t, central.Addr(), "up-sink", "up/#", packet.V5)
	pe := newSource(t, e.Addr(), "edge-pub")
	pe.publish("up/x", 1, 20)
	checkSeq(t, up.waitN(20), "up/x", 20)
}

// try_private over 3.1.1 to a Keel remote: it takes Mosquitto's bridge
// flag and sends the bridge nothing it published, so a topic bridged both
// ways (which 3.1.1 without the flag refuses at start) carries each
// message once each way, with no echo.
func TestBridgeTryPrivateKeelRemote(t *testing.T) {
	central := startRemote(t)
	cfg := bridgeConfig(t, central.Addr(), packet.V311, "x/# both 2")
	cfg.TryPrivate = true
	e := startEdge(t, cfg)
	connected(t, e.br)
	atCentral := newSink(t, central.Addr(), "central-sink", "x/#", packet.V5)
	atEdge := newSink(t, e.Addr(), "edge-sink", "x/#", packet.V5)
	pe := newSource(t, e.Addr(), "edge-pub")
	pc := newSource(t, central.Addr(), "central-pub")
	const n = 20
	pe.publish("x/up", 1, n)
	pc.publish("x/down", 1, n)
	pe.settle()
	pc.settle()
	// Each side has its own publisher's n and the other's n; an echo would
	// add copies. The last messages are marks: once each sink has them,
	// an echo of the others would have come before.
	pe.publish("x/up", n+1, n+1)
	pc.publish("x/down", n+1, n+1)
	for _, s := range []*sink{atCentral, atEdge} {
		got := s.waitN(2 * (n + 1))
		checkSeq(t, only(got, "x/up"), "x/up", n+1)
		checkSeq(t, only(got, "x/down"), "x/down", n+1)
	}
	waitFor(t, "the flows to end", func() bool { return e.b.Engine.Stats().QueuedMessages == 0 })
	for _, s := range []*sink{atCentral, atEdge} {
		if got := s.got(); len(got) != 2*(n+1) {
			t.Fatalf("%s: %d messages, want %d: a message came back", s.id, len(got), 2*(n+1))
		}
	}
}

// A message larger than the remote's Maximum Packet Size is not sent to it
// [MQTT-3.2.2-15]: the edge discards it for the bridge and counts it, and
// the messages after it still go (the bridge is not stuck on it).
func TestBridgeRemoteMaximumPacketSize(t *testing.T) {
	b := enginetest.Start(t, enginetest.Options{Engine: engine.Options{MaxPacketSize: 200}})
	central := &remote{b: b, f: enginetest.NewFront(t, b.Addr)}
	e := startEdge(t, bridgeConfig(t, central.Addr(), packet.V5, "up/# out 2 e/ central/edge/"))
	connected(t, e.br)
	up := newSink(t, central.Addr(), "up-sink", "central/edge/up/#", packet.V5)
	pe := newSource(t, e.Addr(), "edge-pub")
	// 180 bytes of payload fit in 200 with a short topic, not with the
	// remote's longer prefix.
	if err := pe.c.Publish(context.Background(), &packet.Publish{QoS: 2, Topic: "e/up/x", Payload: make([]byte, 180)}); err != nil {
		t.Fatal(err)
	}
	pe.publish("e/up/x", 1, 3)
	got := up.waitN(3)
	checkSeq(t, got, "central/edge/up/x", 3)
	if d := e.b.Engine.Stats().Dropped["too_large"]; d != 1 {
		t.Fatalf("edge dropped %d messages as too large, want 1", d)
	}
}

// fakeRemote is a server that speaks just enough MQTT 5.0 to test the
// bridge against misbehaviour: it accepts every CONNECT (Session Present
// as told), grants every SUBSCRIBE, and hands every other packet to got.
type fakeRemote struct {
	ln net.Listener
}

func startFakeRemote(t *testing.T, serve func(l *link)) *fakeRemote {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() { // owner: wg
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			l := &link{name: "fake", nc: nc, rd: bufio.NewReader(nc), version: packet.V5,
				wake: make(chan struct{}, 1), written: make(chan struct{}, 1), dead: make(chan struct{})}
			if p, err := packet.Read(l.rd, 0, 0); err != nil || p.Type() != packet.CONNECT {
				nc.Close()
				continue
			}
			l.start()
			wg.Add(1)
			go func() { // owner: wg
				defer wg.Done()
				defer l.close(nil)
				serve(l)
			}()
		}
	}()
	return &fakeRemote{ln: ln}
}

func (f *fakeRemote) Addr() string { return f.ln.Addr().String() }

// A remote that takes every PUBLISH and acknowledges none: the queue keeps
// every entry, and the next connection resends them all, with DUP and the
// same packet ids. A PUBLISH from the remote on a topic outside the in
// topics is acknowledged there, dropped here, and counted.
func TestBridgeRemoteNeverAcks(t *testing.T) {
	const n = 50
	type pub struct {
		id  uint16
		dup bool
	}
	conns := make(chan []pub, 4)
	fake := startFakeRemote(t, func(l *link) {
		l.send(&packet.Connack{SessionPresent: true})
		var got []pub
		for {
			p, err := l.next()
			if err != nil {
				return
			}
			switch p := p.(type) {
			case *packet.Subscribe:
				l.send(&packet.Suback{PacketID: p.PacketID, Codes: []packet.ReasonCode{2}})
				// A message outside the bridge's in topics.
				l.send(&packet.Publish{QoS: 2, PacketID: 7, Topic: "elsewhere/t", Payload: []byte("x")})
			case *packet.Publish:
				got = append(got, pub{p.PacketID, p.Dup})
				if len(got) == n {
					conns <- got
					return // drop the connection: the bridge comes back
				}
			case *packet.Ack:
				if p.Kind == packet.PUBREC && p.PacketID == 7 {
					l.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 7})
				}
			}
		}
	})
	e := startEdge(t, bridgeConfig(t, fake.Addr(), packet.V5, "up/# out 2", "down/# in 2"))
	down := newSink(t, e.Addr(), "down-sink", "elsewhere/#", packet.V5)
	connected(t, e.br)
	pe := newSource(t, e.Addr(), "edge-pub")
	pe.publish("up/x", 1, n)
	first := <-conns
	if q := e.b.Engine.Stats().QueuedMessages; q != n {
		t.Fatalf("edge queue with nothing acknowledged: %d entries, want %d", q, n)
	}
	second := <-conns
	for i := range n {
		if first[i].dup || !second[i].dup || second[i].id != first[i].id {
			t.Fatalf("message %d: first sent as %+v, then as %+v; want DUP the second time, the same id", i, first[i], second[i])
		}
	}
	if q := e.b.Engine.Stats().QueuedMessages; q != n {
		t.Fatalf("edge queue after the resends: %d entries, want %d", q, n)
	}
	waitFor(t, "the foreign message counted", func() bool { return e.br.Stats().Dropped >= 1 })
	if got := down.got(); len(got) > 0 {
		t.Fatalf("the message outside the in topics was published here: %q", got)
	}
}

// A remote that refuses the bridge's credentials: the bridge stays down
// and its state says why, never with the password.
func TestBridgeCredentialsRefused(t *testing.T) {
	h, err := auth.HashWithIterations("right-secret", 1000)
	if err != nil {
		t.Fatal(err)
	}
	pw, err := auth.ParsePasswords("passwd", strings.NewReader("edge:"+h+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	files := &auth.Files{}
	files.SetPasswords(pw)
	for _, v := range []byte{packet.V311, packet.V5} {
		b := enginetest.Start(t, enginetest.Options{Engine: engine.Options{Authenticator: files}})
		cfg := bridgeConfig(t, b.Addr, v, "up/# out 2")
		cfg.Username, cfg.Password = "edge", []byte("wrong-secret")
		e := startEdge(t, cfg)
		waitFor(t, "the refusal", func() bool { return strings.Contains(e.br.State().LastError, "refused the connection") })
		if st := e.br.State(); st.Connected || st.Rounds != 0 || strings.Contains(st.LastError, "wrong-secret") {
			t.Fatalf("protocol %d: state %+v: want not connected, no round, no password", v, st)
		}
		// It backs off and tries again, and says when.
		waitFor(t, "backing off", func() bool { st := e.br.State(); return st.Phase == PhaseBackingOff && !st.RetryAt.IsZero() })
		waitFor(t, "a second refusal", func() bool { return b.Engine.Stats().Refused["not_authorized"] >= 2 })
		t.Logf("protocol %d: %s", v, e.br.State().LastError)
	}
}

// A bridge whose address is its own broker's listener: it stops at the
// first connection with an error that says so, rather than loop every
// message out and back in; a 5.0 session it made there is ended.
func TestBridgeToItself(t *testing.T) {
	for _, v := range []byte{packet.V311, packet.V5} {
		b := enginetest.Start(t, enginetest.Options{})
		cfg := bridgeConfig(t, b.Addr, v, "up/# out 2", "down/# in 2")
		cfg.Logger = enginetest.Logger()
		br, err := New(cfg, b.Engine)
		if err != nil {
			t.Fatal(err)
		}
		br.Start()
		waitFor(t, "the bridge to stop", func() bool { return br.State().Phase == PhaseStopped })
		st := br.State()
		if !strings.Contains(st.LastError, "one of this broker's own listeners") || st.Connected || st.Rounds != 0 {
			t.Fatalf("protocol %d: state %+v: want stopped, never connected, the reason in LastError", v, st)
		}
		br.Close()
		if v == packet.V5 {
			waitFor(t, "the session the bridge made on itself to end", func() bool {
				return b.Engine.Stats().SessionsPersistent == 0 // the local one is made after the remote answered
			})
		}
		t.Logf("protocol %d: %s", v, st.LastError)
	}
}
