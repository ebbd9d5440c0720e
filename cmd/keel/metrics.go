package main

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keelmq/keel/engine"
	"github.com/keelmq/keel/listener"
	"github.com/keelmq/keel/wal"
)

// metricsHandler serves the broker's and the listeners' plain counters on
// a registry of its own (no global registration).
func metricsHandler(b *engine.Broker, listeners []*listener.Server, extra ...prometheus.Collector) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(brokerCollector{b})
	reg.MustRegister(listenerCollector(listeners))
	reg.MustRegister(extra...)
	reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// brokerMetric is one metric of engine.Stats.
type brokerMetric struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(s *engine.Stats) float64
}

func metric(name, help string, kind prometheus.ValueType, value func(s *engine.Stats) float64) brokerMetric {
	return brokerMetric{prometheus.NewDesc(name, help, nil, nil), kind, value}
}

var (
	gauge   = prometheus.GaugeValue
	counter = prometheus.CounterValue

	brokerMetrics = []brokerMetric{
		metric("keel_clients_connected", "Connected clients.", gauge, func(s *engine.Stats) float64 { return float64(s.ClientsConnected) }),
		metric("keel_sessions_persistent", "Stored (persistent) sessions, online or not.", gauge, func(s *engine.Stats) float64 { return float64(s.SessionsPersistent) }),
		metric("keel_sessions_offline", "Stored sessions with no connection.", gauge, func(s *engine.Stats) float64 { return float64(s.SessionsOffline) }),
		metric("keel_queued_messages", "Stored queue entries of all sessions, queued and in flight.", gauge, func(s *engine.Stats) float64 { return float64(s.QueuedMessages) }),
		metric("keel_queued_bytes", "Bytes of the stored queue entries and of the message bodies they share (each counted once).", gauge, func(s *engine.Stats) float64 { return float64(s.QueuedBytes) }),
		metric("keel_retained_messages", "Clients' retained messages ($SYS topics not counted).", gauge, func(s *engine.Stats) float64 { return float64(s.Retained) }),
		metric("keel_store_bytes", "Disk space used by the store.", gauge, func(s *engine.Stats) float64 { return float64(s.StoreBytes) }),
		metric("keel_messages_received_total", "PUBLISH packets received.", counter, func(s *engine.Stats) float64 { return float64(s.MessagesReceived) }),
		metric("keel_messages_sent_total", "PUBLISH packets sent.", counter, func(s *engine.Stats) float64 { return float64(s.MessagesSent) }),
		metric("keel_store_syncs_total", "Synced commits to the write-ahead log (fsyncs).", counter, func(s *engine.Stats) float64 { return float64(s.StoreSyncs) }),
		metric("keel_store_txns_total", "Batches of broker state committed; divided by syncs, the group commit's batching.", counter, func(s *engine.Stats) float64 { return float64(s.StoreTxns) }),
		metric("keel_publishes_throttled_total", "PUBLISH packets a client had to wait to send, over max_publish_rate (none dropped).", counter, func(s *engine.Stats) float64 { return float64(s.PublishesThrottled) }),
		metric("keel_dedup_hits_total", "QoS 1/2 publishes acknowledged and not routed again: the dedup window had their message id.", counter, func(s *engine.Stats) float64 { return float64(s.DedupHits) }),
		metric("keel_dedup_ids", "Message ids the dedup window holds.", gauge, func(s *engine.Stats) float64 { return float64(s.DedupIDs) }),
		metric("keel_preauth_reserved_bytes", "Bytes reserved for CONNECTs being read or authenticated (max_preauth_bytes).", gauge, func(s *engine.Stats) float64 { return float64(s.PreauthBytes) }),
		metric("keel_retained_bytes", "Topics and payloads of the clients' retained messages, what max_retained_bytes bounds.", gauge, func(s *engine.Stats) float64 { return float64(s.RetainedBytes) }),
		metric("keel_disk_free_bytes", "Bytes available on the data directory's filesystem, as last measured (min_free_disk).", gauge, func(s *engine.Stats) float64 { return float64(s.DiskFree) }),
		metric("keel_disk_total_bytes", "Size of the data directory's filesystem.", gauge, func(s *engine.Stats) float64 { return float64(s.DiskTotal) }),
		metric("keel_disk_min_free_bytes", "The low-water mark min_free_disk, in bytes (0: off).", gauge, func(s *engine.Stats) float64 { return float64(s.DiskMinFree) }),
		metric("keel_disk_low", "1 while the disk is below min_free_disk: new QoS 1/2 publishes and new persistent sessions are refused.", gauge, func(s *engine.Stats) float64 {
			if s.DiskLow {
				return 1
			}
			return 0
		}),
		metric("keel_store_metrics_reads_total", "Times the store read Pebble's metrics: one per scrape of this page (it takes one snapshot of the broker and the store); the admin API's stats and each $SYS update read them too.", counter, func(s *engine.Stats) float64 { return float64(s.StoreMetricsReads) }),
		metric("keel_commit_failures_total", "Store commits that failed (nothing of them was acknowledged).", counter, func(s *engine.Stats) float64 { return float64(s.CommitFailures) }),
	}
	droppedDesc = prometheus.NewDesc("keel_messages_dropped_total",
		"Messages not delivered to a session, by reason: too_large (over the client's Maximum Packet Size), queue_full (a persistent session's queue is full: the new message), queue_full_oldest (its oldest, under queue_full = drop_oldest), memory_queue_full and memory_queue_full_oldest (the same for a non-persistent session's memory queue), expired (Message Expiry passed while waiting), offline_qos0 (QoS 0 for an offline session), not_authorized (the subscriber may not read the topic), disk_low (not written while the disk is below min_free_disk: QoS 0 for an offline session, a QoS 0 retained update), retained_full (a retained update over the retained limits: routed as a non-retained message).", []string{"reason"}, nil)
	refusedDesc = prometheus.NewDesc("keel_refusals_total",
		"Packets refused instead of acknowledged, by reason: store_failed (the commit failed, or an earlier one did), not_authorized (authentication or the ACL), keep_alive (a 3.1.1 CONNECT over max_keepalive), queue_full and memory_queue_full (a QoS 1/2 publish for a full queue, under queue_full = refuse), topic_limits (a topic or filter over max_topic_levels or max_topic_length), max_subscriptions, publish_rate (a 5.0 QoS 1/2 publish over max_publish_rate), disk_low (a QoS 1/2 publish or a new persistent session while the disk is below min_free_disk), retained_full (a 5.0 QoS 1/2 retained publish over the retained limits).", []string{"reason"}, nil)
	fsyncDesc = prometheus.NewDesc("keel_store_fsync_seconds",
		"Latency of the write-ahead log's fsyncs (fdatasync); its count is keel_store_syncs_total.", nil, nil)
)

// brokerCollector takes one engine.Stats per scrape, so that every metric
// of a scrape comes from the same moment.
type brokerCollector struct{ b *engine.Broker }

func (c brokerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range brokerMetrics {
		ch <- m.desc
	}
	ch <- droppedDesc
	ch <- refusedDesc
	ch <- fsyncDesc
}

func (c brokerCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.b.Stats()
	for _, m := range brokerMetrics {
		ch <- prometheus.MustNewConstMetric(m.desc, m.kind, m.value(&s))
	}
	for reason, n := range s.Dropped {
		ch <- prometheus.MustNewConstMetric(droppedDesc, counter, float64(n), reason)
	}
	for reason, n := range s.Refused {
		ch <- prometheus.MustNewConstMetric(refusedDesc, counter, float64(n), reason)
	}
	ch <- constHistogram(fsyncDesc, s.StoreSyncLatency)
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

var (
	descListenerOpen = prometheus.NewDesc("keel_listener_connections_open",
		"Clients a listener is serving.", []string{"listener"}, nil)
	descListenerAccepted = prometheus.NewDesc("keel_listener_connections_accepted_total",
		"Connections a listener handed to the broker as clients.", []string{"listener"}, nil)
	descListenerRefused = prometheus.NewDesc("keel_listener_connections_refused_total",
		"Connections a listener refused, by reason (handshake_timeout, proxy_untrusted, proxy_invalid, websocket, max_connections, connection_rate, max_connections_per_address).",
		[]string{"listener", "reason"}, nil)
	descListenerTLSFailures = prometheus.NewDesc("keel_listener_tls_handshake_failures_total",
		"Failed TLS handshakes (plain TCP on a TLS port, a client certificate refused, ...).", []string{"listener"}, nil)
	descListenerTLSReloadFailures = prometheus.NewDesc("keel_listener_tls_reload_failures_total",
		"TLS reloads (SIGHUP) that failed and kept the previous certificates.", []string{"listener"}, nil)
	descListenerBytesIn = prometheus.NewDesc("keel_listener_received_bytes_total",
		"MQTT bytes received from a listener's clients (TLS and WebSocket framing not counted).", []string{"listener"}, nil)
	descListenerBytesOut = prometheus.NewDesc("keel_listener_sent_bytes_total",
		"MQTT bytes sent to a listener's clients (TLS and WebSocket framing not counted).", []string{"listener"}, nil)
)

// listenerCollector reads each listener's plain counters at scrape time,
// labelled with its name.
type listenerCollector []*listener.Server

func (lc listenerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descListenerOpen, descListenerAccepted, descListenerRefused, descListenerTLSFailures, descListenerTLSReloadFailures, descListenerBytesIn, descListenerBytesOut} {
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
		ch <- prometheus.MustNewConstMetric(descListenerBytesIn, prometheus.CounterValue, float64(st.BytesIn), s.Name)
		ch <- prometheus.MustNewConstMetric(descListenerBytesOut, prometheus.CounterValue, float64(st.BytesOut), s.Name)
	}
}
