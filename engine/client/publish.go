package client

import (
	"context"
	"fmt"

	"github.com/keelmq/keel/engine/packet"
)

// Publish queues p for sending and returns without waiting for its
// acknowledgement (pipelining); OnAck reports it. For QoS 1/2 it first
// waits for a slot in the window, assigns p.PacketID, and records the flow
// in the Session before the PUBLISH can leave. p is encoded before Publish
// returns: the caller may reuse it and its payload at once. Once buffers
// have grown, Publish allocates nothing.
//
// An error means the message was not taken. For QoS 1/2, nil means the
// Session holds it: if the connection is lost before it leaves or before
// its acknowledgement, a later Client on the same Session resends it.
func (c *Client) Publish(ctx context.Context, p *packet.Publish) error {
	return c.publish(ctx, p, nil)
}

// PublishWait publishes p and waits for its acknowledgement: PUBACK for
// QoS 1, PUBREC for QoS 2 (the server owns the message from then on; the
// client finishes the flow with PUBREL and PUBCOMP by itself). A refusal
// is an *AckError. QoS 0 returns once the PUBLISH is queued. If the
// connection ends first, the error is the connection's, and the message
// may still be in the Session, to be resent.
func (c *Client) PublishWait(ctx context.Context, p *packet.Publish) (packet.ReasonCode, error) {
	if p.QoS == 0 {
		return 0, c.Publish(ctx, p)
	}
	w := make(chan result, 1)
	if err := c.publish(ctx, p, w); err != nil {
		return 0, err
	}
	select {
	case r := <-w:
		return r.code, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (c *Client) publish(ctx context.Context, p *packet.Publish, w chan result) error {
	if p.QoS == 0 {
		return c.publish0(ctx, p)
	}
	c.pubMu.Lock()
	defer c.pubMu.Unlock()
	if err := c.acquire(ctx); err != nil {
		return err
	}
	id, err := c.allocID()
	if err != nil {
		c.releaseSlot()
		return err
	}
	p.Dup, p.PacketID = false, id
	b, err := p.Append(c.scratch[:0], c.version)
	if err == nil && c.maxOut > 0 && uint32(len(b)) > c.maxOut {
		err = ErrPacketTooLarge // [MQTT-3.2.2-15]
	}
	if err != nil {
		c.releaseSlot()
		return err
	}
	c.scratch = b
	// Recorded before it can leave [MQTT-4.3.2-1] [MQTT-4.3.3-3]: the
	// acknowledgement finds the flow.
	c.sess.Store(id, b)
	c.mu.Lock()
	if c.mu.err != nil || c.mu.closing {
		err := c.mu.err
		c.mu.Unlock()
		if w == nil {
			return nil // the Session owns it: resent on resumption
		}
		if err == nil {
			err = ErrClosed
		}
		return err
	}
	if w != nil {
		c.mu.waiters[id] = w
	}
	c.mu.out = append(c.mu.out, b...)
	c.mu.Unlock()
	c.flush()
	return nil
}

// maxQueued bounds the bytes of QoS 0 publishes waiting for the writer:
// past it Publish waits for a write to finish, so a server that reads
// slowly pushes back as TCP does. Acknowledgements are never held back.
const maxQueued = 1 << 20

func (c *Client) publish0(ctx context.Context, p *packet.Publish) error {
	p.Dup, p.PacketID = false, 0
	for {
		c.mu.Lock()
		if len(c.mu.out) < maxQueued || c.mu.err != nil {
			err := c.appendLocked(p)
			c.mu.Unlock()
			if err == nil {
				c.flush()
			}
			return err
		}
		c.mu.Unlock()
		c.signal()
		select {
		case <-c.written:
		case <-c.dead:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// appendLocked encodes p onto the write buffer.
//
// REQUIRES: c.mu held.
func (c *Client) appendLocked(p packet.Packet) error {
	if c.mu.err != nil {
		return c.mu.err
	}
	if c.mu.closing {
		return ErrClosed
	}
	n := len(c.mu.out)
	b, err := p.Append(c.mu.out, c.version)
	if err != nil {
		return err
	}
	if c.maxOut > 0 && uint32(len(b)-n) > c.maxOut {
		c.mu.out = b[:n]
		return ErrPacketTooLarge // [MQTT-3.2.2-15]
	}
	c.mu.out = b
	return nil
}

// acquire takes a slot in the outbound window, waiting for one
// [MQTT-3.3.4-7]. Resends of the backlog go first [MQTT-4.6.0-1].
//
// REQUIRES: c.pubMu held (so there is one waiter at a time).
func (c *Client) acquire(ctx context.Context) error {
	for {
		c.mu.Lock()
		if err := c.mu.err; err != nil {
			c.mu.Unlock()
			return err
		}
		if c.mu.inflight < c.window && len(c.mu.backlog) == 0 {
			c.mu.inflight++
			c.mu.Unlock()
			return nil
		}
		c.mu.Unlock()
		c.signal() // what ManualFlush holds back must leave for a slot to free
		select {
		case <-c.space:
		case <-c.dead:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (c *Client) releaseSlot() {
	c.mu.Lock()
	c.mu.inflight--
	c.mu.Unlock()
	c.spaceSignal()
}

func (c *Client) spaceSignal() {
	select {
	case c.space <- struct{}{}:
	default:
	}
}

// allocID returns a packet id used neither by an outbound flow of the
// Session nor by a SUBSCRIBE or UNSUBSCRIBE in flight [MQTT-2.2.1-3].
//
// REQUIRES: c.pubMu held.
func (c *Client) allocID() (uint16, error) {
	for range 65535 {
		c.mu.Lock()
		c.mu.nextID++
		if c.mu.nextID == 0 {
			c.mu.nextID = 1
		}
		id := c.mu.nextID
		_, sub := c.mu.subs[id]
		c.mu.Unlock()
		if sub {
			continue
		}
		if _, _, used := c.sess.Flow(id); !used {
			return id, nil
		}
	}
	return 0, fmt.Errorf("client: no free packet identifier")
}

// Flush wakes the writer: with Options.ManualFlush, what Publish queued
// leaves now.
func (c *Client) Flush() { c.signal() }

// flush wakes the writer unless the caller flushes.
func (c *Client) flush() {
	if !c.opts.ManualFlush {
		c.signal()
	}
}

// signal wakes the writer.
func (c *Client) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Subscribe sends SUBSCRIBE (its PacketID is assigned) and waits for the
// SUBACK, which it returns: the caller checks the reason codes (one per
// filter; 0x80 and above are refusals).
func (c *Client) Subscribe(ctx context.Context, s *packet.Subscribe) (*packet.Suback, error) {
	return requestFor[*packet.Suback](ctx, c, func(id uint16) packet.Packet { s.PacketID = id; return s })
}

// Unsubscribe sends UNSUBSCRIBE and waits for the UNSUBACK.
func (c *Client) Unsubscribe(ctx context.Context, u *packet.Unsubscribe) (*packet.Unsuback, error) {
	return requestFor[*packet.Unsuback](ctx, c, func(id uint16) packet.Packet { u.PacketID = id; return u })
}

// requestFor sends the packet build makes and waits for its reply, of type
// R.
func requestFor[R packet.Packet](ctx context.Context, c *Client, build func(id uint16) packet.Packet) (R, error) {
	var zero R
	p, err := c.request(ctx, build)
	if err != nil {
		return zero, err
	}
	r, ok := p.(R)
	if !ok {
		return zero, protocolErr("got %v, want %v", p.Type(), zero.Type())
	}
	return r, nil
}

func (c *Client) request(ctx context.Context, build func(id uint16) packet.Packet) (packet.Packet, error) {
	c.pubMu.Lock()
	id, err := c.allocID()
	if err != nil {
		c.pubMu.Unlock()
		return nil, err
	}
	reply := make(chan packet.Packet, 1)
	c.mu.Lock()
	err = c.appendLocked(build(id))
	if err == nil {
		c.mu.subs[id] = reply
	}
	c.mu.Unlock()
	c.pubMu.Unlock()
	if err != nil {
		return nil, err
	}
	c.signal()
	select {
	case p, ok := <-reply:
		if !ok {
			return nil, c.Err()
		}
		return p, nil
	case <-ctx.Done():
		c.mu.Lock()
		if c.mu.subs != nil {
			delete(c.mu.subs, id)
		}
		c.mu.Unlock()
		return nil, ctx.Err()
	}
}
