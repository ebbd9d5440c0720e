package listener_test

import (
	"context"
	"net"
	"testing"

	mqtt "github.com/eclipse/paho.mqtt.golang"

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
