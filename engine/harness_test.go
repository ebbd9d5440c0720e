package engine

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/keelmq/keel/engine/packet"
	"github.com/keelmq/keel/listener"
	"github.com/keelmq/keel/wal"
)

// testBroker is a real broker on a free loopback port over a real Pebble,
// on disk or on Pebble's crash-simulating memory filesystem.
type testBroker struct {
	t    *testing.T
	fs   vfs.FS
	dir  string
	opts Options

	addr string
	b    *Broker
	l    *wal.Log
	srv  *listener.Server
	ln   net.Listener
	done chan struct{}
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("KEEL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startBroker starts a broker on a crashable in-memory filesystem.
func startBroker(t *testing.T, opts Options) *testBroker {
	t.Helper()
	tb := &testBroker{t: t, fs: vfs.NewCrashableMem(), dir: "data", opts: opts}
	tb.start()
	t.Cleanup(tb.stop)
	return tb
}

func (tb *testBroker) start() {
	tb.t.Helper()
	l, err := wal.Open(wal.Options{Dir: tb.dir, FS: tb.fs, Logger: testLogger(tb.t)})
	if err != nil {
		tb.t.Fatalf("wal.Open: %v", err)
	}
	opts := tb.opts
	if opts.Logger == nil {
		opts.Logger = testLogger(tb.t)
	}
	if opts.SysInterval == 0 {
		opts.SysInterval = -1
	}
	b, err := New(opts, l)
	if err != nil {
		tb.t.Fatalf("engine.New: %v", err)
	}
	// A new free port each start: keeping the old one across a restart
	// races with other tests taking it meanwhile. Clients dial tb.addr.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.t.Fatalf("listen: %v", err)
	}
	tb.addr = ln.Addr().String()
	tb.b, tb.l, tb.ln = b, l, ln
	tb.srv = &listener.Server{Handler: handler(b), Logger: opts.Logger}
	tb.done = make(chan struct{})
	go func() { tb.srv.Serve(ln); close(tb.done) }()
}

// inCore runs fn on the core goroutine and waits for it: fn sees the state
// after every event the core took before it.
func (tb *testBroker) inCore(fn func()) {
	done := make(chan struct{})
	tb.b.post(event{kind: evFunc, fn: func() { fn(); close(done) }})
	<-done
}

// session returns the core's session of id (nil if none) through fn.
func (tb *testBroker) session(id string, fn func(s *session)) {
	tb.inCore(func() { fn(tb.b.core.sessions.Sessions[id]) })
}

// waitIdle waits until client id's session has nothing in flight: its
// acks have reached the core.
func (tb *testBroker) waitIdle(id string) {
	tb.t.Helper()
	waitFor(tb.t, id+" to have nothing in flight", func() bool {
		idle := false
		tb.session(id, func(s *session) { idle = s != nil && len(s.Inflight) == 0 })
		return idle
	})
}

// handler serves a listener's connections with b.
func handler(b *Broker) listener.Handler {
	return listener.HandlerFunc(func(nc net.Conn, info listener.Info) { b.ServeConn(nc, ConnInfo(info)) })
}

// stop shuts the broker down cleanly.
func (tb *testBroker) stop() {
	if tb.b == nil {
		return
	}
	tb.ln.Close()
	tb.b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	tb.srv.Shutdown(ctx)
	cancel()
	<-tb.done
	tb.l.Close()
	tb.b = nil
}

// crash simulates a power loss: the filesystem keeps only what was synced;
// the broker is abandoned without any shutdown step and restarted on what
// is left. It requires the memory filesystem.
func (tb *testBroker) crash() {
	tb.t.Helper()
	mem := tb.fs.(*vfs.MemFS)
	clone := mem.CrashClone(vfs.CrashCloneCfg{})
	// Tear the old broker down without letting it write anything more
	// that could matter: the clone is already taken.
	tb.ln.Close()
	tb.srv.Shutdown(canceledCtx())
	<-tb.done
	tb.b.Close()
	tb.l.Close()
	tb.b = nil
	tb.fs = clone
	tb.start()
}

// restart is a clean stop and start on the same data.
func (tb *testBroker) restart() {
	tb.stop()
	tb.start()
}

func canceledCtx() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// rawClient speaks MQTT through our own codec, for the flows that client
// libraries hide.
type rawClient struct {
	t       *testing.T
	nc      net.Conn
	br      *bufio.Reader
	version byte
	mu      sync.Mutex
}

func dialRaw(t *testing.T, addr string, version byte) *rawClient {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawClient{t: t, nc: nc, br: bufio.NewReader(nc), version: version}
}

func (rc *rawClient) send(p packet.Packet) {
	rc.t.Helper()
	buf, err := p.Append(nil, rc.version)
	if err != nil {
		rc.t.Fatalf("encode %T: %v", p, err)
	}
	rc.sendRaw(buf)
}

func (rc *rawClient) sendRaw(b []byte) {
	rc.t.Helper()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if _, err := rc.nc.Write(b); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

// recv reads the next packet, failing the test after a timeout.
func (rc *rawClient) recv() packet.Packet {
	rc.t.Helper()
	p, err := rc.tryRecv(5 * time.Second)
	if err != nil {
		rc.t.Fatalf("recv: %v", err)
	}
	return p
}

func (rc *rawClient) tryRecv(d time.Duration) (packet.Packet, error) {
	rc.nc.SetReadDeadline(time.Now().Add(d))
	return packet.Read(rc.br, rc.version, 0)
}

// expectNothing asserts no packet arrives within d.
func (rc *rawClient) expectNothing(d time.Duration) {
	rc.t.Helper()
	p, err := rc.tryRecv(d)
	if err == nil {
		rc.t.Fatalf("got %T %+v, want nothing", p, p)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		rc.t.Fatalf("got error %v, want a timeout", err)
	}
}

// expectClosed asserts the server closes the connection (after at most
// one packet, returned).
func (rc *rawClient) expectClosed() packet.Packet {
	rc.t.Helper()
	var last packet.Packet
	for i := 0; i < 3; i++ {
		p, err := rc.tryRecv(5 * time.Second)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				rc.t.Fatalf("connection still open, want closed")
			}
			return last
		}
		last = p
	}
	rc.t.Fatalf("connection still sending, want closed")
	return nil
}

func (rc *rawClient) connect(id string, clean bool, props func(*packet.Connect)) *packet.Connack {
	rc.t.Helper()
	cp := &packet.Connect{ProtocolName: "MQTT", ProtocolLevel: rc.version, CleanStart: clean, KeepAlive: 30, ClientID: id}
	if rc.version == packet.V31 {
		cp.ProtocolName = "MQIsdp"
	}
	if rc.version == packet.V5 && !clean {
		cp.Props.SessionExpiry = 0xFFFFFFFF
		cp.Props.Set(packet.PropSessionExpiry)
	}
	if props != nil {
		props(cp)
	}
	rc.send(cp)
	p := rc.recv()
	ca, ok := p.(*packet.Connack)
	if !ok {
		rc.t.Fatalf("got %T, want CONNACK", p)
	}
	return ca
}

func (rc *rawClient) subscribe(pid uint16, filter string, qos byte) *packet.Suback {
	rc.t.Helper()
	rc.send(&packet.Subscribe{PacketID: pid, Subs: []packet.Subscription{{Filter: filter, QoS: qos}}})
	p := rc.recv()
	sa, ok := p.(*packet.Suback)
	if !ok {
		rc.t.Fatalf("got %T, want SUBACK", p)
	}
	return sa
}

func (rc *rawClient) publish(pid uint16, topic string, qos byte, payload string) {
	rc.t.Helper()
	rc.send(&packet.Publish{QoS: qos, PacketID: pid, Topic: topic, Payload: []byte(payload)})
}

func (rc *rawClient) expectAck(kind packet.Type, pid uint16) *packet.Ack {
	rc.t.Helper()
	p := rc.recv()
	a, ok := p.(*packet.Ack)
	if !ok || a.Kind != kind || a.PacketID != pid {
		rc.t.Fatalf("got %T %+v, want %s for id %d", p, p, kind.String(), pid)
	}
	return a
}

func (rc *rawClient) expectPublish() *packet.Publish {
	rc.t.Helper()
	p := rc.recv()
	pub, ok := p.(*packet.Publish)
	if !ok {
		rc.t.Fatalf("got %T %+v, want PUBLISH", p, p)
	}
	return pub
}
