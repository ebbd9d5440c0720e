package engine

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/keelmq/keel/engine/clock"
	"github.com/keelmq/keel/engine/packet"
	"github.com/keelmq/keel/sessions"
	"github.com/keelmq/keel/wal"
)

// Protocol tests through our own codec: the flows and fields that client
// libraries hide. Spec statements are cited as [MQTT-x.y.z-n] (5.0 numbering
// unless the test is about 3.1.1).

// ---- helpers shared with badinput_test.go ----

// quiet is how long a test listens to assert that nothing arrives. Where a
// sentinel message can prove the same, tests use the sentinel instead.
const quiet = 150 * time.Millisecond

func sessionExpiry(sec uint32) func(*packet.Connect) {
	return func(cp *packet.Connect) {
		cp.Props.SessionExpiry = sec
		cp.Props.Set(packet.PropSessionExpiry)
	}
}

// expectEOF asserts the server closed the connection and sent nothing
// more.
func (rc *rawClient) expectEOF() {
	rc.t.Helper()
	p, err := rc.tryRecv(5 * time.Second)
	if err == nil {
		rc.t.Fatalf("got %T %+v, want the connection closed", p, p)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		rc.t.Fatalf("connection still open, want closed")
	}
}

// expectDisconnect asserts the server sends DISCONNECT with reason want
// (after any acks of packets that came before) and closes the connection
// [MQTT-4.13.1-1].
func (rc *rawClient) expectDisconnect(want packet.ReasonCode) *packet.Disconnect {
	rc.t.Helper()
	d := rc.expectDisconnectCode()
	if d.ReasonCode != want {
		rc.t.Fatalf("got DISCONNECT %#x (%v), want %#x (%v)", byte(d.ReasonCode), d.ReasonCode, byte(want), want)
	}
	return d
}

// expectDisconnectCode is expectDisconnect for any reason code; it returns
// the DISCONNECT.
func (rc *rawClient) expectDisconnectCode() *packet.Disconnect {
	rc.t.Helper()
	for {
		p, err := rc.tryRecv(5 * time.Second)
		if err != nil {
			rc.t.Fatalf("got %v, want DISCONNECT", err)
		}
		if _, ok := p.(*packet.Ack); ok {
			continue
		}
		d, ok := p.(*packet.Disconnect)
		if !ok {
			rc.t.Fatalf("got %T %+v, want DISCONNECT", p, p)
		}
		rc.expectEOF()
		return d
	}
}

// disconnect sends DISCONNECT (reason 0) and waits until the broker has
// taken the client off, so that what follows is ordered after it.
func (rc *rawClient) disconnect(tb *testBroker) {
	rc.t.Helper()
	gone(rc.t, tb, func() { rc.send(&packet.Disconnect{}) })
}

// ping asserts the connection is alive: PINGREQ gets PINGRESP.
func (rc *rawClient) ping() {
	rc.t.Helper()
	rc.send(&packet.Pingreq{})
	if p := rc.recv(); p.Type() != packet.PINGRESP {
		rc.t.Fatalf("got %T %+v, want PINGRESP", p, p)
	}
}

// subscribeOpts sends one SUBSCRIBE and returns its SUBACK.
func (rc *rawClient) subscribeOpts(pid uint16, subID uint32, subs ...packet.Subscription) *packet.Suback {
	rc.t.Helper()
	s := &packet.Subscribe{PacketID: pid, Subs: subs}
	if subID != 0 {
		s.Props.SubscriptionIDs = []uint32{subID}
	}
	rc.send(s)
	p := rc.recv()
	sa, ok := p.(*packet.Suback)
	if !ok || sa.PacketID != pid {
		rc.t.Fatalf("got %T %+v, want SUBACK %d", p, p, pid)
	}
	return sa
}

// expectPub reads the next PUBLISH, acknowledges it, and checks its topic
// and payload.
func (rc *rawClient) expectPub(topic, payload string) *packet.Publish {
	rc.t.Helper()
	p := rc.expectPublish()
	if p.Topic != topic || string(p.Payload) != payload {
		rc.t.Fatalf("got PUBLISH %s %q, want %s %q", p.Topic, p.Payload, topic, payload)
	}
	rc.ackPub(p)
	return p
}

// ackPub completes an inbound QoS 1 or 2 delivery.
func (rc *rawClient) ackPub(p *packet.Publish) {
	rc.t.Helper()
	switch p.QoS {
	case 1:
		rc.send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
	case 2:
		rc.send(&packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID})
		rc.expectAck(packet.PUBREL, p.PacketID)
		rc.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: p.PacketID})
	}
}

// pubAcked publishes at QoS 1 and waits for the PUBACK.
func (rc *rawClient) pubAcked(pid uint16, topic, payload string) {
	rc.t.Helper()
	rc.publish(pid, topic, 1, payload)
	rc.expectAck(packet.PUBACK, pid)
}

// pubSelf publishes at QoS 1 on a topic rc is subscribed to, and reads
// the PUBACK and the delivery (in either order).
func (rc *rawClient) pubSelf(pid uint16, topic, payload string) {
	rc.t.Helper()
	rc.publish(pid, topic, 1, payload)
	var gotAck, gotPub bool
	for !gotAck || !gotPub {
		switch p := rc.recv().(type) {
		case *packet.Ack:
			if p.Kind != packet.PUBACK || p.PacketID != pid {
				rc.t.Fatalf("got %s %d, want PUBACK %d", p.Kind.String(), p.PacketID, pid)
			}
			gotAck = true
		case *packet.Publish:
			if p.Topic != topic || string(p.Payload) != payload {
				rc.t.Fatalf("got PUBLISH %s %q, want %s %q", p.Topic, p.Payload, topic, payload)
			}
			rc.ackPub(p)
			gotPub = true
		default:
			rc.t.Fatalf("got %T %+v, want PUBACK and PUBLISH", p, p)
		}
	}
}

// bystander is a client connected before a test misbehaves and checked
// after: the misbehaviour must cost only the misbehaving connection.
type bystander struct {
	t   *testing.T
	tb  *testBroker
	rc  *rawClient
	pid uint16
}

func newBystander(t *testing.T, tb *testBroker) *bystander {
	t.Helper()
	rc := dialRaw(t, tb.addr, packet.V5)
	rc.connect("bystander", true, nil)
	rc.subscribe(1, "bystander/#", 1)
	return &bystander{t: t, tb: tb, rc: rc, pid: 1}
}

// check asserts a publish/subscribe round trip on the bystander's
// connection, and that a new client can connect and do the same.
func (b *bystander) check() {
	b.t.Helper()
	b.pid++
	b.rc.pubSelf(b.pid, "bystander/x", fmt.Sprint("ping ", b.pid))
	fresh := dialRaw(b.t, b.tb.addr, packet.V311)
	if ca := fresh.connect("", true, nil); ca.ReasonCode != 0 {
		b.t.Fatalf("new client after the bad one: CONNACK %d, want 0", ca.ReasonCode)
	}
	fresh.subscribe(1, "fresh/x", 1)
	fresh.pubSelf(2, "fresh/x", "hello")
	fresh.send(&packet.Disconnect{})
}

// ---- CONNECT and session lifecycle ----

func TestEmptyClientID311(t *testing.T) {
	tb := startBroker(t, Options{})
	// [MQTT-3.1.3-6] clean session 1 with a zero-byte id: the server
	// assigns one and accepts.
	rc := dialRaw(t, tb.addr, packet.V311)
	if ca := rc.connect("", true, nil); ca.ReasonCode != packet.RetAccepted || ca.SessionPresent {
		t.Fatalf("got CONNACK code %d present %v, want 0 false", ca.ReasonCode, ca.SessionPresent)
	}
	rc.subscribe(1, "anon/x", 1)
	rc.pubSelf(2, "anon/x", "works")

	// [MQTT-3.1.3-8] clean session 0 with a zero-byte id: return code 2
	// (identifier rejected), then close [MQTT-3.2.2-5].
	rc = dialRaw(t, tb.addr, packet.V311)
	ca := rc.connect("", false, nil)
	if ca.ReasonCode != packet.RetIdentifierRejected || ca.SessionPresent {
		t.Fatalf("got CONNACK code %d present %v, want 2 false", ca.ReasonCode, ca.SessionPresent)
	}
	rc.expectEOF()
}

func TestAssignedClientID5(t *testing.T) {
	tb := startBroker(t, Options{})
	seen := map[string]bool{}
	for _, clean := range []bool{true, false} {
		rc := dialRaw(t, tb.addr, packet.V5)
		ca := rc.connect("", clean, nil)
		if ca.ReasonCode != packet.CodeSuccess {
			t.Fatalf("clean=%v: got CONNACK %v, want Success", clean, ca.ReasonCode)
		}
		// [MQTT-3.2.2-16] the assigned id is returned in CONNACK.
		id := ca.Props.AssignedClientID
		if !ca.Props.Has(packet.PropAssignedClientID) || id == "" {
			t.Fatalf("clean=%v: got Assigned Client Identifier %q (present %v), want a non-empty one",
				clean, id, ca.Props.Has(packet.PropAssignedClientID))
		}
		if seen[id] {
			t.Fatalf("assigned id %q twice, want unique ids [MQTT-3.1.3-6]", id)
		}
		seen[id] = true
		rc.ping()
	}
	// An id the client chose is not echoed back.
	rc := dialRaw(t, tb.addr, packet.V5)
	if ca := rc.connect("mine", true, nil); ca.Props.Has(packet.PropAssignedClientID) {
		t.Fatalf("got Assigned Client Identifier %q for a client-chosen id, want none", ca.Props.AssignedClientID)
	}
}

func TestMQTT31Connect(t *testing.T) {
	tb := startBroker(t, Options{})
	// Protocol name "MQIsdp", level 3.
	old := dialRaw(t, tb.addr, packet.V31)
	if ca := old.connect("old31", true, nil); ca.ReasonCode != packet.RetAccepted {
		t.Fatalf("got CONNACK code %d, want 0", ca.ReasonCode)
	}
	if got := old.subscribe(1, "v31/#", 2).Codes[0]; got != 2 {
		t.Fatalf("granted %d, want 2", got)
	}
	modern := dialRaw(t, tb.addr, packet.V5)
	modern.connect("new5", true, nil)
	modern.subscribe(1, "v31/#", 1)
	old.pubSelf(2, "v31/a", "from 3.1")
	modern.expectPub("v31/a", "from 3.1")

	// 3.1 requires a client id of 1 to 23 characters: an empty one is
	// refused with return code 2.
	bad := dialRaw(t, tb.addr, packet.V31)
	if ca := bad.connect("", true, nil); ca.ReasonCode != packet.RetIdentifierRejected {
		t.Fatalf("3.1 empty id: got CONNACK code %d, want 2", ca.ReasonCode)
	}
	bad.expectEOF()
}

func TestSessionTakeover(t *testing.T) {
	for _, v := range []byte{packet.V311, packet.V5} {
		t.Run(fmt.Sprintf("v=%d", v), func(t *testing.T) {
			tb := startBroker(t, Options{})
			first := dialRaw(t, tb.addr, v)
			first.connect("twin", false, nil)
			first.subscribe(1, "to/x", 1)

			second := dialRaw(t, tb.addr, v)
			// [MQTT-3.1.4-3] the server closes the existing connection;
			// the session carries over.
			if ca := second.connect("twin", false, nil); !ca.SessionPresent {
				t.Fatalf("takeover: session present = false, want true")
			}
			if v == packet.V5 {
				// 5.0: the first gets DISCONNECT 0x8E (Session taken over).
				first.expectDisconnect(packet.CodeSessionTakenOver)
			} else {
				first.expectEOF()
			}
			pub := dialRaw(t, tb.addr, v)
			pub.connect("pub", true, nil)
			pub.pubAcked(1, "to/x", "after")
			second.expectPub("to/x", "after")
			second.ping()
		})
	}
}

func TestKeepAlive(t *testing.T) {
	// [MQTT-3.1.2-22] (3.1.1: [MQTT-3.1.2-24]) the server closes
	// a connection silent for one and a half times the keep alive; 5.0
	// says why with DISCONNECT 0x8D [MQTT-4.13.1-1].
	silent := func(t *testing.T, rc *rawClient) {
		t.Helper()
		start := time.Now()
		if rc.version == packet.V5 {
			rc.expectDisconnect(packet.CodeKeepAliveTimeout)
		} else {
			rc.expectEOF()
		}
		if d := time.Since(start); d < 1200*time.Millisecond || d > 3*time.Second {
			t.Fatalf("closed after %v of silence, want about 1.5 s", d.Round(time.Millisecond))
		}
	}
	for _, v := range []byte{packet.V311, packet.V5} {
		t.Run(fmt.Sprintf("v=%d", v), func(t *testing.T) {
			t.Parallel()
			tb := startBroker(t, Options{})
			by := newBystander(t, tb)
			rc := dialRaw(t, tb.addr, v)
			rc.connect("ka", true, func(cp *packet.Connect) { cp.KeepAlive = 1 })
			// Traffic within the keep alive keeps the connection: two
			// pings 0.8 s apart carry it past 1.5 s.
			for i := 0; i < 2; i++ {
				time.Sleep(800 * time.Millisecond)
				rc.ping()
			}
			silent(t, rc)
			by.check()
		})
	}
	t.Run("server keep alive", func(t *testing.T) {
		t.Parallel()
		tb := startBroker(t, Options{MaxKeepAlive: 1})
		rc := dialRaw(t, tb.addr, packet.V5)
		// [MQTT-3.2.2-21] a lower Server Keep Alive replaces the
		// client's, and the server enforces it.
		ca := rc.connect("ska", true, func(cp *packet.Connect) { cp.KeepAlive = 60 })
		if !ca.Props.Has(packet.PropServerKeepAlive) || ca.Props.ServerKeepAlive != 1 {
			t.Fatalf("got Server Keep Alive %d (present %v), want 1", ca.Props.ServerKeepAlive, ca.Props.Has(packet.PropServerKeepAlive))
		}
		silent(t, rc)
	})
}

func TestServerKeepAliveReturnedOnlyWhenLower(t *testing.T) {
	tb := startBroker(t, Options{MaxKeepAlive: 10})
	for _, c := range []struct {
		ka      uint16
		want    uint16
		present bool
	}{
		{ka: 60, want: 10, present: true},
		{ka: 0, want: 10, present: true}, // 0 (no keep alive) is above any limit
		{ka: 10, present: false},
		{ka: 5, present: false},
	} {
		rc := dialRaw(t, tb.addr, packet.V5)
		ca := rc.connect(fmt.Sprint("ka", c.ka), true, func(cp *packet.Connect) { cp.KeepAlive = c.ka })
		has := ca.Props.Has(packet.PropServerKeepAlive)
		if has != c.present || (has && ca.Props.ServerKeepAlive != c.want) {
			t.Fatalf("keep alive %d: got Server Keep Alive %d (present %v), want %d (present %v)",
				c.ka, ca.Props.ServerKeepAlive, has, c.want, c.present)
		}
	}
}

func TestSessionPresent(t *testing.T) {
	t.Run("v=4", func(t *testing.T) {
		tb := startBroker(t, Options{})
		steps := []struct {
			clean bool
			want  bool
		}{
			{clean: false, want: false}, // nothing there yet [MQTT-3.2.2-3]
			{clean: false, want: true},  // resumed [MQTT-3.2.2-2]
			{clean: true, want: false},  // clean session discards it [MQTT-3.2.2-1]
			{clean: false, want: false}, // ... so nothing is left to resume
			{clean: false, want: true},
		}
		for i, s := range steps {
			rc := dialRaw(t, tb.addr, packet.V311)
			if got := rc.connect("sp", s.clean, nil).SessionPresent; got != s.want {
				t.Fatalf("step %d (clean=%v): session present = %v, want %v", i, s.clean, got, s.want)
			}
			rc.disconnect(tb)
		}
	})
	t.Run("v=5", func(t *testing.T) {
		tb := startBroker(t, Options{})
		steps := []struct {
			clean  bool
			expiry uint32
			want   bool
		}{
			{clean: false, expiry: 0, want: false},
			{clean: false, expiry: 0, want: false}, // expiry 0: the session ended with the connection
			{clean: false, expiry: 60, want: false},
			{clean: false, expiry: 60, want: true},
			{clean: true, expiry: 60, want: false}, // [MQTT-3.2.2-2] clean start: 0
			{clean: false, expiry: 0, want: true},  // the clean-start session had expiry 60
			{clean: false, expiry: 0, want: false}, // ... and this one ended at its disconnect
		}
		for i, s := range steps {
			rc := dialRaw(t, tb.addr, packet.V5)
			got := rc.connect("sp", s.clean, sessionExpiry(s.expiry)).SessionPresent
			if got != s.want {
				t.Fatalf("step %d (clean=%v expiry=%d): session present = %v, want %v", i, s.clean, s.expiry, got, s.want)
			}
			rc.disconnect(tb)
		}
	})
}

// ---- subscription options (5.0) ----

func TestNoLocal(t *testing.T) {
	tb := startBroker(t, Options{})
	a := dialRaw(t, tb.addr, packet.V5)
	a.connect("a", true, nil)
	a.subscribeOpts(1, 0,
		packet.Subscription{Filter: "nl/local", QoS: 1, NoLocal: true},
		packet.Subscription{Filter: "nl/all", QoS: 1})
	other := dialRaw(t, tb.addr, packet.V5)
	other.connect("other", true, nil)
	other.subscribe(1, "nl/#", 1)

	// [MQTT-3.8.3-3] No Local: not sent back to the connection that
	// published it; others still get it.
	a.pubAcked(10, "nl/local", "mine")
	a.pubSelf(11, "nl/all", "sentinel")
	other.expectPub("nl/local", "mine")
	other.expectPub("nl/all", "sentinel")

	// Another client's message on the No Local subscription arrives.
	other.pubSelf(12, "nl/local", "theirs")
	a.expectPub("nl/local", "theirs")
}

func TestRetainAsPublished(t *testing.T) {
	tb := startBroker(t, Options{})
	sub := dialRaw(t, tb.addr, packet.V5)
	sub.connect("sub", true, nil)
	sub.subscribeOpts(1, 0,
		packet.Subscription{Filter: "rap/keep", QoS: 1, RetainAsPublished: true},
		packet.Subscription{Filter: "rap/drop", QoS: 1})
	pub := dialRaw(t, tb.addr, packet.V5)
	pub.connect("pub", true, nil)
	for i, topic := range []string{"rap/keep", "rap/drop"} {
		pub.send(&packet.Publish{QoS: 1, PacketID: uint16(i + 1), Retain: true, Topic: topic, Payload: []byte("r")})
		pub.expectAck(packet.PUBACK, uint16(i+1))
	}
	// [MQTT-3.3.1-13] Retain As Published 1: RETAIN as published;
	// [MQTT-3.3.1-12] 0: RETAIN 0 on a live delivery.
	if p := sub.expectPub("rap/keep", "r"); !p.Retain {
		t.Fatalf("rap/keep (RAP 1): got retain false, want true")
	}
	if p := sub.expectPub("rap/drop", "r"); p.Retain {
		t.Fatalf("rap/drop (RAP 0): got retain true, want false")
	}
	pub.pubAcked(3, "rap/keep", "plain")
	if p := sub.expectPub("rap/keep", "plain"); p.Retain {
		t.Fatalf("non-retained publish on a RAP subscription: got retain true, want false")
	}
}

func TestRetainHandling(t *testing.T) {
	tb := startBroker(t, Options{})
	pub := dialRaw(t, tb.addr, packet.V5)
	pub.connect("pub", true, nil)
	pub.send(&packet.Publish{QoS: 1, PacketID: 1, Retain: true, Topic: "rh/t", Payload: []byte("kept")})
	pub.expectAck(packet.PUBACK, 1)

	var pid uint16 = 10
	// subscribe subscribes sub with retain handling rh and reports whether
	// the retained message came: a live sentinel published after the
	// SUBACK arrives after any retained message.
	subscribe := func(sub *rawClient, rh byte) bool {
		t.Helper()
		sub.subscribeOpts(1, 0, packet.Subscription{Filter: "rh/t", QoS: 1, RetainHandling: rh})
		pid++
		pub.pubAcked(pid, "rh/t", "sentinel")
		got := false
		for {
			p := sub.expectPublish()
			sub.ackPub(p)
			if string(p.Payload) == "sentinel" {
				return got
			}
			if string(p.Payload) != "kept" || !p.Retain {
				t.Fatalf("got %q retain=%v, want the retained \"kept\" with retain=true", p.Payload, p.Retain)
			}
			if got {
				t.Fatalf("retained message sent twice for one SUBSCRIBE")
			}
			got = true
		}
	}
	for _, c := range []struct {
		rh          byte
		first, next bool // retained sent on the new subscription, on the repeat
	}{
		{rh: 0, first: true, next: true},   // [MQTT-3.3.1-9]
		{rh: 1, first: true, next: false},  // [MQTT-3.3.1-10] only if new
		{rh: 2, first: false, next: false}, // [MQTT-3.3.1-11] never
	} {
		sub := dialRaw(t, tb.addr, packet.V5)
		sub.connect(fmt.Sprint("rh", c.rh), true, nil)
		if got := subscribe(sub, c.rh); got != c.first {
			t.Fatalf("retain handling %d, new subscription: retained sent = %v, want %v", c.rh, got, c.first)
		}
		if got := subscribe(sub, c.rh); got != c.next {
			t.Fatalf("retain handling %d, existing subscription: retained sent = %v, want %v", c.rh, got, c.next)
		}
	}
}

func TestSubscriptionIdentifiers(t *testing.T) {
	tb := startBroker(t, Options{})
	pub := dialRaw(t, tb.addr, packet.V5)
	pub.connect("pub", true, nil)
	pub.send(&packet.Publish{QoS: 1, PacketID: 1, Retain: true, Topic: "si/r", Payload: []byte("ret")})
	pub.expectAck(packet.PUBACK, 1)

	sub := dialRaw(t, tb.addr, packet.V5)
	sub.connect("sub", true, nil)
	sub.subscribeOpts(1, 7, packet.Subscription{Filter: "si/+", QoS: 1})
	// The retained message sent for this subscription carries its id.
	if p := sub.expectPub("si/r", "ret"); !slices.Equal(p.Props.SubscriptionIDs, []uint32{7}) {
		t.Fatalf("retained on subscribe: got subscription ids %v, want [7]", p.Props.SubscriptionIDs)
	}
	sub.subscribeOpts(2, 300000, packet.Subscription{Filter: "si/#", QoS: 1, RetainHandling: 2})
	sub.subscribeOpts(3, 0, packet.Subscription{Filter: "si/x", QoS: 0, RetainHandling: 2})

	pub.pubAcked(2, "si/x", "three")
	// [MQTT-3.3.4-3] [MQTT-3.3.4-4] one copy carrying every matching
	// subscription's identifier, in any order; the one without an id adds
	// none.
	p := sub.expectPub("si/x", "three")
	ids := slices.Sorted(slices.Values(p.Props.SubscriptionIDs))
	if !slices.Equal(ids, []uint32{7, 300000}) {
		t.Fatalf("got subscription ids %v, want [7 300000]", p.Props.SubscriptionIDs)
	}
	pub.pubAcked(3, "si/y/z", "one")
	if p := sub.expectPub("si/y/z", "one"); !slices.Equal(p.Props.SubscriptionIDs, []uint32{300000}) {
		t.Fatalf("got subscription ids %v, want [300000]", p.Props.SubscriptionIDs)
	}
	// A later SUBSCRIBE of the same filter without an id replaces the
	// subscription, id included.
	sub.subscribeOpts(4, 0, packet.Subscription{Filter: "si/+", QoS: 1, RetainHandling: 2})
	pub.pubAcked(4, "si/q", "none")
	if p := sub.expectPub("si/q", "none"); len(p.Props.SubscriptionIDs) != 1 || p.Props.SubscriptionIDs[0] != 300000 {
		t.Fatalf("got subscription ids %v, want [300000]", p.Props.SubscriptionIDs)
	}
}

// ---- flow control and sizes (5.0) ----

func TestReceiveMaximumExceeded(t *testing.T) {
	t.Run("qos1 pipelined", func(t *testing.T) {
		tb := startBroker(t, Options{ReceiveMaximum: 2})
		by := newBystander(t, tb)
		rc := dialRaw(t, tb.addr, packet.V5)
		ca := rc.connect("greedy", true, nil)
		if ca.Props.ReceiveMaximum != 2 {
			t.Fatalf("got Receive Maximum %d in CONNACK, want 2", ca.Props.ReceiveMaximum)
		}
		// Ten QoS 1 publishes in one write: the reader sees the third
		// before any PUBACK can have gone out (each waits for a sync).
		var buf []byte
		for i := 1; i <= 10; i++ {
			buf, _ = (&packet.Publish{QoS: 1, PacketID: uint16(i), Topic: "rm/x", Payload: []byte("x")}).Append(buf, packet.V5)
		}
		rc.sendRaw(buf)
		// [MQTT-3.3.4-7] more than our Receive Maximum unacknowledged: 0x93.
		rc.expectDisconnect(packet.CodeReceiveMaximumExceeded)
		by.check()
	})
	t.Run("qos2 until pubrel", func(t *testing.T) {
		tb := startBroker(t, Options{ReceiveMaximum: 2})
		rc := dialRaw(t, tb.addr, packet.V5)
		rc.connect("q2", true, nil)
		rc.publish(1, "rm/x", 2, "1")
		rc.expectAck(packet.PUBREC, 1)
		rc.publish(2, "rm/x", 2, "2")
		rc.expectAck(packet.PUBREC, 2)
		// A QoS 2 publish counts until its PUBCOMP: release one, and one
		// more fits; a fourth open one does not.
		rc.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 1})
		rc.expectAck(packet.PUBCOMP, 1)
		rc.publish(3, "rm/x", 2, "3")
		rc.expectAck(packet.PUBREC, 3)
		rc.publish(4, "rm/x", 2, "4")
		rc.expectDisconnect(packet.CodeReceiveMaximumExceeded)
	})
}

// TestReceiveMaximumWithinLimit: a client that waits for each PUBACK
// before the next publish never exceeds Receive Maximum 1, however fast it
// goes.
func TestReceiveMaximumWithinLimit(t *testing.T) {
	tb := startBroker(t, Options{ReceiveMaximum: 1})
	rc := dialRaw(t, tb.addr, packet.V5)
	rc.connect("polite", true, nil)
	for i := 1; i <= 300; i++ {
		rc.publish(uint16(i), "rm/ok", 1, "x")
		p := rc.recv()
		if a, ok := p.(*packet.Ack); !ok || a.Kind != packet.PUBACK || a.PacketID != uint16(i) {
			t.Fatalf("publish %d: got %T %+v, want PUBACK %d", i, p, p, i)
		}
	}
}

func TestClientReceiveMaximumHonoured(t *testing.T) {
	// [MQTT-3.3.4-9] the server sends no more than the client's Receive
	// Maximum of unacknowledged QoS 1/2 PUBLISH packets.
	const n = 5
	window := func(t *testing.T, sub *rawClient) {
		t.Helper()
		var open []*packet.Publish
		got := 0
		for got < n {
			for len(open) < 2 && got+len(open) < n {
				open = append(open, sub.expectPublish())
			}
			if got+len(open) < n {
				sub.expectNothing(quiet) // a third would exceed the window
			}
			want := fmt.Sprint(got)
			if string(open[0].Payload) != want {
				t.Fatalf("got %q, want %q (in order)", open[0].Payload, want)
			}
			sub.ackPub(open[0])
			open = open[1:]
			got++
		}
		sub.expectNothing(quiet)
	}
	rm2 := func(cp *packet.Connect) {
		cp.Props.ReceiveMaximum = 2
		cp.Props.Set(packet.PropReceiveMaximum)
	}
	t.Run("online", func(t *testing.T) {
		tb := startBroker(t, Options{})
		sub := dialRaw(t, tb.addr, packet.V5)
		sub.connect("rm2", true, rm2)
		sub.subscribe(1, "rmo/#", 1)
		pub := dialRaw(t, tb.addr, packet.V5)
		pub.connect("pub", true, nil)
		for i := 0; i < n; i++ {
			pub.pubAcked(uint16(i+1), "rmo/x", fmt.Sprint(i))
		}
		window(t, sub)
	})
	t.Run("queued", func(t *testing.T) {
		tb := startBroker(t, Options{})
		sub := dialRaw(t, tb.addr, packet.V5)
		sub.connect("rm2", false, rm2)
		sub.subscribe(1, "rmq/#", 2)
		sub.disconnect(tb)
		pub := dialRaw(t, tb.addr, packet.V5)
		pub.connect("pub", true, nil)
		for i := 0; i < n; i++ {
			pub.publish(uint16(i+1), "rmq/x", 2, fmt.Sprint(i))
			pub.expectAck(packet.PUBREC, uint16(i+1))
			pub.send(&packet.Ack{Kind: packet.PUBREL, PacketID: uint16(i + 1)})
			pub.expectAck(packet.PUBCOMP, uint16(i+1))
		}
		sub = dialRaw(t, tb.addr, packet.V5)
		sub.connect("rm2", false, rm2)
		window(t, sub)
	})
}

func TestClientMaximumPacketSize(t *testing.T) {
	tb := startBroker(t, Options{})
	const limit = 64
	small := dialRaw(t, tb.addr, packet.V5)
	small.connect("small", true, func(cp *packet.Connect) {
		cp.Props.MaximumPacketSize = limit
		cp.Props.Set(packet.PropMaximumPacketSize)
	})
	small.subscribe(1, "mp/#", 0)
	big := dialRaw(t, tb.addr, packet.V5)
	big.connect("big", true, nil)
	big.subscribe(1, "mp/#", 0)

	// payload returns a payload that makes the PUBLISH a subscriber gets
	// (QoS 0, no properties) exactly size bytes.
	payload := func(size int) string {
		p := packet.Publish{Topic: "mp/t"}
		b, _ := p.Append(nil, packet.V5)
		return string(make([]byte, size-len(b)))
	}
	pub := dialRaw(t, tb.addr, packet.V5)
	pub.connect("pub", true, nil)
	pub.pubAcked(1, "mp/t", payload(limit+1))
	pub.pubAcked(2, "mp/t", payload(limit))
	pub.pubAcked(3, "mp/t", "tiny")
	// [MQTT-3.1.2-24] nothing larger than the client's Maximum Packet
	// Size is sent to it; [MQTT-3.1.2-25] such a message is discarded for
	// that client only. One that fits exactly is delivered.
	big.expectPub("mp/t", payload(limit+1))
	big.expectPub("mp/t", payload(limit))
	big.expectPub("mp/t", "tiny")
	small.expectPub("mp/t", payload(limit))
	small.expectPub("mp/t", "tiny")
	small.expectNothing(quiet)
}

func TestMessageExpiry(t *testing.T) {
	clk := clock.NewFake(time.Now())
	tb := startBroker(t, Options{Clock: clk})
	sub := dialRaw(t, tb.addr, packet.V5)
	sub.connect("me", false, nil)
	sub.subscribe(1, "me/#", 1)
	sub.disconnect(tb)

	pub := dialRaw(t, tb.addr, packet.V5)
	pub.connect("pub", true, nil)
	expiring := func(pid uint16, topic string, sec uint32) {
		p := &packet.Publish{QoS: 1, PacketID: pid, Topic: topic, Payload: []byte(topic)}
		p.Props.MessageExpiry = sec
		p.Props.Set(packet.PropMessageExpiry)
		pub.send(p)
		pub.expectAck(packet.PUBACK, pid)
	}
	expiring(1, "me/short", 1)
	expiring(2, "me/long", 60)
	clk.Advance(1200 * time.Millisecond)

	// [MQTT-3.3.2-5] a queued message whose interval passed is not
	// delivered; [MQTT-3.3.2-6] the one delivered carries its interval
	// minus the time it waited (queued first, me/short would come first).
	sub = dialRaw(t, tb.addr, packet.V5)
	sub.connect("me", false, nil)
	p := sub.expectPub("me/long", "me/long")
	if !p.Props.Has(packet.PropMessageExpiry) || p.Props.MessageExpiry != 59 {
		t.Fatalf("got Message Expiry Interval %d (present %v), want 59 (60 s less 1.2 s, rounded up)", p.Props.MessageExpiry, p.Props.Has(packet.PropMessageExpiry))
	}

	// A message without an expiry carries none.
	pub.pubAcked(3, "me/none", "x")
	if p := sub.expectPub("me/none", "x"); p.Props.Has(packet.PropMessageExpiry) {
		t.Fatalf("got Message Expiry Interval %d, want none", p.Props.MessageExpiry)
	}
}

// ---- PUBLISH properties (5.0) ----

func TestTopicAliasFromClient(t *testing.T) {
	tb := startBroker(t, Options{})
	sub := dialRaw(t, tb.addr, packet.V5)
	sub.connect("sub", true, nil)
	sub.subscribe(1, "ta/#", 1)
	pub := dialRaw(t, tb.addr, packet.V5)
	ca := pub.connect("pub", true, nil)
	if ca.Props.TopicAliasMaximum != 100 {
		t.Fatalf("got Topic Alias Maximum %d, want 100", ca.Props.TopicAliasMaximum)
	}
	aliased := func(pid uint16, topic string, alias uint16, payload string) {
		p := &packet.Publish{QoS: 1, PacketID: pid, Topic: topic, Payload: []byte(payload)}
		p.Props.TopicAlias = alias
		p.Props.Set(packet.PropTopicAlias)
		pub.send(p)
	}
	aliased(1, "ta/one", 1, "set")
	aliased(2, "", 1, "use")
	aliased(3, "ta/two", 1, "remap")
	aliased(4, "", 1, "use again")
	for i := uint16(1); i <= 4; i++ {
		pub.expectAck(packet.PUBACK, i)
	}
	// [MQTT-3.3.2-12] the alias stands for the topic last set on it; the
	// subscriber sees the topic, never the sender's alias.
	for _, w := range []struct{ topic, payload string }{
		{"ta/one", "set"}, {"ta/one", "use"}, {"ta/two", "remap"}, {"ta/two", "use again"},
	} {
		if p := sub.expectPub(w.topic, w.payload); p.Props.Has(packet.PropTopicAlias) {
			t.Fatalf("forwarded PUBLISH carries the sender's topic alias %d, want none", p.Props.TopicAlias)
		}
	}

	for _, c := range []struct {
		name  string
		topic string
		alias uint16
		want  packet.ReasonCode
	}{
		{"alias 0", "ta/x", 0, packet.CodeProtocolError},             // [MQTT-3.3.2-8]: the codec's protocol error
		{"above maximum", "ta/x", 101, packet.CodeTopicAliasInvalid}, // [MQTT-3.3.2-9]
		{"unknown alias", "", 5, packet.CodeProtocolError},
	} {
		t.Run(c.name, func(t *testing.T) {
			rc := dialRaw(t, tb.addr, packet.V5)
			rc.connect("bad-alias", true, nil)
			p := &packet.Publish{Topic: c.topic, Payload: []byte("x")}
			p.Props.TopicAlias = c.alias
			p.Props.Set(packet.PropTopicAlias)
			rc.send(p)
			rc.expectDisconnect(c.want)
		})
	}
}

func TestPublishPropertiesPassThrough(t *testing.T) {
	tb := startBroker(t, Options{})
	live := dialRaw(t, tb.addr, packet.V5)
	live.connect("live", true, nil)
	live.subscribe(1, "pp/#", 1)
	queued := dialRaw(t, tb.addr, packet.V5)
	queued.connect("queued", false, nil)
	queued.subscribe(1, "pp/#", 1)
	queued.disconnect(tb)

	user := []packet.UserProperty{{Key: "a", Value: "1"}, {Key: "b", Value: "2"}, {Key: "a", Value: "3"}}
	p := &packet.Publish{QoS: 1, PacketID: 1, Topic: "pp/x", Payload: []byte("{}")}
	p.Props.User = user
	p.Props.PayloadFormat = 1
	p.Props.Set(packet.PropPayloadFormat)
	p.Props.ContentType = "application/json"
	p.Props.Set(packet.PropContentType)
	p.Props.ResponseTopic = "pp/reply"
	p.Props.Set(packet.PropResponseTopic)
	p.Props.CorrelationData = []byte{0, 1, 2, 0xff}
	p.Props.Set(packet.PropCorrelationData)
	pub := dialRaw(t, tb.addr, packet.V5)
	pub.connect("pub", true, nil)
	pub.send(p)
	pub.expectAck(packet.PUBACK, 1)

	check := func(where string, got *packet.Publish) {
		t.Helper()
		pr := &got.Props
		// [MQTT-3.3.2-17] [MQTT-3.3.2-18] user properties unchanged, in
		// order; [MQTT-3.3.2-4] payload format; [MQTT-3.3.2-20] content
		// type; [MQTT-3.3.2-15] response topic; [MQTT-3.3.2-16]
		// correlation data.
		if !slices.Equal(pr.User, user) {
			t.Fatalf("%s: got user properties %v, want %v", where, pr.User, user)
		}
		if !pr.Has(packet.PropPayloadFormat) || pr.PayloadFormat != 1 {
			t.Fatalf("%s: got payload format %d (present %v), want 1", where, pr.PayloadFormat, pr.Has(packet.PropPayloadFormat))
		}
		if pr.ContentType != "application/json" {
			t.Fatalf("%s: got content type %q, want %q", where, pr.ContentType, "application/json")
		}
		if pr.ResponseTopic != "pp/reply" {
			t.Fatalf("%s: got response topic %q, want %q", where, pr.ResponseTopic, "pp/reply")
		}
		if !slices.Equal(pr.CorrelationData, []byte{0, 1, 2, 0xff}) {
			t.Fatalf("%s: got correlation data %x, want 000102ff", where, pr.CorrelationData)
		}
	}
	check("live", live.expectPub("pp/x", "{}"))
	// The same through the offline queue, a clean restart and the wal.
	tb.restart()
	queued = dialRaw(t, tb.addr, packet.V5)
	queued.connect("queued", false, nil)
	check("queued across restart", queued.expectPub("pp/x", "{}"))

	// A 3.1.1 subscriber gets the message without properties.
	old := dialRaw(t, tb.addr, packet.V311)
	old.connect("old", true, nil)
	old.subscribe(1, "pp/#", 1)
	pub = dialRaw(t, tb.addr, packet.V5)
	pub.connect("pub", true, nil)
	pub.send(p)
	pub.expectAck(packet.PUBACK, 1)
	old.expectPub("pp/x", "{}")
}

// ---- wills and session expiry (5.0) ----

func withWill(topic, payload string, delay uint32) func(*packet.Connect) {
	return func(cp *packet.Connect) {
		cp.WillFlag, cp.WillTopic, cp.WillPayload, cp.WillQoS = true, topic, []byte(payload), 1
		if delay > 0 {
			cp.WillProps.WillDelay = delay
			cp.WillProps.Set(packet.PropWillDelay)
		}
	}
}

func both(fs ...func(*packet.Connect)) func(*packet.Connect) {
	return func(cp *packet.Connect) {
		for _, f := range fs {
			f(cp)
		}
	}
}

func TestWillDelay(t *testing.T) {
	t.Run("published after the delay", func(t *testing.T) {
		clk := clock.NewFake(time.Now())
		tb := startBroker(t, Options{Clock: clk})
		watch := dialRaw(t, tb.addr, packet.V5)
		watch.connect("watch", true, nil)
		watch.subscribe(1, "wd/#", 1)
		w := dialRaw(t, tb.addr, packet.V5)
		w.connect("w", true, both(sessionExpiry(60), withWill("wd/w", "late", 1)))
		gone(t, tb, func() { w.nc.Close() })
		// [MQTT-3.1.3-9] not before the Will Delay Interval ...
		clk.Advance(999 * time.Millisecond)
		tb.session("w", func(s *session) {
			if s == nil || s.Will == nil {
				t.Fatalf("will gone %v before its delay of 1 s", 999*time.Millisecond)
			}
		})
		// ... and then published.
		clk.Advance(time.Millisecond)
		watch.expectPub("wd/w", "late")
	})
	t.Run("cancelled by resuming", func(t *testing.T) {
		clk := clock.NewFake(time.Now())
		tb := startBroker(t, Options{Clock: clk})
		watch := dialRaw(t, tb.addr, packet.V5)
		watch.connect("watch", true, nil)
		watch.subscribe(1, "wd/#", 1)
		w := dialRaw(t, tb.addr, packet.V5)
		w.connect("w", true, both(sessionExpiry(60), withWill("wd/w", "late", 1)))
		gone(t, tb, func() { w.nc.Close() })
		// [MQTT-3.1.3-9] a connection resuming the session before the
		// delay passed means the will is not sent.
		w = dialRaw(t, tb.addr, packet.V5)
		if !w.connect("w", false, sessionExpiry(60)).SessionPresent {
			t.Fatalf("resume: session present = false, want true")
		}
		tb.inCore(func() {
			if n := len(tb.b.core.timers); n != 0 {
				t.Fatalf("%d sessions with deadlines after the resume, want none", n)
			}
		})
		clk.Advance(time.Hour)
		pub := dialRaw(t, tb.addr, packet.V5)
		pub.connect("pub", true, nil)
		pub.pubAcked(1, "wd/marker", "m")
		watch.expectPub("wd/marker", "m") // not the will
	})
	t.Run("session ends first", func(t *testing.T) {
		t.Parallel()
		tb := startBroker(t, Options{})
		watch := dialRaw(t, tb.addr, packet.V5)
		watch.connect("watch", true, nil)
		watch.subscribe(1, "wd/#", 1)
		// The will is published when the session ends, if that is before
		// the delay: here expiry 0, so at once.
		w := dialRaw(t, tb.addr, packet.V5)
		w.connect("w", true, withWill("wd/w", "now", 600))
		w.nc.Close()
		watch.expectPub("wd/w", "now")
	})
}

func TestWillOnDisconnect(t *testing.T) {
	tb := startBroker(t, Options{})
	watch := dialRaw(t, tb.addr, packet.V5)
	watch.connect("watch", true, nil)
	watch.subscribe(1, "wod/#", 1)

	// DISCONNECT with 0x04 (Disconnect with Will Message, 3.14.2.1)
	// publishes the will.
	w := dialRaw(t, tb.addr, packet.V5)
	w.connect("w4", true, withWill("wod/w4", "bye", 0))
	w.send(&packet.Disconnect{ReasonCode: packet.CodeDisconnectWithWill})
	watch.expectPub("wod/w4", "bye")

	// [MQTT-3.1.2-10] [MQTT-3.14.4-3] a normal DISCONNECT (0x00) discards
	// it.
	w = dialRaw(t, tb.addr, packet.V5)
	w.connect("w0", true, withWill("wod/w0", "bye", 0))
	w.disconnect(tb)
	pub := dialRaw(t, tb.addr, packet.V5)
	pub.connect("pub", true, nil)
	pub.pubAcked(1, "wod/sentinel", "s")
	watch.expectPub("wod/sentinel", "s")

	// 3.1.1 DISCONNECT discards it too; a protocol error publishes it.
	w = dialRaw(t, tb.addr, packet.V311)
	w.connect("w311", true, withWill("wod/w311", "bye", 0))
	w.disconnect(tb)
	pub.pubAcked(2, "wod/sentinel", "s2")
	watch.expectPub("wod/sentinel", "s2")
	w = dialRaw(t, tb.addr, packet.V311)
	w.connect("w311", true, withWill("wod/w311", "broken", 0))
	w.sendRaw([]byte{0xc0, 0x01, 0x00}) // PINGREQ with a body: malformed
	w.expectEOF()
	watch.expectPub("wod/w311", "broken")
}

func TestSessionExpiry(t *testing.T) {
	t.Run("expires", func(t *testing.T) {
		clk := clock.NewFake(time.Now())
		tb := startBroker(t, Options{Clock: clk})
		rc := dialRaw(t, tb.addr, packet.V5)
		rc.connect("se", false, sessionExpiry(1))
		rc.subscribe(1, "se/x", 1)
		rc.disconnect(tb)
		// Within the interval the session is there ...
		rc = dialRaw(t, tb.addr, packet.V5)
		if !rc.connect("se", false, sessionExpiry(1)).SessionPresent {
			t.Fatalf("reconnect within the expiry: session present = false, want true")
		}
		rc.disconnect(tb)
		// ... and after it, gone [MQTT-4.1.0-2]: with its subscription.
		clk.Advance(999 * time.Millisecond)
		tb.session("se", func(s *session) {
			if s == nil {
				t.Fatal("session gone before its expiry")
			}
		})
		clk.Advance(time.Millisecond)
		waitFor(t, "the session to expire", func() bool {
			var gone bool
			tb.session("se", func(s *session) { gone = s == nil })
			return gone
		})
		rc = dialRaw(t, tb.addr, packet.V5)
		if rc.connect("se", false, sessionExpiry(60)).SessionPresent {
			t.Fatalf("reconnect after the expiry: session present = true, want false")
		}
		pub := dialRaw(t, tb.addr, packet.V5)
		pub.connect("pub", true, nil)
		pub.pubAcked(1, "se/x", "to nobody")
		rc.expectNothing(quiet)
	})
	t.Run("set to 0 on DISCONNECT", func(t *testing.T) {
		tb := startBroker(t, Options{})
		rc := dialRaw(t, tb.addr, packet.V5)
		rc.connect("se0", false, sessionExpiry(60))
		// (3.14.2.2.2) DISCONNECT may change a non-zero expiry; 0 ends
		// the session with the connection.
		gone(t, tb, func() {
			d := &packet.Disconnect{}
			d.Props.SessionExpiry = 0
			d.Props.Set(packet.PropSessionExpiry)
			rc.send(d)
		})
		rc = dialRaw(t, tb.addr, packet.V5)
		if rc.connect("se0", false, sessionExpiry(60)).SessionPresent {
			t.Fatalf("after DISCONNECT with expiry 0: session present = true, want false")
		}
	})
	t.Run("DISCONNECT cannot make a session persistent", func(t *testing.T) {
		tb := startBroker(t, Options{})
		rc := dialRaw(t, tb.addr, packet.V5)
		rc.connect("se1", true, nil) // expiry 0
		gone(t, tb, func() {
			d := &packet.Disconnect{}
			d.Props.SessionExpiry = 60
			d.Props.Set(packet.PropSessionExpiry)
			rc.send(d)
		})
		rc = dialRaw(t, tb.addr, packet.V5)
		if rc.connect("se1", false, sessionExpiry(60)).SessionPresent {
			t.Fatalf("session present = true, want false: expiry 0 at CONNECT cannot be raised (3.14.2.2.2)")
		}
	})
}

// ---- shared subscriptions and $SYS ----

func TestSharedSubscription(t *testing.T) {
	tb := startBroker(t, Options{})
	pub := dialRaw(t, tb.addr, packet.V5)
	pub.connect("pub", true, nil)
	pub.send(&packet.Publish{QoS: 1, PacketID: 1, Retain: true, Topic: "sh/r", Payload: []byte("retained")})
	pub.expectAck(packet.PUBACK, 1)

	var members []*rawClient
	for i := 0; i < 2; i++ {
		m := dialRaw(t, tb.addr, packet.V5)
		m.connect(fmt.Sprint("member", i), true, nil)
		if got := m.subscribe(1, "$share/g/sh/#", 1).Codes[0]; got != 1 {
			t.Fatalf("shared subscribe: granted %v, want 1", got)
		}
		members = append(members, m)
	}
	plain := dialRaw(t, tb.addr, packet.V5)
	plain.connect("plain", true, nil)
	plain.subscribe(1, "sh/#", 1)
	plain.expectPub("sh/r", "retained")

	const n = 20
	for i := 0; i < n; i++ {
		pub.pubAcked(uint16(i+2), "sh/x", fmt.Sprint(i))
	}
	for i := 0; i < n; i++ {
		plain.expectPub("sh/x", fmt.Sprint(i))
	}
	// (section 4.8.2) each message of a shared subscription goes to
	// exactly one member; no retained message is sent for a shared
	// subscription.
	seen := map[string]int{}
	for _, m := range members {
		for {
			p, err := m.tryRecv(quiet)
			if err != nil {
				break
			}
			pp, ok := p.(*packet.Publish)
			if !ok {
				t.Fatalf("member: got %T, want PUBLISH", p)
			}
			if pp.Topic != "sh/x" {
				t.Fatalf("member: got %s %q, want only sh/x messages", pp.Topic, pp.Payload)
			}
			m.ackPub(pp)
			seen[string(pp.Payload)]++
		}
	}
	for i := 0; i < n; i++ {
		if c := seen[fmt.Sprint(i)]; c != 1 {
			t.Fatalf("message %d delivered to %d members, want 1", i, c)
		}
	}
	if len(seen) != n {
		t.Fatalf("members got %d distinct messages, want %d", len(seen), n)
	}
}

func TestSysTopics(t *testing.T) {
	tb := startBroker(t, Options{SysInterval: 100 * time.Millisecond})
	all := dialRaw(t, tb.addr, packet.V311)
	all.connect("all", true, nil)
	all.subscribe(1, "#", 0)
	sys := dialRaw(t, tb.addr, packet.V311)
	sys.connect("sys", true, nil)
	sys.subscribe(1, "$SYS/#", 0)

	// $SYS topics are published periodically; the ones already there come
	// on subscribe as retained messages.
	got := map[string]string{}
	retained, updates := 0, 0
	deadline := time.Now().Add(5 * time.Second)
	for (got["$SYS/broker/clients/connected"] != "2" || updates < 10) && time.Now().Before(deadline) {
		p := sys.expectPublish()
		if p.Retain {
			retained++
		} else {
			updates++
		}
		got[p.Topic] = string(p.Payload)
	}
	if got["$SYS/broker/version"] == "" {
		t.Fatalf("got $SYS topics %v, want $SYS/broker/version among them", got)
	}
	if got["$SYS/broker/clients/connected"] != "2" {
		t.Fatalf("got $SYS/broker/clients/connected %q, want \"2\"", got["$SYS/broker/clients/connected"])
	}
	if retained == 0 || updates < 10 {
		t.Fatalf("got %d retained and %d periodic $SYS messages, want some of both", retained, updates)
	}
	// [MQTT-4.7.2-1] '#' does not match $SYS: the sentinel is the first
	// thing "#" receives.
	pub := dialRaw(t, tb.addr, packet.V311)
	pub.connect("pub", true, nil)
	pub.publish(0, "sentinel", 0, "s")
	all.expectPub("sentinel", "s")
}

// TestFitsMatchesEncoding ties the size the router checks against a
// client's Maximum Packet Size to what the writer really encodes: a
// message fits a limit of exactly its encoded size, and not one byte less.
func TestFitsMatchesEncoding(t *testing.T) {
	c := &conn{b: &Broker{opts: Options{Clock: clock.System{}}}, version: packet.V5}
	big := string(make([]byte, 300))
	for i, m := range []*wal.Message{
		{Topic: "t"},
		{Topic: "a/b", Payload: []byte(big)},
		{Topic: "a/b", Payload: []byte("x"), HasPayloadFormat: true, PayloadFormat: 1,
			ExpireAt: time.Now().Add(time.Hour).UnixMilli(), ContentType: "text/plain",
			ResponseTopic: "r/t", CorrelationData: []byte{},
			User: []wal.UserProperty{{Key: "k", Value: big}, {Key: "", Value: ""}}},
		{Topic: big, Payload: make([]byte, 20000), CorrelationData: []byte{1, 2}},
	} {
		for _, qos := range []byte{0, 1, 2} {
			for _, ids := range [][]uint32{nil, {1}, {127, 128, 16384, 268435455}} {
				it := outItem{pub: &outPub{msg: m, qos: qos, pid: 7, subIDs: ids}}
				b, err := c.encode(nil, &it)
				if err != nil {
					t.Fatalf("case %d: encode: %v", i, err)
				}
				c.clientMaxPkt = uint32(len(b))
				if !c.fits(m, qos, ids) {
					t.Fatalf("case %d qos %d ids %v: does not fit a limit of its encoded size %d", i, qos, ids, len(b))
				}
				c.clientMaxPkt--
				if c.fits(m, qos, ids) {
					t.Fatalf("case %d qos %d ids %v: fits a limit of %d, one below its encoded size", i, qos, ids, c.clientMaxPkt)
				}
			}
		}
	}
}

// TestClientReceiveMaximumOnResume: the messages left unacknowledged on a
// persistent session are resent on resume [MQTT-4.4.0-1], but still no
// more at a time than the new connection's Receive Maximum
// [MQTT-3.3.4-9].
func TestClientReceiveMaximumOnResume(t *testing.T) {
	tb := startBroker(t, Options{})
	sub := dialRaw(t, tb.addr, packet.V5)
	sub.connect("resume", false, nil)
	sub.subscribe(1, "rr/#", 1)
	pub := dialRaw(t, tb.addr, packet.V5)
	pub.connect("pub", true, nil)
	const n = 5
	for i := 0; i < n; i++ {
		pub.pubAcked(uint16(i+1), "rr/x", fmt.Sprint(i))
	}
	for i := 0; i < n; i++ {
		sub.expectPublish() // received, never acknowledged
	}
	gone(t, tb, func() { sub.nc.Close() })

	sub = dialRaw(t, tb.addr, packet.V5)
	sub.connect("resume", false, func(cp *packet.Connect) {
		cp.Props.ReceiveMaximum = 2
		cp.Props.Set(packet.PropReceiveMaximum)
	})
	// Two resent at once; each ack lets one more through, in order.
	var open []*packet.Publish
	for next := 0; next < n || len(open) > 0; {
		for len(open) < 2 && next < n {
			p := sub.expectPublish()
			if !p.Dup || string(p.Payload) != fmt.Sprint(next) {
				t.Fatalf("resend %d: got %q dup=%v, want %q dup=true", next, p.Payload, p.Dup, fmt.Sprint(next))
			}
			open = append(open, p)
			next++
		}
		if next < n {
			sub.expectNothing(quiet) // a third would exceed Receive Maximum 2
		}
		sub.ackPub(open[0])
		open = open[1:]
	}
	sub.expectNothing(quiet)
}

// TestInboundQoS2DuplicateNotRoutedTwice: a resent QoS 2 PUBLISH (DUP,
// same packet id, before PUBREL) is acknowledged again but delivered once
// [MQTT-4.3.3-10].
func TestInboundQoS2DuplicateNotRoutedTwice(t *testing.T) {
	for _, v := range []byte{packet.V311, packet.V5} {
		t.Run(fmt.Sprintf("v=%d", v), func(t *testing.T) {
			tb := startBroker(t, Options{})
			sub := dialRaw(t, tb.addr, v)
			sub.connect("sub", true, nil)
			sub.subscribe(1, "q2/#", 1)
			pub := dialRaw(t, tb.addr, v)
			pub.connect("pub", true, nil)
			pub.publish(5, "q2/x", 2, "once")
			pub.expectAck(packet.PUBREC, 5)
			pub.send(&packet.Publish{Dup: true, QoS: 2, PacketID: 5, Topic: "q2/x", Payload: []byte("once")})
			pub.expectAck(packet.PUBREC, 5)
			pub.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 5})
			pub.expectAck(packet.PUBCOMP, 5)
			// The id is free again: a new message with it is a new message.
			pub.publish(5, "q2/x", 2, "twice")
			pub.expectAck(packet.PUBREC, 5)
			pub.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 5})
			pub.expectAck(packet.PUBCOMP, 5)
			sub.expectPub("q2/x", "once")
			sub.expectPub("q2/x", "twice")
			sub.expectNothing(quiet)
		})
	}
}

func TestUnsubscribe(t *testing.T) {
	for _, v := range []byte{packet.V311, packet.V5} {
		t.Run(fmt.Sprintf("v=%d", v), func(t *testing.T) {
			tb := startBroker(t, Options{})
			sub := dialRaw(t, tb.addr, v)
			sub.connect("sub", false, nil)
			sub.subscribe(1, "un/a", 1)
			sub.subscribe(2, "$share/g/un/b", 1)
			sub.send(&packet.Unsubscribe{PacketID: 3, Filters: []string{"un/a", "un/none", "$share/g/un/b"}})
			p := sub.recv()
			ua, ok := p.(*packet.Unsuback)
			if !ok || ua.PacketID != 3 {
				t.Fatalf("got %T %+v, want UNSUBACK 3", p, p)
			}
			// 5.0: one code per filter, 0x11 where nothing was subscribed.
			if v == packet.V5 {
				want := []packet.ReasonCode{packet.CodeSuccess, packet.CodeNoSubscriptionExisted, packet.CodeSuccess}
				if !slices.Equal(ua.Codes, want) {
					t.Fatalf("got UNSUBACK codes %v, want %v", ua.Codes, want)
				}
			}
			// [MQTT-3.10.4-2] no new messages for the removed filters,
			// and the removal is durable.
			tb.crash()
			sub = dialRaw(t, tb.addr, v)
			sub.connect("sub", false, nil)
			sub.subscribe(4, "un/c", 1)
			pub := dialRaw(t, tb.addr, v)
			pub.connect("pub", true, nil)
			pub.pubAcked(1, "un/a", "a")
			pub.pubAcked(2, "un/b", "b")
			pub.pubAcked(3, "un/c", "sentinel")
			sub.expectPub("un/c", "sentinel")
		})
	}
}

// TestServerShutdownDisconnect: a clean broker stop tells 5.0 clients why
// (DISCONNECT 0x8B, Server shutting down) and closes 3.1.1 ones.
func TestServerShutdownDisconnect(t *testing.T) {
	tb := startBroker(t, Options{})
	v5 := dialRaw(t, tb.addr, packet.V5)
	v5.connect("v5", true, nil)
	v3 := dialRaw(t, tb.addr, packet.V311)
	v3.connect("v3", true, nil)
	tb.restart()
	v5.expectDisconnect(packet.CodeServerShuttingDown)
	v3.expectEOF()
}

// TestMessageExpiryWhileWaitingForWindow: a message that expires while it
// waits for room in an online client's Receive Maximum is not delivered
// [MQTT-3.3.2-5], whether it waits in memory (clean session) or on disk
// (persistent session).
func TestMessageExpiryWhileWaitingForWindow(t *testing.T) {
	for _, clean := range []bool{true, false} {
		t.Run(fmt.Sprintf("clean=%v", clean), func(t *testing.T) {
			clk := clock.NewFake(time.Now())
			tb := startBroker(t, Options{Clock: clk})
			sub := dialRaw(t, tb.addr, packet.V5)
			sub.connect("slow", clean, func(cp *packet.Connect) {
				cp.Props.ReceiveMaximum = 1
				cp.Props.Set(packet.PropReceiveMaximum)
			})
			sub.subscribe(1, "mw/#", 1)
			pub := dialRaw(t, tb.addr, packet.V5)
			pub.connect("pub", true, nil)
			pub.pubAcked(1, "mw/x", "first")
			p := &packet.Publish{QoS: 1, PacketID: 2, Topic: "mw/x", Payload: []byte("expiring")}
			p.Props.MessageExpiry = 1
			p.Props.Set(packet.PropMessageExpiry)
			pub.send(p)
			pub.expectAck(packet.PUBACK, 2)
			pub.pubAcked(3, "mw/x", "last")

			first := sub.expectPublish()
			clk.Advance(1200 * time.Millisecond) // "expiring" waits behind "first"
			sub.ackPub(first)
			// Had it been sent, "expiring" would come before "last".
			sub.expectPub("mw/x", "last")
		})
	}
}

// TestQueuedTooBigDoesNotStall: a queued message dropped because it
// exceeds the client's Maximum Packet Size [MQTT-3.1.2-25] leaves its
// place in the window to the next queued one.
func TestQueuedTooBigDoesNotStall(t *testing.T) {
	tb := startBroker(t, Options{})
	opts := func(cp *packet.Connect) {
		cp.Props.ReceiveMaximum = 1
		cp.Props.Set(packet.PropReceiveMaximum)
		cp.Props.MaximumPacketSize = 64
		cp.Props.Set(packet.PropMaximumPacketSize)
	}
	sub := dialRaw(t, tb.addr, packet.V5)
	sub.connect("small", false, opts)
	sub.subscribe(1, "qb/#", 1)
	sub.disconnect(tb)
	pub := dialRaw(t, tb.addr, packet.V5)
	pub.connect("pub", true, nil)
	pub.pubAcked(1, "qb/x", string(make([]byte, 100)))
	pub.pubAcked(2, "qb/x", string(make([]byte, 100)))
	pub.pubAcked(3, "qb/x", "fits")
	sub = dialRaw(t, tb.addr, packet.V5)
	sub.connect("small", false, opts)
	sub.expectPub("qb/x", "fits")
	sub.expectNothing(quiet)
}

func TestMaximumQoS(t *testing.T) {
	tb := startBroker(t, Options{MaximumQoS: 1})
	rc := dialRaw(t, tb.addr, packet.V5)
	ca := rc.connect("mq", true, nil)
	// [MQTT-3.2.2-9] a server that does not support QoS 2 says so.
	if !ca.Props.Has(packet.PropMaximumQoS) || ca.Props.MaximumQoS != 1 {
		t.Fatalf("got Maximum QoS %d (present %v), want 1", ca.Props.MaximumQoS, ca.Props.Has(packet.PropMaximumQoS))
	}
	// A subscription asking for QoS 2 is granted 1.
	if got := rc.subscribe(1, "mq/#", 2).Codes[0]; got != 1 {
		t.Fatalf("granted %v, want 1", got)
	}
	rc.pubSelf(2, "mq/x", "qos1 ok")
	// [MQTT-3.2.2-11] binds the client; a QoS 2 PUBLISH above Maximum QoS
	// gets DISCONNECT 0x9B (3.2.2.3.4).
	rc.publish(3, "mq/x", 2, "too high")
	rc.expectDisconnect(packet.CodeQoSNotSupported)

	// [MQTT-3.2.2-12] a CONNECT whose will QoS exceeds it is refused with
	// 0x9B.
	rc = dialRaw(t, tb.addr, packet.V5)
	ca = rc.connect("mqwill", true, func(cp *packet.Connect) {
		cp.WillFlag, cp.WillTopic, cp.WillPayload, cp.WillQoS = true, "mq/will", []byte("w"), 2
	})
	if ca.ReasonCode != packet.CodeQoSNotSupported {
		t.Fatalf("will QoS 2: got CONNACK %#x, want 0x9b", byte(ca.ReasonCode))
	}
	rc.expectEOF()
}

// TestTakeoverCarriesInflight: a session taken over keeps its flows both
// ways: an unacknowledged outbound message is resent to the new
// connection [MQTT-4.4.0-1], and an inbound QoS 2 flow can be completed on
// it.
func TestTakeoverCarriesInflight(t *testing.T) {
	for _, v := range []byte{packet.V311, packet.V5} {
		t.Run(fmt.Sprintf("v=%d", v), func(t *testing.T) {
			tb := startBroker(t, Options{})
			first := dialRaw(t, tb.addr, v)
			first.connect("twin", false, nil)
			first.subscribe(1, "tk/#", 1)
			first.publish(9, "elsewhere", 2, "inbound")
			first.expectAck(packet.PUBREC, 9)

			pub := dialRaw(t, tb.addr, v)
			pub.connect("pub", true, nil)
			pub.pubAcked(1, "tk/x", "unacked")
			sent := first.expectPublish()

			second := dialRaw(t, tb.addr, v)
			if !second.connect("twin", false, nil).SessionPresent {
				t.Fatalf("session present = false, want true")
			}
			p := second.expectPublish()
			if !p.Dup || p.PacketID != sent.PacketID || string(p.Payload) != "unacked" {
				t.Fatalf("got %q id %d dup=%v, want %q id %d dup=true", p.Payload, p.PacketID, p.Dup, "unacked", sent.PacketID)
			}
			second.ackPub(p)
			second.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 9})
			if a := second.expectAck(packet.PUBCOMP, 9); a.ReasonCode != packet.CodeSuccess {
				t.Fatalf("PUBCOMP for the taken-over inbound flow: reason %#x, want 0", byte(a.ReasonCode))
			}
			second.expectNothing(quiet)
		})
	}
}

// A queue that starts with a long run of expired messages is read in
// bounded steps (sessions.MaxScan entries a turn), and the live message
// behind them still arrives.
func TestLongExpiredRunInQueue(t *testing.T) {
	clk := clock.NewFake(time.Now())
	tb := startBroker(t, Options{Clock: clk})
	s := dialRaw(t, tb.addr, packet.V5)
	s.connect("s", false, nil)
	s.subscribe(1, "x", 1)
	s.disconnect(tb)
	p := dialRaw(t, tb.addr, packet.V5)
	p.connect("p", true, nil)
	const n = 3*sessions.MaxScan + 10
	for i := range n {
		m := &packet.Publish{QoS: 1, PacketID: uint16(i + 1), Topic: "x", Payload: []byte("old")}
		m.Props.MessageExpiry = 1
		m.Props.Set(packet.PropMessageExpiry)
		p.send(m)
		p.expectAck(packet.PUBACK, uint16(i+1))
	}
	p.pubAcked(n+1, "x", "live")
	clk.Advance(2 * time.Second)
	s = dialRaw(t, tb.addr, packet.V5)
	s.connect("s", false, nil)
	s.expectPub("x", "live")
	if got := tb.b.Stats().Dropped["expired"]; got != n {
		t.Fatalf("%d expired drops, want %d", got, n)
	}
}
