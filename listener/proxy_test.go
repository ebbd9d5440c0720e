package listener_test

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/keelmq/keel/listener"
)

var clientAddr = &net.TCPAddr{IP: net.IPv4(203, 0, 113, 7), Port: 40001}

// proxyHeader is a PROXY header saying the client is clientAddr.
func proxyHeader(t *testing.T, version byte) []byte {
	t.Helper()
	b, err := proxyproto.HeaderProxyFromAddrs(version, clientAddr, &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1883}).Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dialFrom dials addr from the loopback address local (127.0.0.1 is the
// trusted proxy in these tests, 127.0.0.2 anyone else).
func dialFrom(t *testing.T, local, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: wait}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// PROXY v1 and v2 headers from the trusted proxy: the client's address is
// Info.Remote, and the broker serves the client behind the header (Paho
// 3.1.1 through a dialer that writes the header first).
func TestProxyProtocolFromTrustedPeer(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	for _, tc := range []struct {
		mode    listener.Proxy
		version byte
	}{{listener.ProxyV1, 1}, {listener.ProxyV2, 2}, {listener.ProxyAny, 1}, {listener.ProxyAny, 2}} {
		got := make(chan listener.Info, 1)
		srv := &listener.Server{Proxy: tc.mode, ProxyTrusted: trusted,
			Handler: listener.HandlerFunc(func(c net.Conn, info listener.Info) {
				got <- info
				io.Copy(c, c)
			})}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(ln)
		c := dialFrom(t, "127.0.0.1", ln.Addr().String())
		c.Write(append(proxyHeader(t, tc.version), "ping"...))
		info := <-got
		if info.Remote.String() != clientAddr.String() || info.Direct != nil {
			t.Errorf("mode %d, v%d: got remote %v (direct grant %v), want %v and no grant", tc.mode, tc.version, info.Remote, info.Direct != nil, clientAddr)
		}
		buf := make([]byte, 4)
		c.SetReadDeadline(time.Now().Add(wait))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
			t.Errorf("mode %d, v%d: the bytes after the header: got %q, %v", tc.mode, tc.version, buf, err)
		}
		c.Close()
		srv.Shutdown(t.Context())
	}

	h := start(t, &listener.Server{Proxy: listener.ProxyAny, ProxyTrusted: trusted})
	paho3RoundTrip(t, "behind-proxy", func() (net.Conn, error) {
		c := dialFrom(t, "127.0.0.1", h.addr)
		_, err := c.Write(proxyHeader(t, 2))
		return c, err
	})
}

// A header from a peer outside proxy_trusted closes the connection; the
// same peer without a header is served; a trusted peer without a header,
// or with the wrong version, is refused. Each is counted.
func TestProxyProtocolRefusals(t *testing.T) {
	h := start(t, &listener.Server{Proxy: listener.ProxyV1, ProxyTrusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	connect := []byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 30, 0, 1, 'x'}
	closed := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(wait))
		b, err := io.ReadAll(c)
		return len(b) == 0 && !errors.Is(err, os.ErrDeadlineExceeded)
	}
	for _, tc := range []struct {
		name, from string
		send       []byte
		reason     string
	}{
		{"untrusted v1", "127.0.0.2", append(proxyHeader(t, 1), connect...), "proxy_untrusted"},
		{"untrusted v2", "127.0.0.2", append(proxyHeader(t, 2), connect...), "proxy_untrusted"},
		{"trusted without a header", "127.0.0.1", connect, "proxy_invalid"},
		{"trusted v2 on a v1 listener", "127.0.0.1", append(proxyHeader(t, 2), connect...), "proxy_invalid"},
		{"trusted, garbage", "127.0.0.1", []byte("PROXY nonsense\r\n"), "proxy_invalid"},
	} {
		before := h.srv.Stats().Refused[tc.reason]
		c := dialFrom(t, tc.from, h.addr)
		c.Write(tc.send)
		if !closed(c) {
			t.Errorf("%s: the connection was not closed", tc.name)
		}
		c.Close()
		h.refused(t, tc.reason, before+1)
	}
	// Anyone may connect without a header, and is what it is.
	paho3RoundTrip(t, "direct", func() (net.Conn, error) { return dialFrom(t, "127.0.0.2", h.addr), nil })
	if st := h.srv.Stats(); st.Accepted != 1 {
		t.Errorf("got %d accepted, want 1", st.Accepted)
	}
}
