package engine

import (
	"bufio"
	"context"
	"time"

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

// authenticate decides the CONNECT, with an enhanced authentication
// exchange on br when it names a method; it answers and closes on refusal.
func (c *conn) authenticate(cp *packet.Connect, br *bufio.Reader) bool {
	b := c.b
	c.id = auth.Identity{Username: cp.Username, Anonymous: !cp.UsernameFlag}
	enhanced := c.version == packet.V5 && cp.Props.Has(packet.PropAuthMethod)
	if a := b.opts.Authenticator; a != nil {
		ctx, cancel := context.WithTimeout(context.Background(), b.opts.ConnectTimeout)
		req := auth.Request{
			ClientID: cp.ClientID, Username: cp.Username, HasUsername: cp.UsernameFlag,
			Password: cp.Password, HasPassword: cp.PasswordFlag,
			Listener: c.info.Listener, Remote: c.info.Remote, TLS: c.info.TLS,
			CertIdentity: c.info.IdentityIsUsername,
		}
		var id auth.Identity
		var code packet.ReasonCode
		if enhanced {
			var closed bool
			if id, code, closed = c.enhancedConnect(ctx, a, req, cp, br); closed {
				cancel()
				return false
			}
		} else {
			id, code = a.Authenticate(ctx, req)
		}
		cancel()
		if code >= 0x80 {
			b.stats.reasons.refuse(refuseNotAuthorized)
			c.setEndReason("authentication refused: " + code.String())
			c.refuseConnack(code)
			return false
		}
		c.id = id
	} else if enhanced {
		// Enhanced authentication is offered only by an Authenticator
		// that implements it [MQTT-4.12.0-1].
		c.setEndReason("authentication method not offered")
		c.refuseConnack(packet.CodeBadAuthenticationMethod)
		return false
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

// maxAuthSteps bounds an enhanced authentication exchange (SCRAM takes
// two): a client cannot keep a connection in its handshake forever, which
// the CONNECT deadline also ensures.
const maxAuthSteps = 8

// enhancedConnect runs the CONNECT's enhanced authentication
// [MQTT-4.12.0-2]: AUTH 0x18 (Continue authentication) packets each way
// until the Authenticator decides. On success the method and the server's
// last data go with the CONNACK [MQTT-4.12.0-5]. closed reports that the
// client went away or broke the exchange (then nothing more is sent but
// what was).
func (c *conn) enhancedConnect(ctx context.Context, a auth.Authenticator, req auth.Request, cp *packet.Connect,
	br *bufio.Reader) (id auth.Identity, code packet.ReasonCode, closed bool) {
	en, ok := a.(auth.Enhanced)
	if !ok {
		return auth.Identity{}, packet.CodeBadAuthenticationMethod, false
	}
	method := cp.Props.AuthMethod
	ex, code := en.StartAuth(req, method)
	if code != packet.CodeSuccess {
		return auth.Identity{}, code, false
	}
	data := cp.Props.AuthData
	for step := 0; step < maxAuthSteps; step++ {
		out, done, id, code := ex.Step(ctx, data)
		if done {
			if code == packet.CodeSuccess {
				c.authMethod, c.authData = method, out
			}
			return id, code, false
		}
		c.send(outItem{pkt: authPacket(packet.CodeContinueAuthentication, method, out)})
		// Before authentication an AUTH is held to max_connect_size too.
		p, err := packet.Read(br, c.version, min(c.b.opts.MaxPacketSize, c.b.opts.MaxConnectSize+5))
		if err != nil {
			c.setEndReason("connection lost during authentication")
			c.kill()
			return auth.Identity{}, 0, true
		}
		ap, ok := p.(*packet.Auth)
		if !ok || ap.ReasonCode != packet.CodeContinueAuthentication || ap.Props.AuthMethod != method {
			// [MQTT-4.12.0-4]: before CONNACK only AUTH (or DISCONNECT),
			// continuing, with the same method.
			c.setEndReason("protocol error during authentication")
			c.refuseConnack(packet.CodeProtocolError)
			return auth.Identity{}, 0, true
		}
		data = ap.Props.AuthData
	}
	return auth.Identity{}, packet.CodeNotAuthorized, false
}

// authPacket is an AUTH with method and data.
func authPacket(code packet.ReasonCode, method string, data []byte) *packet.Auth {
	p := &packet.Auth{ReasonCode: code}
	p.Props.AuthMethod = method
	p.Props.Set(packet.PropAuthMethod)
	if data != nil {
		p.Props.AuthData = data
		p.Props.Set(packet.PropAuthData)
	}
	return p
}

// reauthenticate handles an AUTH after CONNACK [MQTT-4.12.1-1]: a
// re-authentication (0x19) with the CONNECT's method starts an exchange on
// the reader, which other packets may interleave with; it must end with
// the same identity. It reports whether the connection goes on; a failure
// ends it with DISCONNECT 0x87 (or 0x8C for a method not offered), the
// protocol errors with 0x82.
func (c *conn) reauthenticate(p *packet.Auth) bool {
	fail := func(code packet.ReasonCode, why string) bool {
		c.b.stats.reasons.refuse(refuseNotAuthorized)
		c.setEndReason("re-authentication failed: " + why)
		c.send(outItem{pkt: &packet.Disconnect{ReasonCode: code}}, outItem{close: true})
		return false
	}
	if c.authMethod == "" || p.Props.AuthMethod != c.authMethod {
		// AUTH without the CONNECT having named a method, or with
		// another one [MQTT-4.12.0-7], [MQTT-4.12.1-1].
		c.protocolError(packet.CodeProtocolError, "AUTH without the CONNECT's authentication method")
		return false
	}
	switch p.ReasonCode {
	case packet.CodeReAuthenticate:
		en, _ := c.b.opts.Authenticator.(auth.Enhanced)
		if en == nil {
			return fail(packet.CodeBadAuthenticationMethod, "method not offered")
		}
		ex, code := en.StartAuth(auth.Request{
			ClientID: c.clientID, Username: c.id.Username, HasUsername: !c.id.Anonymous,
			Listener: c.info.Listener, Remote: c.info.Remote, TLS: c.info.TLS,
		}, c.authMethod)
		if code != packet.CodeSuccess {
			return fail(packet.CodeNotAuthorized, code.String())
		}
		c.reauth, c.reauthSteps = ex, 0
	case packet.CodeContinueAuthentication:
		if c.reauth == nil {
			c.protocolError(packet.CodeProtocolError, "AUTH 0x18 outside an authentication")
			return false
		}
	default:
		c.protocolError(packet.CodeProtocolError, "AUTH with reason "+p.ReasonCode.String())
		return false
	}
	if c.reauthSteps++; c.reauthSteps > maxAuthSteps {
		return fail(packet.CodeNotAuthorized, "too many steps")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	out, done, id, code := c.reauth.Step(ctx, p.Props.AuthData)
	cancel()
	if !done {
		c.send(outItem{pkt: authPacket(packet.CodeContinueAuthentication, c.authMethod, out)})
		return true
	}
	c.reauth = nil
	switch {
	case code != packet.CodeSuccess:
		return fail(packet.CodeNotAuthorized, code.String())
	case !id.Same(c.id):
		return fail(packet.CodeNotAuthorized, "another identity")
	}
	c.send(outItem{pkt: authPacket(packet.CodeSuccess, c.authMethod, out)})
	return true
}
