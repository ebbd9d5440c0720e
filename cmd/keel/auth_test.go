package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/xdg-go/scram"
)

// authFixture is a keel binary serving a password file written by the
// real mosquitto_passwd (alice) and by keel passwd (bob, carol), and a
// Mosquitto ACL file.
type authFixture struct {
	keel   *keelProc
	port   string
	passwd string
	acl    string
}

const testACL = `# anonymous clients: none get in (a password file is set)
topic read public/#

user alice
topic readwrite meters/alice/#
topic read public/#

user bob
topic read meters/#
topic write public/#
topic read $SYS/#

user carol
topic read public/#
`

func startAuthKeel(t *testing.T) *authFixture {
	t.Helper()
	needTools(t, "mosquitto_passwd", "mosquitto_pub", "mosquitto_sub")
	dir := t.TempDir()
	f := &authFixture{passwd: filepath.Join(dir, "passwd"), acl: filepath.Join(dir, "acl")}
	// Mosquitto's own tool writes alice's line; keel's writes bob's and
	// carol's to the same file, which both brokers read.
	if b, err := exec.Command("mosquitto_passwd", "-c", "-b", f.passwd, "alice", "alice-pw").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v\n%s", err, b)
	}
	for _, u := range []string{"bob", "carol"} {
		if code, _, errOut := runKeel(t, "passwd", "-b", f.passwd, u, u+"-pw"); code != 0 {
			t.Fatalf("keel passwd -b %s: exit %d: %s", u, code, errOut)
		}
	}
	if err := os.WriteFile(f.acl, []byte(testACL), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := writeConfig(t, "data = "+filepath.Join(dir, "data")+"\nlisten = 127.0.0.1:0\nsys_interval = 100ms\n"+
		"password_file = "+f.passwd+"\nacl_file = "+f.acl+"\n")
	f.keel = startKeel(t, "serve", "--config", conf)
	_, f.port, _ = strings.Cut(f.keel.addr, ":")
	return f
}

// mosq runs a Mosquitto client (mosquitto_pub or mosquitto_sub) as user
// against the fixture, 3.1.1, and returns its output and error.
func (f *authFixture) mosq(t *testing.T, name, user, pw string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	all := []string{"-h", "127.0.0.1", "-p", f.port, "-V", "mqttv311"}
	if user != "" {
		all = append(all, "-u", user, "-P", pw)
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, name, append(all, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// paho5Conn connects a Paho 5.0 client as user and collects what it
// receives and the server's DISCONNECT.
type paho5Conn struct {
	*paho.Client
	msgs chan *paho.Publish
	disc chan *paho.Disconnect
}

func dialAuth5(t *testing.T, addr string, cp *paho.Connect) (*paho5Conn, *paho.Connack, error) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	pc := &paho5Conn{msgs: make(chan *paho.Publish, 64), disc: make(chan *paho.Disconnect, 1)}
	pc.Client = paho.NewClient(paho.ClientConfig{
		Conn: nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			pc.msgs <- pr.Packet
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) { pc.disc <- d },
		PacketTimeout:      10 * time.Second,
	})
	cp.KeepAlive = 30
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := pc.Connect(ctx, cp)
	if err == nil {
		t.Cleanup(func() { _ = pc.Disconnect(&paho.Disconnect{}) })
	}
	return pc, ca, err
}

func login(id, user, pw string) *paho.Connect {
	return &paho.Connect{ClientID: id, CleanStart: true, UsernameFlag: true, Username: user,
		PasswordFlag: true, Password: []byte(pw)}
}

func (pc *paho5Conn) next(t *testing.T) *paho.Publish {
	t.Helper()
	select {
	case p := <-pc.msgs:
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
		return nil
	}
}

// A Mosquitto user's password file (written by mosquitto_passwd and by
// keel passwd) and ACL file, used by real clients: logins, allowed and
// denied publish, subscribe, retained, will, $SYS, a queued message, a
// session that belongs to another user.
func TestAuthEndToEnd(t *testing.T) {
	f := startAuthKeel(t)

	// Logins with mosquitto_pub: right, wrong, unknown, anonymous.
	if out, err := f.mosq(t, "mosquitto_pub", "alice", "alice-pw", "-t", "meters/alice/1", "-m", "x"); err != nil {
		t.Fatalf("alice (mosquitto_passwd's hash) refused: %v\n%s", err, out)
	}
	if out, err := f.mosq(t, "mosquitto_pub", "bob", "bob-pw", "-t", "public/x", "-m", "x"); err != nil {
		t.Fatalf("bob (keel passwd's hash) refused: %v\n%s", err, out)
	}
	// Each from an address of its own: a failure puts its address in a
	// backoff (refused with "broker unavailable" for a second, doubling),
	// which the clients from 127.0.0.1 below must not feel.
	for i, tc := range []struct{ user, pw, want string }{
		{"alice", "wrong", "bad user name or password"},
		{"mallory", "alice-pw", "bad user name or password"},
		{"", "", "not authorised"},
	} {
		out, err := f.mosq(t, "mosquitto_pub", tc.user, tc.pw, "-A", fmt.Sprintf("127.0.0.%d", 2+i), "-t", "public/x", "-m", "x")
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("mosquitto_pub as %q/%q: err %v, output %q; want a refusal %q", tc.user, tc.pw, err, out, tc.want)
		}
	}

	// A persistent session of bob's, offline, gets what alice publishes
	// while it is away; alice's retained message too; not a publish
	// the ACL refused (3.1.1: acknowledged and dropped).
	if out, err := f.mosq(t, "mosquitto_sub", "bob", "bob-pw", "-i", "bob-sub", "-c", "-q", "1", "-t", "meters/#", "-E"); err != nil {
		t.Fatalf("mosquitto_sub -E: %v\n%s", err, out)
	}
	if out, err := f.mosq(t, "mosquitto_pub", "alice", "alice-pw", "-q", "1", "-t", "meters/bob/1", "-m", "forged"); err != nil {
		t.Fatalf("a denied 3.1.1 publish is acknowledged (as Mosquitto), got %v\n%s", err, out)
	}
	if out, err := f.mosq(t, "mosquitto_pub", "alice", "alice-pw", "-q", "1", "-t", "meters/alice/2", "-m", "42 kWh"); err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}
	// The session is bob's: carol with its client id is refused (return
	// code 5), and the queue stays.
	if out, err := f.mosq(t, "mosquitto_sub", "carol", "carol-pw", "-i", "bob-sub", "-c", "-q", "1", "-t", "#", "-C", "1", "-W", "5"); err == nil || !strings.Contains(out, "not authorised") {
		t.Fatalf("carol on bob's session: err %v, output %q; want not authorised", err, out)
	}
	f.keel.waitLog(t, `msg="connect refused: the session belongs to another user"`)
	f.keel.waitLog(t, `client=bob-sub username=carol anonymous=false owner=bob`)
	out, err := f.mosq(t, "mosquitto_sub", "bob", "bob-pw", "-i", "bob-sub", "-c", "-q", "1", "-t", "meters/#", "-C", "1", "-W", "10")
	if err != nil || out != "42 kWh\n" {
		t.Fatalf("bob back: %v, got %q; want only the allowed message", err, out)
	}

	// Paho 5.0: reason codes.
	alice, ca, err := dialAuth5(t, f.keel.addr, login("alice-5", "alice", "alice-pw"))
	if err != nil || ca.ReasonCode != 0 {
		t.Fatalf("alice 5.0: %v %+v", err, ca)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for topic, want := range map[string]byte{"meters/bob/2": 0x87, "$SYS/broker/uptime": 0x87, "meters/alice/3": 0} {
		r, err := alice.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte("x")})
		if r == nil || r.ReasonCode != want {
			t.Errorf("alice publishes %s: %+v, %v; want reason %#x", topic, r, err, want)
		}
	}
	// A will on a topic alice may not write: CONNACK 0x87.
	cp := login("alice-will", "alice", "alice-pw")
	cp.WillMessage = &paho.WillMessage{Topic: "public/will", Payload: []byte("gone")}
	if _, ca, err := dialAuth5(t, f.keel.addr, cp); err == nil || ca == nil || ca.ReasonCode != 0x87 {
		t.Errorf("a will on a denied topic: %+v, %v; want CONNACK 0x87", ca, err)
	}

	// bob reads $SYS by an explicit grant; carol, subscribed to '#' and
	// $SYS/#, gets neither $SYS nor what she may not read.
	bob, _, err := dialAuth5(t, f.keel.addr, login("bob-5", "bob", "bob-pw"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "$SYS/broker/version", QoS: 0}}}); err != nil {
		t.Fatal(err)
	}
	if p := bob.next(t); p.Topic != "$SYS/broker/version" {
		t.Fatalf("bob got %s, want $SYS/broker/version", p.Topic)
	}
	// A retained message: for bob (who may read meters/#), not for carol.
	if r, err := alice.Publish(ctx, &paho.Publish{Topic: "meters/alice/total", QoS: 1, Retain: true, Payload: []byte("1234")}); err != nil || r.ReasonCode != 0 {
		t.Fatalf("retained publish: %+v %v", r, err)
	}
	if _, err := bob.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "meters/alice/total", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	p := bob.next(t)
	for strings.HasPrefix(p.Topic, "$SYS/") { // republished every sys_interval
		p = bob.next(t)
	}
	if p.Topic != "meters/alice/total" || !p.Retain || string(p.Payload) != "1234" {
		t.Fatalf("bob got %s %q retain=%v, want the retained meters/alice/total", p.Topic, p.Payload, p.Retain)
	}
	carol, _, err := dialAuth5(t, f.keel.addr, login("carol-5", "carol", "carol-pw"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := carol.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "$SYS/#"}, {Topic: "#"}, {Topic: "$share/g/meters/#"}}}); err != nil {
		t.Fatal(err)
	}
	alice.Publish(ctx, &paho.Publish{Topic: "meters/alice/4", QoS: 1, Payload: []byte("not for carol")})
	bob.Publish(ctx, &paho.Publish{Topic: "public/marker", QoS: 1, Payload: []byte("for everyone")})
	if p := carol.next(t); p.Topic != "public/marker" {
		t.Fatalf("carol got %s %q first, want only public/marker", p.Topic, p.Payload)
	}
	f.keel.stop(t)
}

// SIGHUP rereads the password and ACL files: a client whose password
// changed is disconnected (5.0: DISCONNECT 0x87), a revoked read stops,
// and a broken file keeps the rules in force, saying why.
func TestAuthReload(t *testing.T) {
	f := startAuthKeel(t)
	bob, _, err := dialAuth5(t, f.keel.addr, login("bob-r", "bob", "bob-pw"))
	if err != nil {
		t.Fatal(err)
	}
	o := mqtt.NewClientOptions().AddBroker("tcp://" + f.keel.addr).SetClientID("alice-r").
		SetUsername("alice").SetPassword("alice-pw").SetProtocolVersion(4).SetAutoReconnect(false)
	alice := mqtt.NewClient(o)
	if tok := alice.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho 3.1.1 alice: %v", tok.Error())
	}
	defer alice.Disconnect(0)
	got := make(chan string, 16)
	if tok := alice.Subscribe("public/#", 1, func(_ mqtt.Client, m mqtt.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bob.Publish(ctx, &paho.Publish{Topic: "public/1", QoS: 1, Payload: []byte("before")})
	if m := <-got; m != "before" {
		t.Fatalf("alice got %q", m)
	}

	// A broken ACL file: the old rules stay.
	if err := os.WriteFile(f.acl, []byte(testACL+"bogus line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.keel.cmd.Process.Signal(syscall.SIGHUP)
	f.keel.waitLog(t, `msg="reload failed: keeping the authentication and ACLs in force" err="config `)
	f.keel.waitLog(t, fmt.Sprintf(`%s:%d: unknown keyword \"bogus\"`, f.acl, strings.Count(testACL, "\n")+1))

	// bob's password changes, alice loses public/#.
	if code, _, errOut := runKeel(t, "passwd", "-b", f.passwd, "bob", "new-pw"); code != 0 {
		t.Fatalf("keel passwd: %s", errOut)
	}
	newACL := strings.Replace(testACL, "user alice\ntopic readwrite meters/alice/#\ntopic read public/#\n", "user alice\ntopic readwrite meters/alice/#\n", 1)
	if err := os.WriteFile(f.acl, []byte(newACL), 0o600); err != nil {
		t.Fatal(err)
	}
	f.keel.cmd.Process.Signal(syscall.SIGHUP)
	select {
	case d := <-bob.disc:
		if d.ReasonCode != 0x87 {
			t.Fatalf("bob's DISCONNECT %#x, want 0x87", d.ReasonCode)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("bob was not disconnected after his password changed")
	}
	f.keel.waitLog(t, `msg="authentication reloaded"`)
	bob2, ca, err := dialAuth5(t, f.keel.addr, login("bob-r2", "bob", "new-pw"))
	if err != nil || ca.ReasonCode != 0 {
		t.Fatalf("bob with his new password: %+v %v", ca, err)
	}
	bob2.Publish(ctx, &paho.Publish{Topic: "public/2", QoS: 1, Payload: []byte("after")})
	// alice's subscription stays but delivers nothing she may no longer
	// read; what she may read still arrives.
	if tok := alice.Subscribe("meters/alice/#", 1, func(_ mqtt.Client, m mqtt.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	if tok := alice.Publish("meters/alice/x", 1, false, "own"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	if m := <-got; m != "own" {
		t.Fatalf("alice got %q after the reload, want only her own topic (public/# was revoked)", m)
	}
	f.keel.stop(t)
}

// A password or ACL file keel cannot use refuses the start (and config
// check), naming the config line that points at it, the file and its
// line.
func TestBadAuthFilesRefused(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwd")
	acl := filepath.Join(dir, "acl")
	os.WriteFile(pw, []byte("# users\nalice:$7$101$7QNhhLBLR78qdwgQ$a0RZe8YQ1xbwOubvQD6fLaPQcy1t+YhpLRFHr7W27RT4JqNC/C6pm8u8if/t2FQy6fmGxsPFUFsikHEQgpeSZQ==\nbob\n"), 0o600)
	os.WriteFile(acl, []byte("user alice\ntopic read a/#\nallow everything\n"), 0o600)
	for _, tc := range []struct{ conf, want string }{
		{"password_file = " + pw + "\n", `:1: key "password_file": ` + pw + `:3: `},
		{"\nacl_file = " + acl + "\n", `:2: key "acl_file": ` + acl + `:3: unknown keyword "allow"`},
		{"password_file = " + filepath.Join(dir, "missing") + "\n", `:1: key "password_file": auth: password file: open ` + filepath.Join(dir, "missing")},
	} {
		conf := writeConfig(t, "data = "+filepath.Join(dir, "data")+"\n"+tc.conf)
		// The data line comes first: the key's line is one more.
		want := conf + strings.Replace(tc.want, ":1: ", ":2: ", 1)
		if strings.HasPrefix(tc.want, ":2: ") {
			want = conf + strings.Replace(tc.want, ":2: ", ":3: ", 1)
		}
		code, _, errOut := runKeel(t, "config", "check", conf)
		if code != 1 || !strings.Contains(errOut, want) {
			t.Errorf("config check: exit %d, stderr %q; want 1 and %q", code, errOut, want)
		}
		if code, _, errOut := runKeel(t, "serve", "--config", conf); code != 1 || !strings.Contains(errOut, want) {
			t.Errorf("serve: exit %d, stderr %q; want 1 and %q", code, errOut, want)
		}
	}
}

// scramAuther is SCRAM-SHA-512 for Paho's enhanced authentication hook.
type scramAuther struct {
	conv *scram.ClientConversation
	t    *testing.T
}

func (a *scramAuther) Authenticate(in *paho.Auth) *paho.Auth {
	out, err := a.conv.Step(string(in.Properties.AuthData))
	if err != nil {
		a.t.Errorf("SCRAM client step: %v", err)
	}
	return &paho.Auth{ReasonCode: 0x18, Properties: &paho.AuthProperties{AuthMethod: "SCRAM-SHA-512", AuthData: []byte(out)}}
}

func (a *scramAuther) Authenticated() {}

// Paho 5.0 logs in with SCRAM-SHA-512 against the entry keel passwd
// wrote (the client pays the 210,000 iterations, the broker two HMACs),
// and checks the server's proof; a wrong password is refused with 0x86.
func TestSCRAMWithPaho(t *testing.T) {
	f := startAuthKeel(t)
	for _, tc := range []struct {
		pw   string
		want byte
	}{{"bob-pw", 0}, {"wrong", 0x86}} {
		cl, err := scram.SHA512.NewClient("bob", tc.pw, "")
		if err != nil {
			t.Fatal(err)
		}
		conv := cl.NewConversation()
		first, _ := conv.Step("")
		nc, err := net.Dial("tcp", f.keel.addr)
		if err != nil {
			t.Fatal(err)
		}
		c := paho.NewClient(paho.ClientConfig{Conn: nc, AuthHandler: &scramAuther{conv: conv, t: t}, PacketTimeout: 20 * time.Second})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		ca, err := c.Connect(ctx, &paho.Connect{ClientID: "bob-scram", CleanStart: true, KeepAlive: 30,
			Properties: &paho.ConnectProperties{AuthMethod: "SCRAM-SHA-512", AuthData: []byte(first)}})
		cancel()
		if ca == nil || ca.ReasonCode != tc.want {
			t.Fatalf("password %q: CONNACK %+v, %v; want reason %#x", tc.pw, ca, err, tc.want)
		}
		if tc.want == 0 {
			if _, err := conv.Step(string(ca.Properties.AuthData)); err != nil || !conv.Valid() {
				t.Fatalf("the server's proof does not verify: %v", err)
			}
			c.Disconnect(&paho.Disconnect{})
		}
	}
	f.keel.stop(t)
}
