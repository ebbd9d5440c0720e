package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/keelmq/keel/engine/packet"
)

// The test client. It keeps its session state across network connections
// exactly as MQTT says a client must, because the whole point is to check
// the broker's half of resumption:
//
//   - outbound QoS 1/2 PUBLISH not yet acknowledged is resent on a resumed
//     session with DUP=1 and the same packet id; an id that got PUBREC is
//     resent as PUBREL, never as PUBLISH [MQTT-4.4.0-1];
//   - an inbound QoS 2 packet id is delivered once and remembered until its
//     PUBREL, answered with PUBCOMP [MQTT-4.3.3-9] [MQTT-4.3.3-10];
//   - an inbound QoS 1 PUBLISH is delivered every time it arrives;
//   - if the broker answers "session present = 0" for a session it had
//     acknowledged, that is a lost session: counted, and the client then
//     discards its own session state as the spec requires [MQTT-3.2.2-5]
//     (5.0 section 3.2.2.1.1) and subscribes again.
//
// Each network connection has one reader goroutine; writes are serialized
// by a mutex around conn.Write.

const (
	connectTimeout = 5 * time.Second
	writeTimeout   = 5 * time.Second
	subackTimeout  = 10 * time.Second
	maxBackoff     = 200 * time.Millisecond
)

// conn is one network connection of a client.
type conn struct {
	nc      net.Conn
	br      *bufio.Reader
	version byte

	willGen uint32 // generation carried by this connection's will
	n       int    // this connection's number for its client, from 1

	dead   chan struct{}       // closed when the reader stops
	suback chan *packet.Suback // SUBACKs, for the subscribing goroutine

	wmu  sync.Mutex
	wbuf []byte // guarded by wmu
}

func (cn *conn) write(p packet.Packet) error {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	b, err := p.Append(cn.wbuf[:0], cn.version)
	if err != nil {
		return fmt.Errorf("encode %T: %w", p, err)
	}
	cn.wbuf = b
	cn.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := cn.nc.Write(b); err != nil {
		cn.nc.Close() // the reader sees it and ends the connection
		return err
	}
	return nil
}

// outMsg is one outbound QoS 1/2 PUBLISH in flight.
type outMsg struct {
	id       uint16
	key      msgKey
	topic    string
	retain   bool
	payload  []byte
	released bool // PUBREC seen (QoS 2): resend PUBREL, never PUBLISH
}

// willSpec makes a client connect with a will whose payload carries the
// connection generation.
type willSpec struct {
	pub   uint32
	topic string
}

type clientOpts struct {
	id    string
	clean bool     // non-persistent: no session expected across connections
	subs  []string // filters, subscribed once per session
	// deliver is called by the reader for each PUBLISH handed to the
	// application (see the rules above), before it is acknowledged. ok
	// reports whether the payload is one of this run's.
	deliver func(cn *conn, p *packet.Publish, k msgKey, ok bool)
	// onAccept is called once per outbound message the broker accepted
	// (PUBACK, or PUBREC for QoS 2).
	onAccept func(m *outMsg)
	will     *willSpec
}

type client struct {
	r *run
	clientOpts

	subscribed chan struct{} // closed after the first successful SUBACK
	subOnce    sync.Once
	space      chan struct{} // a token after the outbound window shrank

	mu struct {
		sync.Mutex
		hadSession bool // a CONNACK acknowledged this persistent session
		lastLost   bool // the last CONNACK found the session lost
		conns      int  // connections that got a CONNACK
		subscribed bool // SUBACK seen in the current session
		out        []*outMsg
		lastID     uint16
		inQoS2     map[uint16]msgKey // received, PUBREL not yet seen
		window     int
		willGen    uint32
	}
}

func (r *run) newClient(o clientOpts) *client {
	c := &client{
		r:          r,
		clientOpts: o,
		subscribed: make(chan struct{}),
		space:      make(chan struct{}, 1),
	}
	c.mu.inQoS2 = make(map[uint16]msgKey)
	c.mu.window = r.cfg.Window
	return c
}

// connectPacket builds the CONNECT; a will gets a fresh generation, which
// it returns.
func (c *client) connectPacket() (*packet.Connect, uint32) {
	p := &packet.Connect{
		ProtocolName:  "MQTT",
		ProtocolLevel: c.r.cfg.Version,
		CleanStart:    c.clean,
		ClientID:      c.id,
	}
	if c.r.cfg.Version == packet.V5 && !c.clean {
		p.Props.SessionExpiry = 0xFFFFFFFF // never expires
		p.Props.Set(packet.PropSessionExpiry)
	}
	var gen uint32
	if c.will != nil {
		c.mu.Lock()
		c.mu.willGen++
		gen = c.mu.willGen
		c.mu.Unlock()
		p.WillFlag = true
		p.WillQoS = c.r.cfg.QoS
		p.WillTopic = c.will.topic
		p.WillPayload = encodePayload(nil, c.r.nonce, msgKey{c.will.pub, gen}, c.r.cfg.PayloadSize)
	}
	return p, gen
}

// dial opens one connection and performs CONNECT/CONNACK.
func (c *client) dial(ctx context.Context) (*conn, *packet.Connack, error) {
	d := net.Dialer{Timeout: time.Second}
	nc, err := d.DialContext(ctx, "tcp", c.r.addr)
	if err != nil {
		return nil, nil, err
	}
	cn := &conn{
		nc:      nc,
		br:      bufio.NewReader(nc),
		version: c.r.cfg.Version,
		dead:    make(chan struct{}),
		suback:  make(chan *packet.Suback, 1),
	}
	nc.SetDeadline(time.Now().Add(connectTimeout))
	var connect *packet.Connect
	connect, cn.willGen = c.connectPacket()
	if err := cn.write(connect); err != nil {
		nc.Close()
		return nil, nil, err
	}
	p, err := packet.Read(cn.br, cn.version, 0)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	ack, ok := p.(*packet.Connack)
	if !ok {
		nc.Close()
		c.r.anomaly("connack_expected", "%s: got %T before CONNACK", c.id, p)
		return nil, nil, fmt.Errorf("got %T, want CONNACK", p)
	}
	nc.SetDeadline(time.Time{})
	return cn, ack, nil
}

// connect connects (retrying with backoff until ctx ends), checks session
// present, starts the reader, resumes the session and subscribes if the
// session has no subscription yet. The caller must end the connection
// with close.
func (c *client) connect(ctx context.Context) (*conn, error) {
	backoff := 2 * time.Millisecond
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(backoff/2 + rand.N(backoff))
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
			backoff = min(2*backoff, maxBackoff)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		cn, ack, err := c.dial(ctx)
		if err != nil {
			continue
		}
		if ack.ReasonCode != 0 {
			c.r.anomaly("connack_refused", "%s: CONNACK refused with code %#x", c.id, byte(ack.ReasonCode))
			cn.nc.Close()
			continue
		}
		if err := c.establish(ctx, cn, ack); err != nil {
			c.close(cn)
			if errors.Is(err, errFatal) {
				c.r.problem("%s: %v", c.id, err)
				return nil, err
			}
			continue
		}
		return cn, nil
	}
}

// errFatal marks a failure that retrying cannot fix (a broker that refuses
// the test's QoS).
var errFatal = errors.New("fatal")

func (c *client) establish(ctx context.Context, cn *conn, ack *packet.Connack) error {
	if c.r.cfg.Version == packet.V5 && ack.Props.Has(packet.PropMaximumQoS) && ack.Props.MaximumQoS < c.r.cfg.QoS {
		return fmt.Errorf("%w: broker's Maximum QoS is %d, test needs %d", errFatal, ack.Props.MaximumQoS, c.r.cfg.QoS)
	}
	c.mu.Lock()
	c.mu.conns++
	cn.n = c.mu.conns
	lost := false
	if c.clean {
		if ack.SessionPresent {
			c.r.anomaly("clean_session_present", "%s: session present = 1 on a clean start", c.id)
		}
		c.discardLocked()
	} else {
		if c.mu.hadSession && !ack.SessionPresent {
			lost = true
			c.discardLocked()
		}
		c.mu.lastLost = lost
		c.mu.hadSession = true
	}
	c.mu.window = c.r.cfg.Window
	if c.r.cfg.Version == packet.V5 && ack.Props.Has(packet.PropReceiveMaximum) && int(ack.Props.ReceiveMaximum) < c.mu.window {
		c.mu.window = int(ack.Props.ReceiveMaximum)
	}
	// Resume: resend in the original order [MQTT-4.6.0-1].
	var resend []packet.Packet
	for _, m := range c.mu.out {
		if m.released {
			resend = append(resend, &packet.Ack{Kind: packet.PUBREL, PacketID: m.id})
		} else {
			resend = append(resend, m.publish(c.r.cfg.QoS, true))
		}
	}
	needSub := !c.mu.subscribed && len(c.subs) > 0
	c.mu.Unlock()
	if lost {
		c.r.sessionLost(c.id)
	}
	select {
	case c.space <- struct{}{}:
	default:
	}

	go c.readLoop(cn) // owner: close waits for cn.dead

	for _, p := range resend {
		if err := cn.write(p); err != nil {
			return err
		}
	}
	if needSub {
		return c.subscribe(ctx, cn)
	}
	return nil
}

// discardLocked drops the client's session state: the broker has none.
//
// REQUIRES: c.mu held.
func (c *client) discardLocked() {
	c.mu.out = nil
	clear(c.mu.inQoS2)
	c.mu.subscribed = false
}

func (m *outMsg) publish(qos byte, dup bool) *packet.Publish {
	return &packet.Publish{Dup: dup, QoS: qos, Retain: m.retain, Topic: m.topic, PacketID: m.id, Payload: m.payload}
}

// allocIDLocked returns a packet id not in use by an outbound message.
//
// REQUIRES: c.mu held; fewer than 65535 messages in flight.
func (c *client) allocIDLocked() uint16 {
	for {
		c.mu.lastID++
		if c.mu.lastID == 0 {
			c.mu.lastID = 1
		}
		inUse := false
		for _, m := range c.mu.out {
			if m.id == c.mu.lastID {
				inUse = true
				break
			}
		}
		if !inUse {
			return c.mu.lastID
		}
	}
}

func (c *client) subscribe(ctx context.Context, cn *conn) error {
	c.mu.Lock()
	id := c.allocIDLocked()
	c.mu.Unlock()
	sub := &packet.Subscribe{PacketID: id}
	for _, f := range c.subs {
		sub.Subs = append(sub.Subs, packet.Subscription{Filter: f, QoS: c.r.cfg.QoS})
	}
	if err := cn.write(sub); err != nil {
		return err
	}
	t := time.NewTimer(subackTimeout)
	defer t.Stop()
	for {
		select {
		case sa := <-cn.suback:
			if sa.PacketID != id {
				c.r.anomaly("suback_id", "%s: SUBACK for id %d, want %d", c.id, sa.PacketID, id)
				continue
			}
			for i, code := range sa.Codes {
				if code >= 0x80 || byte(code) < c.r.cfg.QoS {
					return fmt.Errorf("%w: SUBACK for %q: code %#x, want granted QoS %d", errFatal, c.subs[min(i, len(c.subs)-1)], byte(code), c.r.cfg.QoS)
				}
			}
			c.mu.Lock()
			c.mu.subscribed = true
			c.mu.Unlock()
			c.subOnce.Do(func() { close(c.subscribed) })
			return nil
		case <-cn.dead:
			return errors.New("connection lost before SUBACK")
		case <-t.C:
			return errors.New("no SUBACK")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// close ends the connection and waits for its reader.
func (c *client) close(cn *conn) {
	cn.nc.Close()
	<-cn.dead
}

// disconnect sends DISCONNECT and closes: a normal disconnection, which
// keeps a persistent session and discards the will.
func (c *client) disconnect(cn *conn) {
	cn.write(&packet.Disconnect{})
	c.close(cn)
}

func (c *client) readLoop(cn *conn) {
	defer close(cn.dead)
	for {
		p, err := packet.Read(cn.br, cn.version, 0)
		if err != nil {
			var perr *packet.Error
			if errors.As(err, &perr) {
				c.r.anomaly("malformed_from_broker", "%s: %v", c.id, err)
			}
			return
		}
		switch p := p.(type) {
		case *packet.Publish:
			err = c.onPublish(cn, p)
		case *packet.Ack:
			err = c.onAck(cn, p)
		case *packet.Suback:
			select {
			case cn.suback <- p:
			default:
				c.r.anomaly("suback_unexpected", "%s: unexpected SUBACK", c.id)
			}
		case *packet.Disconnect:
			c.r.anomaly("server_disconnect", "%s: broker sent DISCONNECT %#x", c.id, byte(p.ReasonCode))
		case *packet.Pingresp, *packet.Unsuback:
		default:
			c.r.anomaly("unexpected_packet", "%s: unexpected %T", c.id, p)
		}
		if err != nil {
			cn.nc.Close()
			return
		}
	}
}

func (c *client) onPublish(cn *conn, p *packet.Publish) error {
	k, ok := decodePayload(p.Payload, c.r.nonce)
	if !ok {
		c.r.anomaly("foreign_payload", "%s: PUBLISH on %q with a payload not from this run", c.id, p.Topic)
	}
	switch p.QoS {
	case 0:
		c.deliverOne(cn, p, k, ok)
		return nil
	case 1:
		c.deliverOne(cn, p, k, ok)
		return cn.write(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
	default:
		c.mu.Lock()
		prev, seen := c.mu.inQoS2[p.PacketID]
		if !seen {
			c.mu.inQoS2[p.PacketID] = k
		}
		c.mu.Unlock()
		if !seen {
			c.deliverOne(cn, p, k, ok)
		} else if ok && prev != k {
			// The broker reused a packet id before the PUBREL that frees
			// it: this message is swallowed (and so will count as lost).
			c.r.anomaly("packet_id_reused", "%s: id %d carries %v while %v awaits PUBREL", c.id, p.PacketID, k, prev)
		}
		return cn.write(&packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID})
	}
}

func (c *client) deliverOne(cn *conn, p *packet.Publish, k msgKey, ok bool) {
	if p.QoS != c.r.cfg.QoS && !p.Retain {
		c.r.anomaly("qos_downgraded", "%s: PUBLISH %v at QoS %d, want %d", c.id, k, p.QoS, c.r.cfg.QoS)
	}
	if c.deliver != nil {
		c.deliver(cn, p, k, ok)
	}
}

func (c *client) onAck(cn *conn, a *packet.Ack) error {
	switch a.Kind {
	case packet.PUBREL: // we are the QoS 2 receiver
		c.mu.Lock()
		delete(c.mu.inQoS2, a.PacketID)
		c.mu.Unlock()
		return cn.write(&packet.Ack{Kind: packet.PUBCOMP, PacketID: a.PacketID})

	case packet.PUBACK:
		m := c.take(a.PacketID, false)
		if m == nil {
			c.r.anomaly("ack_unknown_id", "%s: PUBACK for id %d not in flight", c.id, a.PacketID)
			return nil
		}
		c.acked(m, a.ReasonCode)

	case packet.PUBREC:
		c.mu.Lock()
		var m *outMsg
		for _, o := range c.mu.out {
			if o.id == a.PacketID {
				m = o
				break
			}
		}
		if m == nil {
			c.mu.Unlock()
			c.r.anomaly("ack_unknown_id", "%s: PUBREC for id %d not in flight", c.id, a.PacketID)
			rel := &packet.Ack{Kind: packet.PUBREL, PacketID: a.PacketID}
			if cn.version == packet.V5 {
				rel.ReasonCode = packet.CodePacketIDNotFound
			}
			return cn.write(rel)
		}
		if a.ReasonCode >= 0x80 {
			c.mu.Unlock()
			c.take(a.PacketID, false)
			c.acked(m, a.ReasonCode)
			return nil
		}
		first := !m.released
		m.released = true
		c.mu.Unlock()
		if first {
			c.acked(m, a.ReasonCode)
		}
		return cn.write(&packet.Ack{Kind: packet.PUBREL, PacketID: a.PacketID})

	case packet.PUBCOMP:
		if m := c.take(a.PacketID, true); m == nil {
			c.r.anomaly("ack_unknown_id", "%s: PUBCOMP for id %d not released", c.id, a.PacketID)
		}
	}
	return nil
}

// take removes the in-flight message with the id (only a released one if
// released is set) and frees a window slot.
func (c *client) take(id uint16, released bool) *outMsg {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, m := range c.mu.out {
		if m.id == id && (!released || m.released) {
			c.mu.out = append(c.mu.out[:i], c.mu.out[i+1:]...)
			select {
			case c.space <- struct{}{}:
			default:
			}
			return m
		}
	}
	return nil
}

func (c *client) acked(m *outMsg, code packet.ReasonCode) {
	if code >= 0x80 {
		c.r.anomaly("publish_rejected", "%s: %v rejected with code %#x", c.id, m.key, byte(code))
		return
	}
	if c.onAccept != nil {
		c.onAccept(m)
	}
	c.r.bump(evAck)
}

func (c *client) inFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.mu.out)
}

// source yields the messages one publisher sends, in order. It is used by
// that publisher's goroutine only.
type source interface {
	next() (key msgKey, topic string, retain bool, ok bool)
}

// runPublisher publishes src's messages until src is exhausted or stop is
// closed, then waits until everything in flight is acknowledged (PUBCOMP
// for QoS 2), disconnects and returns. It reconnects after every lost
// connection and returns early only when ctx ends.
func (c *client) runPublisher(ctx context.Context, src source, stop <-chan struct{}, rate float64) {
	p := &pump{c: c, src: src, stop: stop}
	if rate > 0 {
		p.interval = time.Duration(float64(time.Second) / rate)
		p.nextAt = time.Now()
	}
	for {
		cn, err := c.connect(ctx)
		if err != nil {
			return
		}
		if p.run(ctx, cn) {
			c.disconnect(cn)
			return
		}
		c.close(cn)
		if ctx.Err() != nil {
			return
		}
	}
}

type pump struct {
	c         *client
	src       source
	stop      <-chan struct{}
	exhausted bool
	interval  time.Duration
	nextAt    time.Time
}

// run publishes on cn until the publisher is done (true) or cn dies
// (false).
func (p *pump) run(ctx context.Context, cn *conn) bool {
	c := p.c
	for {
		stop := p.stop
		if p.exhausted {
			stop = nil
		} else {
			select {
			case <-stop:
				p.exhausted = true
				stop = nil
			default:
			}
		}
		c.mu.Lock()
		n, w := len(c.mu.out), c.mu.window
		c.mu.Unlock()
		if p.exhausted && n == 0 {
			return true
		}
		if p.exhausted || n >= w {
			select {
			case <-c.space:
			case <-stop:
			case <-cn.dead:
				return false
			case <-ctx.Done():
				return false
			}
			continue
		}
		if p.interval > 0 {
			if d := time.Until(p.nextAt); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-stop:
					t.Stop()
					continue
				case <-cn.dead:
					t.Stop()
					return false
				case <-ctx.Done():
					t.Stop()
					return false
				}
			}
			p.nextAt = p.nextAt.Add(p.interval)
			if behind := time.Since(p.nextAt); behind > time.Second {
				p.nextAt = time.Now() // do not burst after an outage
			}
		}
		key, topic, retain, ok := p.src.next()
		if !ok {
			p.exhausted = true
			continue
		}
		m := &outMsg{key: key, topic: topic, retain: retain,
			payload: encodePayload(nil, c.r.nonce, key, c.r.cfg.PayloadSize)}
		c.mu.Lock()
		m.id = c.allocIDLocked()
		c.mu.out = append(c.mu.out, m)
		pub := m.publish(c.r.cfg.QoS, false)
		c.mu.Unlock()
		if err := cn.write(pub); err != nil {
			return false // m stays in flight and is resent with DUP=1
		}
	}
}

// runSubscriber keeps the client connected (reconnecting after every lost
// connection) until ctx ends. Until stayOnline is closed, a churning
// subscriber also goes offline at random: connected for 50-800 ms, then
// gone for 50-800 ms, leaving with DISCONNECT or by just closing the
// socket.
func (c *client) runSubscriber(ctx context.Context, churn bool, stayOnline <-chan struct{}, rng *rand.Rand) {
	between := func() time.Duration { return time.Duration(50+rng.IntN(750)) * time.Millisecond }
	for {
		cn, err := c.connect(ctx)
		if err != nil {
			return
		}
		leave := false
		if churn {
			t := time.NewTimer(between())
			select {
			case <-t.C:
				leave = true
			case <-stayOnline:
			case <-cn.dead:
			case <-ctx.Done():
			}
			t.Stop()
		}
		if leave {
			if rng.IntN(2) == 0 {
				c.disconnect(cn)
			} else {
				c.close(cn)
			}
			if !sleepCtx(ctx, between(), stayOnline) && ctx.Err() != nil {
				return
			}
			continue
		}
		select {
		case <-cn.dead:
		case <-ctx.Done():
		}
		c.close(cn)
		if ctx.Err() != nil {
			return
		}
	}
}

// sleepCtx sleeps for d unless ctx ends or wake is closed first; it
// reports whether the whole d passed.
func sleepCtx(ctx context.Context, d time.Duration, wake <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-wake:
		return false
	case <-ctx.Done():
		return false
	}
}
