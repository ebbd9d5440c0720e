package engine

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"sync"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/keelmq/keel/engine/packet"
	"github.com/keelmq/keel/wal"
)

// Server-assigned topic aliases (alias.go), seen on the wire through our
// own codec and through Paho 5.0.

// wirePub is one PUBLISH as it came over the wire.
type wirePub struct {
	topic   string // as sent: "" where the alias stands for the name
	alias   uint16 // Topic Alias; 0: none
	payload string
}

func (w wirePub) String() string { return fmt.Sprintf("{%q alias %d %q}", w.topic, w.alias, w.payload) }

// recvWire reads the next PUBLISH, acknowledges it, and returns it as sent.
func (rc *rawClient) recvWire() wirePub {
	rc.t.Helper()
	p := rc.expectPublish()
	rc.ackPub(p)
	w := wirePub{topic: p.Topic, payload: string(p.Payload)}
	if p.Props.Has(packet.PropTopicAlias) {
		w.alias = p.Props.TopicAlias
	}
	return w
}

// expectWire reads len(want) PUBLISHes and asserts each is as want says.
func (rc *rawClient) expectWire(want ...wirePub) {
	rc.t.Helper()
	for i, w := range want {
		if got := rc.recvWire(); got != w {
			rc.t.Fatalf("PUBLISH %d: got %v, want %v", i, got, w)
		}
	}
}

func topicAliasMax(n uint16) func(*packet.Connect) {
	return func(cp *packet.Connect) {
		cp.Props.TopicAliasMaximum = n
		cp.Props.Set(packet.PropTopicAliasMaximum)
	}
}

// aliasTopics is the sequence the alias tests publish: three topics worth
// an alias, and one too short to be worth one, each seen twice.
var aliasTopics = []string{"al/one", "al/one", "al/two", "al/three", "ab", "al/one", "al/two", "al/three", "ab"}

// publishAliasTopics publishes aliasTopics (payload: the index) at QoS 1,
// each acknowledged before the next, so they are delivered in this order.
func publishAliasTopics(t *testing.T, tb *testBroker) {
	t.Helper()
	pub := dialRaw(t, tb.addr, packet.V5)
	pub.connect("alias-pub", true, nil)
	for i, topic := range aliasTopics {
		pub.pubAcked(uint16(i+1), topic, fmt.Sprint(i))
	}
}

// unaliased is aliasTopics as they arrive without aliases.
func unaliased() []wirePub {
	var w []wirePub
	for i, topic := range aliasTopics {
		w = append(w, wirePub{topic: topic, payload: fmt.Sprint(i)})
	}
	return w
}

func TestServerTopicAliases(t *testing.T) {
	t.Run("assigned within the client's maximum", func(t *testing.T) {
		tb := startBroker(t, Options{})
		sub := dialRaw(t, tb.addr, packet.V5)
		sub.connect("sub", true, topicAliasMax(2))
		sub.subscribeOpts(1, 0, packet.Subscription{Filter: "al/#", QoS: 1}, packet.Subscription{Filter: "ab", QoS: 1})
		publishAliasTopics(t, tb)
		// The first two distinct topics get aliases 1 and 2 (the client
		// allows two [MQTT-3.3.2-11]): the first PUBLISH of each carries
		// name and alias, the next ones an empty name. The third topic
		// goes with its name, always; "ab" is too short to be worth one.
		sub.expectWire(
			wirePub{"al/one", 1, "0"},
			wirePub{"", 1, "1"},
			wirePub{"al/two", 2, "2"},
			wirePub{"al/three", 0, "3"},
			wirePub{"ab", 0, "4"},
			wirePub{"", 1, "5"},
			wirePub{"", 2, "6"},
			wirePub{"al/three", 0, "7"},
			wirePub{"ab", 0, "8"},
		)
	})
	for _, c := range []struct {
		name    string
		opts    Options
		version byte
		connect func(*packet.Connect)
	}{
		// [MQTT-3.1.2-27] no Topic Alias Maximum, or 0: no aliases.
		{"client maximum absent", Options{}, packet.V5, nil},
		{"client maximum 0", Options{}, packet.V5, topicAliasMax(0)},
		{"3.1.1", Options{}, packet.V311, nil},
		{"server_topic_aliases = false", Options{NoServerTopicAliases: true}, packet.V5, topicAliasMax(10)},
	} {
		t.Run(c.name, func(t *testing.T) {
			tb := startBroker(t, c.opts)
			sub := dialRaw(t, tb.addr, c.version)
			sub.connect("sub", true, c.connect)
			sub.subscribe(1, "al/#", 1)
			sub.subscribe(2, "ab", 1)
			publishAliasTopics(t, tb)
			sub.expectWire(unaliased()...)
		})
	}
}

// A new connection starts with no aliases [MQTT-3.3.2-7]: the message
// resent with DUP after a reconnect carries its topic name again, and the
// alias is given anew.
func TestServerTopicAliasesStartEmptyOnReconnect(t *testing.T) {
	tb := startBroker(t, Options{})
	sub := dialRaw(t, tb.addr, packet.V5)
	sub.connect("sub", false, topicAliasMax(5))
	sub.subscribe(1, "al/#", 1)
	pub := dialRaw(t, tb.addr, packet.V5)
	pub.connect("pub", true, nil)
	pub.pubAcked(1, "al/one", "first")
	pub.pubAcked(2, "al/one", "second")
	sub.expectWire(wirePub{"al/one", 1, "first"})
	p := sub.expectPublish() // not acknowledged: resent on the next connection
	if p.Topic != "" || p.Props.TopicAlias != 1 {
		t.Fatalf("second PUBLISH: got topic %q alias %d, want the alias alone", p.Topic, p.Props.TopicAlias)
	}
	gone(t, tb, func() { sub.nc.Close() })

	again := dialRaw(t, tb.addr, packet.V5)
	if ca := again.connect("sub", false, topicAliasMax(5)); !ca.SessionPresent {
		t.Fatal("session not present on reconnect")
	}
	p = again.expectPublish()
	if !p.Dup || p.Topic != "al/one" || p.Props.TopicAlias != 1 || string(p.Payload) != "second" {
		t.Fatalf("resend: got dup %v topic %q alias %d payload %q, want dup, al/one with alias 1, second",
			p.Dup, p.Topic, p.Props.TopicAlias, p.Payload)
	}
	again.ackPub(p)
	pub.pubAcked(3, "al/one", "third")
	again.expectWire(wirePub{"", 1, "third"})
}

// A first PUBLISH that its alias would push over the client's Maximum
// Packet Size goes without one [MQTT-3.1.2-24]; no alias is assigned until
// one fits, and an aliased repeat is never larger than the message was.
func TestServerTopicAliasesWithinMaximumPacketSize(t *testing.T) {
	tb := startBroker(t, Options{})
	const limit = 64
	sub := dialRaw(t, tb.addr, packet.V5)
	sub.connect("sub", true, both(topicAliasMax(5), func(cp *packet.Connect) {
		cp.Props.MaximumPacketSize = limit
		cp.Props.Set(packet.PropMaximumPacketSize)
	}))
	sub.subscribe(1, "al/#", 0)
	// full is a payload that makes the unaliased QoS 0 PUBLISH on al/one
	// exactly the limit.
	p := packet.Publish{Topic: "al/one"}
	b, _ := p.Append(nil, packet.V5)
	full := string(make([]byte, limit-len(b)))

	pub := dialRaw(t, tb.addr, packet.V5)
	pub.connect("pub", true, nil)
	pub.pubAcked(1, "al/one", full)
	pub.pubAcked(2, "al/one", "tiny")
	pub.pubAcked(3, "al/one", full)
	for i, w := range []wirePub{{"al/one", 0, full}, {"al/one", 1, "tiny"}, {"", 1, full}} {
		got := sub.expectPublish()
		if n, _ := got.Size(packet.V5); n > limit {
			t.Fatalf("PUBLISH %d: %d bytes, over the client's limit of %d", i, n, limit)
		}
		g := wirePub{topic: got.Topic, alias: got.Props.TopicAlias, payload: string(got.Payload)}
		if g != w {
			t.Fatalf("PUBLISH %d: got %v, want %v", i, g, w)
		}
	}
}

// The alias mapping follows the order the bytes leave the socket, whoever
// writes them: the writeLoop (send) or a direct write (sendNow), from two
// goroutines at once. The client resolves every PUBLISH to its topic.
func TestServerTopicAliasesWireOrder(t *testing.T) {
	c, client := connPair(t, false, 0)
	c.outAlias.init(8)
	topics := make([]string, 16) // more topics than aliases
	for i := range topics {
		topics[i] = fmt.Sprintf("wire/topic/%d", i)
	}
	const n = 4000
	deliver := func(i int) outItem {
		return outItem{pub: &outPub{msg: &wal.Message{Topic: topics[i%len(topics)], Payload: []byte(fmt.Sprint(i))}}}
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; i < n; i += 2 {
			c.sendNow([]outItem{deliver(i)})
		}
	})
	wg.Go(func() {
		for i := 1; i < n; i += 2 {
			c.send(deliver(i))
		}
	})
	br := bufio.NewReader(client)
	aliases := map[uint16]string{}
	for range n {
		pk, err := packet.Read(br, packet.V5, 0)
		if err != nil {
			t.Fatal(err)
		}
		p := pk.(*packet.Publish)
		var i int
		fmt.Sscan(string(p.Payload), &i)
		topic := p.Topic
		if p.Props.Has(packet.PropTopicAlias) {
			a := p.Props.TopicAlias
			if a == 0 || a > 8 {
				t.Fatalf("alias %d outside 1..8", a)
			}
			if topic == "" {
				var ok bool
				if topic, ok = aliases[a]; !ok {
					t.Fatalf("message %d: alias %d used before it was given a topic", i, a)
				}
			} else {
				aliases[a] = topic
			}
		}
		if want := topics[i%len(topics)]; topic != want {
			t.Fatalf("message %d: resolves to %q, want %q", i, topic, want)
		}
	}
	wg.Wait()
	if len(aliases) != 8 {
		t.Fatalf("%d aliases given, want 8", len(aliases))
	}
}

// Paho 5.0 resolves keel's aliases: its router finds the handler of the
// exact topic for PUBLISHes whose name is empty.
func TestPahoServerTopicAliases(t *testing.T) {
	tb := startBroker(t, Options{})
	type got struct {
		route, topic, payload string
		alias                 uint16
	}
	recv := make(chan got, 32)
	router := paho.NewStandardRouter()
	for _, topic := range []string{"al/one", "al/two", "al/three"} {
		router.RegisterHandler(topic, func(p *paho.Publish) {
			g := got{route: topic, topic: p.Topic, payload: string(p.Payload)}
			if p.Properties != nil && p.Properties.TopicAlias != nil {
				g.alias = *p.Properties.TopicAlias
			}
			recv <- g
		})
	}
	nc, err := net.Dial("tcp", tb.addr)
	if err != nil {
		t.Fatal(err)
	}
	sub := paho.NewClient(paho.ClientConfig{Conn: nc, Router: router, PacketTimeout: pahoWait})
	ctx, cancel := context.WithTimeout(context.Background(), pahoWait)
	defer cancel()
	if _, err := sub.Connect(ctx, &paho.Connect{ClientID: "paho-sub", CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{TopicAliasMaximum: u16(2)}}); err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { sub.Disconnect(&paho.Disconnect{}); <-sub.Done() })
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "al/+", QoS: 1}}}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	pub := dialPaho5(t, tb.addr, &paho.Connect{ClientID: "paho-pub", CleanStart: true}, nil)
	seq := []string{"al/one", "al/two", "al/three", "al/one", "al/two", "al/three"}
	for i, topic := range seq {
		pub.pub(t, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(fmt.Sprint(i))})
	}
	for i, w := range []got{
		{"al/one", "al/one", "0", 1},
		{"al/two", "al/two", "1", 2},
		{"al/three", "al/three", "2", 0},
		{"al/one", "", "3", 1}, // Paho hands over the name as it came: empty
		{"al/two", "", "4", 2},
		{"al/three", "al/three", "5", 0},
	} {
		select {
		case g := <-recv:
			if g != w {
				t.Fatalf("message %d: got %+v, want %+v", i, g, w)
			}
		case <-ctx.Done():
			t.Fatalf("message %d: none came", i)
		}
	}
}

// BenchmarkEncodeDelivery is the writer's cost of one 5.0 delivery (64 B
// payload, 60 B topic) without aliases, with the alias of a topic already
// sent, and once the client's aliases are used up by other topics.
//
//	go test ./engine -run '^$' -bench EncodeDelivery -count 10
func BenchmarkEncodeDelivery(b *testing.B) {
	topic := "devices/fleet-0042/vehicle-000123/telemetry/engine/rpm-xyz12" // 60 B
	m := &wal.Message{Topic: topic, Payload: make([]byte, 64)}
	for _, c := range []struct {
		name  string
		max   uint16
		setup func(a *outAliases)
	}{
		{"aliases=off", 0, nil},
		{"aliases=hit", 16, nil},
		{"aliases=full", 1, func(a *outAliases) {
			buf, p := []byte(nil), packet.Publish{Topic: "devices/other"}
			a.appendPublish(buf, &p, 0)
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			cn := &conn{b: &Broker{}, version: packet.V5}
			cn.b.opts.fill()
			cn.outAlias.init(c.max)
			if c.setup != nil {
				c.setup(&cn.outAlias)
			}
			it := outItem{pub: &outPub{msg: m, qos: 1, pid: 1}}
			buf := make([]byte, 0, 4096)
			buf, _ = cn.encode(buf[:0], &it) // the first: name and alias
			b.ReportAllocs()
			for b.Loop() {
				buf, _ = cn.encode(buf[:0], &it)
			}
			b.ReportMetric(float64(len(buf)), "bytes/op")
		})
	}
}
