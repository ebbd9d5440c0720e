package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keelmq/keel/listener/listenertest"
)

// tlsFixture is a CA with a server and a client certificate, and a keel
// serving one mutual-TLS listener from a config file.
type tlsFixture struct {
	ca     *listenertest.CA
	server *listenertest.Cert
	client *listenertest.Cert
	keel   *keelProc
	host   string
	port   string
}

func startTLSKeel(t *testing.T, extra string) *tlsFixture {
	t.Helper()
	f := &tlsFixture{ca: listenertest.NewCA(t, "ca")}
	f.server = f.ca.Server("server")
	f.client = f.ca.Client("meter-1")
	conf := writeConfig(t, "data = "+filepath.Join(t.TempDir(), "data")+"\n\n[listener tls]\nlisten = 127.0.0.1:0\n"+
		"certfile = "+f.server.CertFile+"\nkeyfile = "+f.server.KeyFile+"\ncafile = "+f.ca.File+"\n"+extra)
	f.keel = startKeel(t, "serve", "--config", conf)
	f.host, f.port, _ = strings.Cut(f.keel.addr, ":")
	return f
}

// mosquitto runs one of Mosquitto's clients against f's listener.
func (f *tlsFixture) mosquitto(ctx context.Context, name string, args ...string) *exec.Cmd {
	args = append([]string{"-h", f.host, "-p", f.port, "--cafile", f.ca.File, "-V", "mqttv311"}, args...)
	return exec.CommandContext(ctx, name, args...)
}

// mosquitto_sub and mosquitto_pub with --cafile and --cert/--key through
// a mutual-TLS listener configured in a file; without a certificate they
// are refused.
func TestTLSListenerWithMosquittoClients(t *testing.T) {
	needTools(t, "mosquitto_sub", "mosquitto_pub")
	f := startTLSKeel(t, "require_certificate = true\nuse_identity_as_username = true\n")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cert := []string{"--cert", f.client.CertFile, "--key", f.client.KeyFile}
	sub := f.mosquitto(ctx, "mosquitto_sub", append(cert, "-t", "meters/1", "-q", "1", "-C", "1", "-i", "sub", "-c")...)
	var out, errOut bytes.Buffer
	sub.Stdout, sub.Stderr = &out, &errOut
	// -c with a fixed id: a persistent session, so the message waits for
	// the subscriber even if it subscribes after the publish.
	first := f.mosquitto(ctx, "mosquitto_sub", append(cert, "-t", "meters/1", "-q", "1", "-i", "sub", "-c", "-E")...)
	if b, err := first.CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_sub -E: %v\n%s", err, b)
	}
	if b, err := f.mosquitto(ctx, "mosquitto_pub", append(cert, "-t", "meters/1", "-q", "1", "-m", "42 kWh")...).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, b)
	}
	if err := sub.Run(); err != nil {
		t.Fatalf("mosquitto_sub: %v\n%s", err, errOut.String())
	}
	if got := out.String(); got != "42 kWh\n" {
		t.Fatalf("mosquitto_sub got %q, want %q", got, "42 kWh\n")
	}
	b, err := f.mosquitto(ctx, "mosquitto_pub", "-t", "meters/1", "-m", "x").CombinedOutput()
	if err == nil {
		t.Fatalf("mosquitto_pub without a client certificate succeeded:\n%s", b)
	}
	f.keel.stop(t)
}

// SIGHUP reloads the certificate: the next handshake gets the new one, a
// connection made before stays up, and a broken file keeps the old one,
// with the file named in the log.
func TestSighupRotatesCertificate(t *testing.T) {
	f := startTLSKeel(t, "")
	cfg := &tls.Config{RootCAs: f.ca.Pool()}
	served := func() string {
		t.Helper()
		c, err := tls.Dial("tcp", f.keel.addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	// A 3.1.1 client connected before the rotation.
	old, err := tls.Dial("tcp", f.keel.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if rc := connect311(t, old, "ok"); rc != 0 {
		t.Fatalf("CONNACK: return code %d", rc)
	}
	ack := make([]byte, 2)

	next := f.ca.Server("next")
	os.WriteFile(f.server.CertFile, next.CertPEM, 0o600)
	os.WriteFile(f.server.KeyFile, next.KeyPEM, 0o600)
	f.keel.cmd.Process.Signal(syscall.SIGHUP)
	f.keel.waitLog(t, `msg="TLS reloaded" listener=tls`)
	if got, want := served(), next.X509.SerialNumber.String(); got != want {
		t.Fatalf("after SIGHUP keel serves serial %s, want the new %s", got, want)
	}

	os.WriteFile(f.server.KeyFile, []byte("broken"), 0o600)
	f.keel.cmd.Process.Signal(syscall.SIGHUP)
	f.keel.waitLog(t, `msg="TLS reload failed: keeping the previous certificates" listener=tls err="keyfile `+f.server.KeyFile)
	if got, want := served(), next.X509.SerialNumber.String(); got != want {
		t.Fatalf("after a broken reload keel serves serial %s, want still %s", got, want)
	}
	// The old connection still works: PINGREQ, PINGRESP.
	old.Write([]byte{0xc0, 0})
	if _, err := io.ReadFull(old, ack[:2]); err != nil || ack[0] != 0xd0 {
		t.Fatalf("PINGRESP on the connection made before the reloads: got %x, %v", ack[:2], err)
	}
	f.keel.stop(t)
}

// needMQTTjs finds node and the MQTT.js that .ci/run installs; as
// needTools, a missing one skips outside CI and fails in it.
func needMQTTjs(t *testing.T) {
	t.Helper()
	_, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat("testdata/mqttjs/node_modules/mqtt/package.json")
	}
	if err != nil {
		msg := fmt.Sprintf("MQTT.js is missing (apt-get install nodejs npm; npm ci --prefix cmd/keel/testdata/mqttjs): %v", err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + "; .ci/run installs it")
		}
		t.Skip(msg + "; with CI=true this is a failure")
	}
}

// MQTT.js in Node over ws:// and wss://, on listeners from a config file.
func TestMQTTjsOverWebSocket(t *testing.T) {
	needMQTTjs(t)
	ca := listenertest.NewCA(t, "ca")
	srv := ca.Server("server")
	conf := writeConfig(t, "data = "+filepath.Join(t.TempDir(), "data")+"\n\n[listener ws]\nlisten = 127.0.0.1:0\nprotocol = websockets\n\n"+
		"[listener wss]\nlisten = 127.0.0.1:0\nprotocol = websockets\npath = /secure\ncertfile = "+srv.CertFile+"\nkeyfile = "+srv.KeyFile+"\n")
	k := startKeel(t, "serve", "--config", conf)
	addrs := k.listenerAddrs(t)
	for _, tc := range []struct{ url, ca string }{
		{"ws://" + addrs["ws"] + "/mqtt", ""},
		{"wss://localhost:" + strings.Split(addrs["wss"], ":")[1] + "/secure", ca.File},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		args := []string{"testdata/mqttjs/roundtrip.js", tc.url}
		if tc.ca != "" {
			args = append(args, tc.ca)
		}
		out, err := exec.CommandContext(ctx, "node", args...).CombinedOutput()
		cancel()
		if err != nil || string(out) != "js/t hello from MQTT.js\n" {
			t.Errorf("MQTT.js over %s: %v, output %q; want the message back", tc.url, err, out)
		}
	}
	k.stop(t)
}

// Each listener's counters are on /metrics with its name: a plain TCP
// client on the TLS port is a handshake failure, a good client is
// accepted and open, and the MQTT bytes each way are counted.
func TestListenerMetrics(t *testing.T) {
	ca := listenertest.NewCA(t, "ca")
	srv := ca.Server("server")
	conf := writeConfig(t, "data = "+filepath.Join(t.TempDir(), "data")+"\nmetrics = 127.0.0.1:0\n\n[listener tls]\nlisten = 127.0.0.1:0\n"+
		"certfile = "+srv.CertFile+"\nkeyfile = "+srv.KeyFile+"\n\n[listener plain]\nlisten = 127.0.0.1:0\nmax_connections = 1\n")
	k := startKeel(t, "serve", "--config", conf)
	addrs := k.listenerAddrs(t)
	plain, err := net.Dial("tcp", addrs["tls"])
	if err != nil {
		t.Fatal(err)
	}
	plain.Write([]byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 30, 0, 1, 'x'})
	plain.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.ReadAll(plain)
	plain.Close()
	good, err := tls.Dial("tcp", addrs["tls"], &tls.Config{RootCAs: ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	if rc := connect311(t, good, "ok"); rc != 0 {
		t.Fatalf("CONNACK: return code %d", rc)
	}
	// The plain listener's one place taken, a second client refused.
	first, err := net.Dial("tcp", addrs["plain"])
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	for i, c := range []net.Conn{first, nil} {
		if c == nil {
			if c, err = net.Dial("tcp", addrs["plain"]); err != nil {
				t.Fatal(err)
			}
			defer c.Close()
		}
		if rc, want := connect311(t, c, string(rune('a'+i))), []byte{0, 3}[i]; rc != want {
			t.Fatalf("plain client %d: return code %d, want %d", i, rc, want)
		}
	}
	want := []string{
		`keel_listener_tls_handshake_failures_total{listener="tls"} 1`,
		`keel_listener_connections_accepted_total{listener="tls"} 1`,
		`keel_listener_connections_open{listener="tls"} 1`,
		`keel_listener_connections_refused_total{listener="plain",reason="max_connections"} 1`,
		`keel_listener_connections_refused_total{listener="tls",reason="handshake_timeout"} 0`,
		`keel_listener_tls_reload_failures_total{listener="plain"} 0`,
		// MQTT bytes, not TLS records: the good client's 16-byte CONNECT
		// and 4-byte CONNACK (the failed handshake carried no MQTT); on
		// the plain listener two 15-byte CONNECTs, the refused one's
		// CONNACK too.
		`keel_listener_received_bytes_total{listener="tls"} 16`,
		`keel_listener_sent_bytes_total{listener="tls"} 4`,
		`keel_listener_received_bytes_total{listener="plain"} 30`,
		`keel_listener_sent_bytes_total{listener="plain"} 8`,
	}
	var body string
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + k.metrics + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
		missing := ""
		for _, w := range want {
			if !strings.Contains(body, w+"\n") {
				missing = w
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics lacks %q:\n%s", missing, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	k.stop(t)
}

// connect311 sends a 3.1.1 CONNECT with client id id on c and returns the
// CONNACK's return code.
func connect311(t *testing.T, c net.Conn, id string) byte {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	p := append([]byte{0x10, byte(12 + len(id)), 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 30, 0, byte(len(id))}, id...)
	c.Write(p)
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil || ack[0] != 0x20 {
		t.Fatalf("CONNACK: got %x, %v", ack, err)
	}
	return ack[3]
}
