package engine

import (
	"bufio"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/keelmq/keel/engine/packet"
)

// connectHeader is a CONNECT's fixed header declaring a body of rem bytes.
func connectHeader(rem int) []byte {
	b := []byte{byte(packet.CONNECT) << 4}
	for {
		c := byte(rem & 0x7f)
		rem >>= 7
		if rem > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if rem == 0 {
			return b
		}
	}
}

// holdConns opens n sockets that each send prefix and then nothing.
func holdConns(t *testing.T, addr string, n int, prefix []byte) []net.Conn {
	t.Helper()
	out := make([]net.Conn, 0, n)
	for i := 0; i < n; i++ {
		nc, err := net.DialTimeout("tcp", addr, pahoWait)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		t.Cleanup(func() { nc.Close() })
		if _, err := nc.Write(prefix); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		out = append(out, nc)
	}
	return out
}

// closedByServer reports whether the server has closed nc, waiting at most
// d for it; a packet read first is returned.
func closedByServer(nc net.Conn, d time.Duration) (closed bool, first byte) {
	nc.SetReadDeadline(time.Now().Add(d))
	var buf [64]byte
	n, err := nc.Read(buf[:])
	if n > 0 {
		first = buf[0]
		_, err = io.ReadAll(nc)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false, first
	}
	return true, first
}

// A thousand connections each declaring a large CONNECT and sending
// nothing pin no more than the pre-authentication budget: past
// max_connect_size they are refused from their fixed header; below it
// each reserves its declared size and those the budget cannot hold are
// closed at once. Meanwhile ordinary clients connect and publish, and the
// connect deadline closes the ones left holding a reservation.
func TestPreauthBudget(t *testing.T) {
	const budget = 1 << 20
	const declared = 60 << 10 // under max_connect_size (64 KiB)
	tb := startBroker(t, Options{MaxPreauthBytes: budget, ConnectTimeout: 2 * time.Second})

	var peak atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // samples the reserved bytes while the sockets come
		defer wg.Done()
		for {
			if v := tb.b.Stats().PreauthBytes; v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()

	huge := holdConns(t, tb.addr, 500, connectHeader(268435455)) // 256 MB
	held := holdConns(t, tb.addr, 1000, connectHeader(declared))

	// Ordinary clients get in meanwhile.
	sub := dialPaho5(t, tb.addr, &paho.Connect{ClientID: "sub5", CleanStart: true}, nil)
	sub.sub(t, paho.SubscribeOptions{Topic: "p/#", QoS: 1})
	pub := dialPaho5(t, tb.addr, &paho.Connect{ClientID: "pub5", CleanStart: true}, nil)
	if rc := pub5(t, pub, "p/5", 1, false, "five"); rc != 0 {
		t.Fatalf("publish: reason %#x, want 0", rc)
	}
	sub.in.expect(t, msg{topic: "p/5", payload: "five", qos: 1})
	p3 := dialPaho3(t, tb.addr, "pub3", true, nil)
	p3.pub(t, "p/3", 1, false, "three")
	sub.in.expect(t, msg{topic: "p/3", payload: "three", qos: 1})

	fit := budget / declared // reservations the budget holds
	waitFor(t, "every socket decided", func() bool {
		r := tb.b.Stats().Refused
		return r["connect_size"] == 500 && r["preauth_budget"] == uint64(len(held)-fit)
	})
	if got, want := tb.b.Stats().PreauthBytes, int64(fit*declared); got != want {
		t.Fatalf("PreauthBytes = %d, want %d (%d held CONNECTs of %d bytes)", got, want, fit, declared)
	}
	for i, nc := range huge {
		if closed, _ := closedByServer(nc, pahoWait); !closed {
			t.Fatalf("huge CONNECT %d: still open, want closed", i)
		}
	}
	// The ones held are closed by the connect deadline, and their bytes
	// come back.
	open := 0
	for _, nc := range held {
		if closed, _ := closedByServer(nc, pahoWait); !closed {
			open++
		}
	}
	if open != 0 {
		t.Fatalf("%d held CONNECTs still open after the connect deadline, want 0", open)
	}
	waitFor(t, "the reservations released", func() bool { return tb.b.Stats().PreauthBytes == 0 })
	close(stop)
	wg.Wait()
	if p := peak.Load(); p > budget || p == 0 {
		t.Fatalf("peak reserved bytes %d, want 1..%d", p, budget)
	}
	wantCount(t, tb, "refused", "connect_size", 500)
}

// A CONNECT over max_connect_size is refused before its body is read: a
// 5.0 client gets CONNACK 0x95 Packet too large, a 3.1.1 one is closed.
func TestConnectSize(t *testing.T) {
	tb := startBroker(t, Options{MaxConnectSize: 1 << 10})
	for _, tc := range []struct {
		level byte
		want  byte // first byte from the server; 0: none
	}{{packet.V5, byte(packet.CONNACK) << 4}, {packet.V311, 0}} {
		prefix := append(connectHeader(2<<10), 0, 4, 'M', 'Q', 'T', 'T', tc.level)
		nc := holdConns(t, tb.addr, 1, prefix)[0]
		rc := &rawClient{t: t, nc: nc, br: bufio.NewReader(nc), version: tc.level}
		if tc.level == packet.V5 {
			p := rc.expectClosed()
			ca, ok := p.(*packet.Connack)
			if !ok || ca.ReasonCode != packet.CodePacketTooLarge {
				t.Fatalf("5.0: got %T %+v, want CONNACK 0x95", p, p)
			}
			continue
		}
		closed, first := closedByServer(nc, pahoWait)
		if !closed || first != 0 {
			t.Fatalf("3.1.1: closed %v, first byte %#x; want closed with nothing sent", closed, first)
		}
	}
	wantCount(t, tb, "refused", "connect_size", 2)
	// One just within the limit connects.
	c := dialRaw(t, tb.addr, packet.V5)
	if ca := c.connect("small", true, func(cp *packet.Connect) { cp.Password, cp.PasswordFlag = make([]byte, 900), true }); ca.ReasonCode != 0 {
		t.Fatalf("CONNECT of about 950 bytes: reason %#x, want 0", ca.ReasonCode)
	}
}
