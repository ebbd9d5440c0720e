package engine

import (
	"bufio"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keelmq/keel/engine/packet"
)

// tcpPair is the two ends of a real loopback TCP connection.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return server, client
}

// connPair is a conn on the server side of a real loopback TCP connection,
// its writeLoop running, and the client side to read it.
func connPair(t *testing.T, small bool, writeTimeout time.Duration) (*conn, net.Conn) {
	t.Helper()
	server, client := tcpPair(t)
	if small {
		// Small buffers: the kernel takes only part of a large write.
		server.(*net.TCPConn).SetWriteBuffer(4096)
		client.(*net.TCPConn).SetReadBuffer(4096)
	}
	b := &Broker{log: testLogger(t)}
	b.opts.WriteTimeout = writeTimeout // 0: the default
	b.opts.fill()
	raw, err := server.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	c := newConn(b, server, ConnInfo{Direct: raw})
	c.version = packet.V5
	if c.raw == nil {
		t.Fatal("no descriptor for sendNow on a TCP connection")
	}
	go c.writeLoop()
	t.Cleanup(func() {
		c.kill()
		<-c.done
		client.Close()
	})
	return c, client
}

func puback(id uint16) outItem { return outItem{pkt: &packet.Ack{Kind: packet.PUBACK, PacketID: id}} }

// sendNow writes what the socket takes and leaves the rest to the
// writeLoop, ahead of anything sent later: the client sees every packet,
// whole and in order.
func TestSendNowLeavesTheRestToTheWriter(t *testing.T) {
	c, client := connPair(t, true, 0)
	const n = 20000 // 80 KB of PUBACKs: more than the socket buffers hold
	items := make([]outItem, 0, n)
	for i := 1; i <= n; i++ {
		items = append(items, puback(uint16(i)))
	}
	c.sendNow(items)
	// The client has read nothing: the kernel took part, and the rest is
	// the writeLoop's (pending, or already in its blocked Write).
	c.mu.Lock()
	left := len(c.mu.pending) > 0 || c.mu.writing
	c.mu.Unlock()
	if !left {
		t.Fatal("80 KB written at once into a socket nobody reads: want a partial write left to the writeLoop")
	}
	c.sendNow([]outItem{puback(n + 1)}) // must queue behind the rest
	c.send(outItem{pkt: &packet.Pingresp{}})

	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(client)
	for i := 1; i <= n+1; i++ {
		p, err := packet.Read(br, packet.V5, 0)
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if a, ok := p.(*packet.Ack); !ok || a.Kind != packet.PUBACK || a.PacketID != uint16(i) {
			t.Fatalf("packet %d: got %T %+v, want PUBACK %d", i, p, p, i)
		}
	}
	if p, err := packet.Read(br, packet.V5, 0); err != nil || p.Type() != packet.PINGRESP {
		t.Fatalf("last: got %v, %v, want PINGRESP", p, err)
	}
}

// Direct writes and the writeLoop's, from two goroutines at once, never
// tear or reorder one another's packets.
func TestSendNowConcurrentWithWriter(t *testing.T) {
	c, client := connPair(t, false, 0)
	const n = 5000
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 1; i <= n; i++ {
			c.sendNow([]outItem{puback(uint16(i))})
		}
	})
	wg.Go(func() {
		for i := 1; i <= n; i++ {
			c.send(outItem{pkt: &packet.Ack{Kind: packet.PUBREC, PacketID: uint16(i)}})
		}
	})
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(client)
	next := map[packet.Type]uint16{packet.PUBACK: 1, packet.PUBREC: 1}
	for range 2 * n {
		p, err := packet.Read(br, packet.V5, 0)
		if err != nil {
			t.Fatal(err)
		}
		a, ok := p.(*packet.Ack)
		if !ok || a.PacketID != next[a.Kind] {
			t.Fatalf("got %T %+v, want %s %d / %s %d", p, p, packet.PUBACK.String(), next[packet.PUBACK], packet.PUBREC.String(), next[packet.PUBREC])
		}
		next[a.Kind]++
	}
	wg.Wait()
}

// The write deadline the writeLoop leaves set expires on a quiet
// connection; sendNow's direct write is then refused, and its packets must
// still go out, through the writeLoop.
func TestSendNowAfterTheWriteDeadline(t *testing.T) {
	c, client := connPair(t, false, 20*time.Millisecond)
	br := bufio.NewReader(client)
	read := func(want packet.Type, id uint16) {
		t.Helper()
		client.SetReadDeadline(time.Now().Add(5 * time.Second))
		p, err := packet.Read(br, packet.V5, 0)
		if err != nil {
			t.Fatal(err)
		}
		if p.Type() != want || (id != 0 && p.(*packet.Ack).PacketID != id) {
			t.Fatalf("got %T %+v, want %s %d", p, p, want.String(), id)
		}
	}
	c.send(outItem{pkt: &packet.Pingresp{}}) // the writeLoop writes: deadline 20 ms ahead
	read(packet.PINGRESP, 0)
	time.Sleep(50 * time.Millisecond) // the deadline has passed
	c.sendNow([]outItem{puback(1)})
	read(packet.PUBACK, 1)
	c.sendNow([]outItem{puback(2)})
	read(packet.PUBACK, 2)
}

// meter counts what is written through it.
type meter struct {
	*net.TCPConn
	n atomic.Int64
}

func (m *meter) Write(p []byte) (int, error) {
	n, err := m.TCPConn.Write(p)
	m.n.Add(int64(n))
	return n, err
}

// Without the listener's grant, acks on the commit path go through the
// conn's Write: a wrapper sees every byte, even one that, like this meter,
// still offers the socket's descriptor.
func TestNoDirectWriteWithoutTheGrant(t *testing.T) {
	server, client := tcpPair(t)
	defer client.Close()
	m := &meter{TCPConn: server.(*net.TCPConn)}
	b := &Broker{log: testLogger(t)}
	b.opts.fill()
	c := newConn(b, m, ConnInfo{})
	c.version = packet.V5
	go c.writeLoop()
	defer func() { c.kill(); <-c.done }()
	const n = 100
	for i := range n {
		c.sendNow([]outItem{puback(uint16(i + 1))})
	}
	br := bufio.NewReader(client)
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	total := 0
	for i := range n {
		p, err := packet.Read(br, packet.V5, 0)
		if err != nil {
			t.Fatalf("ack %d: %v", i+1, err)
		}
		b, _ := p.Append(nil, packet.V5)
		total += len(b)
	}
	// The meter counts once Write returns, which may be after the client
	// read the bytes; written around it, they would never be counted.
	waitFor(t, "the wrapper to count every byte", func() bool { return m.n.Load() == int64(total) })
}
