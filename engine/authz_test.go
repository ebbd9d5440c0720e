package engine

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keelmq/keel/engine/auth"
	"github.com/keelmq/keel/engine/packet"
	"github.com/xdg-go/scram"
	"golang.org/x/crypto/bcrypt"
)

// authOptions is a broker with a password file (alice, bob, root; no
// anonymous access) and an ACL.
func authOptions(t *testing.T) Options {
	opts, _ := authOptionsLines(t)
	return opts
}

// authOptionsLines is authOptions with the password file's line of each
// user.
func authOptionsLines(t *testing.T) (Options, map[string]string) {
	t.Helper()
	var pw strings.Builder
	lines := map[string]string{}
	for _, u := range []string{"alice", "bob", "root"} {
		h, err := auth.HashWithIterations("pw-"+u, 101) // 210,000 iterations cost seconds under -race
		if err != nil {
			t.Fatal(err)
		}
		lines[u] = u + ":" + h
		pw.WriteString(lines[u] + "\n")
	}
	passwords, err := auth.ParsePasswords("passwords", strings.NewReader(pw.String()))
	if err != nil {
		t.Fatal(err)
	}
	acl, err := auth.ParseACL("acl", strings.NewReader(`
user alice
topic write a/#
topic read b/#
topic readwrite q/#

user root
topic readwrite #
`))
	if err != nil {
		t.Fatal(err)
	}
	files := &auth.Files{}
	files.SetPasswords(passwords)
	return Options{Authenticator: files, Authorizer: auth.NewLive(acl)}, lines
}

func withLogin(user, pw string) func(*packet.Connect) {
	return func(cp *packet.Connect) {
		cp.UsernameFlag, cp.Username = true, user
		cp.PasswordFlag, cp.Password = true, []byte(pw)
	}
}

// A refused CONNECT gets one answer for an unknown user and a wrong
// password, and another for no credentials at all, in both versions.
func TestAuthenticationRefusals(t *testing.T) {
	tb := startBroker(t, authOptions(t))
	for _, tc := range []struct {
		name     string
		v        byte
		props    func(*packet.Connect)
		wantCode packet.ReasonCode
	}{
		{"5.0 good", packet.V5, withLogin("alice", "pw-alice"), 0},
		{"5.0 wrong password", packet.V5, withLogin("alice", "nope"), packet.CodeBadUsernameOrPassword},
		{"5.0 unknown user", packet.V5, withLogin("mallory", "pw-alice"), packet.CodeBadUsernameOrPassword},
		{"5.0 anonymous", packet.V5, nil, packet.CodeNotAuthorized},
		{"3.1.1 good", packet.V311, withLogin("bob", "pw-bob"), 0},
		{"3.1.1 wrong password", packet.V311, withLogin("bob", "nope"), packet.RetBadUsernameOrPassword},
		{"3.1.1 anonymous", packet.V311, nil, packet.RetNotAuthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, tb.addr, tc.v)
			ca := c.connect("c-"+strings.ReplaceAll(tc.name, " ", "-"), true, tc.props)
			if ca.ReasonCode != tc.wantCode {
				t.Fatalf("CONNACK %v, want %v", ca.ReasonCode, tc.wantCode)
			}
			if tc.wantCode != 0 {
				if p := c.expectClosed(); p != nil {
					t.Fatalf("got %T after a refused CONNACK, want the connection closed", p)
				}
			}
		})
	}
	if got := tb.b.Stats().Refused["not_authorized"]; got != 5 {
		t.Fatalf("refused not_authorized = %d, want 5", got)
	}
}

// The ACL is checked at PUBLISH (5.0: 0x87; 3.1.1: acked and dropped), at
// SUBSCRIBE (an ACL file grants every filter, as Mosquitto 2.0) and at
// every delivery, and for the will at CONNECT.
func TestACLChecks(t *testing.T) {
	tb := startBroker(t, authOptions(t))
	root := dialRaw(t, tb.addr, packet.V5)
	root.connect("root", true, withLogin("root", "pw-root"))
	root.subscribe(1, "#", 1)

	a5 := dialRaw(t, tb.addr, packet.V5)
	a5.connect("alice5", true, withLogin("alice", "pw-alice"))
	a5.publish(1, "a/x", 1, "allowed")
	if a := a5.expectAck(packet.PUBACK, 1); a.ReasonCode != 0 {
		t.Fatalf("allowed publish: PUBACK %v", a.ReasonCode)
	}
	root.expectPub("a/x", "allowed")
	a5.publish(2, "c/x", 1, "denied")
	if a := a5.expectAck(packet.PUBACK, 2); a.ReasonCode != packet.CodeNotAuthorized {
		t.Fatalf("denied publish: PUBACK %v, want 0x87", a.ReasonCode)
	}
	// QoS 2: PUBREC 0x87 ends the flow; the id is free for a new message.
	a5.publish(3, "c/x", 2, "denied")
	if a := a5.expectAck(packet.PUBREC, 3); a.ReasonCode != packet.CodeNotAuthorized {
		t.Fatalf("denied QoS 2 publish: PUBREC %v, want 0x87", a.ReasonCode)
	}
	a5.publish(3, "a/x", 2, "allowed again")
	if a := a5.expectAck(packet.PUBREC, 3); a.ReasonCode != 0 {
		t.Fatalf("new QoS 2 publish with the refused id: PUBREC %v, want 0", a.ReasonCode)
	}
	a5.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 3})
	a5.expectAck(packet.PUBCOMP, 3)
	root.expectPub("a/x", "allowed again") // not the denied ones

	a3 := dialRaw(t, tb.addr, packet.V311)
	a3.connect("alice3", true, withLogin("alice", "pw-alice"))
	a3.publish(1, "c/x", 1, "dropped")
	a3.expectAck(packet.PUBACK, 1) // 3.1.1 has no reason code: acked, dropped
	a3.publish(2, "a/x", 1, "marker")
	a3.expectAck(packet.PUBACK, 2)
	root.expectPub("a/x", "marker") // the dropped one never came

	// Delivery: alice may subscribe to a/# but not read it.
	if got := a5.subscribe(5, "a/#", 1).Codes[0]; got != 1 {
		t.Fatalf("SUBACK %v, want granted (an ACL file grants every filter)", got)
	}
	a5.subscribe(6, "b/#", 1)
	rp := dialRaw(t, tb.addr, packet.V5)
	rp.connect("root-pub", true, withLogin("root", "pw-root"))
	rp.pubAcked(7, "a/y", "not for alice")
	rp.pubAcked(8, "b/y", "for alice")
	a5.expectPub("b/y", "for alice")

	// A will on a topic alice may not write is refused at CONNECT.
	w := dialRaw(t, tb.addr, packet.V5)
	ca := w.connect("alice-will", true, both(withLogin("alice", "pw-alice"), withWill("c/will", "x", 0)))
	if ca.ReasonCode != packet.CodeNotAuthorized {
		t.Fatalf("CONNACK %v for a will on a denied topic, want 0x87", ca.ReasonCode)
	}
	st := tb.b.Stats()
	if st.Refused["not_authorized"] != 4 || st.Dropped["not_authorized"] != 1 {
		t.Fatalf("refused %v, dropped %v; want 4 refusals and 1 drop not_authorized", st.Refused, st.Dropped)
	}
}

// A right revoked while a device was away holds for what was queued: the
// queued message is checked when it is handed out.
func TestACLCheckedOnQueuedMessages(t *testing.T) {
	opts := authOptions(t)
	tb := startBroker(t, opts)
	s := dialRaw(t, tb.addr, packet.V5)
	s.connect("alice-q", false, withLogin("alice", "pw-alice"))
	s.subscribe(1, "q/#", 1)
	s.disconnect(tb)
	root := dialRaw(t, tb.addr, packet.V5)
	root.connect("root", true, withLogin("root", "pw-root"))
	root.pubAcked(1, "q/1", "queued")
	// The rules change: alice may read b/# only now.
	acl, err := auth.ParseACL("acl2", strings.NewReader("user alice\ntopic read b/#\nuser root\ntopic readwrite #\n"))
	if err != nil {
		t.Fatal(err)
	}
	opts.Authorizer.Swap(acl)
	s = dialRaw(t, tb.addr, packet.V5)
	s.connect("alice-q", false, withLogin("alice", "pw-alice"))
	s.subscribe(2, "b/#", 1)
	root.pubAcked(2, "b/1", "marker")
	s.expectPub("b/1", "marker") // not the queued q/1
}

// Without an Authorizer no client may publish to $SYS.
func TestNoPublishToSys(t *testing.T) {
	tb := startBroker(t, Options{})
	c := dialRaw(t, tb.addr, packet.V5)
	c.connect("c", true, nil)
	c.publish(1, "$SYS/broker/uptime", 1, "forged")
	if a := c.expectAck(packet.PUBACK, 1); a.ReasonCode != packet.CodeNotAuthorized {
		t.Fatalf("PUBACK %v for a publish to $SYS, want 0x87", a.ReasonCode)
	}
}

// A persistent session belongs to the user who created it: another user
// with its client id is refused (5.0 0x87, 3.1.1 return code 5) whether the
// session is online or stored, with or without clean start; the session
// keeps its queue and its connection, and the owner survives a restart.
func TestSessionBelongsToItsCreator(t *testing.T) {
	opts := authOptions(t)
	opts.SessionOwners = true
	tb := startBroker(t, opts)
	alice := dialRaw(t, tb.addr, packet.V5)
	if ca := alice.connect("dev1", false, withLogin("alice", "pw-alice")); ca.ReasonCode != 0 {
		t.Fatalf("alice: CONNACK %v", ca.ReasonCode)
	}
	alice.subscribe(1, "q/#", 1)
	root := dialRaw(t, tb.addr, packet.V5)
	root.connect("root", true, withLogin("root", "pw-root"))

	refusedAll := func(when string) {
		t.Helper()
		for _, tc := range []struct {
			v     byte
			clean bool
			want  packet.ReasonCode
		}{
			{packet.V5, false, packet.CodeNotAuthorized},
			{packet.V5, true, packet.CodeNotAuthorized},
			{packet.V311, false, packet.RetNotAuthorized},
			{packet.V311, true, packet.RetNotAuthorized},
		} {
			bob := dialRaw(t, tb.addr, tc.v)
			if ca := bob.connect("dev1", tc.clean, withLogin("bob", "pw-bob")); ca.ReasonCode != tc.want || ca.SessionPresent {
				t.Fatalf("%s: bob as dev1 (v%d clean %v): CONNACK %v present %v, want %v", when, tc.v, tc.clean, ca.ReasonCode, ca.SessionPresent, tc.want)
			}
			if p := bob.expectClosed(); p != nil {
				t.Fatalf("%s: got %T after the refusal, want the connection closed", when, p)
			}
		}
	}
	refusedAll("online")
	// Alice's connection was not taken over: it still receives.
	root.pubAcked(1, "q/1", "live")
	alice.ackPub(alice.expectPub("q/1", "live"))
	alice.disconnect(tb)

	root.pubAcked(2, "q/2", "queued")
	refusedAll("offline")
	tb.restart()
	refusedAll("after a restart")

	alice = dialRaw(t, tb.addr, packet.V5)
	if ca := alice.connect("dev1", false, withLogin("alice", "pw-alice")); ca.ReasonCode != 0 || !ca.SessionPresent {
		t.Fatalf("alice again: CONNACK %v present %v, want her session", ca.ReasonCode, ca.SessionPresent)
	}
	alice.expectPub("q/2", "queued")
}

// A session stored before owners existed (format 1) belongs to the first
// client that connects to it since.
func TestUnownedSessionIsClaimed(t *testing.T) {
	opts := authOptions(t)
	opts.SessionOwners = true
	tb := startBroker(t, opts)
	c := dialRaw(t, tb.addr, packet.V5)
	c.connect("old", false, withLogin("alice", "pw-alice"))
	c.disconnect(tb)
	tb.session("old", func(s *session) { s.Creator = nil })
	bob := dialRaw(t, tb.addr, packet.V5)
	if ca := bob.connect("old", false, withLogin("bob", "pw-bob")); ca.ReasonCode != 0 || !ca.SessionPresent {
		t.Fatalf("bob on an unowned session: CONNACK %v present %v, want it", ca.ReasonCode, ca.SessionPresent)
	}
	bob.disconnect(tb)
	alice := dialRaw(t, tb.addr, packet.V5)
	if ca := alice.connect("old", false, withLogin("alice", "pw-alice")); ca.ReasonCode != packet.CodeNotAuthorized {
		t.Fatalf("alice after bob claimed it: CONNACK %v, want 0x87", ca.ReasonCode)
	}
}

// Without SessionOwners, the client id is the session, whoever logs in.
func TestSessionOwnersOff(t *testing.T) {
	tb := startBroker(t, authOptions(t))
	c := dialRaw(t, tb.addr, packet.V5)
	c.connect("shared-id", false, withLogin("alice", "pw-alice"))
	c.disconnect(tb)
	bob := dialRaw(t, tb.addr, packet.V5)
	if ca := bob.connect("shared-id", false, withLogin("bob", "pw-bob")); ca.ReasonCode != 0 || !ca.SessionPresent {
		t.Fatalf("CONNACK %v present %v, want the session", ca.ReasonCode, ca.SessionPresent)
	}
}

// Recheck after a reload disconnects the clients whose password entry
// changed or went (5.0 with DISCONNECT 0x87), and keeps the others.
func TestRecheckAfterReload(t *testing.T) {
	opts, lines := authOptionsLines(t)
	tb := startBroker(t, opts)
	alice := dialRaw(t, tb.addr, packet.V5)
	alice.connect("alice", true, withLogin("alice", "pw-alice"))
	bob := dialRaw(t, tb.addr, packet.V311)
	bob.connect("bob", true, withLogin("bob", "pw-bob"))
	root := dialRaw(t, tb.addr, packet.V311)
	root.connect("root", true, withLogin("root", "pw-root"))

	// The new file: alice has a new password, root is gone, bob's line is
	// the same as before.
	var pw strings.Builder
	h, err := auth.HashWithIterations("new-alice", 101)
	if err != nil {
		t.Fatal(err)
	}
	pw.WriteString("alice:" + h + "\n")
	old := opts.Authenticator.(*auth.Files)
	if n := tb.b.Recheck(); n != 0 {
		t.Fatalf("Recheck with the same file disconnected %d", n)
	}
	pw.WriteString(lines["bob"] + "\n")
	p, err := auth.ParsePasswords("passwords2", strings.NewReader(pw.String()))
	if err != nil {
		t.Fatal(err)
	}
	old.SetPasswords(p)
	if n := tb.b.Recheck(); n != 2 {
		t.Fatalf("Recheck disconnected %d, want 2 (alice, root)", n)
	}
	alice.expectDisconnect(packet.CodeNotAuthorized)
	root.expectEOF()
	bob.ping()
	a2 := dialRaw(t, tb.addr, packet.V5)
	if ca := a2.connect("alice", true, withLogin("alice", "new-alice")); ca.ReasonCode != 0 {
		t.Fatalf("alice with her new password: CONNACK %v", ca.ReasonCode)
	}
}

// A will is checked again when it is published: a right revoked since the
// CONNECT holds for it.
func TestWillCheckedWhenPublished(t *testing.T) {
	opts := authOptions(t)
	tb := startBroker(t, opts)
	root := dialRaw(t, tb.addr, packet.V5)
	root.connect("root", true, withLogin("root", "pw-root"))
	root.subscribe(1, "a/#", 0)
	alice := dialRaw(t, tb.addr, packet.V5)
	alice.connect("alice", true, func(cp *packet.Connect) {
		withLogin("alice", "pw-alice")(cp)
		cp.WillFlag, cp.WillTopic, cp.WillPayload = true, "a/will", []byte("gone")
	})
	acl, err := auth.ParseACL("acl2", strings.NewReader("user root\ntopic readwrite #\n"))
	if err != nil {
		t.Fatal(err)
	}
	opts.Authorizer.Swap(acl)
	before := tb.b.stats.reasons.dropped[dropNotAuthorized].Load()
	alice.nc.Close() // no DISCONNECT: the will is due
	waitFor(t, "the will to be refused", func() bool {
		return tb.b.stats.reasons.dropped[dropNotAuthorized].Load() > before
	})
	root.publish(0, "a/marker", 0, "after")
	root.expectPub("a/marker", "after") // and no will before it
}

// Bad credentials in the CONNECT itself: a username and a password of
// 65,535 bytes (the most MQTT carries) are a wrong login, nothing worse;
// a username that is not UTF-8 is a malformed packet [MQTT-1.5.4-1]
// (5.0: CONNACK 0x81; 3.1.1: closed without one), and neither reaches the
// password file.
func TestBadCredentials(t *testing.T) {
	opts := authOptions(t)
	opts.MaxConnectSize = 256 << 10 // two 64 KiB fields are over the default max_connect_size (preauth.go)
	tb := startBroker(t, opts)
	huge := strings.Repeat("u", 65535)
	for _, v := range []byte{packet.V5, packet.V311} {
		c := dialRaw(t, tb.addr, v)
		ca := c.connect("huge", true, func(cp *packet.Connect) {
			withLogin(huge, strings.Repeat("p", 65535))(cp)
		})
		want := packet.CodeBadUsernameOrPassword
		if v != packet.V5 {
			want = packet.RetBadUsernameOrPassword
		}
		if ca.ReasonCode != want {
			t.Errorf("v%d huge login: CONNACK %v, want %v", v, ca.ReasonCode, want)
		}
		c.expectClosed()
	}
	for _, v := range []byte{packet.V5, packet.V311} {
		c := dialRaw(t, tb.addr, v)
		cp := &packet.Connect{ProtocolName: "MQTT", ProtocolLevel: v, CleanStart: true, KeepAlive: 30, ClientID: "bad-utf8",
			UsernameFlag: true, Username: "al\xffice", PasswordFlag: true, Password: []byte("pw-alice")}
		raw, err := cp.Append(nil, v)
		if err != nil {
			t.Fatal(err)
		}
		c.sendRaw(raw)
		p := c.expectClosed()
		if v == packet.V5 {
			if ca, ok := p.(*packet.Connack); !ok || ca.ReasonCode != packet.CodeMalformedPacket {
				t.Errorf("5.0 username not UTF-8: got %T %+v, want CONNACK 0x81 and a close", p, p)
			}
		} else if p != nil {
			t.Errorf("3.1.1 username not UTF-8: got %T %+v, want the connection closed", p, p)
		}
	}
}

// scramClient runs SCRAM-SHA-512 (the xdg-go/scram client, as an MQTT
// library would) over a raw connection: the CONNECT with the first
// message, AUTH 0x18 each way, then the CONNACK.
func scramConnect(t *testing.T, c *rawClient, id, method, user, pw string) (*packet.Connack, *scram.ClientConversation) {
	t.Helper()
	cl, err := scram.SHA512.NewClient(user, pw, "")
	if err != nil {
		t.Fatal(err)
	}
	conv := cl.NewConversation()
	first, err := conv.Step("")
	if err != nil {
		t.Fatal(err)
	}
	cp := &packet.Connect{ProtocolName: "MQTT", ProtocolLevel: packet.V5, CleanStart: true, KeepAlive: 30, ClientID: id}
	cp.Props.AuthMethod, cp.Props.AuthData = method, []byte(first)
	cp.Props.Set(packet.PropAuthMethod)
	cp.Props.Set(packet.PropAuthData)
	c.send(cp)
	for {
		switch p := c.recv().(type) {
		case *packet.Connack:
			return p, conv
		case *packet.Auth:
			if p.ReasonCode != packet.CodeContinueAuthentication || p.Props.AuthMethod != method {
				t.Fatalf("AUTH %v method %q, want 0x18 %s", p.ReasonCode, p.Props.AuthMethod, method)
			}
			next, err := conv.Step(string(p.Props.AuthData))
			if err != nil {
				t.Fatalf("client step: %v", err)
			}
			c.send(authPacket(packet.CodeContinueAuthentication, method, []byte(next)))
		default:
			t.Fatalf("got %T during authentication", p)
		}
	}
}

// SCRAM-SHA-512 against the password file's $7$ entries: the right
// password logs in and the server proves it knows the key (its final
// message verifies); a wrong password and an unknown user are 0x86 alike;
// a method keel does not offer, and a user whose entry is not $7$, 0x8C.
func TestSCRAM(t *testing.T) {
	tb := startBroker(t, scramOptions(t))

	c := dialRaw(t, tb.addr, packet.V5)
	ca, conv := scramConnect(t, c, "s1", auth.MethodSCRAMSHA512, "alice", "pw-alice")
	if ca.ReasonCode != 0 || ca.Props.AuthMethod != auth.MethodSCRAMSHA512 {
		t.Fatalf("CONNACK %v method %q, want success with the method", ca.ReasonCode, ca.Props.AuthMethod)
	}
	if _, err := conv.Step(string(ca.Props.AuthData)); err != nil || !conv.Valid() {
		t.Fatalf("the server's final message does not verify: %v", err)
	}
	// alice's ACL applies: she may write a/#.
	c.publish(1, "a/1", 1, "x")
	if a := c.expectAck(packet.PUBACK, 1); a.ReasonCode != 0 {
		t.Fatalf("PUBACK %v", a.ReasonCode)
	}

	for _, tc := range []struct {
		name, method, user, pw string
		want                   packet.ReasonCode
	}{
		{"wrong password", auth.MethodSCRAMSHA512, "alice", "nope", packet.CodeBadUsernameOrPassword},
		{"unknown user", auth.MethodSCRAMSHA512, "mallory", "pw-alice", packet.CodeBadUsernameOrPassword},
		{"bcrypt entry", auth.MethodSCRAMSHA512, "carol", "pw-carol", packet.CodeBadAuthenticationMethod},
		{"SHA-256", "SCRAM-SHA-256", "alice", "pw-alice", packet.CodeBadAuthenticationMethod},
	} {
		c := dialRaw(t, tb.addr, packet.V5)
		if ca, _ := scramConnect(t, c, "s-"+strings.ReplaceAll(tc.name, " ", "-"), tc.method, tc.user, tc.pw); ca.ReasonCode != tc.want {
			t.Errorf("%s: CONNACK %v, want %v", tc.name, ca.ReasonCode, tc.want)
		}
		c.expectClosed()
	}
}

// A PUBLISH in the middle of the exchange is a protocol error: CONNACK
// 0x82 and a close [MQTT-4.12.0-4].
func TestSCRAMProtocolError(t *testing.T) {
	tb := startBroker(t, scramOptions(t))
	c := dialRaw(t, tb.addr, packet.V5)
	cl, _ := scram.SHA512.NewClient("alice", "pw-alice", "")
	first, _ := cl.NewConversation().Step("")
	cp := &packet.Connect{ProtocolName: "MQTT", ProtocolLevel: packet.V5, CleanStart: true, KeepAlive: 30, ClientID: "pe"}
	cp.Props.AuthMethod, cp.Props.AuthData = auth.MethodSCRAMSHA512, []byte(first)
	cp.Props.Set(packet.PropAuthMethod)
	cp.Props.Set(packet.PropAuthData)
	c.send(cp)
	if a, ok := c.recv().(*packet.Auth); !ok || a.ReasonCode != packet.CodeContinueAuthentication {
		t.Fatalf("want AUTH 0x18 first, got %+v", a)
	}
	c.publish(0, "a/x", 0, "early")
	if ca, ok := c.expectClosed().(*packet.Connack); !ok || ca.ReasonCode != packet.CodeProtocolError {
		t.Fatalf("got %+v, want CONNACK 0x82 and a close", ca)
	}
}

// Re-authentication [MQTT-4.12.1-1]: AUTH 0x19 with the same method runs
// a new exchange while the connection goes on, ending in AUTH 0x00; a
// wrong password ends the connection with DISCONNECT 0x87; AUTH from a
// client that did not name a method is a protocol error.
func TestSCRAMReauthentication(t *testing.T) {
	tb := startBroker(t, scramOptions(t))
	reauth := func(c *rawClient, pw string) packet.Packet {
		t.Helper()
		cl, _ := scram.SHA512.NewClient("alice", pw, "")
		conv := cl.NewConversation()
		first, _ := conv.Step("")
		c.send(authPacket(packet.CodeReAuthenticate, auth.MethodSCRAMSHA512, []byte(first)))
		a, ok := c.recv().(*packet.Auth)
		if !ok || a.ReasonCode != packet.CodeContinueAuthentication {
			t.Fatalf("re-authentication: want AUTH 0x18, got %+v", a)
		}
		final, _ := conv.Step(string(a.Props.AuthData))
		c.send(authPacket(packet.CodeContinueAuthentication, auth.MethodSCRAMSHA512, []byte(final)))
		return c.recv()
	}
	c := dialRaw(t, tb.addr, packet.V5)
	if ca, _ := scramConnect(t, c, "re", auth.MethodSCRAMSHA512, "alice", "pw-alice"); ca.ReasonCode != 0 {
		t.Fatalf("CONNACK %v", ca.ReasonCode)
	}
	if a, ok := reauth(c, "pw-alice").(*packet.Auth); !ok || a.ReasonCode != packet.CodeSuccess {
		t.Fatalf("re-authentication: got %+v, want AUTH 0x00", a)
	}
	c.ping()
	if d, ok := reauth(c, "wrong").(*packet.Disconnect); !ok || d.ReasonCode != packet.CodeNotAuthorized {
		t.Fatalf("failed re-authentication: got %+v, want DISCONNECT 0x87", d)
	}
	c.expectEOF()

	plain := dialRaw(t, tb.addr, packet.V5)
	plain.connect("plain", true, withLogin("alice", "pw-alice"))
	plain.send(authPacket(packet.CodeReAuthenticate, auth.MethodSCRAMSHA512, []byte("n,,n=alice,r=x")))
	plain.expectDisconnect(packet.CodeProtocolError)
}

// bcryptLine is a password file line with a bcrypt hash (cost 4).
func bcryptLine(user, pw string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(pw), 4)
	return user + ":" + string(h), err
}

// scramOptions is authOptions with alice's entry at 4,096 iterations
// (SCRAM clients refuse fewer) and carol's in bcrypt.
func scramOptions(t *testing.T) Options {
	t.Helper()
	opts := authOptions(t)
	h, err := auth.HashWithIterations("pw-alice", 4096)
	if err != nil {
		t.Fatal(err)
	}
	bc, err := bcryptLine("carol", "pw-carol")
	if err != nil {
		t.Fatal(err)
	}
	p, err := auth.ParsePasswords("passwords", strings.NewReader("alice:"+h+"\n"+bc+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	opts.Authenticator.(*auth.Files).SetPasswords(p)
	return opts
}

// A flood of wrong passwords from one address: after its first failure
// the address is in its backoff and refused without a verification
// (0x9F), while a client from another address logs in as usual.
func TestWrongPasswordFloodBacksOff(t *testing.T) {
	opts := authOptions(t)
	files := opts.Authenticator.(*auth.Files)
	files.Limiter = auth.NewLimiter(auth.LimiterOptions{Backoff: time.Minute, MaxBackoff: time.Hour})
	tb := startBroker(t, opts)
	from := func(local string) *rawClient {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
		nc, err := d.Dial("tcp", tb.addr)
		if err != nil {
			t.Fatal(err)
		}
		rc := &rawClient{t: t, nc: nc, br: bufio.NewReader(nc), version: packet.V5}
		t.Cleanup(func() { nc.Close() })
		return rc
	}
	counts := map[packet.ReasonCode]int{}
	for i := 0; i < 50; i++ {
		c := from("127.0.0.2")
		counts[c.connect(fmt.Sprintf("flood-%d", i), true, withLogin("alice", "guess"+strconv.Itoa(i))).ReasonCode]++
	}
	if counts[packet.CodeBadUsernameOrPassword] != 1 || counts[packet.CodeConnectionRateExceeded] != 49 {
		t.Fatalf("50 wrong logins from one address: %v; want one 0x86, then 0x9F for the rest", counts)
	}
	ok := from("127.0.0.1")
	if ca := ok.connect("alice", true, withLogin("alice", "pw-alice")); ca.ReasonCode != 0 {
		t.Fatalf("alice from another address: CONNACK %v, want success", ca.ReasonCode)
	}
	// The flooding address is still refused, even with the right password.
	if ca := from("127.0.0.2").connect("alice2", true, withLogin("alice", "pw-alice")); ca.ReasonCode != packet.CodeConnectionRateExceeded {
		t.Fatalf("the right password from the address in backoff: CONNACK %v, want 0x9F", ca.ReasonCode)
	}
}
