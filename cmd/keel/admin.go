package main

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keelmq/keel/engine"
	"github.com/keelmq/keel/engine/bridge"
	"github.com/keelmq/keel/listener"
	"github.com/keelmq/keel/wal"
)

// The admin listener: one http.Server on the `admin` address (`metrics`
// is its old name), off unless configured. serve binds it before
// anything else and serves it from then on, so that /healthz answers
// during a long replay; what needs the broker answers 503 until serve
// hands it over (ready).
//
//	GET  /healthz            200 while the process serves HTTP
//	GET  /readyz             200 once the store is open and replayed and
//	                         has not failed; 503 with the reason otherwise
//	GET  /metrics            Prometheus, one snapshot per scrape
//	GET  /api/stats          counts, store size, Pebble's levels, broker counters
//	GET  /api/sessions       ?prefix=&after=&limit=  (paged by client id)
//	GET  /api/sessions/{id}  one session
//	GET  /api/queues         sessions with queued messages, largest first
//	GET  /api/retained       ?prefix=&after=&limit=  (paged by topic)
//	GET  /api/listeners      the MQTT listeners: address, transport, counters
//	GET  /api/bridges        each bridge: state, last error, queue, counters
//	POST /api/backup         {"dest": "/abs/dir"}: a checkpoint while serving
//	POST /api/clients/{id}/disconnect, DELETE /api/sessions/{id}: adminactions.go
//	GET  /console/           the web console (console.go); / redirects there
//	     /debug/pprof/       only with pprof = true
//
// The /api/ views are keel inspect's, read from a Pebble snapshot by the
// same code (inspect.go) on the HTTP goroutine: the broker's core is not
// asked anything and never waits. One view or backup runs at a time.
// /api/ and /console/ answer loopback peers only (403 otherwise, logged):
// sessions name clients, and a backup writes where it is told.

// adminServer is the admin listener; serve owns it and shuts it down.
type adminServer struct {
	addr   string
	srv    *http.Server
	done   chan struct{} // closed when Serve has returned
	logger *slog.Logger

	state    atomic.Pointer[adminState] // nil until ready
	stopping atomic.Bool
	closed   sync.Once
	busy     chan struct{} // one /api/ view or backup at a time (capacity 1)
	// token, if set (admin_token_file), is required of every /api/ and
	// /console/ request, from any peer; without one, only loopback peers
	// are answered.
	token []byte
}

// adminState is what serve hands over once the broker runs.
type adminState struct {
	b         *engine.Broker
	l         *wal.Log
	metrics   http.Handler
	listeners []mqttListener
	bridges   []*bridge.Bridge
}

// startAdmin serves the admin routes on ln. serve binds ln first, so that
// an address the operator asked for and keel cannot bind is a startup
// error, like the MQTT port.
func startAdmin(ln net.Listener, withPprof bool, token []byte, logger *slog.Logger) *adminServer {
	a := &adminServer{
		addr:   ln.Addr().String(),
		done:   make(chan struct{}),
		logger: logger.With("component", "admin"),
		busy:   make(chan struct{}, 1),
		token:  token,
	}
	a.srv = &http.Server{
		Handler:           a.mux(withPprof),
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	go func() {
		defer close(a.done)
		if err := a.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			a.logger.Error("admin listener failed", "addr", a.addr, "err", err)
		}
	}()
	return a
}

// permit decides who may use /api/ and /console/: with a token, whoever
// presents it (Authorization: Bearer TOKEN, or HTTP Basic with the token
// as the password, which a browser asks for on its own: the console then
// works); without one, loopback peers. Refusals are logged with the peer,
// never the credentials.
func (a *adminServer) permit(w http.ResponseWriter, r *http.Request) (int, error) {
	if a.token == nil {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		if isLoopback(host) {
			return 0, nil
		}
		a.logger.Warn("admin: refused a request from a peer not on loopback", "peer", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
		return http.StatusForbidden, errors.New("the admin API answers loopback peers only (set admin_token_file to serve others)")
	}
	var given string
	if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
		given = strings.TrimPrefix(h, "Bearer ")
	} else if _, pw, ok := r.BasicAuth(); ok {
		given = pw
	}
	if given != "" && subtle.ConstantTimeCompare([]byte(given), a.token) == 1 {
		return 0, nil
	}
	a.logger.Warn("admin: refused a request without the admin token", "peer", r.RemoteAddr, "method", r.Method, "path", r.URL.Path,
		"presented", given != "")
	w.Header().Set("WWW-Authenticate", `Basic realm="keel admin"`)
	return http.StatusUnauthorized, errors.New("the admin API needs the admin token (Authorization: Bearer TOKEN)")
}

// ready hands the running broker to the admin routes.
func (a *adminServer) ready(b *engine.Broker, l *wal.Log, listeners []mqttListener, bridges ...*bridge.Bridge) {
	var srvs []*listener.Server
	for _, m := range listeners {
		srvs = append(srvs, m.srv)
	}
	a.state.Store(&adminState{b: b, l: l, metrics: metricsHandler(b, srvs, bridgeCollector(bridges)), listeners: listeners, bridges: bridges})
}

// stop makes /readyz answer 503 from now on (serve is shutting down).
func (a *adminServer) stop() { a.stopping.Store(true) }

// shutdown stops the admin listener and waits for its Serve to return.
// Calls after the first do nothing.
func (a *adminServer) shutdown(ctx context.Context) {
	a.closed.Do(func() {
		a.stop()
		if err := a.srv.Shutdown(ctx); err != nil {
			a.logger.Warn("admin shutdown", "err", err)
			a.srv.Close()
		}
		<-a.done
	})
}

func (a *adminServer) mux(withPprof bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", a.readyz)
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		st := a.state.Load()
		if st == nil {
			http.Error(w, "starting: the store is being replayed", http.StatusServiceUnavailable)
			return
		}
		st.metrics.ServeHTTP(w, r)
	})
	mux.HandleFunc("GET /api/stats", a.api(func(st *adminState, r *http.Request) (any, error) { return a.view(st, r, "stats", "") }))
	mux.HandleFunc("GET /api/sessions", a.api(func(st *adminState, r *http.Request) (any, error) { return a.view(st, r, "sessions", "") }))
	mux.HandleFunc("GET /api/sessions/{id}", a.api(func(st *adminState, r *http.Request) (any, error) {
		return a.view(st, r, "session", r.PathValue("id"))
	}))
	mux.HandleFunc("GET /api/queues", a.api(func(st *adminState, r *http.Request) (any, error) { return a.view(st, r, "queues", "") }))
	mux.HandleFunc("GET /api/retained", a.api(func(st *adminState, r *http.Request) (any, error) { return a.view(st, r, "retained", "") }))
	mux.HandleFunc("GET /api/listeners", a.api(func(st *adminState, r *http.Request) (any, error) { return listenersOf(st.listeners), nil }))
	mux.HandleFunc("GET /api/bridges", a.api(func(st *adminState, r *http.Request) (any, error) { return bridgesOf(st.bridges), nil }))
	mux.HandleFunc("POST /api/backup", a.api(a.backup))
	a.actionRoutes(mux) // adminactions.go
	mux.Handle("GET /console/", a.consoleHandler())
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/console/", http.StatusFound) })
	if withPprof {
		// Profiles and traces show what a broker is doing to anyone who
		// can reach the address, so they are opt-in.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// readyz says whether the broker serves: the store open and replayed, no
// store failure (after one keel acknowledges nothing and stops), not
// shutting down.
func (a *adminServer) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	st := a.state.Load()
	var why string
	switch {
	case a.stopping.Load():
		why = "shutting down"
	case st == nil:
		why = "starting: the store is being replayed"
	case st.b.Err() != nil:
		why = "store failed: " + st.b.Err().Error()
	case st.l.Err() != nil:
		why = "store failed: " + st.l.Err().Error()
	case st.b.DiskLow():
		why = "refusing: disk below min_free_disk" // disk.go
	}
	if why != "" {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, why)
		return
	}
	fmt.Fprintln(w, "ready")
}

// httpError is an error with the status to answer it with.
type httpError struct {
	code int
	err  error
}

func (e *httpError) Error() string { return e.err.Error() }

// api wraps a JSON route: loopback peers only, the broker running, one at
// a time, errors as {"error": "..."}.
func (a *adminServer) api(h func(st *adminState, r *http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		answer := func(code int, v any) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			json.NewEncoder(w).Encode(v)
		}
		fail := func(code int, err error) { answer(code, map[string]string{"error": err.Error()}) }
		if code, err := a.permit(w, r); err != nil {
			fail(code, err)
			return
		}
		st := a.state.Load()
		if st == nil || a.stopping.Load() {
			fail(http.StatusServiceUnavailable, errors.New("the broker is starting or stopping"))
			return
		}
		select {
		case a.busy <- struct{}{}:
			defer func() { <-a.busy }()
		case <-r.Context().Done():
			return
		}
		v, err := h(st, r)
		if err != nil {
			var he *httpError
			if errors.As(err, &he) {
				fail(he.code, he.err)
			} else {
				fail(http.StatusInternalServerError, err)
			}
			return
		}
		answer(http.StatusOK, v)
	}
}

// view serves one inspect view of the live store, from a snapshot.
func (a *adminServer) view(st *adminState, r *http.Request, view, id string) (any, error) {
	q := r.URL.Query()
	p := page{prefix: q.Get("prefix"), after: q.Get("after")}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return nil, &httpError{http.StatusBadRequest, fmt.Errorf("limit: want a number of rows, got %q", s)}
		}
		p.limit = n
	}
	in, err := inspectSnapshot(st)
	if err != nil {
		return nil, err
	}
	v, err := buildView(in, view, id, p)
	if errors.Is(err, errNoSession) {
		return nil, &httpError{http.StatusNotFound, err}
	}
	if sv, ok := v.(*statsView); ok {
		s := st.b.Stats()
		sv.Broker = &brokerInfo{Version: buildVersion(), UptimeSeconds: s.Uptime.Seconds(), ClientsConnected: s.ClientsConnected,
			MessagesReceived: s.MessagesReceived, MessagesSent: s.MessagesSent, StoreSyncs: s.StoreSyncs,
			StoreTxns: s.StoreTxns, CommitFailures: s.CommitFailures,
			SessionsPersistent: s.SessionsPersistent, SessionsOffline: s.SessionsOffline,
			QueuedMessages: s.QueuedMessages, QueuedBytes: s.QueuedBytes, Retained: s.Retained, StoreBytes: s.StoreBytes,
			Dropped: s.Dropped, Refused: s.Refused, DedupHits: s.DedupHits, DedupIDs: s.DedupIDs,
			Fsync: fsyncSummary(s.StoreSyncLatency)}
		sv.Broker.diskInfo = diskInfoOf(&s) // disk.go
		if err := st.b.Err(); err != nil {
			sv.Broker.StoreFailed = err.Error()
		}
	}
	return v, err
}

// inspectSnapshot inspects a snapshot of the running store.
func inspectSnapshot(st *adminState) (*inspection, error) {
	snap, err := st.l.Snapshot()
	if err != nil {
		return nil, err
	}
	defer snap.Close()
	in, err := inspect(wal.View(snap), time.Now())
	if err != nil {
		return nil, err
	}
	in.Live = true
	if v, err := snap.Get(wal.FormatKey); err == nil && len(v) == 4 {
		in.Stats.FormatVersion = binary.BigEndian.Uint32(v)
	}
	m, err := st.l.Metrics()
	if err != nil {
		return nil, err
	}
	in.Stats.Store = storeView(m)
	return in, nil
}

// backup takes a checkpoint of the live store into the request's dest,
// then opens the copy and checks it.
func (a *adminServer) backup(st *adminState, r *http.Request) (any, error) {
	var req struct {
		Dest string `json:"dest"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 64<<10)).Decode(&req); err != nil {
		return nil, &httpError{http.StatusBadRequest, fmt.Errorf("want {\"dest\": \"/absolute/dir\"}: %w", err)}
	}
	if !filepath.IsAbs(req.Dest) {
		return nil, &httpError{http.StatusBadRequest, fmt.Errorf("dest %q: want an absolute path (on the broker's machine)", req.Dest)}
	}
	if _, err := os.Stat(req.Dest); err == nil {
		return nil, &httpError{http.StatusConflict, fmt.Errorf("%s exists: a backup goes to a new directory", req.Dest)}
	}
	start := time.Now()
	a.logger.Info("admin: backup", "dest", req.Dest, "peer", r.RemoteAddr)
	if err := st.l.Checkpoint(req.Dest); err != nil {
		a.logger.Error("admin: backup failed", "dest", req.Dest, "err", err)
		return nil, err
	}
	took := time.Since(start)
	res, err := checkBackup(req.Dest)
	if err != nil {
		a.logger.Error("admin: backup does not check", "dest", req.Dest, "err", err)
		return nil, err
	}
	res.StartedAt, res.TookSeconds = start.UTC(), took.Seconds()
	a.logger.Info("admin: backup taken", "dest", req.Dest, "took", took.Round(time.Millisecond),
		"sessions", res.Stats.Sessions, "queue_entries", res.Stats.QueueEntries)
	return res, nil
}

// adminAddr is the admin listener's address: admin, or its old name
// metrics; "" when off.
func (c *config) adminAddr() string {
	if c.Admin != "" {
		return c.Admin
	}
	return c.Metrics
}

// validateAdmin checks the admin and metrics keys.
func (c *config) validateAdmin() error {
	for _, k := range []struct{ key, val string }{{"admin", c.Admin}, {"metrics", c.Metrics}} {
		if k.val == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(k.val); err != nil {
			return fmt.Errorf("%s: want HOST:PORT, got %q", c.where(k.key), k.val)
		}
	}
	if c.Admin != "" && c.Metrics != "" && c.Admin != c.Metrics {
		return fmt.Errorf("%s: metrics is the old name of admin (one listener serves both): set one of them, not %q and %q",
			c.where("metrics"), c.Admin, c.Metrics)
	}
	if c.AdminTokenFile != "" {
		if c.adminAddr() == "" {
			return fmt.Errorf("%s: there is no admin listener to protect: set admin too", c.where("admin_token_file"))
		}
		if _, err := c.adminToken(); err != nil {
			return err
		}
	}
	return nil
}
