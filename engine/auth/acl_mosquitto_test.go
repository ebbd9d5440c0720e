package auth

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/paho"
)

// The side-by-side table: one acl_file, loaded by Keel and by the real
// Mosquitto 2.0, and a table of (user, client id, topic, access) cases
// whose verdicts must be the same in both. Mosquitto's verdict is
// observed with Paho 5.0 clients:
//
//   - Write: the case's client publishes at QoS 1; Mosquitto answers a
//     refused PUBLISH with PUBACK 0x87.
//   - Read: an injector with "topic readwrite #" leaves a retained message
//     on the topic (Mosquitto's own retained $SYS/broker/version for $SYS);
//     the case's client subscribes to the topic and to its marker
//     keel-marker/<client id>; then the injector publishes the marker. The
//     retained message was queued (or not) before the marker was sent, so
//     when the marker arrives the verdict is known: no waiting for a
//     timeout.
//   - Subscribe: the SUBACK's reason code.
const sideBySideACL = `# lines before any user: anonymous clients
topic read public/#
topic write anon/in
topic deny public/secret

user alice
topic readwrite alice/#
topic deny alice/private/#
topic read shared/+/status
topic write $SYS/broker/x
topic read $SYS/broker/version

user bob
topic bob/both
topic read #

user alice
topic write alice2/extra

user carol
topic readwrite devices/#

user c+arol
topic readwrite plus/#

user injector
topic readwrite #

pattern readwrite dev/%c/#
pattern read users/%u/inbox
pattern deny devices/%c/locked
pattern read keel-marker/%c
`

type aclCase struct {
	user   string // "" is anonymous
	cid    string
	topic  string
	access Access
	want   bool // Keel's verdict (and Mosquitto's, unless differs)
	// differs says why Mosquitto answers the opposite, on purpose.
	differs string
}

var sideBySide = []aclCase{
	// anonymous section
	{"", "a1", "anon/in", Write, true, ""},
	{"", "a1", "public/news", Write, false, ""},
	{"", "a1", "public/news", Read, true, ""},
	{"", "a1", "public/secret", Read, false, ""}, // deny beats the read on public/#
	{"", "a1", "alice/x", Read, false, ""},
	{"", "a1", "dev/a1/x", Write, true, ""}, // patterns apply to anonymous clients too
	{"", "a1", "users/a1/inbox", Read, false, ""},
	// a user's section; two sections for one user are one list
	{"alice", "al1", "alice/x", Write, true, ""},
	{"alice", "al1", "alice/x", Read, true, ""},
	{"alice", "al1", "alice/private/x", Write, false, ""},
	{"alice", "al1", "alice/private", Write, false, ""}, // "a/#" matches "a"
	{"alice", "al1", "alice2/extra", Write, true, ""},
	{"alice", "al1", "shared/x/status", Read, true, ""},
	{"alice", "al1", "shared/x/y/status", Read, false, ""},
	{"alice", "al1", "shared/x/status", Write, false, ""},
	{"alice", "al1", "public/news", Read, false, ""}, // anonymous lines are not alice's
	// $ topics
	{"alice", "al1", "$SYS/broker/x", Write, false, ""}, // $SYS is never writable
	{"alice", "al1", "$SYS/broker/version", Read, true, ""},
	{"bob", "b1", "$SYS/broker/version", Read, false, ""}, // '#' does not match $SYS
	// default access, read-only '#'
	{"bob", "b1", "bob/both", Write, true, ""},
	{"bob", "b1", "some/topic", Read, true, ""},
	{"bob", "b1", "some/topic", Write, false, ""},
	// patterns, for a user without a section
	{"dave", "d1", "dev/d1/temp", Write, true, ""},
	{"dave", "d1", "dev/d2/temp", Write, false, ""},
	{"dave", "d1", "users/dave/inbox", Read, true, ""},
	{"dave", "d1", "users/eve/inbox", Read, false, ""},
	{"dave", "d1", "devices/d1/locked", Write, false, ""},
	{"dave", "d1", "devices/d1/open", Write, false, ""}, // nothing matches: denied
	// a user's topic lines decide before any pattern, deny patterns included
	{"carol", "c1", "devices/c1/locked", Write, true, ""},
	// '+' or '#' in the client id or username: patterns deny everything,
	// but the user's own topic lines are asked first
	{"dave", "d+1", "dev/x", Write, false, ""},
	{"carol", "c+1", "devices/a", Write, true, ""},
	{"c+arol", "c2", "plus/a", Write, true, ""},
	{"c+arol", "c2", "dev/c2/a", Write, false, ""},
	// a '/' in the client id
	{"dave", "d/1", "dev/d/1/temp", Write, false, "Mosquitto expands dev/%c/# to dev/d/1/#; Keel's %c never grants across a '/'"},
	{"dave", "d/1", "dev/d/x", Write, false, ""},
	// SUBSCRIBE: Mosquitto 2.0's acl_file grants every filter
	{"", "a1", "secret/#", Subscribe, true, ""},
	{"dave", "d1", "#", Subscribe, true, ""},
}

const sideBySidePasswordIterations = 101 // fast: the table connects many times

func TestACLSideBySideMosquitto(t *testing.T) {
	needTools(t, "mosquitto")
	dir := t.TempDir()
	aclPath := writeFile(t, dir, "acl", sideBySideACL)
	keel, err := LoadACL(aclPath)
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]bool{"injector": true}
	for _, c := range sideBySide {
		if c.user != "" {
			users[c.user] = true
		}
	}
	var pw strings.Builder
	for u := range users {
		h, err := hashPBKDF2(u+"-pw", sideBySidePasswordIterations)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&pw, "%s:%s\n", u, h)
	}
	pwPath := writeFile(t, dir, "pw", pw.String())
	addr := startMosquitto(t, "allow_anonymous true", "password_file "+pwPath, "acl_file "+aclPath)
	injector := dialMosq(t, addr, "injector", "injector")

	var table strings.Builder
	fmt.Fprintf(&table, "%-8s %-6s %-22s %-9s %-6s %-9s\n", "user", "cid", "topic", "access", "keel", "mosquitto")
	for i, c := range sideBySide {
		id := anonymous
		if c.user != "" {
			id = user(c.user)
		}
		gotKeel := keel.Allow(id, c.cid, c.topic, c.access)
		if gotKeel != c.want {
			t.Errorf("case %d %+v: Keel says %v, want %v", i, c, gotKeel, c.want)
		}
		gotMosq := mosquittoVerdict(t, addr, injector, c, i)
		fmt.Fprintf(&table, "%-8s %-6s %-22s %-9s %-6v %-9v %s\n", orAnon(c.user), c.cid, c.topic, c.access, gotKeel, gotMosq, c.differs)
		wantMosq := c.want
		if c.differs != "" {
			wantMosq = !c.want
		}
		if gotMosq != wantMosq {
			t.Errorf("case %d %+v: Mosquitto says %v, want %v", i, c, gotMosq, wantMosq)
		}
	}
	t.Logf("side by side, same acl_file:\n%s", table.String())
}

func orAnon(u string) string {
	if u == "" {
		return "(anon)"
	}
	return u
}

// pahoMosq is a Paho 5.0 client of a Mosquitto under test.
type pahoMosq struct {
	*paho.Client
	in chan *paho.Publish
}

// dialMosq connects a Paho 5.0 client as user ("" for none; the
// password is user+"-pw") with client id cid.
func dialMosq(t *testing.T, addr, user, cid string) *pahoMosq {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, mosqWait)
	if err != nil {
		t.Fatal(err)
	}
	pc := &pahoMosq{in: make(chan *paho.Publish, 16)}
	pc.Client = paho.NewClient(paho.ClientConfig{
		Conn: nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			pc.in <- pr.Packet
			return true, nil
		}},
		PacketTimeout: mosqWait,
	})
	cp := &paho.Connect{ClientID: cid, CleanStart: true, KeepAlive: 30}
	if user != "" {
		cp.Username, cp.UsernameFlag = user, true
		cp.Password, cp.PasswordFlag = []byte(user+"-pw"), true
	}
	ctx, cancel := context.WithTimeout(context.Background(), mosqWait)
	defer cancel()
	if ca, err := pc.Connect(ctx, cp); err != nil {
		t.Fatalf("connect %q as %q: %v (connack %+v)", cid, user, err, ca)
	}
	t.Cleanup(func() {
		_ = pc.Disconnect(&paho.Disconnect{})
		<-pc.Done()
	})
	return pc
}

// mosquittoVerdict observes Mosquitto's verdict for case c (see the
// table's doc).
func mosquittoVerdict(t *testing.T, addr string, injector *pahoMosq, c aclCase, i int) bool {
	t.Helper()
	cl := dialMosq(t, addr, c.user, c.cid)
	defer func() {
		_ = cl.Disconnect(&paho.Disconnect{})
		<-cl.Done()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), mosqWait)
	defer cancel()
	switch c.access {
	case Write:
		r, err := cl.Publish(ctx, &paho.Publish{Topic: c.topic, QoS: 1, Payload: []byte("w")})
		if err != nil && r == nil {
			t.Fatalf("case %d: publish: %v", i, err)
		}
		return r.ReasonCode < 0x80
	case Subscribe:
		sa, err := cl.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: c.topic, QoS: 1}}})
		if err != nil && sa == nil {
			t.Fatalf("case %d: subscribe: %v", i, err)
		}
		return sa.Reasons[0] < 0x80
	case Read:
		payload := fmt.Sprintf("case %d", i)
		if !strings.HasPrefix(c.topic, "$SYS/") {
			if _, err := injector.Publish(ctx, &paho.Publish{Topic: c.topic, QoS: 1, Retain: true, Payload: []byte(payload)}); err != nil {
				t.Fatalf("case %d: inject: %v", i, err)
			}
		}
		marker := "keel-marker/" + c.cid
		sa, err := cl.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: c.topic, QoS: 1}, {Topic: marker, QoS: 1}}})
		if err != nil {
			t.Fatalf("case %d: subscribe: %v (%+v)", i, err, sa)
		}
		if _, err := injector.Publish(ctx, &paho.Publish{Topic: marker, QoS: 1, Payload: []byte("marker")}); err != nil {
			t.Fatalf("case %d: marker: %v", i, err)
		}
		got := false
		for {
			select {
			case p := <-cl.in:
				if p.Topic == marker {
					return got
				}
				if p.Topic == c.topic {
					got = true
				}
			case <-ctx.Done():
				t.Fatalf("case %d: the marker %s did not arrive within %v", i, marker, mosqWait)
			}
		}
	}
	t.Fatalf("case %d: access %v", i, c.access)
	return false
}

// Mosquitto refuses to start on each line Keel refuses (the ACL's bad
// lines), so a file Keel refuses is not one a Mosquitto user has.
func TestMosquittoRefusesBadACLLines(t *testing.T) {
	needTools(t, "mosquitto")
	for _, c := range badACLLines {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			acl := writeFile(t, dir, "acl", "topic read ok\n"+c.line+"\n")
			conf := writeFile(t, dir, "m.conf", "listener 0 127.0.0.1\nuser root\nacl_file "+acl+"\n")
			ctx, cancel := context.WithTimeout(context.Background(), mosqWait)
			defer cancel()
			out, err := exec.CommandContext(ctx, "mosquitto", "-c", conf).CombinedOutput()
			if ctx.Err() != nil {
				t.Fatalf("mosquitto started with %q in its acl_file (killed after %v)", c.line, mosqWait)
			}
			if err == nil {
				t.Fatalf("mosquitto exited 0 with %q in its acl_file:\n%s", c.line, out)
			}
			if !strings.Contains(string(out), filepath.Base(acl)) && !strings.Contains(string(out), "acl") {
				t.Fatalf("mosquitto's error does not name the acl file:\n%s", out)
			}
		})
	}
}
