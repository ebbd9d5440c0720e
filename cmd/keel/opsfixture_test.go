package main

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/keelmq/keel/engine/client"
	"github.com/keelmq/keel/engine/enginetest"
	"github.com/keelmq/keel/engine/packet"
	"github.com/keelmq/keel/wal"
)

// rawConn is an MQTT connection driven packet by packet, for states no
// well-behaved client leaves: deliveries never acknowledged, a QoS 2
// flow stopped after PUBREC.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	rd *bufio.Reader
	v  byte
}

func dialRaw(t *testing.T, addr string, c *packet.Connect) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	r := &rawConn{t: t, nc: nc, rd: bufio.NewReader(nc), v: c.ProtocolLevel}
	c.ProtocolName = "MQTT"
	r.send(c)
	if ack, ok := r.read().(*packet.Connack); !ok || ack.ReasonCode != 0 {
		t.Fatalf("CONNECT %q: got %+v, want a CONNACK with 0", c.ClientID, ack)
	}
	return r
}

func (r *rawConn) send(p packet.Packet) {
	r.t.Helper()
	b, err := p.Append(nil, r.v)
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.nc.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawConn) read() packet.Packet {
	r.t.Helper()
	p, err := packet.Read(r.rd, r.v, 0)
	if err != nil {
		r.t.Fatal(err)
	}
	return p
}

// disconnect sends DISCONNECT and waits for keel to close the connection,
// by which time it has handled it.
func (r *rawConn) disconnect() {
	r.t.Helper()
	r.send(&packet.Disconnect{})
	if _, err := packet.Read(r.rd, r.v, 0); err == nil || !strings.Contains(err.Error(), "EOF") {
		r.t.Fatalf("after DISCONNECT: got %v, want EOF", err)
	}
}

func (r *rawConn) subscribe(s packet.Subscription, props packet.Properties) {
	r.t.Helper()
	r.send(&packet.Subscribe{PacketID: 1, Subs: []packet.Subscription{s}, Props: props})
	if ack, ok := r.read().(*packet.Suback); !ok || ack.Codes[0] != packet.ReasonCode(s.QoS) {
		r.t.Fatalf("SUBSCRIBE %s: got %+v", s.Filter, ack)
	}
}

// waitDisconnectStored waits until the session record of id carries its
// disconnect time.
func waitDisconnectStored(t *testing.T, st wal.Reader, id string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, err := st.Get(wal.SessionKey(id))
		if err == nil {
			if rec, err := wal.DecodeSession(v); err == nil && rec.DisconnectedAt != 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the disconnect of %s was not stored within 10 s (%v)", id, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// opsFixture is a data directory made by a real broker and real clients,
// left in a state every inspect field can be checked against:
//
//   - "sub311" (3.1.1, clean session 0, subscribed to q/# at QoS 1) went
//     away with DISCONNECT; the 5 QoS 2 messages Paho published on q/a
//     wait in its queue.
//   - "sub5" (5.0, expiry 3600 s, a will on will/sub5 with a 600 s delay,
//     subscribed to q/+ at QoS 2 with no local and subscription id 7) got
//     the 5 messages and acknowledged none but the first's PUBREC: packet
//     id 1 is released, 2..5 sent. It is connected when the broker stops.
//   - "pub5" (5.0, expiry 60 s) published QoS 2 id 9 on other/x, got
//     PUBREC and disconnected without PUBREL: inbound id 9 stays.
//   - retained: r/one ("hello", QoS 1, by Paho) and r/two (2,000 bytes
//     that compress, QoS 1, message expiry 3600 s, by keel's own client).
type opsFixture struct {
	dir string
	b   *enginetest.Broker // stopped, unless from startOpsFixture
}

const fixtureMessages = 5

// makeOpsFixture leaves the fixture's data directory with the broker
// stopped.
func makeOpsFixture(t *testing.T) *opsFixture {
	t.Helper()
	f := startOpsFixture(t)
	f.b.Stop()
	return f
}

// startOpsFixture makes the fixture and leaves its broker running.
func startOpsFixture(t *testing.T) *opsFixture {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	b := enginetest.Start(t, enginetest.Options{FS: vfs.Default, Dir: dir})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	sub311 := dialRaw(t, b.Addr, &packet.Connect{ProtocolLevel: packet.V311, ClientID: "sub311", KeepAlive: 60})
	sub311.subscribe(packet.Subscription{Filter: "q/#", QoS: 1}, packet.Properties{})
	sub311.disconnect()

	c5 := &packet.Connect{ProtocolLevel: packet.V5, ClientID: "sub5", KeepAlive: 60,
		WillFlag: true, WillQoS: 1, WillTopic: "will/sub5", WillPayload: []byte("gone")}
	c5.Props.SessionExpiry = 3600
	c5.Props.Set(packet.PropSessionExpiry)
	c5.WillProps.WillDelay = 600
	c5.WillProps.Set(packet.PropWillDelay)
	sub5 := dialRaw(t, b.Addr, c5)
	var sp packet.Properties
	sp.SubscriptionIDs = []uint32{7}
	sp.Set(packet.PropSubscriptionID)
	sub5.subscribe(packet.Subscription{Filter: "q/+", QoS: 2, NoLocal: true}, sp)

	o := mqtt.NewClientOptions().AddBroker("tcp://" + b.Addr).SetClientID("paho-pub").
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false)
	paho := mqtt.NewClient(o)
	if tok := paho.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho connect: %v", tok.Error())
	}
	for i := range fixtureMessages {
		if tok := paho.Publish("q/a", 2, false, []byte{'m', byte('0' + i)}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("paho publish: %v", tok.Error())
		}
	}
	if tok := paho.Publish("r/one", 1, true, "hello"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho publish: %v", tok.Error())
	}
	paho.Disconnect(250)

	own, err := client.Connect(ctx, client.Options{Addr: b.Addr, ClientID: "own", CleanStart: true})
	if err != nil {
		t.Fatal(err)
	}
	p := &packet.Publish{Topic: "r/two", QoS: 1, Retain: true, Payload: bytes.Repeat([]byte("ab"), 1000)}
	p.Props.MessageExpiry = 3600
	p.Props.Set(packet.PropMessageExpiry)
	if code, err := own.PublishWait(ctx, p); err != nil || code != 0 {
		t.Fatalf("publish r/two: %v, %v", code, err)
	}
	own.Disconnect(ctx, &packet.Disconnect{})

	// sub5 receives the 5 messages; it answers the first with PUBREC and
	// waits for the PUBREL, which comes after the release is stored.
	for i := range fixtureMessages {
		pub, ok := sub5.read().(*packet.Publish)
		if !ok || pub.PacketID != uint16(i+1) || pub.QoS != 2 {
			t.Fatalf("sub5 delivery %d: got %+v", i, pub)
		}
	}
	sub5.send(&packet.Ack{Kind: packet.PUBREC, PacketID: 1})
	if rel, ok := sub5.read().(*packet.Ack); !ok || rel.Kind != packet.PUBREL || rel.PacketID != 1 {
		t.Fatalf("sub5: got %+v, want PUBREL 1", rel)
	}

	cp := &packet.Connect{ProtocolLevel: packet.V5, ClientID: "pub5", KeepAlive: 60}
	cp.Props.SessionExpiry = 60
	cp.Props.Set(packet.PropSessionExpiry)
	pub5 := dialRaw(t, b.Addr, cp)
	pub5.send(&packet.Publish{Topic: "other/x", QoS: 2, PacketID: 9, Payload: []byte("x")})
	if rec, ok := pub5.read().(*packet.Ack); !ok || rec.Kind != packet.PUBREC || rec.PacketID != 9 {
		t.Fatalf("pub5: got %+v, want PUBREC 9", rec)
	}
	pub5.disconnect()
	// Closing the connection comes before the disconnect is stored: wait
	// for the store to say so, or a stop could come between.
	for _, id := range []string{"sub311", "pub5"} {
		waitDisconnectStored(t, b.Store, id)
	}
	return &opsFixture{dir: dir, b: b}
}
