package listener

import (
	"context"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// WebSocket makes a listener serve MQTT over WebSocket (RFC 6455; wss
// when TLS is set too).
type WebSocket struct {
	Path    string   // the URL path upgraded; "": /mqtt
	Origins []string // Origin hosts allowed (path.Match patterns); nil: any
}

// The subprotocols MQTT over WebSocket is offered under: 3.1.1 and 5.0
// say "mqtt" [MQTT-6.0.0-3]; 3.1 clients say "mqttv3.1". An upgrade
// offering neither is refused.
var wsSubprotocols = []string{"mqtt", "mqttv3.1"}

// wsServer is a listener's HTTP side: an http.Server serving the upgrade
// on the connections serveConn hands it (after PROXY and TLS), through
// conns. Serve starts it; Shutdown stops it.
type wsServer struct {
	http  *http.Server
	conns *connQueue
	done  chan struct{} // closed when http.Serve has returned
}

// wsConn is a connection handed to the HTTP server, with what the
// listener knows of it. The goroutine that accepted it waits on done:
// closed when the handler has served it (served), or when the HTTP
// server closes it without an upgrade.
type wsConn struct {
	net.Conn
	info    Info
	timer   *time.Timer // the handshake deadline's
	served  atomic.Bool // the upgrade handler took it
	refused atomic.Bool // a request on it was refused (and counted)
	once    sync.Once
	done    chan struct{}
}

func (c *wsConn) finish() { c.once.Do(func() { close(c.done) }) }

func (c *wsConn) Close() error {
	err := c.Conn.Close()
	if !c.served.Load() {
		c.finish()
	}
	return err
}

type wsConnKey struct{}

func (s *Server) startWebSocket(timeout time.Duration) {
	path := s.WebSocket.Path
	if path == "" {
		path = "/mqtt"
	}
	mux := http.NewServeMux()
	mux.HandleFunc(path, s.upgrade)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.refuseUpgrade(w, r, http.StatusNotFound, "no MQTT here: the WebSocket path is "+path)
	})
	ws := &wsServer{conns: newConnQueue(), done: make(chan struct{})}
	ws.http = &http.Server{
		Handler: mux,
		// A backstop: the handshake timer closes the socket first.
		ReadHeaderTimeout: timeout + time.Second,
		IdleTimeout:       timeout + time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          nil,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, wsConnKey{}, c)
		},
	}
	s.ws = ws
	go func() {
		defer close(ws.done)
		ws.http.Serve(ws.conns)
	}()
}

// upgrade serves one WebSocket upgrade and then the MQTT connection on it,
// until the handler returns.
func (s *Server) upgrade(w http.ResponseWriter, r *http.Request) {
	wc, ok := r.Context().Value(wsConnKey{}).(*wsConn)
	if !ok {
		panic("listener: a WebSocket request on a connection the listener did not hand over")
	}
	refuse := func(code int, msg string) { s.refuseUpgrade(w, r, code, msg) }
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		refuse(http.StatusUpgradeRequired, "MQTT is served here over WebSocket only")
		return
	}
	offered := false
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			offered = offered || slices.Contains(wsSubprotocols, strings.TrimSpace(p))
		}
	}
	if !offered {
		refuse(http.StatusBadRequest, "want the WebSocket subprotocol mqtt (or mqttv3.1)")
		return
	}
	opts := &websocket.AcceptOptions{Subprotocols: wsSubprotocols}
	if o := s.WebSocket.Origins; len(o) > 0 {
		opts.OriginPatterns = o
	} else {
		opts.InsecureSkipVerify = true // any Origin, as mosquitto without websockets_origin
	}
	// The upgrade handler owns the socket from the hijack on; if Accept
	// refuses, the HTTP server sends its answer and closes it.
	wc.served.Store(true)
	w.Header().Set("Connection", "close") // Accept says Upgrade instead if it upgrades
	c, err := websocket.Accept(w, r, opts)
	if err != nil {
		// Accept has answered (403 for an Origin not allowed).
		wc.served.Store(false)
		wc.refused.Store(true)
		s.stats.refuse(refuseWebSocket)
		s.Logger.Debug("WebSocket upgrade refused", "listener", s.Name, "remote", wc.info.Remote.String(), "err", err)
		return
	}
	defer wc.finish()
	c.SetReadLimit(-1) // MQTT's Maximum Packet Size is the engine's to enforce
	if !wc.timer.Stop() {
		s.stats.refuse(refuseTimeout)
		c.CloseNow()
		return
	}
	// Binary frames only: a text frame fails the read and closes the
	// connection (1003). Packets may span frames and frames may hold
	// several packets: NetConn is a byte stream.
	nc := websocket.NetConn(r.Context(), c, websocket.MessageBinary)
	info := wc.info
	info.Direct = nil // never write around the framing
	s.serveClient(nc, info)
	c.Close(websocket.StatusNormalClosure, "")
}

// refuseUpgrade answers a request that is not an MQTT upgrade, and closes
// the connection after the answer. It is counted once, as a WebSocket
// refusal, even if the deadline passes while the answer drains.
func (s *Server) refuseUpgrade(w http.ResponseWriter, r *http.Request, code int, msg string) {
	if wc, ok := r.Context().Value(wsConnKey{}).(*wsConn); ok {
		wc.refused.Store(true)
	}
	s.stats.refuse(refuseWebSocket)
	w.Header().Set("Connection", "close")
	http.Error(w, msg, code)
}

// connQueue is a net.Listener whose connections serveConn hands over.
type connQueue struct {
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newConnQueue() *connQueue {
	return &connQueue{ch: make(chan net.Conn), closed: make(chan struct{})}
}

// hand gives c to the HTTP server; false if the queue is closed.
func (q *connQueue) hand(c net.Conn) bool {
	select {
	case q.ch <- c:
		return true
	case <-q.closed:
		return false
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.closed:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.closed) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return wsAddr{} }

type wsAddr struct{}

func (wsAddr) Network() string { return "websocket" }
func (wsAddr) String() string  { return "websocket" }
