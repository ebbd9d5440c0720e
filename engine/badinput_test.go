package engine

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/keelmq/keel/engine/packet"
)

// Bad input closes the offending connection (5.0: DISCONNECT with a reason
// code first [MQTT-4.13.1-1]) and nothing else: every test ends by checking
// that a client connected all along, and a new one, still work.

// connectBytes encodes a 3.1.1-shaped CONNECT with any protocol name and
// level, which the encoder would refuse.
func connectBytes(t *testing.T, name string, level byte) []byte {
	t.Helper()
	b, err := (&packet.Connect{ProtocolName: name, ProtocolLevel: packet.V311, CleanStart: true, KeepAlive: 30, ClientID: "odd"}).Append(nil, packet.V311)
	if err != nil {
		t.Fatalf("encode CONNECT: %v", err)
	}
	// fixed header (2 bytes), name length (2), name, then the level.
	b[2+2+len(name)] = level
	return b
}

// rawPublish encodes a PUBLISH by hand, so that fields the encoder checks
// (packet id 0, QoS 3) can be wrong.
func rawPublish(version byte, flags byte, topic string, pid uint16, payload string) []byte {
	body := []byte{byte(len(topic) >> 8), byte(len(topic))}
	body = append(body, topic...)
	if flags&0x06 != 0 {
		body = append(body, byte(pid>>8), byte(pid))
	}
	if version == packet.V5 {
		body = append(body, 0) // no properties
	}
	body = append(body, payload...)
	b := []byte{0x30 | flags}
	b = packet.AppendVarInt(b, uint32(len(body)))
	return append(b, body...)
}

// expectProtocolClose asserts how a connected client is cut for bad
// input: 5.0 gets DISCONNECT with want (or, if want is 0, any error code),
// 3.1.1 a closed connection.
func (rc *rawClient) expectProtocolClose(want packet.ReasonCode) {
	rc.t.Helper()
	if rc.version != packet.V5 {
		rc.expectEOF()
		return
	}
	d := rc.expectDisconnectCode()
	switch {
	case want != 0 && d.ReasonCode != want:
		rc.t.Fatalf("got DISCONNECT %#x (%v), want %#x (%v)", byte(d.ReasonCode), d.ReasonCode, byte(want), want)
	case d.ReasonCode < 0x80:
		rc.t.Fatalf("got DISCONNECT %#x (%v), want an error code (>= 0x80)", byte(d.ReasonCode), d.ReasonCode)
	}
}

// eachVersion runs f for 3.1.1 and 5.0 with a fresh broker and a
// bystander that is checked afterwards.
func eachVersion(t *testing.T, opts Options, f func(t *testing.T, tb *testBroker, v byte)) {
	for _, v := range []byte{packet.V311, packet.V5} {
		t.Run(fmt.Sprintf("v=%d", v), func(t *testing.T) {
			tb := startBroker(t, opts)
			by := newBystander(t, tb)
			f(t, tb, v)
			by.check()
		})
	}
}

func TestBadFirstPacket(t *testing.T) {
	tb := startBroker(t, Options{})
	by := newBystander(t, tb)
	for name, b := range map[string][]byte{
		"garbage":        []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"zeros":          make([]byte, 64),
		"pingreq":        {0xc0, 0x00}, // [MQTT-3.1.0-1] the first packet must be CONNECT
		"publish":        rawPublish(packet.V311, 0, "a", 0, "x"),
		"connect flags":  {0x11, 0x00},                                                     // reserved header flags [MQTT-2.1.3-1]
		"truncated":      {0x10, 0x20, 0x00, 0x04, 'M'},                                    // then EOF
		"length 5 bytes": {0x10, 0x80, 0x80, 0x80, 0x80, 0x01},                             // at most four bytes (1.5.5)
		"reserved flag":  append(connectBytes(t, "MQTT", 4)[:9:9], 0x03, 0, 30, 0, 1, 'x'), // [MQTT-3.1.2-3]
		"will qos 3":     append(connectBytes(t, "MQTT", 4)[:9:9], 0x1e, 0, 30, 0, 1, 'x'),
		"trailing bytes": append(connectBytes(t, "MQTT", 4), 0xff),
	} {
		t.Run(name, func(t *testing.T) {
			rc := dialRaw(t, tb.addr, packet.V311)
			if name == "trailing bytes" || name == "reserved flag" || name == "will qos 3" {
				// Fix the remaining length to cover what was changed.
				b = append([]byte(nil), b...)
				b[1] = byte(len(b) - 2)
			}
			rc.sendRaw(b)
			if name == "truncated" {
				rc.nc.(interface{ CloseWrite() error }).CloseWrite()
			}
			// No CONNACK for what is not a CONNECT; a malformed CONNECT is
			// closed (3.1.1 has no return code for it).
			rc.expectEOF()
		})
	}
	by.check()
}

func TestGarbageAfterConnect(t *testing.T) {
	eachVersion(t, Options{}, func(t *testing.T, tb *testBroker, v byte) {
		for name, c := range map[string]struct {
			b    []byte
			want packet.ReasonCode
		}{
			"reserved type 0":   {[]byte{0x00, 0x00}, packet.CodeMalformedPacket},
			"length 5 bytes":    {[]byte{0xc0, 0x80, 0x80, 0x80, 0x80, 0x01}, packet.CodeMalformedPacket}, // at most four bytes (1.5.5)
			"pingreq with body": {[]byte{0xc0, 0x01, 0x00}, packet.CodeMalformedPacket},
			"bad header flags":  {[]byte{0x82, 0x05, 0x00, 0x01, 0x00, 0x01, 'a'}, packet.CodeMalformedPacket}, // SUBSCRIBE flags 0 [MQTT-3.8.1-1]
			"publish qos 3":     {rawPublish(v, 0x06, "a", 1, "x"), packet.CodeMalformedPacket},                // [MQTT-3.3.1-4]
			"noise":             {[]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xde, 0xad}, 0},
		} {
			t.Run(name, func(t *testing.T) {
				rc := dialRaw(t, tb.addr, v)
				rc.connect("bad", true, nil)
				rc.sendRaw(c.b)
				rc.expectProtocolClose(c.want)
			})
		}
	})
}

func TestWrongProtocolName(t *testing.T) {
	tb := startBroker(t, Options{})
	by := newBystander(t, tb)
	// [MQTT-3.1.2-1] a wrong protocol name: the server may close at once,
	// or answer "unsupported protocol version" (3.1.1: return code 1;
	// 5.0: 0x84) and close.
	for _, c := range []struct {
		name  string
		level byte
		want  packet.ReasonCode // the CONNACK code if one is sent
		read  byte              // the version to decode the CONNACK with
	}{
		{"MQTX", 4, packet.RetUnacceptableVersion, packet.V311},
		{"MQIsdp", 4, packet.RetUnacceptableVersion, packet.V311},
		{"MQTT", 3, packet.RetUnacceptableVersion, packet.V311},
		{"MQIsdp", 5, packet.CodeUnsupportedProtocolVersion, packet.V5},
		{"mqtt", 5, packet.CodeUnsupportedProtocolVersion, packet.V5},
	} {
		t.Run(fmt.Sprintf("%s/%d", c.name, c.level), func(t *testing.T) {
			rc := dialRaw(t, tb.addr, c.read)
			rc.sendRaw(connectBytes(t, c.name, c.level))
			p, err := rc.tryRecv(5 * time.Second)
			if err != nil {
				rc.expectEOF() // closed without CONNACK: allowed
				return
			}
			ca, ok := p.(*packet.Connack)
			if !ok || ca.ReasonCode != c.want {
				t.Fatalf("got %T %+v, want CONNACK %#x or a closed connection", p, p, byte(c.want))
			}
			rc.expectEOF()
		})
	}
	by.check()
}

func TestUnsupportedProtocolLevel(t *testing.T) {
	tb := startBroker(t, Options{})
	by := newBystander(t, tb)
	for _, level := range []byte{0, 1, 2, 6, 7, 255} {
		t.Run(fmt.Sprint(level), func(t *testing.T) {
			// [MQTT-3.1.2-2] (3.1.1) an unsupported level gets CONNACK
			// with return code 1, then the connection closes. A level
			// Keel does not know gets the 3.1.1 form.
			rc := dialRaw(t, tb.addr, packet.V311)
			rc.sendRaw(connectBytes(t, "MQTT", level))
			p := rc.recv()
			if ca, ok := p.(*packet.Connack); !ok || ca.ReasonCode != packet.RetUnacceptableVersion || ca.SessionPresent {
				t.Fatalf("got %T %+v, want CONNACK return code 1", p, p)
			}
			rc.expectEOF()
		})
	}
	by.check()
}

func TestPacketTooLarge(t *testing.T) {
	const max = 1024
	eachVersion(t, Options{MaxPacketSize: max}, func(t *testing.T, tb *testBroker, v byte) {
		rc := dialRaw(t, tb.addr, v)
		ca := rc.connect("big", true, nil)
		if v == packet.V5 && (!ca.Props.Has(packet.PropMaximumPacketSize) || ca.Props.MaximumPacketSize != max) {
			t.Fatalf("got Maximum Packet Size %d (present %v) in CONNACK, want %d",
				ca.Props.MaximumPacketSize, ca.Props.Has(packet.PropMaximumPacketSize), max)
		}
		// A header claiming 200 MB, then 10 bytes: the claim alone is
		// refused [MQTT-3.2.2-15] (0x95), without waiting for the body.
		b := packet.AppendVarInt([]byte{0x30}, 200<<20)
		rc.sendRaw(append(b, "0123456789"...))
		rc.expectProtocolClose(packet.CodePacketTooLarge)

		// One byte over the limit is refused too; exactly the limit is
		// fine.
		for _, size := range []int{max, max + 1} {
			rc = dialRaw(t, tb.addr, v)
			rc.connect("big", true, nil)
			p := packet.Publish{Topic: "big/x"}
			hdr, _ := p.Append(nil, v)
			// The remaining length takes 2 bytes at this size, not 1.
			p.Payload = make([]byte, size-len(hdr)-1)
			b, _ := p.Append(nil, v)
			if len(b) != size {
				t.Fatalf("built a %d-byte PUBLISH, want %d", len(b), size)
			}
			rc.sendRaw(b)
			if size > max {
				rc.expectProtocolClose(packet.CodePacketTooLarge)
			} else {
				rc.ping()
			}
		}
	})
	t.Run("CONNECT", func(t *testing.T) {
		tb := startBroker(t, Options{MaxPacketSize: max})
		by := newBystander(t, tb)
		rc := dialRaw(t, tb.addr, packet.V5)
		b := packet.AppendVarInt([]byte{0x10}, 200<<20)
		rc.sendRaw(append(b, "0123456789"...))
		rc.expectEOF()
		by.check()
	})
}

// TestHugeLengthClaimCutByKeepAlive: with no size limit below the claim, a
// body that never comes is bounded by the keep alive, like silence.
func TestHugeLengthClaimCutByKeepAlive(t *testing.T) {
	t.Parallel()
	tb := startBroker(t, Options{})
	by := newBystander(t, tb)
	rc := dialRaw(t, tb.addr, packet.V5)
	rc.connect("slow", true, func(cp *packet.Connect) { cp.KeepAlive = 1 })
	b := packet.AppendVarInt([]byte{0x30}, 200<<20)
	rc.sendRaw(append(b, "0123456789"...))
	start := time.Now()
	rc.expectDisconnect(packet.CodeKeepAliveTimeout)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("closed after %v, want about 1.5 s (keep alive 1 s)", d.Round(time.Millisecond))
	}
	by.check()
}

func TestPublishToWildcardTopic(t *testing.T) {
	eachVersion(t, Options{}, func(t *testing.T, tb *testBroker, v byte) {
		watch := dialRaw(t, tb.addr, packet.V5)
		watch.connect("watch", true, nil)
		watch.subscribe(1, "wc/#", 1)
		for _, topic := range []string{"wc/+", "wc/#", "+", "wc/a+b"} {
			rc := dialRaw(t, tb.addr, v)
			rc.connect("bad", true, nil)
			// [MQTT-3.3.2-2] a topic name has no wildcards: 5.0 0x90.
			rc.send(&packet.Publish{QoS: 1, PacketID: 1, Topic: topic, Payload: []byte("x")})
			rc.expectProtocolClose(packet.CodeTopicNameInvalid)
		}
		// Nothing of it was routed.
		pub := dialRaw(t, tb.addr, packet.V5)
		pub.connect("pub", true, nil)
		pub.pubAcked(1, "wc/ok", "sentinel")
		watch.expectPub("wc/ok", "sentinel")
	})
}

func TestSubscribeInvalidFilter(t *testing.T) {
	eachVersion(t, Options{}, func(t *testing.T, tb *testBroker, v byte) {
		rc := dialRaw(t, tb.addr, v)
		rc.connect("bad", true, nil)
		// [MQTT-3.8.4-6] [MQTT-3.8.4-7]: a bad filter gets its own
		// failure code in SUBACK (3.1.1 0x80, 5.0 0x8F); the others in
		// the same SUBSCRIBE are granted, and the connection stays.
		bad := packet.ReasonCode(0x80)
		if v == packet.V5 {
			bad = packet.CodeTopicFilterInvalid
		}
		filters := []string{"a/#/b", "ok/+", "a+", "#/x", "$share/g", "$share/g+/x", "$share//x"}
		subs := make([]packet.Subscription, len(filters))
		want := make([]packet.ReasonCode, len(filters))
		for i, f := range filters {
			subs[i] = packet.Subscription{Filter: f, QoS: 1}
			want[i] = bad
		}
		want[1] = 1
		sa := rc.subscribeOpts(1, 0, subs...)
		if fmt.Sprint(sa.Codes) != fmt.Sprint(want) {
			t.Fatalf("got SUBACK codes %v, want %v", sa.Codes, want)
		}
		rc.ping()
		rc.pubSelf(2, "ok/x", "granted one works")
	})
}

func TestPacketIDZero(t *testing.T) {
	eachVersion(t, Options{}, func(t *testing.T, tb *testBroker, v byte) {
		for name, b := range map[string][]byte{
			"publish qos1": rawPublish(v, 0x02, "z/x", 0, "x"),
			"publish qos2": rawPublish(v, 0x04, "z/x", 0, "x"),
			"puback":       {0x40, 0x02, 0x00, 0x00},
			"pubrel":       {0x62, 0x02, 0x00, 0x00},
			"subscribe":    append([]byte{0x82, byte(6 + int(v/5))}, append([]byte{0, 0}, append(props0(v), 0, 1, 'a', 0)...)...),
			"unsubscribe":  append([]byte{0xa2, byte(5 + int(v/5))}, append([]byte{0, 0}, append(props0(v), 0, 1, 'a')...)...),
		} {
			t.Run(name, func(t *testing.T) {
				rc := dialRaw(t, tb.addr, v)
				rc.connect("zero", true, nil)
				// [MQTT-2.2.1-3] a packet id is non-zero: the codec calls
				// it a protocol error; any error code will do.
				rc.sendRaw(b)
				rc.expectProtocolClose(0)
			})
		}
	})
}

// props0 is an empty 5.0 property block, or nothing before 5.0.
func props0(v byte) []byte {
	if v == packet.V5 {
		return []byte{0}
	}
	return nil
}

func TestPubrelUnknownID(t *testing.T) {
	eachVersion(t, Options{}, func(t *testing.T, tb *testBroker, v byte) {
		rc := dialRaw(t, tb.addr, v)
		rc.connect("rel", true, nil)
		// PUBREL for an id the server does not hold is
		// still completed: PUBCOMP, in 5.0 with 0x92 (Packet Identifier
		// not found, 3.7.2.1).
		rc.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 42})
		a := rc.expectAck(packet.PUBCOMP, 42)
		want := packet.CodeSuccess
		if v == packet.V5 {
			want = packet.CodePacketIDNotFound
		}
		if a.ReasonCode != want {
			t.Fatalf("got PUBCOMP reason %#x, want %#x", byte(a.ReasonCode), byte(want))
		}
		// Unknown PUBACK/PUBREC/PUBCOMP are harmless too (5.0: PUBREC
		// for an unknown id gets PUBREL 0x92).
		rc.send(&packet.Ack{Kind: packet.PUBACK, PacketID: 43})
		rc.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: 44})
		if v == packet.V5 {
			rc.send(&packet.Ack{Kind: packet.PUBREC, PacketID: 45})
			if a := rc.expectAck(packet.PUBREL, 45); a.ReasonCode != packet.CodePacketIDNotFound {
				t.Fatalf("got PUBREL reason %#x, want 0x92", byte(a.ReasonCode))
			}
		}
		rc.ping()
	})
}

func TestSecondConnect(t *testing.T) {
	eachVersion(t, Options{}, func(t *testing.T, tb *testBroker, v byte) {
		watch := dialRaw(t, tb.addr, packet.V5)
		watch.connect("watch", true, nil)
		watch.subscribe(1, "sc/#", 1)
		rc := dialRaw(t, tb.addr, v)
		rc.connect("twice", true, withWill("sc/will", "protocol error", 0))
		// [MQTT-3.1.0-2] a second CONNECT is a protocol error: 5.0 0x82.
		rc.send(&packet.Connect{ProtocolLevel: v, CleanStart: true, ClientID: "twice"})
		rc.expectProtocolClose(packet.CodeProtocolError)
		// The connection ended without DISCONNECT: its will is published
		// [MQTT-3.1.2-8].
		watch.expectPub("sc/will", "protocol error")
	})
}

func TestServerOnlyPacketsFromClient(t *testing.T) {
	eachVersion(t, Options{}, func(t *testing.T, tb *testBroker, v byte) {
		for _, p := range []packet.Packet{
			&packet.Connack{},
			&packet.Suback{PacketID: 1, Codes: []packet.ReasonCode{0}},
			&packet.Unsuback{PacketID: 1, Codes: []packet.ReasonCode{0}},
			&packet.Pingresp{},
		} {
			t.Run(p.Type().String(), func(t *testing.T) {
				rc := dialRaw(t, tb.addr, v)
				rc.connect("wrongway", true, nil)
				rc.send(p)
				rc.expectProtocolClose(0)
			})
		}
	})
}

func TestConnectTimeout(t *testing.T) {
	tb := startBroker(t, Options{ConnectTimeout: 300 * time.Millisecond})
	by := newBystander(t, tb)
	// A connection that sends nothing, or half a CONNECT, is closed after
	// the connect timeout [MQTT-3.1.4-1 ("a reasonable amount of time")].
	silent := dialRaw(t, tb.addr, packet.V311)
	half := dialRaw(t, tb.addr, packet.V311)
	half.sendRaw(connectBytes(t, "MQTT", 4)[:6])
	start := time.Now()
	silent.expectEOF()
	half.expectEOF()
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("closed after %v, want about 300 ms", d.Round(time.Millisecond))
	}
	by.check()
}

func TestMalformedConnectProperties5(t *testing.T) {
	tb := startBroker(t, Options{})
	by := newBystander(t, tb)
	for name, set := range map[string]func(*packet.Connect){
		"receive maximum 0": func(cp *packet.Connect) {
			cp.Props.ReceiveMaximum = 0
			cp.Props.Set(packet.PropReceiveMaximum)
		},
		"maximum packet size 0": func(cp *packet.Connect) {
			cp.Props.MaximumPacketSize = 0
			cp.Props.Set(packet.PropMaximumPacketSize)
		},
		"request problem info 2": func(cp *packet.Connect) {
			cp.Props.RequestProblemInfo = 2
			cp.Props.Set(packet.PropRequestProblemInfo)
		},
	} {
		t.Run(name, func(t *testing.T) {
			rc := dialRaw(t, tb.addr, packet.V5)
			cp := &packet.Connect{ProtocolLevel: packet.V5, CleanStart: true, ClientID: "props"}
			set(cp)
			rc.send(cp)
			// A malformed CONNECT: CONNACK with an error code, then close
			// [MQTT-3.2.2-7] [MQTT-4.13.1-1]; or a plain close.
			p, err := rc.tryRecv(5 * time.Second)
			if err != nil {
				rc.expectEOF() // closed without CONNACK: allowed
				return
			}
			if ca, ok := p.(*packet.Connack); !ok || ca.ReasonCode < 0x80 {
				t.Fatalf("got %T %+v, want CONNACK with a code >= 0x80", p, p)
			}
			rc.expectEOF()
		})
	}
	by.check()
}

// TestTopicAliasNotCarriedOver: aliases belong to one network connection
// [MQTT-3.3.2-7]; using one set on an earlier connection is an error.
func TestTopicAliasNotCarriedOver(t *testing.T) {
	tb := startBroker(t, Options{})
	by := newBystander(t, tb)
	aliased := func(rc *rawClient, topic string) {
		p := &packet.Publish{QoS: 1, PacketID: 1, Topic: topic, Payload: []byte("x")}
		p.Props.TopicAlias = 3
		p.Props.Set(packet.PropTopicAlias)
		rc.send(p)
	}
	rc := dialRaw(t, tb.addr, packet.V5)
	rc.connect("alias", false, nil)
	aliased(rc, "ta/x")
	rc.expectAck(packet.PUBACK, 1)
	rc.disconnect(tb)
	rc = dialRaw(t, tb.addr, packet.V5)
	rc.connect("alias", false, nil)
	aliased(rc, "")
	rc.expectDisconnect(packet.CodeProtocolError)
	by.check()
}

// TestSlowConsumerCut: a subscriber that stops reading is disconnected once
// its queue passes Options.MaxOutboundBytes, rather than holding memory or
// the publisher; other clients keep working.
func TestSlowConsumerCut(t *testing.T) {
	tb := startBroker(t, Options{MaxOutboundBytes: 1 << 20})
	by := newBystander(t, tb)
	slow := dialRaw(t, tb.addr, packet.V311)
	slow.connect("slow", true, nil)
	slow.subscribe(1, "sc/#", 0)
	pub := dialRaw(t, tb.addr, packet.V311)
	pub.connect("pub", true, nil)

	// 64 MB: more than the socket buffers of both ends can hold, so the
	// broker's queue for slow must grow past 1 MB.
	payload := make([]byte, 64<<10)
	for i := 0; i < 1024; i++ {
		pub.send(&packet.Publish{Topic: "sc/x", Payload: payload})
	}
	pub.ping() // the publisher was never blocked for long
	// Draining what reached slow's socket ends in EOF or a reset, not in a
	// timeout.
	for {
		slow.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := packet.Read(slow.br, packet.V311, 0)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("slow subscriber still connected, want it cut")
			}
			break
		}
	}
	by.check()
}
