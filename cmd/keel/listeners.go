package main

import (
	"fmt"
	"log/slog"
	"net"

	"github.com/keelmq/keel/engine"
	"github.com/keelmq/keel/listener"
)

// mqttListener is one configured listener, bound.
type mqttListener struct {
	srv  *listener.Server
	ln   net.Listener
	addr string
}

// startListeners binds every configured listener (none serves yet) and
// loads its TLS files; on error the ones bound are closed.
func startListeners(cfg config, b *engine.Broker, logger *slog.Logger) ([]mqttListener, error) {
	h := listener.HandlerFunc(func(nc net.Conn, info listener.Info) { b.ServeConn(nc, engine.ConnInfo(info)) })
	global := &listener.Limit{Max: int64(cfg.MaxConnections)}
	cfg.Conn.apply(global)
	var out []mqttListener
	fail := func(err error) ([]mqttListener, error) {
		for _, m := range out {
			m.ln.Close()
		}
		return nil, err
	}
	for _, l := range cfg.listeners() {
		srv := newServer(l, h, logger)
		srv.Global = global
		if err := srv.ReloadTLS(); err != nil {
			return fail(fmt.Errorf("mqtt listener %s: %w", l.Name, err))
		}
		ln, err := net.Listen("tcp", l.Listen)
		if err != nil {
			return fail(fmt.Errorf("mqtt listener %s: %w", l.Listen, err))
		}
		m := mqttListener{srv: srv, ln: ln, addr: ln.Addr().String()}
		logger.Info("mqtt listener", "addr", m.addr, "listener", l.Name, "protocol", l.Protocol, "tls", srv.TLS != nil)
		out = append(out, m)
	}
	return out, nil
}

// newServer makes the listener.Server for l.
func newServer(l *listenerConfig, h listener.Handler, logger *slog.Logger) *listener.Server {
	srv := &listener.Server{Name: l.Name, Handler: h, Logger: logger, HandshakeTimeout: l.HandshakeTimeout,
		MaxConnections: l.MaxConnections}
	if l.TLS.CertFile != "" {
		files := l.TLS
		srv.TLS = &files
	}
	srv.Proxy, _ = listener.ParseProxy(l.Proxy) // checked by the config
	srv.ProxyTrusted = l.ProxyTrusted
	if l.Protocol == "websockets" {
		srv.WebSocket = &listener.WebSocket{Path: l.Path, Origins: l.Origins}
	}
	switch {
	case l.UseIdentity:
		srv.Identity = listener.IdentityCN
	case l.UseSubject:
		srv.Identity = listener.IdentitySubject
	}
	return srv
}

// reloadTLS reloads every TLS listener's files (SIGHUP). A listener whose
// files fail keeps its old ones, and says why.
func reloadTLS(servers []mqttListener, logger *slog.Logger) {
	for _, m := range servers {
		if m.srv.TLS == nil {
			continue
		}
		if err := m.srv.ReloadTLS(); err != nil {
			logger.Error("TLS reload failed: keeping the previous certificates", "listener", m.srv.Name, "err", err)
			continue
		}
		logger.Info("TLS reloaded", "listener", m.srv.Name)
	}
}
