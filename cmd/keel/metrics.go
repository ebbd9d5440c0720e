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
	"github.com/keelmq/keel/wal"
)

// metricsHandler registers the broker's and the store's plain counters on
// a registry of its own (no global registration) and serves them.
func metricsHandler(b *engine.Broker, st wal.Store) http.Handler {
	reg := prometheus.NewRegistry()
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
	reg.MustRegister(fsyncHistogram{st})
	reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// fsyncDesc describes the store's WAL sync latency; the samples are the
// syncs counted by keel_store_syncs_total.
var fsyncDesc = prometheus.NewDesc("keel_store_fsync_seconds",
	"Latency of the write-ahead log's fsyncs (fdatasync).", nil, nil)

// fsyncHistogram exports wal.Stats.SyncLatency as a Prometheus histogram,
// built at scrape time from the store's plain counters.
type fsyncHistogram struct{ st wal.Store }

func (h fsyncHistogram) Describe(ch chan<- *prometheus.Desc) { ch <- fsyncDesc }

func (h fsyncHistogram) Collect(ch chan<- prometheus.Metric) {
	ch <- constHistogram(fsyncDesc, h.st.Stats().SyncLatency)
}

// constHistogram turns wal's per-bucket counts into Prometheus's
// cumulative ones.
func constHistogram(desc *prometheus.Desc, h wal.Histogram) prometheus.Metric {
	buckets := make(map[float64]uint64, len(h.Bounds))
	var n uint64
	for i, le := range h.Bounds {
		n += h.Counts[i]
		buckets[le.Seconds()] = n
	}
	n += h.Counts[len(h.Bounds)]
	return prometheus.MustNewConstHistogram(desc, n, h.Sum.Seconds(), buckets)
}

// adminMux serves /metrics, and /debug/pprof/ only if withPprof: profiles
// and traces show what a broker is doing to anyone who can reach the
// address, so they are opt-in.
func adminMux(b *engine.Broker, st wal.Store, withPprof bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", metricsHandler(b, st))
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
func startAdmin(ln net.Listener, withPprof bool, b *engine.Broker, st wal.Store, logger *slog.Logger) *adminServer {
	a := &adminServer{
		addr: ln.Addr().String(),
		srv: &http.Server{
			Handler:           adminMux(b, st, withPprof),
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
