package engine

import (
	"strings"
	"testing"

	"github.com/keelmq/keel/engine/auth"
	"github.com/keelmq/keel/engine/packet"
)

// authOptions is a broker with a password file (alice, bob, root; no
// anonymous access) and an ACL.
func authOptions(t *testing.T) Options {
	t.Helper()
	var pw strings.Builder
	for _, u := range []string{"alice", "bob", "root"} {
		h, err := auth.Hash("pw-" + u)
		if err != nil {
			t.Fatal(err)
		}
		pw.WriteString(u + ":" + h + "\n")
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
	return Options{Authenticator: files, Authorizer: auth.NewLive(acl)}
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
