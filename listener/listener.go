// Package listener accepts connections and hands each net.Conn to a
// Handler, with what the listener knows of it (Info). It knows nothing of
// MQTT.
//
// # The handshake
//
// Each accepted socket goes through the listener's stages in its own
// goroutine: the PROXY header (Server.Proxy), the TLS handshake (Server.TLS; the files' current generation
// is read at each handshake, so ReloadTLS rotates certificates without
// touching open connections), the WebSocket upgrade (Server.WebSocket: an
// http.Server of the listener's own serves it), then the handler. One deadline,
// HandshakeTimeout from the accept, covers the stages: a timer closes the
// socket if they are not over by then, and Info.Deadline passes what is
// left to the handler, which reads the MQTT CONNECT by then. A connection
// that fails a stage is closed and counted (Stats); it never reaches the
// handler.
//
// # Who writes a socket
//
// The handler writes the connection through net.Conn, from one goroutine
// at a time. One exception is granted here, explicitly: for a plain TCP
// connection (a *net.TCPConn accepted by this Server, with nothing between
// the socket and the handler) Info.Direct is the socket's raw descriptor,
// which the handler may write with a non-blocking write when nothing else
// is writing and nothing is queued (the engine's direct path for acks).
// Info.Direct is nil for any wrapped connection (TLS, WebSocket, PROXY
// protocol, metering): writing around a wrapper would corrupt its stream
// or skip its accounting, so it is never inferred from the conn's type by
// the handler.
package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/time/rate"
)

// Info is what the listener knows of a connection.
type Info struct {
	Listener string   // the listener's name
	Remote   net.Addr // the client's address (as a PROXY header gave it, when there is one)
	// TLS is the handshake's state (with the verified client chain, if
	// any); nil on a plain connection.
	TLS *tls.ConnectionState
	// Direct is non-nil only where the listener grants direct writes of
	// the socket (see the package doc).
	Direct syscall.RawConn
	// Identity is the client certificate's identity when the listener
	// makes it the username (Server.Identity): its CN, or its RFC 2253
	// subject. IdentityIsUsername says the listener does so; the handler
	// then uses Identity as the username whatever the client sent, and
	// refuses the client when Identity is empty.
	Identity           string
	IdentityIsUsername bool
	// OverLimit says the listener's or the global connection limit is
	// reached: the handler refuses the client (MQTT: CONNACK 0x97, or
	// return code 3) once it knows how to say so, and closes.
	OverLimit bool
	// OverRate says the connection rate limit (Limit.Rate) is reached:
	// the handler refuses the client (MQTT: CONNACK 0x9F, or return code
	// 3) and closes.
	OverRate bool
	// Deadline is when the handshake must be over: the listener spent
	// part of it on the PROXY header, TLS and the WebSocket upgrade, and
	// the handler reads the MQTT CONNECT by then. Zero: no deadline.
	Deadline time.Time
	// BytesIn and BytesOut are the listener's traffic counters (Stats):
	// the handler adds the bytes of MQTT it reads and writes (TLS records
	// and WebSocket frames around them are not counted). Nil: not counted.
	BytesIn, BytesOut *atomic.Uint64
}

// Identity says which part of a client certificate becomes the username
// (mosquitto's use_identity_as_username and use_subject_as_username).
type Identity uint8

const (
	IdentityNone    Identity = iota // the client's own username
	IdentityCN                      // the certificate's Common Name
	IdentitySubject                 // the certificate's subject, RFC 2253
)

// Handler serves one connection until it ends; the listener runs each call
// in its own goroutine and closes the connection afterwards.
type Handler interface {
	ServeConn(nc net.Conn, info Info)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(nc net.Conn, info Info)

func (f HandlerFunc) ServeConn(nc net.Conn, info Info) { f(nc, info) }

// DefaultHandshakeTimeout bounds a handshake when Server.HandshakeTimeout
// is zero.
const DefaultHandshakeTimeout = 10 * time.Second

// Server accepts on one net.Listener. Its exported fields are set before
// Serve and not changed after.
type Server struct {
	Handler Handler
	Logger  *slog.Logger
	Name    string // the listener's name, passed in Info

	// TLS, if set, makes this a TLS listener: the files are loaded by
	// Serve (if ReloadTLS has not loaded them yet) and again by each
	// ReloadTLS. A connection that does not complete a TLS handshake is
	// closed: nothing is ever served in plain text here.
	TLS *TLSFiles
	// Identity makes the client certificate's identity the username
	// (Info.Identity). It needs TLS.RequireCertificate.
	Identity Identity
	// HandshakeTimeout bounds everything before the handler's MQTT
	// CONNECT and that CONNECT itself (Info.Deadline), from the accept;
	// 0: DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration

	// WebSocket, if set, serves MQTT over WebSocket (with TLS: wss).
	WebSocket *WebSocket
	// Proxy, if not ProxyOff, reads a PROXY protocol header from the
	// ProxyTrusted peers (required from them, refused from anyone else);
	// its client address is Info.Remote.
	Proxy        Proxy
	ProxyTrusted []netip.Prefix
	// MaxConnections limits the clients this listener serves at once (0:
	// none); Global, if set, is a limit shared with other listeners. A
	// client over either is handed over with Info.OverLimit.
	MaxConnections int
	Global         *Limit

	ws       *wsServer                  // with WebSocket: the HTTP side
	tlsCur   atomic.Pointer[tls.Config] // the files' current generation (ReloadTLS)
	tlsOuter *tls.Config                // hands each handshake tlsCur (GetConfigForClient)
	stats    counters

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{}
	closed bool           // Shutdown has begun: no more handlers start
	wg     sync.WaitGroup // handlers; Add only under mu while !closed
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("listener: server closed")

// ReloadTLS reads the TLS files again; the next handshake uses them, and
// connections already open keep theirs. On error the old material stays
// (and the error says which file is at fault: a *FileError).
func (s *Server) ReloadTLS() error {
	if s.TLS == nil {
		return nil
	}
	cfg, err := LoadTLS(*s.TLS)
	if err != nil {
		s.stats.tlsReloadFail.Add(1)
		return err
	}
	s.tlsCur.Store(cfg)
	return nil
}

// Serve accepts connections on ln until Shutdown. Temporary accept errors
// are retried with a backoff.
func (s *Server) Serve(ln net.Listener) error {
	if s.Logger == nil {
		s.Logger = slog.Default()
	}
	if s.TLS != nil {
		if s.tlsCur.Load() == nil {
			if err := s.ReloadTLS(); err != nil {
				return fmt.Errorf("listener %s: %w", s.Name, err)
			}
		}
		s.tlsOuter = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.tlsCur.Load(), nil
		}}
	}
	if s.WebSocket != nil {
		s.startWebSocket(s.handshakeTimeout())
	}
	s.mu.Lock()
	s.ln = ln
	s.conns = make(map[net.Conn]struct{})
	s.mu.Unlock()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.Logger.Warn("accept", "err", err, "retry_in", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return ErrServerClosed
		}
		s.conns[nc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() {
				if r := recover(); r != nil {
					s.Logger.Error("handler panic", "panic", r)
				}
				nc.Close()
				s.mu.Lock()
				delete(s.conns, nc)
				s.mu.Unlock()
			}()
			s.serveConn(nc)
		}()
	}
}

// serveConn takes one accepted socket through the handshake (TLS) and
// hands it to the handler. A timer closes the socket when the handshake
// outlives HandshakeTimeout, whatever stage it is in.
func (s *Server) serveConn(nc net.Conn) {
	timeout := s.handshakeTimeout()
	info := Info{Listener: s.Name, Remote: nc.RemoteAddr(), Deadline: time.Now().Add(timeout),
		BytesIn: &s.stats.bytesIn, BytesOut: &s.stats.bytesOut}
	var expired atomic.Bool
	timer := time.AfterFunc(timeout, func() { expired.Store(true); nc.Close() })
	defer timer.Stop()
	log := s.Logger.With("listener", s.Name, "remote", info.Remote.String())
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	c := nc
	if s.Proxy != ProxyOff {
		pc, why, err := s.readProxy(c, &info)
		if err != nil {
			if expired.Load() {
				why = refuseTimeout
			}
			s.stats.refuse(why)
			log.Debug("PROXY header refused", "err", err)
			return
		}
		c = pc
		log = log.With("client_addr", info.Remote.String())
	}
	if s.TLS != nil {
		tc := tls.Server(c, s.tlsOuter)
		if err := tc.Handshake(); err != nil {
			if expired.Load() {
				s.stats.refuse(refuseTimeout)
			} else {
				s.stats.tlsFailures.Add(1)
			}
			log.Debug("TLS handshake failed", "err", err)
			return
		}
		st := tc.ConnectionState()
		info.TLS = &st
		if s.Identity != IdentityNone {
			info.IdentityIsUsername = true
			if len(st.VerifiedChains) > 0 {
				leaf := st.VerifiedChains[0][0]
				if s.Identity == IdentityCN {
					info.Identity = leaf.Subject.CommonName
				} else {
					info.Identity = leaf.Subject.String()
				}
			}
		}
		c = tc
	} else if tc, ok := c.(*net.TCPConn); ok && s.WebSocket == nil {
		// Plain TCP, accepted here: direct writes are safe.
		if raw, err := tc.SyscallConn(); err == nil {
			info.Direct = raw
		}
	}
	if s.ws != nil {
		// The HTTP server upgrades it and serves it (upgrade); this
		// goroutine owns the socket until then.
		wc := &wsConn{Conn: c, info: info, timer: timer, done: make(chan struct{})}
		if s.ws.conns.hand(wc) {
			<-wc.done
		}
		if !wc.served.Load() && !wc.refused.Load() && (expired.Load() || !time.Now().Before(info.Deadline)) {
			s.stats.refuse(refuseTimeout)
		}
		return
	}
	if !timer.Stop() {
		s.stats.refuse(refuseTimeout)
		return
	}
	s.serveClient(c, info)
}

// serveClient hands a connection whose handshake is over to the handler,
// within the limits: one over them is handed over marked OverRate or
// OverLimit, and counted as refused rather than open.
func (s *Server) serveClient(c net.Conn, info Info) {
	g := s.Global
	if g != nil && g.Rate != nil && !g.Rate.Allow() {
		s.stats.refuse(refuseConnectionRate)
		info.OverRate = true
		s.Handler.ServeConn(c, info)
		return
	}
	if g != nil && g.PerAddress > 0 {
		if addr, ok := ipOf(info.Remote); ok {
			if !g.acquireAddr(addr) {
				s.stats.refuse(refusePerAddress)
				info.OverLimit = true
				s.Handler.ServeConn(c, info)
				return
			}
			defer g.releaseAddr(addr)
		}
	}
	if !s.acquire() {
		s.stats.refuse(refuseMaxConnections)
		info.OverLimit = true
		s.Handler.ServeConn(c, info)
		return
	}
	defer s.release()
	s.stats.accepted.Add(1)
	s.Handler.ServeConn(c, info)
}

// acquire takes a place for a client under both limits.
func (s *Server) acquire() bool {
	if n := s.stats.open.Add(1); s.MaxConnections > 0 && n > int64(s.MaxConnections) {
		s.stats.open.Add(-1)
		return false
	}
	if g := s.Global; g != nil && g.Max > 0 {
		if g.n.Add(1) > g.Max {
			g.n.Add(-1)
			s.stats.open.Add(-1)
			return false
		}
	}
	return true
}

func (s *Server) release() {
	s.stats.open.Add(-1)
	if g := s.Global; g != nil && g.Max > 0 {
		g.n.Add(-1)
	}
}

// Limit is the connection limits shared by listeners (keel's top-level
// max_connections, max_connection_rate, max_connections_per_address).
// Its exported fields are set before the listeners serve.
type Limit struct {
	Max int64 // clients at once; 0: none
	// Rate, if set, bounds the new clients per second (a token bucket and
	// its burst), counted once their handshake (PROXY, TLS, WebSocket) is
	// over: a client over it is handed over with Info.OverRate.
	Rate *rate.Limiter
	// PerAddress bounds the clients from one IP address (Info.Remote) at
	// once; 0: none. A client over it is handed over with Info.OverLimit.
	PerAddress int

	n  atomic.Int64
	mu struct {
		sync.Mutex
		addrs map[netip.Addr]int // clients per address, while PerAddress > 0
	}
}

func (l *Limit) acquireAddr(a netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.addrs == nil {
		l.mu.addrs = make(map[netip.Addr]int)
	}
	if l.mu.addrs[a] >= l.PerAddress {
		return false
	}
	l.mu.addrs[a]++
	return true
}

func (l *Limit) releaseAddr(a netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.addrs[a]--; l.mu.addrs[a] <= 0 {
		delete(l.mu.addrs, a)
	}
}

// ipOf is the IP address of a client address.
func ipOf(a net.Addr) (netip.Addr, bool) {
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, ok := netip.AddrFromSlice(a.IP)
		return ip.Unmap(), ok
	case nil:
		return netip.Addr{}, false
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}

// Open is how many clients hold a place under the limit.
func (l *Limit) Open() int64 { return l.n.Load() }

func (s *Server) handshakeTimeout() time.Duration {
	if s.HandshakeTimeout <= 0 {
		return DefaultHandshakeTimeout
	}
	return s.HandshakeTimeout
}

func isTemporary(err error) bool {
	t, ok := err.(interface{ Temporary() bool })
	return ok && t.Temporary()
}

// Shutdown stops accepting, and waits for the handlers to return until ctx
// ends; then it closes the connections that are left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	if s.ln != nil {
		s.ln.Close()
	}
	s.mu.Unlock()
	if s.ws != nil {
		// No more upgrades; the connections upgraded are the handlers'.
		s.ws.conns.Close()
		defer func() { s.ws.http.Close(); <-s.ws.done }()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}
