package engine

import (
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/keelmq/keel/engine/clock"
	"github.com/keelmq/keel/engine/packet"
)

// connectCode connects a raw client as id and returns the CONNACK's code;
// the connection is closed after.
func connectCode(t *testing.T, tb *testBroker, version byte, id string) packet.ReasonCode {
	t.Helper()
	c := dialRaw(t, tb.addr, version)
	ca := c.connect(id, true, nil)
	if ca.ReasonCode != 0 {
		c.expectClosed() // [MQTT-3.2.2-7]
	}
	c.nc.Close()
	return ca.ReasonCode
}

// A client id connecting more than flapping_max_connects times within the
// window is refused for the ban time, on the injected clock: 5.0 CONNACK
// 0x8A, 3.1.1 return code 5. Other ids are not affected, refused connects
// do not extend the ban, and a new window starts after the old one.
func TestFlapping(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	tb := startBroker(t, Options{Clock: clk, FlappingDetect: true, FlappingMaxConnects: 3,
		FlappingWindow: time.Minute, FlappingBan: 5 * time.Minute})
	for i := 0; i < 3; i++ {
		if rc := connectCode(t, tb, packet.V5, "flap"); rc != 0 {
			t.Fatalf("connect %d: reason %#x, want 0", i+1, rc)
		}
	}
	if rc := connectCode(t, tb, packet.V5, "flap"); rc != packet.CodeBanned {
		t.Fatalf("connect 4 within the window: reason %#x, want 0x8A", rc)
	}
	if rc := connectCode(t, tb, packet.V5, "other"); rc != 0 {
		t.Fatalf("another client id: reason %#x, want 0", rc)
	}
	clk.Advance(4 * time.Minute)
	if rc := connectCode(t, tb, packet.V311, "flap"); rc != packet.RetNotAuthorized {
		t.Fatalf("3.1.1 during the ban: return code %#x, want 5", rc)
	}
	// Paho 3.1.1 sees the refusal as an error.
	o := mqtt.NewClientOptions().AddBroker("tcp://" + tb.addr).SetClientID("flap").SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectTimeout(pahoWait)
	pc := mqtt.NewClient(o)
	if tok := pc.Connect(); !tok.WaitTimeout(pahoWait) || tok.Error() == nil {
		t.Fatalf("paho 3.1.1 during the ban: connected (%v), want refused", tok.Error())
	}
	wantCount(t, tb, "refused", "flapping", 3)
	clk.Advance(time.Minute) // the ban is over
	for i := 0; i < 3; i++ {
		dialPaho3(t, tb.addr, "flap", true, nil).Disconnect(0)
	}
	clk.Advance(time.Minute) // a new window
	for i := 0; i < 3; i++ {
		if rc := connectCode(t, tb, packet.V5, "flap"); rc != 0 {
			t.Fatalf("connect %d in a new window: reason %#x, want 0", i+1, rc)
		}
	}
	wantCount(t, tb, "refused", "flapping", 3)
	if rc := connectCode(t, tb, packet.V5, ""); rc != 0 { // assigned ids are not followed
		t.Fatalf("empty client id: reason %#x, want 0", rc)
	}
}

// The table of followed ids is bounded, and forgets ids whose window is
// over.
func TestFlappingBounded(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	tb := startBroker(t, Options{Clock: clk, FlappingDetect: true, FlappingMaxConnects: 1,
		FlappingWindow: time.Minute, FlappingBan: time.Hour, FlappingMaxTracked: 2})
	connectCode(t, tb, packet.V5, "a")
	connectCode(t, tb, packet.V5, "b")
	// The table is full: c is not followed.
	for i := 0; i < 3; i++ {
		if rc := connectCode(t, tb, packet.V5, "c"); rc != 0 {
			t.Fatalf("untracked id, connect %d: reason %#x, want 0", i+1, rc)
		}
	}
	if rc := connectCode(t, tb, packet.V5, "a"); rc != packet.CodeBanned {
		t.Fatalf("a over its limit: reason %#x, want 0x8A", rc)
	}
	clk.Advance(2 * time.Minute) // b's window is over: forgotten; a is banned still
	connectCode(t, tb, packet.V5, "c")
	if rc := connectCode(t, tb, packet.V5, "c"); rc != packet.CodeBanned {
		t.Fatalf("c followed once b is forgotten: reason %#x, want 0x8A", rc)
	}
	var n int
	tb.inCore(func() { n = len(tb.b.core.flap.ids) })
	if n != 2 {
		t.Fatalf("followed ids: %d, want 2", n)
	}
}
