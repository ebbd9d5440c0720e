// Package client is Keel's MQTT client (3.1.1 and 5.0), for the bridge,
// the load generator, the crash tester and tests.
//
// A Client is one network connection. The session outlives it: Options
// carries a Session, and a Client connected again with the same Session
// (and Clean Start 0) resumes it as MQTT says a client must:
//
//   - with Session Present = 1, every unacknowledged QoS 1/2 PUBLISH is
//     sent again with DUP = 1 and its original packet id, and every
//     released QoS 2 flow as PUBREL, in the original order [MQTT-4.4.0-1]
//     [MQTT-3.3.1-1] [MQTT-4.6.0-1];
//   - an inbound QoS 2 PUBLISH whose packet id is held (PUBREC sent, no
//     PUBREL yet) is acknowledged again but not handed to the application
//     a second time [MQTT-4.3.3-10];
//   - with Session Present = 0 the client discards its session state
//     [MQTT-3.2.2-5].
//
// Goroutines: each Client has one reader goroutine (which decodes, runs
// the OnMessage and OnAck callbacks, and queues the acknowledgements) and
// one writer goroutine, the only one that writes the socket after the
// CONNECT. Everything to send is appended, encoded, to one buffer under
// c.mu; the writer swaps it out and writes it in one call, so packets
// queued while a write is in progress leave together. Close and Disconnect
// wait for both goroutines.
//
// Flow control: outbound QoS 1/2 publishes in flight never exceed the
// server's Receive Maximum (nor Options.MaxInflight); Publish waits for a
// slot [MQTT-3.3.4-7] [MQTT-4.9.0-2]. Acknowledgements are never held back
// by it [MQTT-4.9.0-3].
package client

import (
	"bufio"
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keelmq/keel/engine/packet"
)

// Options configures one connection. The zero value of every field but
// Addr (or Dial) is valid.
type Options struct {
	Addr string // host:port, dialled over TCP unless Dial is set
	// Dial opens the network connection (TLS, WebSocket, a test pipe).
	Dial func(ctx context.Context) (net.Conn, error)

	Version  byte   // packet.V311 or packet.V5; 0 means V5
	ClientID string // may be empty in 5.0 (the server assigns one)
	// CleanStart discards any previous session, here and on the server
	// (3.1.1: Clean Session). The Session is cleared before CONNECT.
	CleanStart bool
	// SessionExpiry is the 5.0 Session Expiry Interval in seconds; 0 ends
	// the session with the connection. 3.1.1 ignores it.
	SessionExpiry uint32
	// KeepAlive in seconds; 0 turns keep alive off [MQTT-3.1.2-10].
	KeepAlive uint16
	Username  string
	Password  []byte
	Will      *Will
	// ReceiveMaximum is the client's 5.0 Receive Maximum: how many inbound
	// QoS 1/2 publishes the server may have unacknowledged; 0 means 65535.
	ReceiveMaximum uint16
	// MaxPacketSize bounds inbound packets (5.0: sent as Maximum Packet
	// Size); 0 means MQTT's maximum.
	MaxPacketSize uint32
	// TopicAliasMaximum (5.0) is how many topic aliases the server may
	// use in the PUBLISHes it sends (sent as Topic Alias Maximum; 0: none
	// [MQTT-3.1.2-27]). The client resolves them: OnMessage sees the full
	// topic name, with the Topic Alias property as it came. A mapping lasts
	// one connection [MQTT-3.3.2-7].
	TopicAliasMaximum uint16
	// Props are extra CONNECT properties (5.0), merged under the ones the
	// fields above set.
	Props packet.Properties

	// MaxInflight caps outbound QoS 1/2 flows below the server's Receive
	// Maximum; 0 means no cap of the client's own.
	MaxInflight int

	// ManualFlush makes Publish queue without waking the writer: what is
	// queued leaves on Flush, or when a Publish waits for a slot, or with
	// the next acknowledgement the reader sends. A load generator uses it
	// to write a window of publishes in one system call.
	ManualFlush bool

	// Session holds the session state across connections; nil means a
	// fresh in-memory one (the session then lives only as long as this
	// Client).
	Session Session

	// OnMessage is called on the reader goroutine for each PUBLISH handed
	// to the application, before it is acknowledged. p aliases the read
	// buffer: it is valid only during the call. It must not wait for this
	// client's reader (no PublishWait, Subscribe or Unsubscribe from it).
	OnMessage func(p *packet.Publish)
	// OnAck is called on the reader goroutine for each acknowledgement of
	// an outbound QoS 1/2 PUBLISH (including resent ones). The same rules
	// as OnMessage apply to it.
	OnAck func(a *Ack)
	// OnProtocolError is called, on the reader goroutine, for oddities
	// that do not end the connection (an acknowledgement for a packet id
	// not in flight, an unexpected packet type). nil ignores them.
	OnProtocolError func(err error)

	ConnectTimeout time.Duration // dial + CONNACK; 0 means 10 s
	WriteTimeout   time.Duration // one write; 0 means 10 s
}

// Will is the will message of a connection.
type Will struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	Props   packet.Properties // 5.0 will properties
}

// Ack is one acknowledgement of an outbound PUBLISH, as OnAck sees it.
type Ack struct {
	Kind packet.Type // PUBACK, PUBREC or PUBCOMP
	ID   uint16
	Code packet.ReasonCode // 5.0; 0 in 3.1.1
	// Final reports whether the flow is over (PUBACK, PUBCOMP, or a
	// refusal: code 0x80 or more [MQTT-4.4.0-2]).
	Final bool
	// More reports that more input is already buffered: the reader will
	// call again at once. A caller that hands acks to another goroutine
	// can wake it once per burst, when More is false.
	More bool
	// Publish is the message acknowledged, decoded from the Session's
	// copy; valid only during the call, nil if the Session no longer has
	// it.
	Publish *packet.Publish
}

// Client is one network connection of an MQTT client.
type Client struct {
	opts    Options
	version byte
	sess    Session
	nc      net.Conn
	rd      *bufio.Reader
	connack *packet.Connack

	keepAlive time.Duration // negotiated [MQTT-3.1.2-21]; 0: off
	aliasMax  uint16        // Topic Alias Maximum sent in CONNECT (5.0)
	maxOut    uint32        // server's Maximum Packet Size; 0: none
	window    int           // outbound QoS 1/2 flows allowed

	pubMu   sync.Mutex // serializes Publish and id allocation: Store order is send order
	scratch []byte     // guarded by pubMu: the PUBLISH being encoded

	mu struct {
		sync.Mutex
		out      []byte   // encoded packets for the writer
		inflight int      // outbound flows sent on this connection
		backlog  [][]byte // resends beyond the window, encoded, in order
		nextID   uint16
		subs     map[uint16]chan packet.Packet // SUBACK/UNSUBACK waiters
		waiters  map[uint16]chan result        // PublishWait
		closing  bool                          // DISCONNECT queued: no more writes
		lastSent time.Time
		err      error // why the connection ended
	}
	ping struct{ outstanding atomic.Bool } // PINGREQ sent, no PINGRESP yet

	wake    chan struct{} // writer: something to send (capacity 1)
	space   chan struct{} // Publish: a slot may be free (capacity 1)
	written chan struct{} // a write finished (capacity 1)
	dead    chan struct{} // closed when the connection is over
	quit    sync.Once
	wg      sync.WaitGroup
}

type result struct {
	code packet.ReasonCode
	err  error
}

// Connect dials, sends CONNECT, waits for CONNACK and, on a resumed
// session, queues the resends. A refusal is a *ConnectError.
func Connect(ctx context.Context, o Options) (*Client, error) {
	if o.Version == 0 {
		o.Version = packet.V5
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = 10 * time.Second
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.Session == nil {
		o.Session = NewMemorySession()
	}
	ctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()
	nc, err := dial(ctx, &o)
	if err != nil {
		return nil, err
	}
	c := &Client{
		opts: o, version: o.Version, sess: o.Session, nc: nc,
		rd:      bufio.NewReaderSize(nc, ioBufSize),
		wake:    make(chan struct{}, 1),
		space:   make(chan struct{}, 1),
		written: make(chan struct{}, 1),
		dead:    make(chan struct{}),
	}
	c.mu.subs = make(map[uint16]chan packet.Packet)
	c.mu.waiters = make(map[uint16]chan result)
	if err := c.handshake(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	c.wg.Add(2)
	go c.readLoop()  // owner: c.wg, waited for by Close
	go c.writeLoop() // owner: c.wg
	c.signal()
	return c, nil
}

func dial(ctx context.Context, o *Options) (net.Conn, error) {
	if o.Dial != nil {
		return o.Dial(ctx)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", o.Addr)
}

const ioBufSize = 64 << 10

func (c *Client) connectPacket() *packet.Connect {
	o := &c.opts
	cp := &packet.Connect{
		ProtocolLevel: c.version,
		CleanStart:    o.CleanStart,
		KeepAlive:     o.KeepAlive,
		ClientID:      o.ClientID,
		Username:      o.Username,
		Password:      o.Password,
		UsernameFlag:  o.Username != "",
		PasswordFlag:  o.Password != nil,
	}
	if c.version == packet.V5 {
		cp.Props = o.Props
		if o.SessionExpiry > 0 {
			cp.Props.SessionExpiry = o.SessionExpiry
			cp.Props.Set(packet.PropSessionExpiry)
		}
		if o.ReceiveMaximum > 0 {
			cp.Props.ReceiveMaximum = o.ReceiveMaximum
			cp.Props.Set(packet.PropReceiveMaximum)
		}
		if o.MaxPacketSize > 0 {
			cp.Props.MaximumPacketSize = o.MaxPacketSize
			cp.Props.Set(packet.PropMaximumPacketSize)
		}
		if o.TopicAliasMaximum > 0 {
			cp.Props.TopicAliasMaximum = o.TopicAliasMaximum
			cp.Props.Set(packet.PropTopicAliasMaximum)
		}
	}
	if w := o.Will; w != nil {
		cp.WillFlag, cp.WillTopic, cp.WillPayload = true, w.Topic, w.Payload
		cp.WillQoS, cp.WillRetain, cp.WillProps = w.QoS, w.Retain, w.Props
	}
	return cp
}

// handshake runs CONNECT/CONNACK on the bare connection (no goroutine
// owns it yet) and prepares the resends.
func (c *Client) handshake(ctx context.Context) error {
	if c.opts.CleanStart {
		// A new session: the old state must not be reused [MQTT-3.1.2-4].
		c.sess.Clear()
	}
	if dl, ok := ctx.Deadline(); ok {
		c.nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		stop()
		c.nc.SetDeadline(time.Time{})
	}()
	cp := c.connectPacket()
	if cp.Props.Has(packet.PropTopicAliasMaximum) {
		c.aliasMax = cp.Props.TopicAliasMaximum
	}
	b, err := cp.Append(nil, c.version)
	if err != nil {
		return err
	}
	if _, err := c.nc.Write(b); err != nil {
		return err
	}
	p, err := packet.Read(c.rd, c.version, c.opts.MaxPacketSize)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	ca, ok := p.(*packet.Connack)
	if !ok {
		return protocolErr("got %v before CONNACK", p.Type())
	}
	c.connack = ca
	if ca.ReasonCode != 0 {
		return &ConnectError{Version: c.version, Code: ca.ReasonCode, Reason: ca.Props.ReasonString}
	}
	c.keepAlive = time.Duration(c.opts.KeepAlive) * time.Second
	recvMax := 65535
	if c.version == packet.V5 {
		pr := &ca.Props
		if pr.Has(packet.PropServerKeepAlive) {
			c.keepAlive = time.Duration(pr.ServerKeepAlive) * time.Second // [MQTT-3.1.2-21]
		}
		if pr.Has(packet.PropReceiveMaximum) && pr.ReceiveMaximum > 0 {
			recvMax = int(pr.ReceiveMaximum)
		}
		if pr.Has(packet.PropMaximumPacketSize) {
			c.maxOut = pr.MaximumPacketSize
		}
	}
	c.window = recvMax
	if m := c.opts.MaxInflight; m > 0 && m < c.window {
		c.window = m
	}
	if !ca.SessionPresent {
		// The server has no session: neither may the client [MQTT-3.2.2-5].
		c.sess.Clear()
		return nil
	}
	// Resume: resend in the original order, PUBLISH with DUP=1 and the
	// same packet id, PUBREL for the released ones [MQTT-4.4.0-1]
	// [MQTT-4.6.0-1]. What exceeds this connection's Receive Maximum waits
	// in the backlog for a slot.
	c.sess.Flows(func(id uint16, pub []byte, released bool) bool {
		if c.mu.inflight < c.window {
			c.mu.out = appendResend(c.mu.out, id, pub, released, c.version)
			c.mu.inflight++
		} else {
			c.mu.backlog = append(c.mu.backlog, appendResend(nil, id, pub, released, c.version))
		}
		return true
	})
	return nil
}

// appendResend appends the resend of one flow.
func appendResend(dst []byte, id uint16, pub []byte, released bool, version byte) []byte {
	if released {
		a := packet.Ack{Kind: packet.PUBREL, PacketID: id}
		dst, _ = a.Append(dst, version)
		return dst
	}
	n := len(dst)
	dst = append(dst, pub...)
	dst[n] |= 0x08 // DUP [MQTT-3.3.1-1]
	return dst
}

// Connack is the server's CONNACK (its properties: limits, assigned
// client id, ...).
func (c *Client) Connack() *packet.Connack { return c.connack }

// SessionPresent reports the CONNACK's Session Present flag.
func (c *Client) SessionPresent() bool { return c.connack.SessionPresent }

// Version is the connection's protocol level.
func (c *Client) Version() byte { return c.version }

// Session is the session state the client uses.
func (c *Client) Session() Session { return c.sess }

// Window is how many outbound QoS 1/2 flows may be in flight at once: the
// server's Receive Maximum, or Options.MaxInflight if lower.
func (c *Client) Window() int { return c.window }

// Done is closed when the connection is over; Err then says why.
func (c *Client) Done() <-chan struct{} { return c.dead }

// Err is why the connection ended (nil while it is up; ErrClosed after
// Close or Disconnect).
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.err
}

// Inflight is the number of outbound flows in the session.
func (c *Client) Inflight() int { return c.sess.Len() }

// fail ends the connection with err (the first reason wins).
func (c *Client) fail(err error) {
	c.quit.Do(func() {
		c.mu.Lock()
		c.mu.err = err
		waiters, subs := c.mu.waiters, c.mu.subs
		c.mu.waiters, c.mu.subs = nil, nil
		c.mu.Unlock()
		c.nc.Close()
		close(c.dead)
		for _, w := range waiters {
			w <- result{err: err}
		}
		for _, s := range subs {
			close(s)
		}
	})
}

// Close cuts the connection without DISCONNECT (the server publishes the
// will) and waits for the client's goroutines. The session state stays
// in the Session.
func (c *Client) Close() error {
	c.fail(ErrClosed)
	c.wg.Wait()
	return nil
}

// Disconnect sends DISCONNECT (a normal disconnection: the server
// discards the will [MQTT-3.14.4-3]), then closes and waits. d may be nil;
// in 5.0 it may carry a reason code and a new Session Expiry Interval.
func (c *Client) Disconnect(ctx context.Context, d *packet.Disconnect) error {
	if d == nil {
		d = &packet.Disconnect{}
	}
	c.mu.Lock()
	if c.mu.err != nil || c.mu.closing {
		c.mu.Unlock()
		return c.Close()
	}
	var err error
	c.mu.out, err = d.Append(c.mu.out, c.version)
	c.mu.closing = err == nil
	c.mu.Unlock()
	if err != nil {
		c.Close()
		return err
	}
	c.signal()
	select {
	case <-c.dead:
	case <-ctx.Done():
	}
	c.Close()
	if err := c.Err(); err != ErrClosed {
		return err
	}
	return nil
}
