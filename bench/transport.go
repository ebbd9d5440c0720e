package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"

	"github.com/coder/websocket"
)

// transport is how the load generator reaches the broker: plain TCP (nil
// or kind "tcp"), TLS, MQTT over WebSocket, or both (wss). TLS verifies
// the broker's certificate against -cafile.
type transport struct {
	kind string      // tcp, tls, ws or wss
	tls  *tls.Config // tls and wss
	path string      // ws and wss: the HTTP path
}

// newTransport parses -transport, -cafile and -ws-path.
func newTransport(kind, cafile, path string) (*transport, error) {
	t := &transport{kind: kind, path: path}
	switch kind {
	case "", "tcp":
		return nil, nil
	case "ws":
	case "tls", "wss":
		if cafile == "" {
			return nil, fmt.Errorf("-transport %s: want -cafile, the CA that signed the broker's certificate", kind)
		}
		pem, err := os.ReadFile(cafile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-cafile %s: no certificate in it", cafile)
		}
		// A fresh handshake per connection (no session tickets kept), as
		// a fleet of devices each connecting once costs the broker.
		t.tls = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	default:
		return nil, fmt.Errorf("-transport %q: want tcp, tls, ws or wss", kind)
	}
	return t, nil
}

// dial opens a connection to addr over t; d sets the TCP dial (source
// address, timeout). A nil t is plain TCP.
func (t *transport) dial(ctx context.Context, d *net.Dialer, addr string) (net.Conn, error) {
	if t == nil {
		return d.DialContext(ctx, "tcp", addr)
	}
	switch t.kind {
	case "tls":
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		tc := tls.Client(c, t.config(addr))
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		return tc, nil
	case "ws", "wss":
		tr := &http.Transport{DialContext: d.DialContext, TLSClientConfig: t.config(addr), DisableKeepAlives: true}
		scheme := "ws"
		if t.kind == "wss" {
			scheme = "wss"
		}
		wc, _, err := websocket.Dial(ctx, scheme+"://"+addr+t.path, &websocket.DialOptions{
			Subprotocols: []string{"mqtt"}, HTTPClient: &http.Client{Transport: tr},
		})
		if err != nil {
			return nil, err
		}
		wc.SetReadLimit(-1) // MQTT bounds its own packets
		// The connection outlives the dial: its context is not ctx.
		return websocket.NetConn(context.Background(), wc, websocket.MessageBinary), nil
	}
	return nil, errors.New("bench: unknown transport " + t.kind)
}

// config is t's TLS configuration for addr (the certificate names the
// host).
func (t *transport) config(addr string) *tls.Config {
	if t.tls == nil {
		return nil
	}
	c := t.tls.Clone()
	if host, _, err := net.SplitHostPort(addr); err == nil {
		c.ServerName = host
	}
	return c
}
