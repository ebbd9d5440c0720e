package listener

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/pires/go-proxyproto"
)

// Proxy says which PROXY protocol headers a listener takes (HAProxy's
// PROXY protocol, v1 text or v2 binary), from Server.ProxyTrusted peers
// only.
type Proxy uint8

const (
	ProxyOff Proxy = iota // no header is read; one is MQTT garbage
	ProxyV1
	ProxyV2
	ProxyAny // v1 or v2
)

// ParseProxy reads proxy_protocol: off, v1, v2 or any.
func ParseProxy(s string) (Proxy, error) {
	switch s {
	case "off":
		return ProxyOff, nil
	case "v1":
		return ProxyV1, nil
	case "v2":
		return ProxyV2, nil
	case "any":
		return ProxyAny, nil
	}
	return 0, fmt.Errorf("want off, v1, v2 or any, got %q", s)
}

var (
	errProxyUntrusted = errors.New("a PROXY header from a peer outside proxy_trusted")
	errProxyVersion   = errors.New("a PROXY header of a version this listener does not take")
)

// readProxy reads the PROXY header of a connection. A trusted peer must
// send one, of the configured version, and its source address becomes
// info.Remote (a v2 LOCAL header, a proxy's health check, keeps the
// peer's). A peer outside ProxyTrusted is served as it is, but a header
// from it closes the connection: nobody else may say where a client is.
func (s *Server) readProxy(c net.Conn, info *Info) (net.Conn, refuseReason, error) {
	trusted := false
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		trusted = prefixesContain(s.ProxyTrusted, ta.AddrPort().Addr().Unmap())
	}
	br := bufio.NewReader(c)
	h, err := proxyproto.Read(br)
	bc := &bufferedConn{Conn: c, r: br}
	if !trusted {
		switch {
		case errors.Is(err, proxyproto.ErrNoProxyProtocol):
			return bc, 0, nil
		case err == nil:
			return nil, refuseProxyUntrusted, errProxyUntrusted
		}
		return nil, refuseProxyUntrusted, fmt.Errorf("%w: %v", errProxyUntrusted, err)
	}
	if err != nil {
		return nil, refuseProxyInvalid, err
	}
	if s.Proxy == ProxyV1 && h.Version != 1 || s.Proxy == ProxyV2 && h.Version != 2 {
		return nil, refuseProxyInvalid, errProxyVersion
	}
	if h.Command.IsProxy() && h.SourceAddr != nil {
		info.Remote = h.SourceAddr
	}
	return bc, 0, nil
}

// bufferedConn reads what the PROXY header's reader has buffered first.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// prefixesContain reports whether a is in one of ps.
func prefixesContain(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
