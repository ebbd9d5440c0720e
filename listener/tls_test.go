package listener_test

import (
	"crypto/tls"
	"crypto/x509/pkix"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/keelmq/keel/listener"
	"github.com/keelmq/keel/listener/listenertest"
)

// Eclipse Paho 3.1.1 and 5.0 over TLS 1.2 and 1.3; the handler gets the
// TLS state and no direct-write grant.
func TestTLSWithPaho(t *testing.T) {
	ca := listenertest.NewCA(t, "ca")
	srvCert := ca.Server("server")
	h := start(t, &listener.Server{TLS: &listener.TLSFiles{CertFile: srvCert.CertFile, KeyFile: srvCert.KeyFile}})
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cfg := &tls.Config{RootCAs: ca.Pool(), MinVersion: v, MaxVersion: v}
		paho3RoundTrip(t, "tls3-"+tls.VersionName(v), tlsDial(h.addr, cfg))
		nc, err := tlsDial(h.addr, cfg)()
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := paho5Connect(t, nc, "tls5-"+tls.VersionName(v)); err != nil {
			t.Fatalf("paho 5.0 over %s: %v", tls.VersionName(v), err)
		}
	}
	if st := h.srv.Stats(); st.Accepted != 4 || st.TLSHandshakeFailures != 0 {
		t.Fatalf("got %+v, want 4 accepted and no failures", st)
	}
}

func TestTLSInfo(t *testing.T) {
	ca := listenertest.NewCA(t, "ca")
	srvCert := ca.Server("server")
	client := ca.Issue("dev", listenertest.Options{Subject: pkix.Name{CommonName: "dev-1", Organization: []string{"Fleet"}}})
	got := make(chan listener.Info, 1)
	for _, id := range []listener.Identity{listener.IdentityCN, listener.IdentitySubject} {
		srv := &listener.Server{Name: "mtls", Identity: id, Handler: listener.HandlerFunc(func(_ net.Conn, info listener.Info) { got <- info }),
			TLS: &listener.TLSFiles{CertFile: srvCert.CertFile, KeyFile: srvCert.KeyFile, CAFile: ca.File, RequireCertificate: true}}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(ln)
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{client.TLS(t)}})
		if err != nil {
			t.Fatal(err)
		}
		info := <-got
		want := map[listener.Identity]string{listener.IdentityCN: "dev-1", listener.IdentitySubject: "CN=dev-1,O=Fleet"}[id]
		switch {
		case info.TLS == nil || len(info.TLS.VerifiedChains) != 1:
			t.Errorf("identity %d: got TLS state %v, want the verified chain", id, info.TLS)
		case info.Direct != nil:
			t.Errorf("identity %d: a TLS connection got the direct-write grant", id)
		case !info.IdentityIsUsername || info.Identity != want:
			t.Errorf("identity %d: got identity %q (as username: %v), want %q", id, info.Identity, info.IdentityIsUsername, want)
		case info.Deadline.IsZero():
			t.Errorf("identity %d: no handshake deadline in Info", id)
		}
		c.Close()
		srv.Shutdown(t.Context())
	}
}

// Mutual TLS: the certificate's CN (or subject) is the username the
// engine sees, whatever the client sent; a certificate without one gets
// CONNACK 0x86 (5.0) or return code 4 (3.1.1). Certificates that do not
// verify (none, another CA's, expired, revoked) fail the handshake, are
// counted, and cost the next good client nothing.
func TestMutualTLS(t *testing.T) {
	ca := listenertest.NewCA(t, "ca")
	other := listenertest.NewCA(t, "other")
	srvCert := ca.Server("server")
	good := ca.Issue("good", listenertest.Options{Subject: pkix.Name{CommonName: "meter-7", Organization: []string{"Billing"}}})
	revoked := ca.Client("revoked")
	noCN := ca.Issue("nocn", listenertest.Options{Subject: pkix.Name{Organization: []string{"Billing"}}})
	expired := ca.Issue("expired", listenertest.Options{Subject: pkix.Name{CommonName: "old"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	stranger := other.Client("stranger")
	files := &listener.TLSFiles{CertFile: srvCert.CertFile, KeyFile: srvCert.KeyFile, CAFile: ca.File,
		CRLFile: ca.CRL("ca.crl", revoked), RequireCertificate: true}
	h := start(t, &listener.Server{TLS: files, Identity: listener.IdentityCN})
	cfg := func(c *listenertest.Cert) *tls.Config {
		cfg := &tls.Config{RootCAs: ca.Pool()}
		if c != nil {
			cfg.Certificates = []tls.Certificate{c.TLS(t)}
		}
		return cfg
	}

	paho3RoundTrip(t, "good3", tlsDial(h.addr, cfg(good)))
	if u := h.lastUser(); u != "meter-7" {
		t.Fatalf("3.1.1: the engine saw username %q, want the CN meter-7", u)
	}

	// A certificate without a CN: 5.0 gets 0x86, 3.1.1 return code 4.
	nc, err := tlsDial(h.addr, cfg(noCN))()
	if err != nil {
		t.Fatal(err)
	}
	if _, ca, err := paho5Connect(t, nc, "nocn5"); err == nil || ca == nil || ca.ReasonCode != 0x86 {
		t.Fatalf("5.0 without a CN: got connack %+v, %v; want 0x86", ca, err)
	}
	o := mqtt.NewClientOptions().AddBroker("tcp://keel").SetClientID("nocn3").SetProtocolVersion(4).SetAutoReconnect(false).
		SetConnectRetry(false).SetConnectTimeout(wait).
		SetCustomOpenConnectionFn(func(*url.URL, mqtt.ClientOptions) (net.Conn, error) { return tlsDial(h.addr, cfg(noCN))() })
	if tok := mqtt.NewClient(o).Connect(); !tok.WaitTimeout(wait) || tok.(*mqtt.ConnectToken).ReturnCode() != 4 {
		t.Fatalf("3.1.1 without a CN: got return code %d (%v), want 4", tok.(*mqtt.ConnectToken).ReturnCode(), tok.Error())
	}

	for i, bad := range []*listenertest.Cert{nil, stranger, expired, revoked} {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		tc := tls.Client(c, cfg(bad))
		tc.SetDeadline(time.Now().Add(wait))
		err = tc.Handshake()
		if err == nil { // TLS 1.3: the client learns of the refusal on its first read
			_, err = tc.Read(make([]byte, 1))
		}
		if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("bad certificate %d: got %v, want the handshake refused", i, err)
		}
		tc.Close()
		eventually(t, "TLS failure counted", func() bool { return h.srv.Stats().TLSHandshakeFailures == uint64(i+1) })
	}
	c := paho3RoundTrip(t, "good3-again", tlsDial(h.addr, cfg(good)))
	c.Disconnect(0)
	if st := h.srv.Stats(); st.Accepted != 4 {
		t.Errorf("got %d accepted, want 4 (good, no CN twice, good again)", st.Accepted)
	}
}

// A plain TCP client on a TLS port is refused and counted: nothing is
// served in plain text.
func TestPlainClientOnTLSPort(t *testing.T) {
	ca := listenertest.NewCA(t, "ca")
	srvCert := ca.Server("server")
	h := start(t, &listener.Server{TLS: &listener.TLSFiles{CertFile: srvCert.CertFile, KeyFile: srvCert.KeyFile}})
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A 3.1.1 CONNECT, client id "x".
	c.Write([]byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 30, 0, 1, 'x'})
	c.SetReadDeadline(time.Now().Add(wait))
	b, err := io.ReadAll(c)
	if errors.Is(err, os.ErrDeadlineExceeded) || len(b) > 0 && b[0] == 0x20 {
		t.Fatalf("got %x, %v; want the connection closed without a CONNACK", b, err)
	}
	eventually(t, "TLS failure counted", func() bool { return h.srv.Stats().TLSHandshakeFailures == 1 })
	if st := h.srv.Stats(); st.Accepted != 0 {
		t.Fatalf("got %+v, want nothing accepted", st)
	}
}

// A slow-loris client, a byte at a time, is cut by the one handshake
// deadline: in the TLS handshake by the listener, in CONNECT by the engine
// (the listener's deadline shortens its ConnectTimeout).
func TestSlowLorisIsCutByTheDeadline(t *testing.T) {
	ca := listenertest.NewCA(t, "ca")
	srvCert := ca.Server("server")
	hello := []byte{0x16, 3, 1, 0, 200, 1, 0, 0, 196, 3, 3} // the start of a ClientHello
	connect := []byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 30, 0, 1, 'x'}
	for _, tc := range []struct {
		name  string
		files *listener.TLSFiles
		bytes []byte
	}{
		{"tls", &listener.TLSFiles{CertFile: srvCert.CertFile, KeyFile: srvCert.KeyFile}, hello},
		{"mqtt", nil, connect[:len(connect)-1]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, &listener.Server{TLS: tc.files, HandshakeTimeout: 300 * time.Millisecond})
			slowLoris(t, h.addr, tc.bytes)
			if tc.files != nil {
				h.refused(t, "handshake_timeout", 1)
			}
		})
	}
}

// SIGHUP's reload: a rotated certificate is used by the next handshake
// while a connection made before stays up; a broken one is refused, kept
// out, counted, and the last good one stays.
func TestReloadRotatesCertificate(t *testing.T) {
	ca := listenertest.NewCA(t, "ca")
	first := ca.Server("first")
	files := &listener.TLSFiles{CertFile: first.CertFile, KeyFile: first.KeyFile}
	h := start(t, &listener.Server{TLS: files})
	cfg := &tls.Config{RootCAs: ca.Pool()}
	serial := func() string {
		t.Helper()
		c, err := tls.Dial("tcp", h.addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	if got, want := serial(), first.X509.SerialNumber.String(); got != want {
		t.Fatalf("served serial %s, want %s", got, want)
	}
	old := paho3RoundTrip(t, "before", tlsDial(h.addr, cfg))

	second := ca.Server("second")
	if err := os.WriteFile(first.CertFile, second.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(first.KeyFile, second.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.srv.ReloadTLS(); err != nil {
		t.Fatal(err)
	}
	if got, want := serial(), second.X509.SerialNumber.String(); got != want {
		t.Fatalf("after the reload: served serial %s, want the new %s", got, want)
	}
	roundTrip3(t, old, "before-again", nil)

	// A broken certificate: the reload fails naming the file, the old one stays.
	if err := os.WriteFile(first.CertFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	var fe *listener.FileError
	if err := h.srv.ReloadTLS(); !errors.As(err, &fe) || fe.Key != "certfile" {
		t.Fatalf("reload of a broken certfile: got %v, want a FileError for certfile", err)
	}
	if got, want := serial(), second.X509.SerialNumber.String(); got != want {
		t.Fatalf("after the failed reload: served serial %s, want still %s", got, want)
	}
	if st := h.srv.Stats(); st.TLSReloadFailures != 1 {
		t.Fatalf("got %d reload failures, want 1", st.TLSReloadFailures)
	}
	roundTrip3(t, old, "still", nil)
}
