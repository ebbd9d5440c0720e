package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/keelmq/keel/engine/client"
	"github.com/keelmq/keel/engine/enginetest"
	"github.com/keelmq/keel/engine/packet"
	"github.com/keelmq/keel/listener/listenertest"
)

// A [bridge NAME] section with Mosquitto's keys loads as written.
func TestConfigBridgeSection(t *testing.T) {
	p := writeConfig(t, "listen = 127.0.0.1:1999\n\n[bridge central]\naddress = 10.0.0.1:1883, central.example\n"+
		"topic = metering/# out 2\ntopic = cmd/+ in 1 edge/ site7/\ntopic = \"\" both 0 a/b r/b\n"+
		"remote_clientid = edge-7\nremote_username = edge\nremote_password = s3cret\ncleansession = false\n"+
		"bridge_protocol_version = mqttv50\nkeepalive_interval = 30\nrestart_timeout = 2 60\n")
	c := defaultConfig()
	if err := c.load(p); err != nil {
		t.Fatal(err)
	}
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	if len(c.Bridges) != 1 {
		t.Fatalf("got %d bridges, want 1", len(c.Bridges))
	}
	b := c.Bridges[0]
	if b.Name != "central" || !slices.Equal(b.Addresses, []string{"10.0.0.1:1883", "central.example:1883"}) ||
		b.ClientID != "edge-7" || b.Username != "edge" || string(b.Password) != "s3cret" || b.CleanSession ||
		b.Version != packet.V5 || b.KeepAlive != 30*time.Second || b.RestartBase != 2*time.Second || b.RestartCap != 60*time.Second {
		t.Fatalf("got %+v", b.Config)
	}
	want := []string{"metering/# out 2", "cmd/+ in 1 edge/ site7/", `"" both 0 a/b r/b`}
	for i, tp := range b.Topics {
		if tp.String() != want[i] {
			t.Errorf("topic %d: got %q, want %q", i, tp, want[i])
		}
	}
	if c.Default.Listen != "127.0.0.1:1999" {
		t.Errorf("the top level's listen: got %q", c.Default.Listen)
	}
	eff := c.effective()
	if strings.Contains(eff, "s3cret") || !strings.Contains(eff, "[bridge central]\naddress = 10.0.0.1:1883, central.example:1883\n") ||
		!strings.Contains(eff, "topic = cmd/+ in 1 edge/ site7/\n") || !strings.Contains(eff, "remote_password = (set; not shown)") {
		t.Errorf("effective config:\n%s", eff)
	}
}

// A wrong bridge key is refused at start with the file, the line and the
// key; a password never appears in an error.
func TestConfigBridgeErrors(t *testing.T) {
	const head = "[bridge c]\naddress = 127.0.0.1:1883\n"
	ca := listenertest.NewCA(t, "ca").Server("server") // a certificate and a key that are not a CA file's pair
	for _, tc := range []struct {
		text, want string
	}{
		{head + "topic = a/# sideways 1\n", `:3: key "topic" of [bridge c]: want out, in or both as the direction, got "sideways"`},
		{head + "topic = a/# out 3\n", `:3: key "topic" of [bridge c]: want QoS 0, 1 or 2, got "3"`},
		{head + "topic = a/#/b out 1\n", `:3: key "topic" of [bridge c]: topic filter "a/#/b"`},
		{head + "topic = # out 1 l/+ r/\n", `:3: key "topic" of [bridge c]: a prefix may not hold a wildcard`},
		{"[bridge c]\naddress = host:99999\n", `:2: key "address" of [bridge c]: want host:port`},
		{head + "address = 127.0.0.1:1884\n", `:3: key "address" of [bridge c]: already set at`},
		{head + "bridge_protocol_version = mqttv31\n", `:3: key "bridge_protocol_version" of [bridge c]: MQTT 3.1 is not supported`},
		{head + "bridge_protocol_version = v5\n", `:3: key "bridge_protocol_version" of [bridge c]: want mqttv311 or mqttv50`},
		{head + "keepalive_interval = 0\n", `:3: key "keepalive_interval" of [bridge c]: want 1..65535 seconds`},
		{head + "restart_timeout = 30 5\n", `:3: key "restart_timeout" of [bridge c]: want BASE [CAP]`},
		{head + "cleansession = perhaps\n", `:3: key "cleansession" of [bridge c]: want true or false`},
		{head + "topic = a/# out 1\nbridge_cafile = /nonexistent/ca.pem\n", `:4: key "bridge_cafile" of [bridge c]: open /nonexistent/ca.pem: no such file or directory`},
		{head + "topic = a/# out 1\nbridge_cafile = " + ca.CertFile + "\nbridge_certfile = " + ca.CertFile + "\n", `:5: key "bridge_certfile" of [bridge c]: the bridge's certificate needs both bridge_certfile and bridge_keyfile`},
		{head + "topic = a/# out 1\nbridge_cafile = " + ca.CertFile + "\nbridge_certfile = " + ca.CertFile + "\nbridge_keyfile = " + ca.CertFile + "\n", `:5: key "bridge_certfile" of [bridge c]: ` + ca.CertFile + ` with ` + ca.CertFile},
		{head + "topic = a/# out 1\nbridge_cafile = " + ca.KeyFile + "\n", `:4: key "bridge_cafile" of [bridge c]: ` + ca.KeyFile + ` holds no PEM certificate`},
		{head + "topic = a/# out 1\nbridge_insecure = true\n", `:4: key "bridge_insecure" of [bridge c]: TLS to the remote needs bridge_cafile or bridge_capath`},
		{head + "bridge_tls_version = tlsv1.0\n", `:3: key "bridge_tls_version" of [bridge c]: `},
		{head + "bridge_psk = 00ff\n", `:3: key "bridge_psk" of [bridge c]: TLS-PSK is not supported`},
		{head + "round_robin = true\n", `:3: key "round_robin" of [bridge c]: a Mosquitto bridge option keel's bridge does not take`},
		{head + "colour = blue\n", `:3: key "colour" of [bridge c]: unknown key`},
		{head + "remote_password s3cret\n", `:3: want key = value, got a line starting with "remote_password" in [bridge c]`},
		{"[bridge c]\n[bridge c]\n", `:2: bridge "c" is already defined at`},
		{"[bridge c d]\n", `:1: want a section [bridge NAME]`},
		{"[bridges]\n", `:1: want a section [listener NAME] or [bridge NAME]`},
		// The whole section: where the key at fault was set, or the section.
		{"\n[bridge c]\ntopic = a/# out 1\n", `:2: [bridge c]: a bridge needs an address`},
		{head, `:1: [bridge c]: a bridge needs at least one topic line`},
		{head + "try_private = false\ntopic = up/# out 1\ntopic = # in 1\n", `:5: key "topic" of [bridge c]: "#" (in) overlaps "up/#" (out) on the remote`},
		{head + "try_private = false\ntopic = x/# both 1\n", `:4: key "topic" of [bridge c]: "x/#" (in) overlaps "x/#" (out)`},
	} {
		p := writeConfig(t, tc.text)
		c := defaultConfig()
		err := c.load(p)
		if err == nil {
			err = c.validate()
		}
		if err == nil || !strings.Contains(err.Error(), p+tc.want) {
			t.Errorf("config %q:\ngot error %v\nwant it to contain %q", tc.text, err, p+tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("config %q: the error shows the password: %v", tc.text, err)
		}
	}
	// Overlapping in and out topics are fine with try_private (the default,
	// as Mosquitto's) and over 5.0 (No Local).
	for _, text := range []string{head + "topic = # both 2\n", head + "try_private = false\nbridge_protocol_version = mqttv50\ntopic = # both 2\n"} {
		c := defaultConfig()
		if err := c.load(writeConfig(t, text)); err != nil {
			t.Fatal(err)
		}
		if err := c.validate(); err != nil {
			t.Errorf("config %q: %v", text, err)
		}
	}
}

// The README's bridge table lists exactly the keys the parser knows, in
// its order.
func TestReadmeBridgeTableMatchesParser(t *testing.T) {
	_, keys := readmeConfigTable(t, "bridge-keys")
	var want []string
	for _, k := range bridgeKeys {
		want = append(want, k.name)
	}
	if !slices.Equal(keys, want) {
		t.Errorf("README.md bridge table lists\n  %v\nthe parser knows\n  %v", keys, want)
	}
}

// Two keel processes bridged at QoS 2 both ways, the edge with a password
// file and an ACL that gives the bridge nothing (bridges are not held to
// it), the central with the bridge's own login: messages flow both ways in
// order; the edge killed with SIGKILL in the middle of the stream and
// started again loses nothing and doubles nothing; no client can take the
// bridge's client id; the password is never logged.
func TestBridgeTwoKeelProcesses(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwd")
	for _, u := range [][2]string{{"bridge", "s3cret-bridge"}, {"alice", "alicepw"}} {
		args := []string{"passwd", "-b", pw, u[0], u[1]}
		if _, err := os.Stat(pw); err != nil {
			args = []string{"passwd", "-c", "-b", pw, u[0], u[1]}
		}
		if code, _, e := runKeel(t, args...); code != 0 {
			t.Fatalf("keel passwd: %s", e)
		}
	}
	acl := filepath.Join(dir, "acl")
	if err := os.WriteFile(acl, []byte("user alice\ntopic readwrite up/#\ntopic readwrite down/#\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	central := startKeel(t, "serve", "--listen", "127.0.0.1:0", "--data", filepath.Join(dir, "central"), "--password-file", pw)
	// The bridge reaches the central through a proxy that can hold what
	// the central sends it.
	front := enginetest.NewFront(t, central.addr)
	edgeConf := filepath.Join(dir, "edge.conf")
	conf := fmt.Sprintf("listen = 127.0.0.1:0\ndata = %s\npassword_file = %s\nacl_file = %s\n\n[bridge central]\naddress = %s\n"+
		"topic = up/# out 2\ntopic = down/# in 2\nremote_clientid = edge-1\nremote_username = bridge\nremote_password = s3cret-bridge\n"+
		"bridge_protocol_version = mqttv50\nrestart_timeout = 1\n", filepath.Join(dir, "edge"), pw, acl, front.Addr())
	if err := os.WriteFile(edgeConf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	edge := startKeel(t, "serve", "--config", edgeConf)
	edge.waitLog(t, `msg="bridge connected" bridge=central`)

	// Subscribers, persistent: Paho 3.1.1 on the central, ours on the edge.
	var mu sync.Mutex
	var up, down []string
	upSub := pahoSub(t, central.addr, "up-sink", "up/#", func(m string) { mu.Lock(); up = append(up, m); mu.Unlock() })
	defer upSub.Disconnect(0)
	downSess := client.NewMemorySession()
	downSub, err := client.Connect(context.Background(), client.Options{Addr: edge.addr, ClientID: "down-sink", SessionExpiry: 3600,
		Username: "alice", Password: []byte("alicepw"), Session: downSess,
		OnMessage: func(p *packet.Publish) { mu.Lock(); down = append(down, string(p.Payload)); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	defer downSub.Close()
	if sa, err := downSub.Subscribe(context.Background(), &packet.Subscribe{Subs: []packet.Subscription{{Filter: "down/#", QoS: 2}}}); err != nil || sa.Codes[0] != 2 {
		t.Fatalf("subscribe on the edge: %v %v", err, sa)
	}
	waitUntil(t, "the bridge's subscriptions", func() bool { return strings.Contains(edge.stderr(), `msg="bridge subscribed" bridge=central`) })
	pub := func(addr, id string, sess client.Session) *client.Client {
		c, err := client.Connect(context.Background(), client.Options{Addr: addr, ClientID: id, SessionExpiry: 3600,
			Username: "alice", Password: []byte("alicepw"), Session: sess})
		if err != nil {
			t.Fatalf("publisher %s: %v", id, err)
		}
		return c
	}
	edgeSess := client.NewMemorySession()
	pe := pub(edge.addr, "edge-pub", edgeSess)
	pc := pub(central.addr, "central-pub", client.NewMemorySession())
	defer pc.Close()
	const n = 1000
	publish := func(from, to int) {
		for i := from; i <= to; i++ {
			if err := pe.Publish(context.Background(), &packet.Publish{QoS: 2, Topic: "up/x", Payload: []byte(strconv.Itoa(i))}); err != nil {
				t.Fatal(err)
			}
			if err := pc.Publish(context.Background(), &packet.Publish{QoS: 2, Topic: "down/y", Payload: []byte(strconv.Itoa(i))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	count := func() (int, int) { mu.Lock(); defer mu.Unlock(); return len(up), len(down) }
	publish(1, n/2)
	waitUntil(t, "the first half at both ends", func() bool { u, d := count(); return u >= n/2 && d >= n/2 })
	// Hold what the central sends the bridge (acks and PUBLISHes), publish
	// the second half, and kill -9 the edge once it has acknowledged all of
	// it: the bridge's flows are in flight both ways, its queue on disk.
	front.Hold()
	publish(n/2+1, n)
	waitUntil(t, "the edge's acknowledgements", func() bool { return edgeSess.Len() == 0 })
	_ = edge.cmd.Process.Kill()
	<-edge.exited
	front.Release() // what was held goes to the dead connection
	edge = startKeel(t, "serve", "--config", edgeConf)
	// The edge's clients resume their sessions on it.
	pe.Close()
	pe = pub(edge.addr, "edge-pub", edgeSess)
	defer pe.Close()
	downSub.Close()
	downSub, err = client.Connect(context.Background(), client.Options{Addr: edge.addr, ClientID: "down-sink", SessionExpiry: 3600,
		Username: "alice", Password: []byte("alicepw"), Session: downSess,
		OnMessage: func(p *packet.Publish) { mu.Lock(); down = append(down, string(p.Payload)); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	defer downSub.Close()
	waitUntil(t, "every message at both ends", func() bool { u, d := count(); return u >= n && d >= n })
	waitUntil(t, "the edge publisher's flows to end", func() bool { return edgeSess.Len() == 0 })
	mu.Lock()
	for name, got := range map[string][]string{"up (central)": up, "down (edge)": down} {
		if len(got) != n {
			t.Errorf("%s: got %d messages, want %d", name, len(got), n)
		}
		for i, m := range got {
			if m != strconv.Itoa(i+1) {
				t.Errorf("%s: message %d is %q, want %d (lost, doubled or out of order)", name, i, m, i+1)
				break
			}
		}
	}
	mu.Unlock()

	// No client takes the bridge's local client id.
	_, err = client.Connect(context.Background(), client.Options{Addr: edge.addr, ClientID: "$bridge/central",
		Username: "alice", Password: []byte("alicepw"), SessionExpiry: 10})
	if ce, ok := err.(*client.ConnectError); !ok || ce.Code != packet.CodeNotAuthorized {
		t.Errorf("connect as $bridge/central: got %v, want CONNACK 0x87", err)
	}
	for _, p := range []*keelProc{edge, central} {
		if strings.Contains(p.stderr(), "s3cret-bridge") {
			t.Errorf("the bridge's password is in the log:\n%s", p.stderr())
		}
	}
	edge.stop(t)
	central.stop(t)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pahoSub is a Paho 3.1.1 persistent-session subscriber (alice).
func pahoSub(t *testing.T, addr, id, filter string, got func(string)) mqtt.Client {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(false).
		SetUsername("alice").SetPassword("alicepw").SetAutoReconnect(false).SetOrderMatters(true)
	o.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { got(string(m.Payload())) })
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho connect: %v", tok.Error())
	}
	if tok := c.Subscribe(filter, 2, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho subscribe: %v", tok.Error())
	}
	return c
}

// A bridge over mutual TLS to a keel whose listener requires a client
// certificate: bridge_cafile verifies the remote, bridge_certfile and
// bridge_keyfile are the bridge's certificate. Without them it is refused.
func TestBridgeTLSToKeel(t *testing.T) {
	central := startTLSKeel(t, "require_certificate = true\n")
	dir := t.TempDir()
	edgeConf := func(name, extra string) string {
		p := filepath.Join(dir, name+".conf")
		conf := fmt.Sprintf("listen = 127.0.0.1:0\ndata = %s\n\n[bridge central]\naddress = %s\ntopic = up/# out 2\n"+
			"bridge_protocol_version = mqttv50\nrestart_timeout = 1\nbridge_cafile = %s\n%s", filepath.Join(dir, name), central.keel.addr, central.ca.File, extra)
		if err := os.WriteFile(p, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Without a certificate: the remote refuses the handshake.
	bare := startKeel(t, "serve", "--config", edgeConf("bare", ""))
	// (TLS 1.3: the refusal comes with the first read, the CONNACK's.)
	bare.waitLog(t, `remote error: tls: certificate required" in=1s`)
	if strings.Contains(bare.stderr(), `msg="bridge connected"`) {
		t.Fatalf("a bridge without a certificate connected:\n%s", bare.stderr())
	}
	bare.stop(t)

	edge := startKeel(t, "serve", "--config", edgeConf("edge", "bridge_certfile = "+central.client.CertFile+"\nbridge_keyfile = "+central.client.KeyFile+"\n"))
	edge.waitLog(t, `msg="bridge subscribed" bridge=central`)
	var mu sync.Mutex
	var got []string
	roots := x509.NewCertPool()
	roots.AddCert(central.ca.Cert)
	tc := &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{central.client.TLS(t)}}
	sub, err := client.Connect(context.Background(), client.Options{ClientID: "up-sink", SessionExpiry: 3600,
		Dial: func(ctx context.Context) (net.Conn, error) {
			return (&tls.Dialer{Config: tc}).DialContext(ctx, "tcp", central.keel.addr)
		},
		OnMessage: func(p *packet.Publish) { mu.Lock(); got = append(got, string(p.Payload)); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if sa, err := sub.Subscribe(context.Background(), &packet.Subscribe{Subs: []packet.Subscription{{Filter: "up/#", QoS: 2}}}); err != nil || sa.Codes[0] != 2 {
		t.Fatalf("subscribe: %v %v", err, sa)
	}
	pe, err := client.Connect(context.Background(), client.Options{Addr: edge.addr, ClientID: "edge-pub"})
	if err != nil {
		t.Fatal(err)
	}
	defer pe.Close()
	const n = 100
	for i := 1; i <= n; i++ {
		if err := pe.Publish(context.Background(), &packet.Publish{QoS: 2, Topic: "up/x", Payload: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "every message over TLS", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= n })
	mu.Lock()
	defer mu.Unlock()
	for i, m := range got {
		if m != strconv.Itoa(i+1) {
			t.Fatalf("message %d is %q, want %d", i, m, i+1)
		}
	}
	if len(got) != n {
		t.Fatalf("got %d messages, want %d", len(got), n)
	}
}

// bridge_insecure: the remote's chain is still verified, its host name is
// not.
func TestBridgeInsecureStillVerifiesTheChain(t *testing.T) {
	ca, other := listenertest.NewCA(t, "ca"), listenertest.NewCA(t, "other")
	b := &bridgeConfig{caFile: ca.File, insecure: true, origin: map[string]string{}}
	if err := b.loadTLS(); err != nil {
		t.Fatal(err)
	}
	if !b.TLS.InsecureSkipVerify || b.TLS.VerifyConnection == nil {
		t.Fatal("bridge_insecure: want the host name check off and the chain checked")
	}
	good := ca.Server("server").X509
	if err := b.TLS.VerifyConnection(tls.ConnectionState{PeerCertificates: []*x509.Certificate{good}, ServerName: "elsewhere.example"}); err != nil {
		t.Errorf("a certificate of the CA for another name: %v, want it accepted", err)
	}
	bad := other.Server("server").X509
	if err := b.TLS.VerifyConnection(tls.ConnectionState{PeerCertificates: []*x509.Certificate{bad}}); err == nil {
		t.Error("a certificate of another CA: accepted, want it refused")
	}
}

// A reload does not restart bridges: a changed, added or removed [bridge]
// section is named in the reload's warning (restartOnly), the password
// included though it is never shown.
func TestBridgeSectionsRestartOnly(t *testing.T) {
	load := func(body string) *config {
		t.Helper()
		c := defaultConfig()
		if err := c.load(writeConfig(t, "listen = 127.0.0.1:1999\n"+body)); err != nil {
			t.Fatal(err)
		}
		if err := c.validate(); err != nil {
			t.Fatal(err)
		}
		return &c
	}
	base := "\n[bridge a]\naddress = 10.0.0.1:1883\ntopic = x/# out 1\nremote_password = one\n"
	for _, tc := range []struct {
		name, body string
		want       []string
	}{
		{"same", base, nil},
		{"topic", "\n[bridge a]\naddress = 10.0.0.1:1883\ntopic = x/# out 2\nremote_password = one\n", []string{"[bridge a]"}},
		{"password", "\n[bridge a]\naddress = 10.0.0.1:1883\ntopic = x/# out 1\nremote_password = two\n", []string{"[bridge a]"}},
		{"added", base + "\n[bridge b]\naddress = 10.0.0.2:1883\ntopic = y/# in 1\n", []string{"[bridge b]"}},
		{"removed", "", []string{"[bridge a]"}},
	} {
		got := bridgesChanged(load(base), load(tc.body))
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
		if got := restartOnly(load(base), load(tc.body)); len(tc.want) > 0 && !slices.Contains(got, tc.want[0]) {
			t.Errorf("%s: restartOnly %v does not name %s", tc.name, got, tc.want[0])
		}
	}
}
