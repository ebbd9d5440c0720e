package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	mqtt "github.com/keelmq/keel/engine/client"
	"github.com/keelmq/keel/engine/packet"
)

// The test client: engine/client with the session kept across network
// connections, which is the whole point, since the broker's half of
// resumption is what is checked. engine/client resends unacknowledged
// QoS 1/2 PUBLISH with DUP=1 and the same packet id and released ones as
// PUBREL [MQTT-4.4.0-1], delivers an inbound QoS 2 packet id once until
// its PUBREL [MQTT-4.3.3-10], and discards its session state when the
// broker answers "session present = 0" [MQTT-3.2.2-5]. For a session the
// broker had acknowledged, that answer is a lost session: counted here,
// and the client subscribes again.

const (
	connectTimeout = 5 * time.Second
	writeTimeout   = 5 * time.Second
	subackTimeout  = 10 * time.Second
	maxBackoff     = 200 * time.Millisecond
)

// conn is one network connection of a client.
type conn struct {
	c       *mqtt.Client
	willGen uint32          // generation carried by this connection's will
	n       int             // this connection's number for its client, from 1
	dead    <-chan struct{} // closed when the connection is over
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
	// application, before it is acknowledged. ok reports whether the
	// payload is one of this run's.
	deliver func(cn *conn, p *packet.Publish, k msgKey, ok bool)
	// onAccept is called once per outbound message the broker accepted
	// (PUBACK, or PUBREC for QoS 2).
	onAccept func(k msgKey)
	will     *willSpec
}

type client struct {
	r *run
	clientOpts
	sess mqtt.Session

	subscribed chan struct{} // closed after the first successful SUBACK
	subOnce    sync.Once
	connected  chan struct{} // closed once the first connection is established
	connOnce   sync.Once
	space      chan struct{} // a token after the outbound window shrank

	mu struct {
		sync.Mutex
		hadSession bool // a CONNACK acknowledged this persistent session
		lastLost   bool // the last CONNACK found the session lost
		conns      int  // connections that got a CONNACK
		subscribed bool // SUBACK seen in the current session
		willGen    uint32
		inflight   int // published, not finally acknowledged, in this session
	}
}

func (r *run) newClient(o clientOpts) *client {
	return &client{
		r:          r,
		clientOpts: o,
		sess:       mqtt.NewMemorySession(),
		subscribed: make(chan struct{}),
		connected:  make(chan struct{}),
		space:      make(chan struct{}, 1),
	}
}

// dial opens one connection and performs CONNECT/CONNACK; a will gets a
// fresh generation.
func (c *client) dial(ctx context.Context) (*conn, error) {
	cfg := &c.r.cfg
	c.mu.Lock()
	cn := &conn{n: c.mu.conns + 1} // connections are sequential
	if c.will != nil {
		c.mu.willGen++
		cn.willGen = c.mu.willGen
	}
	c.mu.Unlock()
	o := mqtt.Options{
		Addr:            c.r.addr,
		Dial:            c.r.dial(),
		Version:         cfg.Version,
		ClientID:        c.id,
		CleanStart:      c.clean,
		Session:         c.sess,
		MaxInflight:     cfg.Window,
		ConnectTimeout:  connectTimeout,
		WriteTimeout:    writeTimeout,
		OnMessage:       func(p *packet.Publish) { c.onPublish(cn, p) },
		OnAck:           c.onAck,
		OnProtocolError: c.onProtocolError,
	}
	if cfg.Version == packet.V5 && !c.clean {
		o.SessionExpiry = 0xFFFFFFFF // never expires
	}
	o.Username, o.Password = c.r.credentials(c.id)
	if c.will != nil {
		o.Will = &mqtt.Will{
			Topic:   c.will.topic,
			QoS:     cfg.QoS,
			Payload: encodePayload(nil, c.r.nonce, msgKey{c.will.pub, cn.willGen}, cfg.PayloadSize),
		}
	}
	mc, err := mqtt.Connect(ctx, o)
	if err != nil {
		var ce *mqtt.ConnectError
		if errors.As(err, &ce) {
			c.r.anomaly("connack_refused", "%s: CONNACK refused with code %#x", c.id, byte(ce.Code))
		} else if errors.Is(err, mqtt.ErrProtocol) {
			c.r.anomaly("connack_expected", "%s: %v", c.id, err)
		}
		return nil, err
	}
	cn.c, cn.dead = mc, mc.Done()
	return cn, nil
}

// connect connects (retrying with backoff until ctx ends), checks session
// present, resumes the session and subscribes if the session has no
// subscription yet. The caller must end the connection with close.
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
		cn, err := c.dial(ctx)
		if err != nil {
			continue
		}
		if err := c.establish(ctx, cn); err != nil {
			c.close(cn)
			if errors.Is(err, errFatal) {
				c.r.problem("%s: %v", c.id, err)
				return nil, err
			}
			continue
		}
		c.connOnce.Do(func() { close(c.connected) })
		return cn, nil
	}
}

// errFatal marks a failure that retrying cannot fix (a broker that refuses
// the test's QoS).
var errFatal = errors.New("fatal")

func (c *client) establish(ctx context.Context, cn *conn) error {
	ack := cn.c.Connack()
	if c.r.cfg.Version == packet.V5 && ack.Props.Has(packet.PropMaximumQoS) && ack.Props.MaximumQoS < c.r.cfg.QoS {
		return fmt.Errorf("%w: broker's Maximum QoS is %d, test needs %d", errFatal, ack.Props.MaximumQoS, c.r.cfg.QoS)
	}
	c.mu.Lock()
	c.mu.conns++
	lost := false
	if c.clean {
		if ack.SessionPresent {
			c.r.anomaly("clean_session_present", "%s: session present = 1 on a clean start", c.id)
		}
		c.mu.subscribed = false
	} else {
		if c.mu.hadSession && !ack.SessionPresent {
			lost = true // engine/client has discarded its state
			c.mu.subscribed = false
			c.mu.inflight = 0
		}
		c.mu.lastLost = lost
		c.mu.hadSession = true
	}
	needSub := !c.mu.subscribed && len(c.subs) > 0
	c.mu.Unlock()
	if lost {
		c.r.sessionLost(c.id)
	}
	c.signalSpace()
	if needSub {
		return c.subscribe(ctx, cn)
	}
	return nil
}

func (c *client) signalSpace() {
	select {
	case c.space <- struct{}{}:
	default:
	}
}

func (c *client) subscribe(ctx context.Context, cn *conn) error {
	sub := &packet.Subscribe{}
	for _, f := range c.subs {
		sub.Subs = append(sub.Subs, packet.Subscription{Filter: f, QoS: c.r.cfg.QoS})
	}
	ctx, cancel := context.WithTimeout(ctx, subackTimeout)
	defer cancel()
	sa, err := cn.c.Subscribe(ctx, sub)
	if err != nil {
		return fmt.Errorf("no SUBACK: %w", err)
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
}

// close ends the connection and waits for its goroutines.
func (c *client) close(cn *conn) {
	cn.c.Close()
	c.ended(cn)
}

// disconnect sends DISCONNECT and closes: a normal disconnection, which
// keeps a persistent session and discards the will.
func (c *client) disconnect(cn *conn) {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	cn.c.Disconnect(ctx, nil)
	c.ended(cn)
}

// ended records what ended a connection, when it is an oddity.
func (c *client) ended(cn *conn) {
	var perr *packet.Error
	var derr *mqtt.DisconnectError
	switch err := cn.c.Err(); {
	case errors.As(err, &perr):
		c.r.anomaly("malformed_from_broker", "%s: %v", c.id, err)
	case errors.As(err, &derr):
		c.r.anomaly("server_disconnect", "%s: broker sent DISCONNECT %#x", c.id, byte(derr.Code))
	case errors.Is(err, mqtt.ErrProtocol):
		c.r.anomaly("unexpected_packet", "%s: %v", c.id, err)
	}
}

func (c *client) onProtocolError(err error) {
	c.r.anomaly("ack_unknown_id", "%s: %v", c.id, err)
}

func (c *client) onPublish(cn *conn, p *packet.Publish) {
	k, ok := decodePayload(p.Payload, c.r.nonce)
	if !ok {
		c.r.anomaly("foreign_payload", "%s: PUBLISH on %q with a payload not from this run", c.id, p.Topic)
	}
	if p.QoS != c.r.cfg.QoS && !p.Retain {
		c.r.anomaly("qos_downgraded", "%s: PUBLISH %v at QoS %d, want %d", c.id, k, p.QoS, c.r.cfg.QoS)
	}
	if c.deliver != nil {
		c.deliver(cn, p, k, ok)
	}
}

func (c *client) onAck(a *mqtt.Ack) {
	if a.Final {
		c.mu.Lock()
		c.mu.inflight--
		c.mu.Unlock()
		defer c.signalSpace()
	}
	if a.Kind == packet.PUBCOMP {
		return
	}
	var k msgKey
	ok := false
	if a.Publish != nil {
		k, ok = decodePayload(a.Publish.Payload, c.r.nonce)
	}
	if a.Code >= 0x80 {
		c.r.anomaly("publish_rejected", "%s: %v rejected with code %#x", c.id, k, byte(a.Code))
		return
	}
	if ok && c.onAccept != nil {
		c.onAccept(k)
	}
	c.r.bump(evAck)
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
	held      *packet.Publish // taken from src, not yet taken by a session
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
		n := c.mu.inflight
		c.mu.Unlock()
		w := cn.c.Window()
		if p.exhausted && n == 0 && p.held == nil {
			return true
		}
		if (p.exhausted && p.held == nil) || n >= w {
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
		if p.held == nil {
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
			p.held = &packet.Publish{QoS: c.r.cfg.QoS, Retain: retain, Topic: topic,
				Payload: encodePayload(nil, c.r.nonce, key, c.r.cfg.PayloadSize)}
		}
		// Once Publish returns nil the session owns the message: a lost
		// connection leaves it in flight, resent with DUP=1.
		c.mu.Lock()
		c.mu.inflight++ // before an acknowledgement can come
		c.mu.Unlock()
		if err := cn.c.Publish(ctx, p.held); err != nil {
			c.mu.Lock()
			c.mu.inflight--
			c.mu.Unlock()
			return false // kept for the next connection
		}
		p.held = nil
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
