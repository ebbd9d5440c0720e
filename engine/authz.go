package engine

import (
	"context"

	"github.com/keelmq/keel/engine/auth"
	"github.com/keelmq/keel/engine/packet"
)

// Authentication and authorization run on the connection's reader
// goroutine (CONNECT, PUBLISH, SUBSCRIBE); the core only sees their
// verdicts, carried in the events, and emits the reason codes in order
// with the other acks. Delivery's read checks use the same per-connection
// cache, from the core.
//
// Without Options.Authenticator anyone may connect; without
// Options.Authorizer everything is allowed but what no client may do
// (auth.AllowAll: publish to $SYS).

// authenticate decides the CONNECT; it answers and closes on refusal.
func (c *conn) authenticate(cp *packet.Connect) bool {
	b := c.b
	c.id = auth.Identity{Username: cp.Username, Anonymous: !cp.UsernameFlag}
	if a := b.opts.Authenticator; a != nil {
		ctx, cancel := context.WithTimeout(context.Background(), b.opts.ConnectTimeout)
		id, code := a.Authenticate(ctx, auth.Request{
			ClientID: cp.ClientID, Username: cp.Username, HasUsername: cp.UsernameFlag,
			Password: cp.Password, HasPassword: cp.PasswordFlag,
			Listener: c.info.Listener, Remote: c.info.Remote, TLS: c.info.TLS,
			CertIdentity: c.info.IdentityIsUsername,
		})
		cancel()
		if code >= 0x80 {
			b.stats.reasons.refuse(refuseNotAuthorized)
			c.setEndReason("authentication refused: " + code.String())
			c.refuseConnack(code)
			return false
		}
		c.id = id
	}
	if live := b.opts.Authorizer; live != nil {
		c.acl = auth.NewCache(live, c.id, cp.ClientID, 0)
	}
	if cp.WillFlag && !c.allow(cp.WillTopic, auth.Write) {
		// The will is checked as a PUBLISH would be.
		b.stats.reasons.refuse(refuseNotAuthorized)
		c.setEndReason("will topic not authorized")
		c.refuseConnack(packet.CodeNotAuthorized)
		return false
	}
	return true
}

// refuseConnack answers a refused CONNECT with code (5.0) or the 3.1.1
// return code it maps to, and closes.
func (c *conn) refuseConnack(code packet.ReasonCode) {
	if c.version != packet.V5 {
		switch code {
		case packet.CodeBadUsernameOrPassword:
			code = packet.RetBadUsernameOrPassword
		case packet.CodeNotAuthorized:
			code = packet.RetNotAuthorized
		default:
			code = packet.RetServerUnavailable
		}
	}
	c.send(outItem{pkt: &packet.Connack{ReasonCode: code}}, outItem{close: true})
}

// allow is the client's right to topic: through its cache when an
// Authorizer is set, else auth.AllowAll's rule. Safe from any goroutine.
func (c *conn) allow(topic string, access auth.Access) bool {
	if c.acl != nil {
		return c.acl.Allow(topic, access)
	}
	return auth.AllowAll{}.Allow(c.id, c.clientID, topic, access)
}

// allowRead is delivery's check (target).
func (c *conn) allowRead(topic string) bool { return c.allow(topic, auth.Read) }

// deniedOne marks a refused PUBLISH in its event.
var deniedOne = []bool{true}

// deniedPublish ends, on the read side, the inbound QoS 2 flow of a 5.0
// PUBLISH that will be refused with PUBREC 0x87: the client sends no
// PUBREL after a failure reason [MQTT-4.3.3-4], so its slot of our Receive
// Maximum is given back when that PUBREC leaves (decIn), and the id is
// free for a new message [MQTT-4.3.3-9].
func (c *conn) deniedPublish(p *packet.Publish) {
	if p.QoS == 2 && c.version == packet.V5 {
		delete(c.qos2Open, p.PacketID)
	}
}

// Recheck asks the Authenticator, if it is an auth.Rechecker, whether
// each connected client's identity still holds (after its password file
// or settings were reloaded), and disconnects those it no longer lets in:
// 5.0 with DISCONNECT 0x87 (Not authorized), 3.1.1 by closing. It returns
// the number disconnected once the core has done it. The ACL needs no
// recheck: a swap of Options.Authorizer empties every connection's cache,
// so a right revoked stops the deliveries it allowed at the next message.
func (b *Broker) Recheck() int {
	rc, ok := b.opts.Authenticator.(auth.Rechecker)
	if !ok {
		return 0
	}
	done := make(chan int, 1)
	b.post(event{kind: evFunc, fn: func() {
		n := 0
		for _, c := range b.core.online {
			if !c.connected || rc.Recheck(c.id, c.info.Listener) {
				continue
			}
			n++
			b.stats.reasons.refuse(refuseNotAuthorized)
			c.setEndReason("credentials no longer valid after a reload")
			if c.version == packet.V5 {
				c.send(outItem{pkt: &packet.Disconnect{ReasonCode: packet.CodeNotAuthorized}}, outItem{close: true})
			} else {
				c.kill()
			}
		}
		done <- n
	}})
	select {
	case n := <-done:
		return n
	case <-b.quit:
		return 0
	}
}
