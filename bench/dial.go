package main

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/keelmq/keel/engine/client"
	"github.com/keelmq/keel/engine/packet"
)

type connOptions struct {
	addr     string
	version  byte
	clientID string
	// username and password log in when username is not empty.
	username   string
	password   string
	persistent bool   // 3.1.1: clean session 0; 5.0: session expiry > 0
	expiry     uint32 // 5.0 session expiry for persistent sessions, seconds
	cleanOnly  bool   // connect with a clean, non-persistent session (teardown)
	resume     bool   // Clean Start 0: take over whatever session the server has
	// connectTimeout bounds TCP connect + CONNECT -> CONNACK; 0: 15 s.
	connectTimeout time.Duration
	window         int // outbound QoS 1/2 flows; 0: the server's Receive Maximum
	// manualFlush: publishes leave on Flush (see client.Options.ManualFlush)
	manualFlush   bool
	topicAliasMax uint16        // 5.0 Topic Alias Maximum: aliases the broker may assign
	readBytes     *atomic.Int64 // if set, counts the bytes read from the broker
	transport     *transport    // nil: plain TCP

	onMessage func(*packet.Publish)
	onAck     func(*client.Ack)
	onOddity  func(error)
}

// dial opens a connection and completes CONNECT/CONNACK.
func dial(o connOptions) (*client.Client, error) {
	co := client.Options{
		Addr:     o.addr,
		Version:  o.version,
		ClientID: o.clientID,
		// Keep alive 0 turns the mechanism off [MQTT-3.1.2-10]: a QoS 0
		// subscriber sends nothing for the whole run.
		KeepAlive:         0,
		ReceiveMaximum:    65535,
		MaxInflight:       o.window,
		ManualFlush:       o.manualFlush,
		TopicAliasMaximum: o.topicAliasMax,
		OnMessage:         o.onMessage,
		OnAck:             o.onAck,
		OnProtocolError:   o.onOddity,
		ConnectTimeout:    15 * time.Second,
	}
	if o.readBytes != nil || o.transport != nil {
		co.Dial = func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			nc, err := o.transport.dial(ctx, &d, o.addr)
			if err != nil || o.readBytes == nil {
				return nc, err
			}
			return &countingConn{Conn: nc, n: o.readBytes}, nil
		}
	}
	if o.connectTimeout > 0 {
		co.ConnectTimeout = o.connectTimeout
	}
	if o.username != "" {
		co.Username, co.Password = o.username, []byte(o.password)
	}
	switch {
	case o.resume:
		co.CleanStart = false
		co.SessionExpiry = o.expiry
	case o.cleanOnly || !o.persistent:
		co.CleanStart = true
	case o.version == packet.V5:
		// A fresh persistent session: clean start, then expiry > 0.
		co.CleanStart = true
		co.SessionExpiry = o.expiry
	default:
		co.CleanStart = false // client ids are unique per run
	}
	c, err := client.Connect(context.Background(), co)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", o.clientID, err)
	}
	return c, nil
}

// countingConn counts the bytes read through it.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.n.Add(int64(n))
	return n, err
}

// subscribe subscribes to one filter and checks the granted QoS.
func subscribe(c *client.Client, filter string, qos byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &packet.Subscribe{Subs: []packet.Subscription{{Filter: filter, QoS: qos}}})
	if err != nil {
		return fmt.Errorf("subscribe %q: %w", filter, err)
	}
	if len(sa.Codes) != 1 || sa.Codes[0] >= 0x80 {
		return fmt.Errorf("subscribe %q: refused, codes %v", filter, sa.Codes)
	}
	if byte(sa.Codes[0]) != qos {
		return fmt.Errorf("subscribe %q: granted QoS %d, want %d", filter, sa.Codes[0], qos)
	}
	return nil
}

// disconnect sends DISCONNECT and closes the connection. For a persistent
// 5.0 session it sets the session expiry to 0, so the broker forgets the
// session (a run leaves no state behind).
func disconnect(c *client.Client, dropSession bool) error {
	d := &packet.Disconnect{}
	if dropSession && c.Version() == packet.V5 {
		d.Props.SessionExpiry = 0
		d.Props.Set(packet.PropSessionExpiry)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Disconnect(ctx, d)
}
