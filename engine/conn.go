package engine

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/time/rate"

	"github.com/keelmq/keel/engine/auth"
	"github.com/keelmq/keel/engine/clock"
	"github.com/keelmq/keel/engine/packet"
	"github.com/keelmq/keel/wal"
)

// conn is one client connection. One goroutine reads it (readLoop), one
// writes it (writeLoop). Whoever holds the writer role (mu.writing) writes
// the socket: the writeLoop, or sendNow's caller for a non-blocking write
// of small packets (see sendNow).
type conn struct {
	b    *Broker
	nc   net.Conn
	info ConnInfo
	raw  syscall.RawConn // the granted descriptor for sendNow (ConnInfo.Direct); nil: always queue
	log  *slog.Logger

	// Set before the connection is handed to the core; read-only after.
	version        byte
	bridge         bool // 3.1/3.1.1 CONNECT with Mosquitto's bridge flag (try_private): its subscriptions are No Local
	clientID       string
	keepAlive      uint16 // effective, after Server Keep Alive
	clientMaxPkt   uint32 // 5.0 Maximum Packet Size of the client; 0: none
	clientRecvMax  uint16 // 5.0 Receive Maximum of the client
	topicAliasMax  uint16 // ours, for aliases the client sends
	requestProblem bool   // 5.0 Request Problem Information

	// Topic aliases keel assigns the client (alias.go): set up by the
	// handshake, then used by the writer role's holder only.
	outAlias outAliases

	// Owned by the core goroutine.
	sess      *session
	connected bool // CONNACK accepted
	refused   bool // a publish was refused for a full queue: the rest is ignored (quota.go)
	group     grouping
	// dedupScope is the dedup window's scope name last built for this
	// connection ("c:"+client id or "u:"+username; route.go dedupScope),
	// kept so that a publish builds no string.
	dedupScope string

	// Read side only.
	aliases    map[uint16]string
	inflightIn atomic.Int32 // inbound QoS 1/2 publishes not yet acknowledged
	qos2Open   map[uint16]struct{}

	// Writer state.
	mu struct {
		sync.Mutex
		out      []outItem
		outBytes int
		closed   bool   // no more items accepted
		writing  bool   // the writer role is taken: only its holder writes nc
		pending  []byte // encoded bytes a direct write left: written first
	}
	direct  []byte        // sendNow's encode buffer, used by the writer role's holder
	wake    chan struct{} // cap 1: items queued, writer role released, or closing
	done    chan struct{} // closed when the writer has exited
	stopped atomic.Bool

	endReason atomic.Pointer[string] // why it ends (setEndReason)
	id        auth.Identity          // who the client is; set by the reader before CONNECT is posted
	acl       *auth.Cache            // its ACL decisions; nil without an Authorizer
	// Enhanced authentication (authz.go): the CONNECT's method and the
	// server's last data for the CONNACK; a re-authentication in
	// progress (reader only).
	authMethod  string
	authData    []byte
	reauth      auth.Exchange
	reauthSteps int
	present     bool          // CONNACK's session present; set by the core before it replies
	freed       freedIDs      // inbound QoS 2 ids the core refused, for the reader (quota.go)
	pubRate     *rate.Limiter // Options.MaxPublishRate; read side only (limits.go)
	preauth     int64         // bytes of Options.MaxPreauthBytes this connection holds; reader only (preauth.go)
}

// outItem is one thing for the writer to send.
type outItem struct {
	pkt   packet.Packet // a control packet, or nil
	pub   *outPub       // a delivery, or nil
	close bool          // close the connection after what came before
	decIn bool          // this is the ack that completes an inbound QoS 1/2 publish
}

// outPub is one delivery of a message to this connection.
type outPub struct {
	msg    *wal.Message
	qos    byte
	pid    uint16
	dup    bool
	retain bool
	subIDs []uint32
}

func newConn(b *Broker, nc net.Conn, info ConnInfo) *conn {
	remote := info.Remote
	if remote == nil {
		remote = nc.RemoteAddr()
	}
	c := &conn{
		b:    b,
		nc:   nc,
		info: info,
		// Every line of the connection names its remote address and
		// listener, and from the CONNECT on its client id (onConnect).
		log:  b.log.With("remote", remote.String(), "listener", info.Listener),
		wake: make(chan struct{}, 1),
		done: make(chan struct{}),
	}
	if canWriteNow {
		c.raw = info.Direct // granted by the listener, plain TCP only
	}
	return c
}

// send queues items for the writer. It never blocks; items sent after the
// connection closed are dropped. A client that lets its queue grow past the
// limit is disconnected (slow consumer) rather than allowed to hold memory.
func (c *conn) send(items ...outItem) {
	c.mu.Lock()
	if c.mu.closed {
		c.mu.Unlock()
		return
	}
	for _, it := range items {
		c.mu.out = append(c.mu.out, it)
		if it.pub != nil {
			c.mu.outBytes += len(it.pub.msg.Payload) + len(it.pub.msg.Topic)
		}
		if it.close {
			c.mu.closed = true
		}
	}
	queued := c.mu.outBytes
	c.mu.Unlock()
	if queued > c.b.opts.MaxOutboundBytes {
		c.log.Warn("slow consumer: disconnecting", "queued_bytes", queued)
		c.setEndReason("slow consumer")
		c.kill()
		return
	}
	c.wakeWriter()
}

func (c *conn) wakeWriter() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// sendNow is send for control packets released on the commit path (acks,
// SUBACK and the like: never a close; release passes no deliveries, and one
// would be encoded as the writeLoop does, topic alias included). If nothing is
// queued and nobody is writing, the caller takes the writer role and
// writes them itself with one non-blocking write, sparing the writeLoop's
// wakeup: on a synchronous publisher's path that wakeup is a fifth of the
// time from fsync to PUBACK (bench/ANALYSIS.md). Whatever the socket does
// not take at once is left to the writeLoop, ahead of anything queued
// later, so the bytes on the wire keep their order. sendNow never blocks.
// The writeLoop's last write deadline stays set: once it has passed (a
// connection quiet for WriteTimeout), the direct write is refused and the
// writeLoop sends, with a fresh deadline; the next ones go direct again.
func (c *conn) sendNow(items []outItem) {
	if c.raw == nil {
		c.send(items...)
		return
	}
	c.mu.Lock()
	if c.mu.closed || c.mu.writing || len(c.mu.out) > 0 || len(c.mu.pending) > 0 {
		c.mu.Unlock()
		c.send(items...)
		return
	}
	c.mu.writing = true
	c.mu.Unlock()

	buf := c.direct[:0]
	var decs int32
	for i := range items {
		var err error
		if buf, err = c.encode(buf, &items[i]); err != nil {
			c.log.Error("encode", "err", err)
		}
		if items[i].decIn {
			decs++
		}
	}
	if decs > 0 {
		c.inflightIn.Add(-decs) // as in writeLoop: before the acks leave
	}
	n := writeNow(c.raw, buf)
	c.countOut(n)

	c.mu.Lock()
	c.mu.writing = false
	if n < len(buf) && !c.mu.closed {
		c.mu.pending = append(c.mu.pending, buf[n:]...)
	}
	wake := c.mu.closed || len(c.mu.out) > 0 || len(c.mu.pending) > 0
	c.mu.Unlock()
	if cap(buf) <= 4<<10 {
		c.direct = buf[:0]
	}
	if wake {
		c.wakeWriter()
	}
}

// kill closes the socket now, dropping what is queued.
func (c *conn) kill() {
	c.mu.Lock()
	c.mu.closed = true
	c.mu.out = nil
	c.mu.pending = nil
	c.mu.Unlock()
	c.nc.Close()
	c.wakeWriter()
}

// writeLoop encodes and writes queued items; it owns the socket's write
// side. Buffers are swapped out under the lock and written unlocked.
func (c *conn) writeLoop() {
	defer close(c.done)
	var spare []outItem
	buf := make([]byte, 0, 64<<10)
	for {
		c.mu.Lock()
		if c.mu.writing || len(c.mu.out) == 0 && len(c.mu.pending) == 0 {
			// Idle, or a direct write holds the writer role: it wakes us
			// when it is done and something is left.
			exit := c.mu.closed && !c.mu.writing && len(c.mu.out) == 0 && len(c.mu.pending) == 0
			c.mu.Unlock()
			if exit {
				c.nc.Close()
				return
			}
			<-c.wake
			continue
		}
		items := c.mu.out
		c.mu.out = spare[:0]
		c.mu.outBytes = 0
		buf = append(buf[:0], c.mu.pending...)
		c.mu.pending = c.mu.pending[:0]
		c.mu.writing = true
		c.mu.Unlock()
		closeAfter := false
		var decs int32
		for i := range items {
			it := &items[i]
			if it.close {
				closeAfter = true
				break
			}
			var err error
			buf, err = c.encode(buf, it)
			if err != nil {
				c.log.Error("encode", "err", err)
			}
			if it.decIn {
				decs++
			}
			items[i] = outItem{}
		}
		if decs > 0 {
			// Free the Receive Maximum slots before the acks leave: a
			// client may send its next PUBLISH the moment it reads one,
			// and the reader must not count the acknowledged one still.
			c.inflightIn.Add(-decs)
		}
		if len(buf) > 0 {
			c.nc.SetWriteDeadline(time.Now().Add(c.b.opts.WriteTimeout))
			n, err := c.nc.Write(buf)
			c.countOut(n)
			if err != nil {
				c.nc.Close()
				c.mu.Lock()
				c.mu.closed = true
				c.mu.writing = false
				c.mu.out = nil
				c.mu.pending = nil
				c.mu.Unlock()
				return
			}
			if len(buf) > 1<<20 {
				buf = make([]byte, 0, 64<<10)
			}
		}
		c.mu.Lock()
		c.mu.writing = false
		c.mu.Unlock()
		spare = items
		if closeAfter {
			c.nc.Close()
			return
		}
	}
}

func (c *conn) encode(buf []byte, it *outItem) ([]byte, error) {
	if it.pkt != nil {
		return it.pkt.Append(buf, c.version)
	}
	p := it.pub
	m := p.msg
	pub := packet.Publish{
		Dup:      p.dup,
		QoS:      p.qos,
		Retain:   p.retain,
		Topic:    m.Topic,
		PacketID: p.pid,
		Payload:  m.Payload,
	}
	c.b.stats.sent.Add(1)
	if c.version == packet.V5 {
		setMessageProps(&pub.Props, m, p.subIDs, c.b.opts.Clock)
		return c.outAlias.appendPublish(buf, &pub, c.clientMaxPkt)
	}
	return pub.Append(buf, c.version)
}

// window is how many outbound QoS 1/2 messages may be in flight to c.
func (c *conn) window() int {
	// [MQTT-3.3.4-9] the client's Receive Maximum bounds ours.
	return int(min(c.b.opts.MaxInflight, c.clientRecvMax))
}

// fits reports whether m can be sent to c at qos within the client's
// Maximum Packet Size [MQTT-3.1.2-24]; a message that does not fit is
// discarded for that client [MQTT-3.1.2-25].
func (c *conn) fits(m *wal.Message, qos byte, subIDs []uint32) bool {
	if c.clientMaxPkt == 0 {
		return true
	}
	pub := packet.Publish{QoS: qos, Topic: m.Topic, PacketID: 1, Payload: m.Payload}
	setMessageProps(&pub.Props, m, subIDs, c.b.opts.Clock)
	n, err := pub.Size(c.version)
	return err == nil && n <= int(c.clientMaxPkt)
}

// setMessageProps copies a stored message's 5.0 properties onto an outgoing
// PUBLISH [MQTT-3.3.2-4] (payload format), [MQTT-3.3.2-6] (remaining expiry).
func setMessageProps(pr *packet.Properties, m *wal.Message, subIDs []uint32, clk clock.Clock) {
	if m.HasPayloadFormat {
		pr.PayloadFormat = m.PayloadFormat
		pr.Set(packet.PropPayloadFormat)
	}
	if m.ExpireAt != 0 {
		// The clock is read only here: most messages have no expiry.
		left := (m.ExpireAt - clk.Now().UnixMilli() + 999) / 1000
		if left < 1 {
			left = 1
		}
		pr.MessageExpiry = uint32(left)
		pr.Set(packet.PropMessageExpiry)
	}
	if m.ContentType != "" {
		pr.ContentType = m.ContentType
		pr.Set(packet.PropContentType)
	}
	if m.ResponseTopic != "" {
		pr.ResponseTopic = m.ResponseTopic
		pr.Set(packet.PropResponseTopic)
	}
	if m.CorrelationData != nil {
		pr.CorrelationData = m.CorrelationData
		pr.Set(packet.PropCorrelationData)
	}
	for _, u := range m.User {
		pr.User = append(pr.User, packet.UserProperty{Key: u.Key, Value: u.Value})
	}
	pr.SubscriptionIDs = subIDs
}

// serve runs one connection to its end.
func (c *conn) serve() {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("connection panic", "panic", r)
			c.kill()
		}
	}()
	go c.writeLoop()
	defer func() {
		<-c.done
	}()

	var rd io.Reader = c.nc
	if c.info.BytesIn != nil {
		rd = countingReader{c.nc, c.info.BytesIn}
	}
	br := bufio.NewReaderSize(rd, 16<<10)
	dl := time.Now().Add(c.b.opts.ConnectTimeout)
	if d := c.info.Deadline; !d.IsZero() && d.Before(dl) {
		dl = d
	}
	c.nc.SetReadDeadline(dl)
	defer c.releasePreauth()
	p, ok, err := c.readConnect(br) // preauth.go
	if !ok {
		return
	}
	if err != nil {
		c.refuseConnect(p, err)
		return
	}
	cp, ok := p.(*packet.Connect)
	if !ok {
		// [MQTT-3.1.0-1] the first packet must be CONNECT.
		c.kill()
		return
	}
	if !c.handshake(cp) || !c.authenticate(cp, br) {
		return
	}
	ev := event{kind: evConnect, c: c, pkt: cp}
	reply := make(chan bool, 1)
	ev.reply = reply
	c.b.post(ev)
	var accepted bool
	select {
	case accepted = <-reply:
	case <-c.b.quit: // the core stopped before it took the CONNECT
	}
	c.releasePreauth() // the CONNECT is decided
	if !accepted {
		c.mu.Lock()
		answered := c.mu.closed // the core refused with a CONNACK and a close
		c.mu.Unlock()
		if !answered {
			c.kill()
		}
		return
	}
	c.b.connLog.log(c.log, "client connected", "username", c.id.Username, "protocol", c.version,
		"clean_start", cp.CleanStart, "session_present", c.present, "keep_alive", c.keepAlive)
	graceful, willOnDisconnect := c.readLoop(br)
	c.b.post(event{kind: evClosed, c: c, graceful: graceful, will: willOnDisconnect})
	c.b.connLog.log(c.log, "client disconnected", "reason", c.endReasonOr("connection lost"))
}

// refuseConnect answers a CONNECT that failed to decode.
func (c *conn) refuseConnect(p packet.Packet, err error) {
	var pe *packet.Error
	if errors.As(err, &pe) {
		cp, _ := p.(*packet.Connect)
		if pe.Code == packet.CodeUnsupportedProtocolVersion {
			// [MQTT-3.1.2-2] unsupported level: CONNACK 0x01 (3.1.1) or
			// 0x84 (5.0), then close.
			if cp != nil && cp.ProtocolLevel == packet.V5 {
				c.version = packet.V5
				c.send(outItem{pkt: &packet.Connack{ReasonCode: packet.CodeUnsupportedProtocolVersion}}, outItem{close: true})
			} else {
				c.version = packet.V311
				c.send(outItem{pkt: &packet.Connack{ReasonCode: packet.RetUnacceptableVersion}}, outItem{close: true})
			}
			return
		}
		if cp != nil && cp.ProtocolLevel == packet.V5 {
			c.version = packet.V5
			c.send(outItem{pkt: &packet.Connack{ReasonCode: pe.Code}}, outItem{close: true})
			return
		}
	}
	if err != io.EOF {
		c.log.Debug("bad CONNECT", "err", err)
	}
	c.kill()
}

// handshake validates CONNECT fields the codec cannot judge alone and
// fixes the connection's parameters. It answers and closes on refusal.
func (c *conn) handshake(cp *packet.Connect) bool {
	c.version = cp.ProtocolLevel
	c.bridge = cp.Bridge
	refuse := func(v5, v3 packet.ReasonCode) bool {
		code := v3
		if c.version == packet.V5 {
			code = v5
		}
		c.send(outItem{pkt: &packet.Connack{ReasonCode: code}}, outItem{close: true})
		return false
	}
	if c.info.OverRate {
		return refuse(packet.CodeConnectionRateExceeded, packet.RetServerUnavailable)
	}
	if c.info.OverLimit {
		// Over max_connections: 5.0 Quota exceeded, 3.1.1 Server unavailable.
		return refuse(packet.CodeQuotaExceeded, packet.RetServerUnavailable)
	}
	if cp.ClientID == "" {
		if c.version != packet.V5 && !cp.CleanStart {
			// [MQTT-3.1.3-8] empty id with clean session 0: return code 2.
			return refuse(packet.CodeClientIDNotValid, packet.RetIdentifierRejected)
		}
		if c.version == packet.V31 {
			// 3.1 requires 1..23 characters.
			return refuse(packet.CodeClientIDNotValid, packet.RetIdentifierRejected)
		}
	}
	if cp.WillFlag {
		if packet.ValidTopicName(cp.WillTopic) != nil {
			return refuse(packet.CodeTopicNameInvalid, packet.RetNotAuthorized)
		}
		if c.version == packet.V5 && cp.WillQoS > c.b.opts.MaximumQoS {
			// [MQTT-3.2.2-12] a will above our Maximum QoS: 0x9B.
			return refuse(packet.CodeQoSNotSupported, packet.RetNotAuthorized)
		}
	}
	if c.info.IdentityIsUsername {
		// The listener's certificate identity is the username
		// (use_identity_as_username / use_subject_as_username).
		if c.info.Identity == "" {
			return refuse(packet.CodeBadUsernameOrPassword, packet.RetBadUsernameOrPassword)
		}
		cp.Username, cp.UsernameFlag = c.info.Identity, true
	}
	c.keepAlive = cp.KeepAlive
	if max := c.b.opts.MaxKeepAlive; max > 0 && (c.keepAlive == 0 || int(c.keepAlive) > max) {
		switch {
		case c.version == packet.V5:
			c.keepAlive = uint16(max) // sent as Server Keep Alive [MQTT-3.2.2-21]
		case c.keepAlive > 0:
			// 3.1.1 has no way to tell the client another keep alive:
			// above the limit it is refused, return code 2, as Mosquitto
			// does. 0 (none) is taken as asked (see Options.MaxKeepAlive).
			c.b.stats.reasons.refuse(refuseKeepAlive)
			return refuse(packet.CodeUnspecifiedError, packet.RetIdentifierRejected)
		}
	}
	c.clientRecvMax = 65535
	if c.version == packet.V5 {
		if cp.Props.Has(packet.PropReceiveMaximum) {
			c.clientRecvMax = cp.Props.ReceiveMaximum
		}
		if cp.Props.Has(packet.PropMaximumPacketSize) {
			c.clientMaxPkt = cp.Props.MaximumPacketSize
		}
		c.requestProblem = !cp.Props.Has(packet.PropRequestProblemInfo) || cp.Props.RequestProblemInfo == 1
		if cp.Props.Has(packet.PropTopicAliasMaximum) && !c.b.opts.NoServerTopicAliases {
			c.outAlias.init(cp.Props.TopicAliasMaximum)
		}
	}
	c.topicAliasMax = c.b.opts.TopicAliasMaximum
	c.pubRate = c.b.publishLimiter()
	return true
}

// readLoop reads packets until the connection ends. graceful reports a
// DISCONNECT; will reports whether the will must still be published (5.0
// DISCONNECT 0x04).
func (c *conn) readLoop(br *bufio.Reader) (graceful, will bool) {
	for {
		if c.keepAlive > 0 {
			// [MQTT-3.1.2-22] (3.1.1: [MQTT-3.1.2-24]) one and a half
			// times the keep alive.
			c.nc.SetReadDeadline(time.Now().Add(time.Duration(c.keepAlive) * 1500 * time.Millisecond))
		} else {
			c.nc.SetReadDeadline(time.Time{})
		}
		p, err := packet.Read(br, c.version, c.b.opts.MaxPacketSize)
		if err != nil {
			var pe *packet.Error
			if errors.As(err, &pe) {
				c.protocolError(pe.Code, pe.Msg)
			} else if ne, ok := err.(net.Error); ok && ne.Timeout() && c.keepAlive > 0 {
				c.protocolError(packet.CodeKeepAliveTimeout, "keep alive timeout")
			} else {
				if err == io.EOF {
					c.setEndReason("connection closed by the client without DISCONNECT")
				}
				c.kill()
			}
			return false, true
		}
		c.b.stats.recvPackets.Add(1)
		switch p := p.(type) {
		case *packet.Publish:
			c.takeFreedQoS2()
			_, resend := c.qos2Open[p.PacketID] // a QoS 2 flow already received
			resend = resend && p.QoS == 2
			if code, msg := c.checkPublish(p); code != 0 {
				c.protocolError(code, msg)
				return false, true
			}
			ev := event{kind: evPublish, c: c, pkt: p}
			// A resend of a QoS 2 PUBLISH already accepted is answered as
			// one [MQTT-4.3.3-10], even if the rules changed meanwhile.
			if !resend && !c.allow(p.Topic, auth.Write) {
				ev.denied = deniedOne
				c.deniedPublish(p)
			} else if !resend && c.pubRate != nil {
				ev.overRate = c.throttlePublish(p) // limits.go
			}
			c.b.post(ev)
		case *packet.Ack:
			if p.Kind == packet.PUBREL {
				// The inbound QoS 2 flow stops counting against our
				// Receive Maximum once the client releases it.
				if _, open := c.qos2Open[p.PacketID]; open {
					delete(c.qos2Open, p.PacketID)
					c.inflightIn.Add(-1)
				}
			}
			c.b.post(event{kind: evAck, c: c, pkt: p})
		case *packet.Subscribe:
			ev := event{kind: evSubscribe, c: c, pkt: p}
			for i, sub := range p.Subs {
				filter := sub.Filter
				if _, inner, shared := packet.ParseShared(filter); shared {
					filter = inner // checked without "$share/group/"
				}
				if !c.allow(filter, auth.Subscribe) {
					if ev.denied == nil {
						ev.denied = make([]bool, len(p.Subs))
					}
					ev.denied[i] = true
				}
			}
			c.b.post(ev)
		case *packet.Unsubscribe:
			c.b.post(event{kind: evUnsubscribe, c: c, pkt: p})
		case *packet.Pingreq:
			c.send(outItem{pkt: &packet.Pingresp{}})
		case *packet.Disconnect:
			c.setEndReason("DISCONNECT " + p.ReasonCode.String())
			if c.version == packet.V5 && p.Props.Has(packet.PropSessionExpiry) {
				c.b.post(event{kind: evSessionExpiry, c: c, pkt: p})
			}
			c.kill()
			return true, p.ReasonCode == packet.CodeDisconnectWithWill
		case *packet.Auth:
			if !c.reauthenticate(p) {
				return false, true
			}
		default:
			// [MQTT-3.1.0-2] a second CONNECT, or a server-to-client packet.
			c.protocolError(packet.CodeProtocolError, "unexpected "+p.Type().String())
			return false, true
		}
	}
}

// checkPublish validates an inbound PUBLISH: topic, aliases, receive
// maximum. It resolves a topic alias in place.
func (c *conn) checkPublish(p *packet.Publish) (packet.ReasonCode, string) {
	if c.version == packet.V5 && p.Props.Has(packet.PropTopicAlias) {
		a := p.Props.TopicAlias
		if a == 0 || a > c.topicAliasMax {
			// [MQTT-3.3.2-9]/[MQTT-3.3.2-10]
			return packet.CodeTopicAliasInvalid, "topic alias out of range"
		}
		if c.aliases == nil {
			c.aliases = make(map[uint16]string)
		}
		if p.Topic == "" {
			t, ok := c.aliases[a]
			if !ok {
				return packet.CodeProtocolError, "unknown topic alias"
			}
			p.Topic = t
		} else {
			c.aliases[a] = p.Topic
		}
		p.Props.Clear(packet.PropTopicAlias)
	}
	if err := packet.ValidTopicName(p.Topic); err != nil {
		// [MQTT-3.3.2-2] no wildcards in a topic name.
		return packet.CodeTopicNameInvalid, err.Error()
	}
	if p.QoS > c.b.opts.MaximumQoS && c.version == packet.V5 {
		return packet.CodeQoSNotSupported, "QoS above maximum"
	}
	if p.QoS > 0 {
		if p.QoS == 2 {
			if c.qos2Open == nil {
				c.qos2Open = make(map[uint16]struct{})
			}
			if _, open := c.qos2Open[p.PacketID]; open {
				return 0, "" // a resend of a QoS 2 publish we hold: not counted again
			}
			c.qos2Open[p.PacketID] = struct{}{}
		}
		if n := c.inflightIn.Add(1); c.version == packet.V5 && n > int32(c.b.opts.ReceiveMaximum) {
			// [MQTT-3.3.4-7] more unacknowledged QoS>0 publishes than our
			// Receive Maximum.
			return packet.CodeReceiveMaximumExceeded, "receive maximum exceeded"
		}
	}
	return 0, ""
}

// protocolError ends the connection for a malformed or forbidden packet:
// 5.0 clients get DISCONNECT with the reason code [MQTT-4.13.1-1].
func (c *conn) protocolError(code packet.ReasonCode, msg string) {
	c.setEndReason("protocol error: " + code.String() + ": " + msg)
	c.log.Debug("closing connection", "reason", code.String(), "detail", msg)
	if c.version == packet.V5 && code >= 0x80 {
		d := &packet.Disconnect{ReasonCode: code}
		c.send(outItem{pkt: d}, outItem{close: true})
		// Give the writer a moment to flush the DISCONNECT before the
		// read side is abandoned; the writer closes the socket.
		select {
		case <-c.done:
		case <-time.After(time.Second):
			c.kill()
		}
		return
	}
	c.kill()
}

// countingReader adds what it reads to n (ConnInfo.BytesIn).
type countingReader struct {
	r io.Reader
	n *atomic.Uint64
}

func (cr countingReader) Read(p []byte) (int, error) {
	k, err := cr.r.Read(p)
	cr.n.Add(uint64(k))
	return k, err
}

// countOut adds n written bytes to ConnInfo.BytesOut.
func (c *conn) countOut(n int) {
	if c.info.BytesOut != nil && n > 0 {
		c.info.BytesOut.Add(uint64(n))
	}
}
