package main

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keelmq/keel/engine"
)

// metricsHandler registers the broker's plain counters on a registry of
// its own (no global registration) and serves them.
func metricsHandler(b *engine.Broker) http.Handler {
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
	reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
