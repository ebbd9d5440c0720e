package listener_test

import (
	"context"
	"net"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/time/rate"

	"github.com/keelmq/keel/listener"
)

// connect3 connects Paho 3.1.1 and returns its return code.
func connect3(t *testing.T, addr, id string) (mqtt.Client, byte) {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(wait)
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(wait) {
		t.Fatalf("connect %s: timed out", id)
	}
	return c, tok.(*mqtt.ConnectToken).ReturnCode()
}

// Over max_connections a client gets CONNACK 0x97 (5.0) or return code 3
// (3.1.1) and is closed; the refusal is counted, and a place freed is
// taken by the next client.
func TestMaxConnections(t *testing.T) {
	h := start(t, &listener.Server{MaxConnections: 2})
	a, rc := connect3(t, h.addr, "a")
	if rc != 0 {
		t.Fatalf("a: return code %d", rc)
	}
	b, rc := connect3(t, h.addr, "b")
	if rc != 0 {
		t.Fatalf("b: return code %d", rc)
	}
	if _, rc := connect3(t, h.addr, "c"); rc != 3 {
		t.Fatalf("3.1.1 over the limit: got return code %d, want 3", rc)
	}
	nc, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, ca, err := paho5Connect(t, nc, "d"); err == nil || ca == nil || ca.ReasonCode != 0x97 {
		t.Fatalf("5.0 over the limit: got %+v, %v; want CONNACK 0x97", ca, err)
	}
	h.refused(t, "max_connections", 2)
	if st := h.srv.Stats(); st.Open != 2 || st.Accepted != 2 {
		t.Fatalf("got %+v, want 2 open, 2 accepted", st)
	}
	a.Disconnect(0)
	eventually(t, "a's place freed", func() bool { return h.srv.Stats().Open == 1 })
	e, rc := connect3(t, h.addr, "e")
	if rc != 0 {
		t.Fatalf("e after a left: return code %d, want 0", rc)
	}
	roundTrip3(t, b, "b", nil)
	e.Disconnect(0)
	b.Disconnect(0)
}

// The global limit is shared by listeners.
func TestGlobalMaxConnections(t *testing.T) {
	global := &listener.Limit{Max: 1}
	h := start(t, &listener.Server{Global: global})
	// A second listener on the same broker, sharing the limit.
	second := &listener.Server{Name: "second", Global: global, Handler: h.srv.Handler}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go second.Serve(ln)
	t.Cleanup(func() { second.Shutdown(context.Background()) })

	a, rc := connect3(t, h.addr, "a")
	if rc != 0 {
		t.Fatalf("a: return code %d", rc)
	}
	if _, rc := connect3(t, ln.Addr().String(), "b"); rc != 3 {
		t.Fatalf("on the second listener over the global limit: got return code %d, want 3", rc)
	}
	if got := second.Stats().Refused["max_connections"]; got != 1 || global.Open() != 1 {
		t.Fatalf("second listener refused %d, global open %d; want 1 and 1", got, global.Open())
	}
	a.Disconnect(0)
	eventually(t, "the global place freed", func() bool { return global.Open() == 0 })
	if c, rc := connect3(t, ln.Addr().String(), "b"); rc != 0 {
		t.Fatalf("b after a left: return code %d", rc)
	} else {
		c.Disconnect(0)
	}
}

// Over max_connection_rate a client gets CONNACK 0x9F (5.0) or return
// code 3 (3.1.1), counted; the rate is shared by the listeners that share
// the Limit.
func TestConnectionRate(t *testing.T) {
	// A burst of 2 and one new token an hour: the third client within
	// the test is over the rate.
	global := &listener.Limit{Rate: rate.NewLimiter(rate.Every(time.Hour), 2)}
	h := start(t, &listener.Server{Global: global})
	a, rc := connect3(t, h.addr, "a")
	if rc != 0 {
		t.Fatalf("a: return code %d", rc)
	}
	defer a.Disconnect(0)
	nc, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, ca, err := paho5Connect(t, nc, "b"); err != nil || ca == nil || ca.ReasonCode != 0 {
		t.Fatalf("b within the burst: got %+v, %v; want CONNACK 0", ca, err)
	}
	if _, rc := connect3(t, h.addr, "c"); rc != 3 {
		t.Fatalf("3.1.1 over the rate: got return code %d, want 3", rc)
	}
	nc, err = net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, ca, err := paho5Connect(t, nc, "d"); err == nil || ca == nil || ca.ReasonCode != 0x9F {
		t.Fatalf("5.0 over the rate: got %+v, %v; want CONNACK 0x9F", ca, err)
	}
	h.refused(t, "connection_rate", 2)
	roundTrip3(t, a, "a", nil) // the clients let in are served on
}

// Over max_connections_per_address a client gets CONNACK 0x97 / return
// code 3, counted; a place freed is taken again.
func TestConnectionsPerAddress(t *testing.T) {
	h := start(t, &listener.Server{Global: &listener.Limit{PerAddress: 1}})
	a, rc := connect3(t, h.addr, "a")
	if rc != 0 {
		t.Fatalf("a: return code %d", rc)
	}
	if _, rc := connect3(t, h.addr, "b"); rc != 3 {
		t.Fatalf("3.1.1, a second client from 127.0.0.1: got return code %d, want 3", rc)
	}
	nc, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, ca, err := paho5Connect(t, nc, "c"); err == nil || ca == nil || ca.ReasonCode != 0x97 {
		t.Fatalf("5.0, a second client from 127.0.0.1: got %+v, %v; want CONNACK 0x97", ca, err)
	}
	h.refused(t, "max_connections_per_address", 2)
	a.Disconnect(0)
	eventually(t, "a's place freed", func() bool { return h.srv.Stats().Open == 0 })
	d, rc := connect3(t, h.addr, "d")
	if rc != 0 {
		t.Fatalf("d after a left: return code %d, want 0", rc)
	}
	d.Disconnect(0)
}
