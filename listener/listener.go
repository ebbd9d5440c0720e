// Package listener accepts connections and hands each net.Conn to a
// Handler, with what the listener knows of it (Info). It knows nothing of
// MQTT.
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
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"
)

// Info is what the listener knows of a connection.
type Info struct {
	Listener string   // the listener's name
	Remote   net.Addr // the client's address (as a PROXY header gave it, when there is one)
	// TLS is the handshake's state; nil on a plain connection.
	TLS *tls.ConnectionState
	// Direct is non-nil only where the listener grants direct writes of
	// the socket (see the package doc).
	Direct syscall.RawConn
}

// Handler serves one connection until it ends; the listener runs each call
// in its own goroutine and closes the connection afterwards.
type Handler interface {
	ServeConn(nc net.Conn, info Info)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(nc net.Conn, info Info)

func (f HandlerFunc) ServeConn(nc net.Conn, info Info) { f(nc, info) }

// Server accepts on one net.Listener.
type Server struct {
	Handler Handler
	Logger  *slog.Logger
	Name    string // the listener's name, passed in Info

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{}
	closed bool           // Shutdown has begun: no more handlers start
	wg     sync.WaitGroup // handlers; Add only under mu while !closed
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("listener: server closed")

// Serve accepts connections on ln until Shutdown. Temporary accept errors
// are retried with a backoff.
func (s *Server) Serve(ln net.Listener) error {
	if s.Logger == nil {
		s.Logger = slog.Default()
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
		info := Info{Listener: s.Name, Remote: nc.RemoteAddr()}
		if tc, ok := nc.(*net.TCPConn); ok {
			tc.SetNoDelay(true)
			// Plain TCP, accepted here: direct writes are safe.
			if raw, err := tc.SyscallConn(); err == nil {
				info.Direct = raw
			}
		}
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
			s.Handler.ServeConn(nc, info)
		}()
	}
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
