package engine

import (
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/keelmq/keel/engine/packet"
)

// startFaulty starts a broker on a crashable memory filesystem wrapped with
// a fault toggle (off at start). The returned mem is the filesystem under
// the faults, for crash images.
func startFaulty(t *testing.T, opts Options, fault error) (*testBroker, *errorfs.Toggle, *vfs.MemFS) {
	t.Helper()
	mem := vfs.NewCrashableMem()
	toggle := faultInjector(fault)
	tb := &testBroker{t: t, fs: errorfs.Wrap(mem, toggle), dir: "data", opts: opts}
	tb.start()
	t.Cleanup(tb.stop)
	return tb, toggle, mem
}

// waitFailed waits for Failed and then for every Txn in flight to be done,
// so that what follows takes the release-at-once path where it can.
func waitFailed(t *testing.T, tb *testBroker) {
	t.Helper()
	select {
	case <-tb.b.Failed():
	case <-time.After(5 * time.Second):
		t.Fatal("Failed() not signalled after a failed commit")
	}
	waitFor(t, "no Txn in flight", func() bool { return tb.b.pending.Load() == 0 })
}

// Issue 19, scenario 1: a QoS 2 PUBLISH refused by a failed commit leaves
// its packet id in the session's memory. A new PUBLISH with that id after
// the failure must not be taken for a resend and acknowledged with success.
func TestNoSuccessPubrecForAnIDWhoseCommitFailed(t *testing.T) {
	tb, toggle, _ := startFaulty(t, Options{}, syscall.EIO)
	p := dialRaw(t, tb.addr, packet.V5)
	p.connect("p", false, nil) // persistent: the inbound id is written

	toggle.On()
	p.publish(5, "a", 2, "first")
	if a := p.expectAck(packet.PUBREC, 5); a.ReasonCode < 0x80 {
		t.Fatalf("PUBREC reason %v during a store fault, want >= 0x80", a.ReasonCode)
	}
	waitFailed(t, tb)
	// For the client the flow is over (PUBREC >= 0x80): id 5 is free, and
	// a PUBLISH with it is a new message [MQTT-4.3.3-9].
	p.publish(5, "a", 2, "second")
	if a := p.expectAck(packet.PUBREC, 5); a.ReasonCode < 0x80 {
		t.Fatalf("PUBREC reason %v for a new message after the failure, want >= 0x80: it was never stored", a.ReasonCode)
	}
}

// Issue 19, scenario 2: a retained PUBLISH whose commit failed stays in
// the retained index in memory; nobody may receive it, and nothing is
// granted after the failure (CONNACK, SUBACK).
func TestFailedRetainedNeverDelivered(t *testing.T) {
	tb, toggle, _ := startFaulty(t, Options{}, syscall.ENOSPC)
	// Connected before the fault; they subscribe after it.
	s5 := dialRaw(t, tb.addr, packet.V5)
	s5.connect("s5", true, nil)
	s3 := dialRaw(t, tb.addr, packet.V311)
	s3.connect("s3", true, nil)
	p := dialRaw(t, tb.addr, packet.V5)
	p.connect("p", true, nil)

	toggle.On()
	p.send(&packet.Publish{QoS: 1, PacketID: 1, Retain: true, Topic: "r/x", Payload: []byte("never stored")})
	if a := p.expectAck(packet.PUBACK, 1); a.ReasonCode < 0x80 {
		t.Fatalf("PUBACK reason %v during a store fault, want >= 0x80", a.ReasonCode)
	}
	waitFailed(t, tb)

	// A clean session writes nothing for SUBSCRIBE, so before the fix its
	// SUBACK and the retained message left at once.
	s5.send(&packet.Subscribe{PacketID: 1, Subs: []packet.Subscription{{Filter: "r/#", QoS: 1}}})
	switch pk := s5.recv().(type) {
	case *packet.Suback:
		for _, c := range pk.Codes {
			if c < 0x80 {
				t.Fatalf("SUBACK code %v after the store failed, want >= 0x80", c)
			}
		}
		// A retained message would be queued right behind the SUBACK,
		// so ahead of the PINGRESP.
		s5.send(&packet.Pingreq{})
		if pk := s5.recv(); pk.Type() != packet.PINGRESP {
			t.Fatalf("got %T %+v after the refused SUBACK, want PINGRESP", pk, pk)
		}
	default:
		t.Fatalf("got %T %+v after the store failed, want a refused SUBACK", pk, pk)
	}
	s3.send(&packet.Subscribe{PacketID: 1, Subs: []packet.Subscription{{Filter: "r/#", QoS: 1}}})
	if pk := s3.expectClosed(); pk != nil {
		t.Fatalf("3.1.1 got %T %+v after the store failed, want the connection closed", pk, pk)
	}

	// A new connection is not taken on.
	n := dialRaw(t, tb.addr, packet.V5)
	n.send(&packet.Connect{ProtocolName: "MQTT", ProtocolLevel: packet.V5, CleanStart: true, ClientID: "n"})
	if pk := n.expectClosed(); pk != nil {
		if ca, ok := pk.(*packet.Connack); !ok || ca.ReasonCode < 0x80 {
			t.Fatalf("new connection got %T %+v after the store failed, want it refused", pk, pk)
		}
	}
}

// Issue 19, scenario 3: a refused CONNACK closes the connection
// [MQTT-3.2.2-7], and a refused QoS 1 PUBLISH gives back its Receive
// Maximum slot.
func TestRefusedConnackCloses(t *testing.T) {
	tb, toggle, _ := startFaulty(t, Options{}, syscall.EIO)
	toggle.On()
	c := dialRaw(t, tb.addr, packet.V5)
	cp := &packet.Connect{ProtocolName: "MQTT", ProtocolLevel: packet.V5, ClientID: "c"}
	cp.Props.SessionExpiry = 60
	cp.Props.Set(packet.PropSessionExpiry)
	c.send(cp)
	ca, ok := c.recv().(*packet.Connack)
	if !ok || ca.ReasonCode < 0x80 {
		t.Fatalf("got %+v, want CONNACK >= 0x80", ca)
	}
	if pk := c.expectClosed(); pk != nil {
		t.Fatalf("got %T %+v after a refused CONNACK, want the connection closed", pk, pk)
	}
}

func TestRefusedPublishGivesBackReceiveMaximum(t *testing.T) {
	tb, toggle, _ := startFaulty(t, Options{ReceiveMaximum: 2}, syscall.EIO)
	s := dialRaw(t, tb.addr, packet.V5)
	s.connect("s", false, nil)
	s.subscribe(1, "a", 1) // persistent: every publish to a is written
	p := dialRaw(t, tb.addr, packet.V5)
	p.connect("p", false, nil)
	toggle.On()
	for pid := uint16(1); pid <= 4; pid++ {
		p.publish(pid, "a", 1, "x")
		if a := p.expectAck(packet.PUBACK, pid); a.ReasonCode < 0x80 {
			t.Fatalf("PUBACK %d reason %v, want >= 0x80", pid, a.ReasonCode)
		}
	}
}

// Close does not wait behind the events queued for the core: with the core
// held and thousands of publishes queued, Close returns having handled few
// of them.
func TestCloseDoesNotWaitBehindQueuedEvents(t *testing.T) {
	tb := startBroker(t, Options{})
	p := dialRaw(t, tb.addr, packet.V311)
	p.connect("p", true, nil)
	hold := make(chan struct{})
	held := make(chan struct{})
	tb.b.post(event{kind: evFunc, fn: func() { close(held); <-hold }})
	<-held
	const n = 3000
	for i := 0; i < n; i++ {
		p.publish(0, "a", 0, "x")
	}
	waitFor(t, "publishes queued for the core", func() bool { return len(tb.b.events) >= n })
	closed := make(chan struct{})
	go func() { tb.b.Close(); close(closed) }()
	waitFor(t, "Close begun", func() bool {
		select {
		case <-tb.b.closing:
			return true
		default:
			return false
		}
	})
	close(hold)
	<-closed
	if got := tb.b.stats.received.Load(); got > n/10 {
		t.Fatalf("core handled %d of %d queued publishes before closing, want it to stop at once", got, n)
	}
}
