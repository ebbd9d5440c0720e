package bridge

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

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

// edge is a Keel broker with a bridge to a remote: the bridge is started
// again on the new engine after Restart or Crash, as a process restart
// would.
type edge struct {
	t   *testing.T
	b   *enginetest.Broker
	cfg Config
	br  *Bridge
}

func startEdge(t *testing.T, cfg Config) *edge {
	t.Helper()
	e := &edge{t: t, b: enginetest.Start(t, enginetest.Options{}), cfg: cfg}
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
	e.br.kill()
	e.b.Crash(keep, seed)
	e.startBridge()
}

// remoteDial dials whatever address *addr holds now: the remote broker gets
// a new port at each start.
func remoteDial(addr func() string) func(ctx context.Context, _ string) (net.Conn, error) {
	return func(ctx context.Context, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr())
	}
}

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
	addr    func() string
	id      string
	filter  string
	version byte
	sess    client.Session
	c       *client.Client

	mu   sync.Mutex
	msgs []string // "topic payload"
}

func newSink(t *testing.T, addr func() string, id, filter string, version byte) *sink {
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
		Addr: s.addr(), Version: s.version, ClientID: s.id, SessionExpiry: 3600, Session: s.sess,
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
	waitFor(s.t, fmt.Sprintf("%d messages at %s (have %d)", n, s.id, len(s.got())), func() bool { return len(s.got()) >= n })
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
	addr func() string
	id   string
	sess client.Session
	c    *client.Client
	acks chan uint16
}

func newSource(t *testing.T, addr func() string, id string) *source {
	s := &source{t: t, addr: addr, id: id, sess: client.NewMemorySession(), acks: make(chan uint16, 100000)}
	s.connect()
	t.Cleanup(func() { s.c.Close() })
	return s
}

func (s *source) connect() {
	s.t.Helper()
	c, err := client.Connect(context.Background(), client.Options{
		Addr: s.addr(), ClientID: s.id, SessionExpiry: 3600, Session: s.sess,
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
			central := enginetest.Start(t, enginetest.Options{})
			centralAddr := func() string { return central.Addr }
			e := startEdge(t, Config{Name: "c", Addresses: []string{"central:1883"}, Version: v.version,
				Topics: topics(t, "up/# out 2", "down/# in 2"), RestartBase: 10 * time.Millisecond, RestartCap: 50 * time.Millisecond,
				TryPrivate: false, Dial: remoteDial(centralAddr)})
			edgeAddr := func() string { return e.b.Addr }
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
