package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keelmq/keel/engine"
	"github.com/keelmq/keel/listener"
)

// metricsHandler registers the broker's plain counters on a registry of
// its own (no global registration) and serves them.
func metricsHandler(b *engine.Broker, listeners []*listener.Server) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(listenerCollector(listeners))
	gauge := func(name, help string, f func(engine.Stats) float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(b.Stats()) }))
	}
	counter := func(name, help string, f func(engine.Stats) float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return f(b.Stats()) }))
	}
	gauge("keel_clients_connected", "Connected clients.", func(s engine.Stats) float64 { return float64(s.ClientsConnected) })
	gauge("keel_retained_messages", "Retained messages.", func(s engine.Stats) float64 { return float64(s.Retained) })
	gauge("keel_store_bytes", "Disk space used by the store.", func(s engine.Stats) float64 { return float64(s.StoreBytes) })
	counter("keel_messages_received_total", "PUBLISH packets received.", func(s engine.Stats) float64 { return float64(s.MessagesReceived) })
	counter("keel_messages_sent_total", "PUBLISH packets sent.", func(s engine.Stats) float64 { return float64(s.MessagesSent) })
	counter("keel_store_syncs_total", "Synced commits to the write-ahead log (fsyncs).", func(s engine.Stats) float64 { return float64(s.StoreSyncs) })
	counter("keel_store_txns_total", "Batches of broker state committed; divided by syncs, the group commit's batching.", func(s engine.Stats) float64 { return float64(s.StoreTxns) })
	counter("keel_commit_failures_total", "Store commits that failed (nothing of them was acknowledged).", func(s engine.Stats) float64 { return float64(s.CommitFailures) })
	reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// adminMux serves /metrics, and /debug/pprof/ only if withPprof: profiles
// and traces show what a broker is doing to anyone who can reach the
// address, so they are opt-in.
func adminMux(b *engine.Broker, listeners []*listener.Server, withPprof bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", metricsHandler(b, listeners))
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// adminServer is the metrics listener; serve owns it and shuts it down.
type adminServer struct {
	addr string
	srv  *http.Server
	done chan struct{} // closed when Serve has returned
}

// startAdmin serves adminMux on ln. serve binds ln before anything else,
// so that an address the operator asked for and keel cannot bind is a
// startup error, like the MQTT port.
func startAdmin(ln net.Listener, withPprof bool, b *engine.Broker, listeners []*listener.Server, logger *slog.Logger) *adminServer {
	a := &adminServer{
		addr: ln.Addr().String(),
		srv: &http.Server{
			Handler:           adminMux(b, listeners, withPprof),
			ReadHeaderTimeout: 10 * time.Second,
			MaxHeaderBytes:    64 << 10,
		},
		done: make(chan struct{}),
	}
	go func() {
		defer close(a.done)
		if err := a.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics listener failed", "addr", a.addr, "err", err)
		}
	}()
	return a
}

// shutdown stops the metrics listener and waits for its Serve to return.
func (a *adminServer) shutdown(ctx context.Context, logger *slog.Logger) {
	if err := a.srv.Shutdown(ctx); err != nil {
		logger.Warn("metrics shutdown", "err", err)
		a.srv.Close()
	}
	<-a.done
}

var (
	descListenerOpen = prometheus.NewDesc("keel_listener_connections_open",
		"Clients a listener is serving.", []string{"listener"}, nil)
	descListenerAccepted = prometheus.NewDesc("keel_listener_connections_accepted_total",
		"Connections a listener handed to the broker as clients.", []string{"listener"}, nil)
	descListenerRefused = prometheus.NewDesc("keel_listener_connections_refused_total",
		"Connections a listener refused, by reason (handshake_timeout, proxy_untrusted, proxy_invalid, websocket, max_connections).",
		[]string{"listener", "reason"}, nil)
	descListenerTLSFailures = prometheus.NewDesc("keel_listener_tls_handshake_failures_total",
		"Failed TLS handshakes (plain TCP on a TLS port, a client certificate refused, ...).", []string{"listener"}, nil)
	descListenerTLSReloadFailures = prometheus.NewDesc("keel_listener_tls_reload_failures_total",
		"TLS reloads (SIGHUP) that failed and kept the previous certificates.", []string{"listener"}, nil)
)

// listenerCollector reads each listener's plain counters at scrape time,
// labelled with its name.
type listenerCollector []*listener.Server

func (lc listenerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descListenerOpen, descListenerAccepted, descListenerRefused, descListenerTLSFailures, descListenerTLSReloadFailures} {
		ch <- d
	}
}

func (lc listenerCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range lc {
		st := s.Stats()
		ch <- prometheus.MustNewConstMetric(descListenerOpen, prometheus.GaugeValue, float64(st.Open), s.Name)
		ch <- prometheus.MustNewConstMetric(descListenerAccepted, prometheus.CounterValue, float64(st.Accepted), s.Name)
		for _, r := range listener.RefuseReasons() {
			ch <- prometheus.MustNewConstMetric(descListenerRefused, prometheus.CounterValue, float64(st.Refused[r]), s.Name, r)
		}
		ch <- prometheus.MustNewConstMetric(descListenerTLSFailures, prometheus.CounterValue, float64(st.TLSHandshakeFailures), s.Name)
		ch <- prometheus.MustNewConstMetric(descListenerTLSReloadFailures, prometheus.CounterValue, float64(st.TLSReloadFailures), s.Name)
	}
}
