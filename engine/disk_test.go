package engine

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/keelmq/keel/engine/packet"
)

// knobDisk is a DiskMonitor whose low state the test sets: the engine's
// side of the mark, with real clients and a real Pebble. The statfs
// watcher that sets it in keel is cmd/keel's, tested there on a real
// small filesystem (cmd/keel/disk_test.go).
type knobDisk struct{ low atomic.Bool }

func (d *knobDisk) Usage() DiskUsage {
	u := DiskUsage{Free: 100 << 20, Total: 1 << 30, MinFree: 50 << 20}
	if d.low.Load() {
		u.Free, u.Low = 10<<20, true
	}
	return u
}

// Below the mark: new QoS 1/2 publishes are refused (5.0 0x97 and
// DISCONNECT 0x97; 3.1.1 disconnected without an ack), new persistent
// sessions too (CONNACK 0x97 / return code 3); QoS 0 still reaches online
// subscribers, a stored session resumes and drains; above it again,
// everything is accepted.
func TestDiskLowRefusesAndRecovers(t *testing.T) {
	disk := &knobDisk{}
	tb := startBroker(t, Options{Disk: disk, QueueQoS0: true})
	offline(t, tb, "queue", "d/#", 1)
	watch := dialPaho5(t, tb.addr, &paho.Connect{ClientID: "watch", CleanStart: true}, nil)
	watch.sub(t, paho.SubscribeOptions{Topic: "d/#", QoS: 1})
	pub := dialPaho5(t, tb.addr, &paho.Connect{ClientID: "pub", CleanStart: true}, nil)
	for _, p := range []string{"0", "1"} {
		if rc := pub5(t, pub, "d/a", 1, false, p); rc != 0 {
			t.Fatalf("publish %s above the mark: reason %#x, want 0", p, rc)
		}
		watch.in.expect(t, msg{topic: "d/a", payload: p, qos: 1})
	}

	p3 := dialPaho3(t, tb.addr, "p3", false, nil) // its session is stored before the disk goes low

	disk.low.Store(true)
	if !tb.b.DiskLow() || !tb.b.Stats().DiskLow {
		t.Fatal("DiskLow() = false with the monitor low, want true")
	}
	refused5(t, tb, "d/a", 1, false, "x1")
	refused5(t, tb, "d/a", 2, false, "x2")
	refused5(t, tb, "d/r", 1, true, "x3")

	// 3.1.1: disconnected without an ack; Paho keeps the message in its
	// session and resends it once it reconnects.
	tok := p3.Publish("d/a", 1, false, "paho3")
	waitFor(t, "the 3.1.1 publisher to be disconnected", func() bool { return !p3.IsConnected() })
	if tok.WaitTimeout(10 * time.Millisecond) {
		t.Fatalf("refused 3.1.1 publish: the token completed (%v), want it pending", tok.Error())
	}
	wantCount(t, tb, "refused", "disk_low", 4)

	// QoS 0 reaches the online subscriber; the offline session, which
	// would queue it on disk, does not get it (counted).
	pub0 := dialPaho5(t, tb.addr, &paho.Connect{ClientID: "pub0", CleanStart: true}, nil)
	pub0.publish(t, "d/a", 0, false, "zero")
	watch.in.expect(t, msg{topic: "d/a", payload: "zero", qos: 0})
	watch.in.expectNone(t, 100*time.Millisecond) // nothing refused reached anyone
	wantCount(t, tb, "dropped", "disk_low", 1)

	// A new persistent session is refused; a clean one is not.
	raw := dialRaw(t, tb.addr, packet.V5)
	if ca := raw.connect("newsess", false, nil); ca.ReasonCode != packet.CodeQuotaExceeded {
		t.Fatalf("new 5.0 persistent session below the mark: CONNACK %#x, want 0x97", ca.ReasonCode)
	}
	raw3 := dialRaw(t, tb.addr, packet.V311)
	if ca := raw3.connect("newsess3", false, nil); ca.ReasonCode != packet.RetServerUnavailable {
		t.Fatalf("new 3.1.1 persistent session below the mark: return code %d, want 3", ca.ReasonCode)
	}
	wantCount(t, tb, "refused", "disk_low", 6)
	o3 := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + tb.addr).SetClientID("paho-new").
		SetCleanSession(false).SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(pahoWait))
	if ctok := o3.Connect(); !ctok.WaitTimeout(pahoWait) || ctok.Error() == nil {
		t.Fatalf("Paho 3.1.1 new persistent session below the mark: connected (%v), want refused", ctok.Error())
	}
	wantCount(t, tb, "refused", "disk_low", 7)
	dialPaho5(t, tb.addr, &paho.Connect{ClientID: "clean", CleanStart: true}, nil)

	// The stored session resumes and drains what was accepted: deliveries
	// and acks go on below the mark.
	wantPayloads(t, "drained below the mark", drain(t, tb, "queue"), "0", "1")

	disk.low.Store(false)
	pub = dialPaho5(t, tb.addr, &paho.Connect{ClientID: "pub", CleanStart: true}, nil)
	if rc := pub5(t, pub, "d/a", 2, false, "after"); rc != 0 {
		t.Fatalf("publish above the mark again: reason %#x, want 0", rc)
	}
	watch.in.expect(t, msg{topic: "d/a", payload: "after", qos: 1})
	wait3(t, p3.Connect(), "3.1.1 reconnect above the mark")
	wait3(t, tok, "the resent 3.1.1 publish")
	watch.in.expect(t, msg{topic: "d/a", payload: "paho3", qos: 1})
	if ca := dialRaw(t, tb.addr, packet.V5).connect("newsess", false, nil); ca.ReasonCode != 0 {
		t.Fatalf("new persistent session above the mark: CONNACK %#x, want 0", ca.ReasonCode)
	}
	wantPayloads(t, "drained above the mark", drain(t, tb, "queue"), "after", "paho3")
	wantCount(t, tb, "refused", "disk_low", 7) // none since
}

// A QoS 2 resend of an id received before the disk went low writes
// nothing: it gets its PUBREC, and PUBREL/PUBCOMP complete the flow.
func TestDiskLowKeepsQoS2FlowsGoing(t *testing.T) {
	disk := &knobDisk{}
	tb := startBroker(t, Options{Disk: disk})
	c := dialRaw(t, tb.addr, packet.V5)
	c.connect("q2", false, nil)
	c.publish(7, "t", 2, "once")
	c.expectAck(packet.PUBREC, 7)
	disk.low.Store(true)
	c.send(&packet.Publish{QoS: 2, PacketID: 7, Dup: true, Topic: "t", Payload: []byte("once")})
	if a := c.expectAck(packet.PUBREC, 7); a.ReasonCode != 0 {
		t.Fatalf("resend below the mark: PUBREC %#x, want 0", a.ReasonCode)
	}
	c.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 7})
	if a := c.expectAck(packet.PUBCOMP, 7); a.ReasonCode != 0 {
		t.Fatalf("PUBREL below the mark: PUBCOMP %#x, want 0", a.ReasonCode)
	}
	wantCount(t, tb, "refused", "disk_low", 0)
	// Subscribe and unsubscribe work too (a subscription of a stored
	// session is a small write; refusing it would not free anything).
	c.subscribe(1, "x/#", 1)
	c.send(&packet.Unsubscribe{PacketID: 2, Filters: []string{"x/#"}})
	if ua, ok := c.recv().(*packet.Unsuback); !ok || ua.PacketID != 2 || len(ua.Codes) != 1 || ua.Codes[0] != 0 {
		t.Fatalf("got %+v, want UNSUBACK 2 with success", ua)
	}
}
