package engine

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session/state"
	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// These tests drive the broker with independent client libraries: Eclipse
// Paho for Go, 3.1.1 (paho.mqtt.golang) and 5.0 (paho.golang).

const pahoWait = 5 * time.Second

// msg is a received application message, whatever library received it.
type msg struct {
	topic   string
	payload string
	qos     byte
	retain  bool
}

func (m msg) String() string {
	return fmt.Sprintf("%s %q qos=%d retain=%v", m.topic, m.payload, m.qos, m.retain)
}

// inbox collects received messages.
type inbox chan msg

func newInbox() inbox { return make(inbox, 1024) }

// next returns the next message, failing the test after a timeout.
func (in inbox) next(t *testing.T) msg {
	t.Helper()
	select {
	case m := <-in:
		return m
	case <-time.After(pahoWait):
		t.Fatalf("got no message, want one")
		return msg{}
	}
}

// expect asserts the next messages are exactly want, in order.
func (in inbox) expect(t *testing.T, want ...msg) {
	t.Helper()
	for i, w := range want {
		if got := in.next(t); got != w {
			t.Fatalf("message %d: got %v, want %v", i, got, w)
		}
	}
}

// expectNone asserts no message arrives within d.
func (in inbox) expectNone(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case m := <-in:
		t.Fatalf("got %v, want no message", m)
	case <-time.After(d):
	}
}

// ---- Paho 3.1.1 ----

type paho3 struct {
	mqtt.Client
	in      inbox
	present bool

	mu sync.Mutex
	nc net.Conn // the TCP connection underneath, to cut it abruptly
}

// dialPaho3 connects a Paho 3.1.1 client. Every message it receives, on any
// subscription or on a resumed session, lands in its inbox.
func dialPaho3(t *testing.T, addr, id string, clean bool, configure func(*mqtt.ClientOptions)) *paho3 {
	t.Helper()
	pc := &paho3{in: newInbox()}
	o := mqtt.NewClientOptions().
		AddBroker("tcp://" + addr).
		SetClientID(id).
		SetCleanSession(clean).
		SetProtocolVersion(4).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetKeepAlive(30 * time.Second).
		SetConnectTimeout(pahoWait).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			pc.in <- msg{topic: m.Topic(), payload: string(m.Payload()), qos: m.Qos(), retain: m.Retained()}
		}).
		SetCustomOpenConnectionFn(func(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
			nc, err := net.DialTimeout("tcp", u.Host, pahoWait)
			if err == nil {
				pc.mu.Lock()
				pc.nc = nc
				pc.mu.Unlock()
			}
			return nc, err
		})
	if configure != nil {
		configure(o)
	}
	pc.Client = mqtt.NewClient(o)
	tok := pc.Connect()
	if !tok.WaitTimeout(pahoWait) {
		t.Fatalf("paho 3.1.1 connect %q: timed out", id)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("paho 3.1.1 connect %q: %v", id, err)
	}
	pc.present = tok.(*mqtt.ConnectToken).SessionPresent()
	t.Cleanup(func() {
		if pc.IsConnected() {
			pc.Disconnect(0)
		}
	})
	return pc
}

func wait3(t *testing.T, tok mqtt.Token, what string) {
	t.Helper()
	if !tok.WaitTimeout(pahoWait) {
		t.Fatalf("%s: timed out", what)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func (pc *paho3) sub(t *testing.T, filter string, qos byte) byte {
	t.Helper()
	tok := pc.Subscribe(filter, qos, nil)
	wait3(t, tok, "subscribe "+filter)
	return tok.(*mqtt.SubscribeToken).Result()[filter]
}

func (pc *paho3) pub(t *testing.T, topic string, qos byte, retain bool, payload string) {
	t.Helper()
	wait3(t, pc.Publish(topic, qos, retain, payload), "publish "+topic)
}

// cut closes the TCP connection under the client: no DISCONNECT is sent.
func (pc *paho3) cut() {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	pc.nc.Close()
}

// ---- Paho 5.0 ----

type paho5 struct {
	*paho.Client
	nc   net.Conn
	in   inbox
	ack  *paho.Connack
	disc chan *paho.Disconnect // DISCONNECT sent by the server
}

// dialPaho5 connects a Paho 5.0 client with cp. sess, if not nil, is the
// client's session state, kept across connections.
func dialPaho5(t *testing.T, addr string, cp *paho.Connect, sess *state.State) *paho5 {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, pahoWait)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	pc := &paho5{nc: nc, in: newInbox(), disc: make(chan *paho.Disconnect, 1)}
	cfg := paho.ClientConfig{
		Conn: nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			p := pr.Packet
			pc.in <- msg{topic: p.Topic, payload: string(p.Payload), qos: p.QoS, retain: p.Retain}
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) {
			select {
			case pc.disc <- d:
			default:
			}
		},
		PacketTimeout: pahoWait,
	}
	if sess != nil {
		cfg.Session = sess
	}
	pc.Client = paho.NewClient(cfg)
	if cp.KeepAlive == 0 {
		cp.KeepAlive = 30
	}
	ctx, cancel := context.WithTimeout(context.Background(), pahoWait)
	defer cancel()
	ca, err := pc.Connect(ctx, cp)
	if err != nil {
		t.Fatalf("paho 5.0 connect %q: %v (connack %+v)", cp.ClientID, err, ca)
	}
	pc.ack = ca
	t.Cleanup(func() {
		_ = pc.Disconnect(&paho.Disconnect{})
		<-pc.Done()
	})
	return pc
}

func (pc *paho5) sub(t *testing.T, opts ...paho.SubscribeOptions) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), pahoWait)
	defer cancel()
	sa, err := pc.Subscribe(ctx, &paho.Subscribe{Subscriptions: opts})
	if err != nil {
		t.Fatalf("subscribe %+v: %v", opts, err)
	}
	return sa.Reasons
}

func (pc *paho5) pub(t *testing.T, p *paho.Publish) *paho.PublishResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), pahoWait)
	defer cancel()
	r, err := pc.Publish(ctx, p)
	if err != nil {
		t.Fatalf("publish %s: %v", p.Topic, err)
	}
	if p.QoS > 0 && r.ReasonCode >= 0x80 {
		t.Fatalf("publish %s: got reason code %#x, want success", p.Topic, r.ReasonCode)
	}
	return r
}

// cut closes the TCP connection under the client: no DISCONNECT is sent.
func (pc *paho5) cut() { pc.nc.Close() }

func u32(v uint32) *uint32 { return &v }
func u16(v uint16) *uint16 { return &v }

// pahoClient is what the version-independent tests need of a client.
type pahoClient interface {
	subscribe(t *testing.T, filter string, qos byte) byte
	publish(t *testing.T, topic string, qos byte, retain bool, payload string)
	inbox() inbox
	cutConn()
	disconnect()
}

func (pc *paho3) subscribe(t *testing.T, filter string, qos byte) byte {
	t.Helper()
	return pc.sub(t, filter, qos)
}
func (pc *paho3) publish(t *testing.T, topic string, qos byte, retain bool, payload string) {
	t.Helper()
	pc.pub(t, topic, qos, retain, payload)
}
func (pc *paho3) inbox() inbox { return pc.in }
func (pc *paho3) cutConn()     { pc.cut() }
func (pc *paho3) disconnect()  { pc.Disconnect(100) }

func (pc *paho5) subscribe(t *testing.T, filter string, qos byte) byte {
	t.Helper()
	return pc.sub(t, paho.SubscribeOptions{Topic: filter, QoS: qos})[0]
}
func (pc *paho5) publish(t *testing.T, topic string, qos byte, retain bool, payload string) {
	t.Helper()
	pc.pub(t, &paho.Publish{Topic: topic, QoS: qos, Retain: retain, Payload: []byte(payload)})
}
func (pc *paho5) inbox() inbox { return pc.in }
func (pc *paho5) cutConn()     { pc.cut() }
func (pc *paho5) disconnect() {
	_ = pc.Disconnect(&paho.Disconnect{})
	<-pc.Done()
}

// pahoVersions runs f once per Paho library. dial connects a client with
// a clean session (and, for the will test, a will).
type pahoDialer func(t *testing.T, addr, id string, will *msg) pahoClient

func pahoVersions(t *testing.T, f func(t *testing.T, dial pahoDialer)) {
	t.Run("v=3.1.1", func(t *testing.T) {
		f(t, func(t *testing.T, addr, id string, will *msg) pahoClient {
			t.Helper()
			return dialPaho3(t, addr, id, true, func(o *mqtt.ClientOptions) {
				if will != nil {
					o.SetWill(will.topic, will.payload, will.qos, will.retain)
				}
			})
		})
	})
	t.Run("v=5.0", func(t *testing.T) {
		f(t, func(t *testing.T, addr, id string, will *msg) pahoClient {
			t.Helper()
			cp := &paho.Connect{ClientID: id, CleanStart: true}
			if will != nil {
				cp.WillMessage = &paho.WillMessage{Topic: will.topic, Payload: []byte(will.payload), QoS: will.qos, Retain: will.retain}
			}
			return dialPaho5(t, addr, cp, nil)
		})
	})
}

func TestPahoPubSubQoS(t *testing.T) {
	pahoVersions(t, func(t *testing.T, dial pahoDialer) {
		tb := startBroker(t, Options{})
		sub := dial(t, tb.addr, "sub", nil)
		pub := dial(t, tb.addr, "pub", nil)
		for qos := byte(0); qos <= 2; qos++ {
			filter := fmt.Sprintf("q%d/t", qos)
			// [MQTT-3.8.4-7] granted QoS is the one asked for (max 2).
			if got := sub.subscribe(t, filter, qos); got != qos {
				t.Fatalf("subscribe %s: granted %d, want %d", filter, got, qos)
			}
		}
		for qos := byte(0); qos <= 2; qos++ {
			topic := fmt.Sprintf("q%d/t", qos)
			for i := 0; i < 3; i++ {
				pub.publish(t, topic, qos, false, fmt.Sprint(i))
			}
		}
		// Messages from one publisher on one topic arrive in order
		// [MQTT-4.6.0-5]; each at the publish QoS.
		for qos := byte(0); qos <= 2; qos++ {
			topic := fmt.Sprintf("q%d/t", qos)
			for i := 0; i < 3; i++ {
				sub.inbox().expect(t, msg{topic: topic, payload: fmt.Sprint(i), qos: qos})
			}
		}
		// The delivered QoS is the minimum of publish and subscription
		// QoS [MQTT-3.8.4-8].
		pub.publish(t, "q0/t", 2, false, "down")
		sub.inbox().expect(t, msg{topic: "q0/t", payload: "down", qos: 0})
		pub.publish(t, "q2/t", 1, false, "one")
		sub.inbox().expect(t, msg{topic: "q2/t", payload: "one", qos: 1})
		sub.inbox().expectNone(t, 100*time.Millisecond)
	})
}

func TestPahoWildcards(t *testing.T) {
	pahoVersions(t, func(t *testing.T, dial pahoDialer) {
		tb := startBroker(t, Options{})
		plus := dial(t, tb.addr, "plus", nil)
		hash := dial(t, tb.addr, "hash", nil)
		pub := dial(t, tb.addr, "pub", nil)
		plus.subscribe(t, "a/+/c", 1)
		hash.subscribe(t, "a/#", 1)
		for _, topic := range []string{"a/b/c", "a/b/c/d", "a", "a/x/c", "b/b/c", "a//c"} {
			pub.publish(t, topic, 1, false, topic)
		}
		hash.subscribe(t, "end", 1)
		plus.subscribe(t, "end", 1)
		pub.publish(t, "end", 1, false, "end")
		// '+' matches exactly one level, including an empty one
		// (section 4.7.1.3).
		plus.inbox().expect(t,
			msg{topic: "a/b/c", payload: "a/b/c", qos: 1},
			msg{topic: "a/x/c", payload: "a/x/c", qos: 1},
			msg{topic: "a//c", payload: "a//c", qos: 1},
			msg{topic: "end", payload: "end", qos: 1})
		// '#' matches the parent level and any number of children
		// (section 4.7.1.2).
		hash.inbox().expect(t,
			msg{topic: "a/b/c", payload: "a/b/c", qos: 1},
			msg{topic: "a/b/c/d", payload: "a/b/c/d", qos: 1},
			msg{topic: "a", payload: "a", qos: 1},
			msg{topic: "a/x/c", payload: "a/x/c", qos: 1},
			msg{topic: "a//c", payload: "a//c", qos: 1},
			msg{topic: "end", payload: "end", qos: 1})
	})
}

func TestPahoDollarTopicsNotMatchedByLeadingWildcard(t *testing.T) {
	pahoVersions(t, func(t *testing.T, dial pahoDialer) {
		tb := startBroker(t, Options{})
		wild := dial(t, tb.addr, "wild", nil)
		dollar := dial(t, tb.addr, "dollar", nil)
		pub := dial(t, tb.addr, "pub", nil)
		wild.subscribe(t, "#", 1)
		wild.subscribe(t, "+/x", 1)
		wild.subscribe(t, "+/+", 1)
		dollar.subscribe(t, "$app/#", 1)
		pub.publish(t, "$app/x", 1, false, "dollar")
		pub.publish(t, "app/x", 1, false, "plain")
		// [MQTT-4.7.2-1] '#' and '+' at the first level do not match a
		// topic that begins with '$'; "$app/#" does.
		dollar.inbox().expect(t, msg{topic: "$app/x", payload: "dollar", qos: 1})
		wild.inbox().expect(t, msg{topic: "app/x", payload: "plain", qos: 1})
		wild.inbox().expectNone(t, 100*time.Millisecond)
	})
}

func TestPahoOverlappingSubscriptionsDeliverOnceAtHighestQoS(t *testing.T) {
	pahoVersions(t, func(t *testing.T, dial pahoDialer) {
		tb := startBroker(t, Options{})
		sub := dial(t, tb.addr, "sub", nil)
		pub := dial(t, tb.addr, "pub", nil)
		sub.subscribe(t, "ov/+", 0)
		sub.subscribe(t, "ov/#", 2)
		sub.subscribe(t, "ov/x", 1)
		pub.publish(t, "ov/x", 2, false, "one")
		pub.publish(t, "ov/y", 1, false, "two")
		// (3.1.1 [MQTT-3.3.5-1], 5.0 [MQTT-3.3.4-2]) the server delivers the message respecting the
		// maximum QoS of all matching subscriptions; Keel sends one copy.
		sub.inbox().expect(t,
			msg{topic: "ov/x", payload: "one", qos: 2},
			msg{topic: "ov/y", payload: "two", qos: 1})
		sub.inbox().expectNone(t, 100*time.Millisecond)
	})
}

func TestPahoRetained(t *testing.T) {
	pahoVersions(t, func(t *testing.T, dial pahoDialer) {
		tb := startBroker(t, Options{})
		pub := dial(t, tb.addr, "pub", nil)
		pub.publish(t, "r/a", 1, true, "v1")
		pub.publish(t, "r/a", 1, true, "v2") // replaces v1 [MQTT-3.3.1-5]
		pub.publish(t, "r/b", 1, true, "gone")
		pub.publish(t, "r/b", 1, true, "") // clears r/b (3.1.1 [MQTT-3.3.1-10], 5.0 [MQTT-3.3.1-6])
		pub.publish(t, "r/c", 0, true, "qos0")

		sub := dial(t, tb.addr, "sub", nil)
		sub.subscribe(t, "r/#", 2)
		// Retained messages are sent on subscribe with RETAIN set
		// (3.1.1 [MQTT-3.3.1-8], 5.0 [MQTT-3.3.1-9]), at min(publish, subscription)
		// QoS; an empty
		// retained message is never sent (3.1.1 [MQTT-3.3.1-11], 5.0 [MQTT-3.3.1-7]).
		got := map[string]msg{}
		for i := 0; i < 2; i++ {
			m := sub.inbox().next(t)
			got[m.topic] = m
		}
		want := map[string]msg{
			"r/a": {topic: "r/a", payload: "v2", qos: 1, retain: true},
			"r/c": {topic: "r/c", payload: "qos0", qos: 0, retain: true},
		}
		for k, w := range want {
			if got[k] != w {
				t.Fatalf("retained %s: got %v, want %v", k, got[k], w)
			}
		}
		// A live message to an established subscription has RETAIN 0
		// [MQTT-3.3.1-9] (5.0: without Retain As Published
		// [MQTT-3.3.1-12]), even if it was published retained.
		pub.publish(t, "r/a", 1, true, "v3")
		sub.inbox().expect(t, msg{topic: "r/a", payload: "v3", qos: 1})
		sub.inbox().expectNone(t, 100*time.Millisecond)

		// The retained set after all that: r/a=v3, r/c.
		late := dial(t, tb.addr, "late", nil)
		late.subscribe(t, "r/a", 1)
		late.inbox().expect(t, msg{topic: "r/a", payload: "v3", qos: 1, retain: true})
		late.subscribe(t, "r/b", 1)
		late.inbox().expectNone(t, 100*time.Millisecond)
	})
}

func TestPahoWill(t *testing.T) {
	pahoVersions(t, func(t *testing.T, dial pahoDialer) {
		tb := startBroker(t, Options{})
		watch := dial(t, tb.addr, "watch", nil)
		watch.subscribe(t, "will/#", 1)

		// Abrupt close: the will is published [MQTT-3.1.2-8].
		w := dial(t, tb.addr, "w1", &msg{topic: "will/w1", payload: "lost", qos: 1})
		w.cutConn()
		watch.inbox().expect(t, msg{topic: "will/w1", payload: "lost", qos: 1})

		// Normal DISCONNECT: the will is discarded [MQTT-3.1.2-10].
		w2 := dial(t, tb.addr, "w2", &msg{topic: "will/w2", payload: "lost", qos: 1})
		gone(t, tb, w2.disconnect)
		pub := dial(t, tb.addr, "pub", nil)
		pub.publish(t, "will/sentinel", 1, false, "s")
		watch.inbox().expect(t, msg{topic: "will/sentinel", payload: "s", qos: 1})
		watch.inbox().expectNone(t, 100*time.Millisecond)
	})
}

// TestPahoPersistentSession311 covers a 3.1.1 session with Clean Session
// 0: its subscriptions and queued QoS 1/2 messages survive a disconnect,
// a clean restart and a power loss [MQTT-3.1.2-4] [MQTT-3.1.2-5].
func TestPahoPersistentSession311(t *testing.T) {
	tb := startBroker(t, Options{})
	sub := dialPaho3(t, tb.addr, "p3", false, nil)
	if sub.present {
		t.Fatalf("first connect: session present = true, want false")
	}
	sub.sub(t, "ps/#", 2)
	gone(t, tb, func() { sub.Disconnect(100) })

	pub := dialPaho3(t, tb.addr, "pub", true, nil)
	queue := func(round string) {
		t.Helper()
		pub.pub(t, "ps/1", 1, false, round+"-1")
		pub.pub(t, "ps/2", 2, false, round+"-2")
	}
	collect := func(round string) {
		t.Helper()
		sub = dialPaho3(t, tb.addr, "p3", false, nil)
		if !sub.present {
			t.Fatalf("%s: session present = false, want true", round)
		}
		sub.in.expect(t,
			msg{topic: "ps/1", payload: round + "-1", qos: 1},
			msg{topic: "ps/2", payload: round + "-2", qos: 2})
		sub.in.expectNone(t, 100*time.Millisecond)
		gone(t, tb, func() { sub.Disconnect(100) })
	}

	queue("reconnect")
	collect("reconnect")

	queue("restart")
	pub.Disconnect(100)
	tb.restart()
	collect("restart")

	pub = dialPaho3(t, tb.addr, "pub", true, nil)
	queue("crash")
	// Both publishes were acknowledged: they must survive a power loss.
	tb.crash()
	collect("crash")

	// The subscription itself survived too: a live message still arrives.
	sub = dialPaho3(t, tb.addr, "p3", false, nil)
	pub = dialPaho3(t, tb.addr, "pub", true, nil)
	pub.pub(t, "ps/live", 1, false, "live")
	sub.in.expect(t, msg{topic: "ps/live", payload: "live", qos: 1})
}

// TestPahoPersistentSession5 covers a 5.0 session with Clean Start 0 and a
// Session Expiry Interval [MQTT-3.1.2-23].
func TestPahoPersistentSession5(t *testing.T) {
	tb := startBroker(t, Options{})
	sess := state.NewInMemory()
	t.Cleanup(func() { sess.Close() }) // after the clients' cleanups
	connect := func() *paho5 {
		t.Helper()
		return dialPaho5(t, tb.addr, &paho.Connect{ClientID: "p5", CleanStart: false,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(3600)}}, sess)
	}
	sub := connect()
	if sub.ack.SessionPresent {
		t.Fatalf("first connect: session present = true, want false")
	}
	sub.sub(t, paho.SubscribeOptions{Topic: "ps/#", QoS: 2})
	gone(t, tb, sub.disconnect)

	pub := dialPaho5(t, tb.addr, &paho.Connect{ClientID: "pub", CleanStart: true}, nil)
	queue := func(round string) {
		t.Helper()
		pub.publish(t, "ps/1", 1, false, round+"-1")
		pub.publish(t, "ps/2", 2, false, round+"-2")
	}
	collect := func(round string) {
		t.Helper()
		sub = connect()
		if !sub.ack.SessionPresent {
			t.Fatalf("%s: session present = false, want true", round)
		}
		sub.in.expect(t,
			msg{topic: "ps/1", payload: round + "-1", qos: 1},
			msg{topic: "ps/2", payload: round + "-2", qos: 2})
		sub.in.expectNone(t, 100*time.Millisecond)
		gone(t, tb, sub.disconnect)
	}

	queue("reconnect")
	collect("reconnect")

	queue("restart")
	pub.disconnect()
	tb.restart()
	collect("restart")

	pub = dialPaho5(t, tb.addr, &paho.Connect{ClientID: "pub", CleanStart: true}, nil)
	queue("crash")
	tb.crash()
	collect("crash")

	sub = connect()
	pub = dialPaho5(t, tb.addr, &paho.Connect{ClientID: "pub", CleanStart: true}, nil)
	pub.publish(t, "ps/live", 1, false, "live")
	sub.in.expect(t, msg{topic: "ps/live", payload: "live", qos: 1})
}

// gone runs disconnect and waits until the broker has seen the client go,
// so that what follows is ordered after it.
func gone(t *testing.T, tb *testBroker, disconnect func()) {
	t.Helper()
	before := tb.b.Stats().ClientsConnected
	disconnect()
	waitFor(t, "the client to be gone", func() bool { return tb.b.Stats().ClientsConnected < before })
}

// waitFor polls cond until it holds, failing the test after a timeout. It
// waits for a state, never asserts a duration.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(pahoWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
