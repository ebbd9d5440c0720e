package main

import (
	"embed"
	"io/fs"
	"net"
	"net/http"

	"github.com/keelmq/keel/listener"
)

// The console: one static page (console/index.html, console.js,
// console.css, embedded in the binary) served by the admin listener at
// /console/, which reads the JSON API and nothing else. No build step,
// no framework, nothing fetched from elsewhere.
//
// Its safety rules, which console_test.go checks in Chromium:
//   - every string a client chose (client ids, usernames, topics, filters)
//     reaches the page through textContent or an attribute set by
//     setAttribute/URL encoding, never through innerHTML;
//   - the Content-Security-Policy allows scripts from this origin's files
//     only: no inline script, no eval, no inline handler, so markup that
//     did slip into the page could not run;
//   - loopback peers only, like /api/ (the page shows what the API shows).

//go:embed console
var consoleFiles embed.FS

// consoleCSP forbids everything the page does not need: scripts, styles
// and fetches from its own origin only, no inline script or style, no
// frames, no forms.
const consoleCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// consoleHandler serves the embedded files under /console/.
func (a *adminServer) consoleHandler() http.Handler {
	sub, err := fs.Sub(consoleFiles, "console")
	if err != nil {
		panic(err) // the embedded tree has the directory
	}
	files := http.StripPrefix("/console/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		if !isLoopback(host) {
			a.logger.Warn("admin: refused a console request from a peer not on loopback", "peer", r.RemoteAddr, "path", r.URL.Path)
			http.Error(w, "the admin console answers loopback peers only", http.StatusForbidden)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", consoleCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}

// listenerRow is one MQTT listener in /api/listeners.
type listenerRow struct {
	Name                 string            `json:"name"`
	Addr                 string            `json:"addr"`
	Transport            string            `json:"transport"` // tcp, tls, ws, wss
	WebSocketPath        string            `json:"websocket_path,omitempty"`
	Proxy                bool              `json:"proxy_protocol"`
	MaxConnections       int               `json:"max_connections"` // 0: no limit of its own
	Open                 int64             `json:"open"`
	Accepted             uint64            `json:"accepted"`
	Refused              map[string]uint64 `json:"refused"` // by reason, every reason present
	TLSHandshakeFailures uint64            `json:"tls_handshake_failures"`
	TLSReloadFailures    uint64            `json:"tls_reload_failures"`
}

type listenersView struct {
	Listeners []listenerRow `json:"listeners"`
}

// listenersOf reads each listener's configuration and counters.
func listenersOf(ls []mqttListener) *listenersView {
	v := &listenersView{Listeners: []listenerRow{}}
	for _, m := range ls {
		s, st := m.srv, m.srv.Stats()
		row := listenerRow{Name: s.Name, Addr: m.addr, Transport: "tcp", Proxy: s.Proxy != listener.ProxyOff,
			MaxConnections: s.MaxConnections, Open: st.Open, Accepted: st.Accepted, Refused: st.Refused,
			TLSHandshakeFailures: st.TLSHandshakeFailures, TLSReloadFailures: st.TLSReloadFailures}
		switch {
		case s.WebSocket != nil && s.TLS != nil:
			row.Transport = "wss"
		case s.WebSocket != nil:
			row.Transport = "ws"
		case s.TLS != nil:
			row.Transport = "tls"
		}
		if s.WebSocket != nil {
			row.WebSocketPath = s.WebSocket.Path
			if row.WebSocketPath == "" {
				row.WebSocketPath = "/mqtt"
			}
		}
		v.Listeners = append(v.Listeners, row)
	}
	return v
}
