package main

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keelmq/keel/engine/bridge"
)

// What the admin listener shows of the bridges: /metrics (labels
// bridge=NAME), GET /api/bridges, and the console's bridges card. The
// engine publishes the same under $SYS/broker/bridges/NAME/ (engine/bridge
// status.go).

var (
	descBridgeUp = prometheus.NewDesc("keel_bridge_connected",
		"1 while the bridge is connected to both sides and subscribed, else 0.", []string{"bridge"}, nil)
	descBridgeState = prometheus.NewDesc("keel_bridge_state",
		"1 for the bridge's current state (connecting, connected, backing off, stopped), 0 for the others.", []string{"bridge", "state"}, nil)
	descBridgeRounds = prometheus.NewDesc("keel_bridge_connections_total",
		"Connections of the bridge made to both sides.", []string{"bridge"}, nil)
	descBridgeQueued = prometheus.NewDesc("keel_bridge_queued_messages",
		"Entries of the bridge's stored queue (queued and in flight): what waits for the remote's acknowledgement, on disk.", []string{"bridge"}, nil)
	descBridgeQueuedBytes = prometheus.NewDesc("keel_bridge_queued_bytes",
		"Bytes of the bridge's stored queue.", []string{"bridge"}, nil)
	descBridgeInflight = prometheus.NewDesc("keel_bridge_inflight_messages",
		"Messages sent to the remote and not acknowledged yet.", []string{"bridge"}, nil)
	descBridgeForwarded = prometheus.NewDesc("keel_bridge_messages_forwarded_total",
		"PUBLISH packets the bridge sent to the remote (resends included).", []string{"bridge"}, nil)
	descBridgeReceived = prometheus.NewDesc("keel_bridge_messages_received_total",
		"PUBLISH packets the bridge brought in from the remote (resends included).", []string{"bridge"}, nil)
	descBridgeDropped = prometheus.NewDesc("keel_bridge_messages_dropped_total",
		"PUBLISH packets outside the bridge's topics (from the remote: outside the in topics), acknowledged and not passed on.", []string{"bridge"}, nil)
	descBridgeRefused = prometheus.NewDesc("keel_bridge_messages_refused_total",
		"Acknowledgements with a failure reason code (5.0), from either side.", []string{"bridge"}, nil)
)

var bridgePhases = []string{bridge.PhaseConnecting, bridge.PhaseConnected, bridge.PhaseBackingOff, bridge.PhaseStopped}

// bridgeCollector reads each bridge's Status at scrape time.
type bridgeCollector []*bridge.Bridge

func (bc bridgeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBridgeUp, descBridgeState, descBridgeRounds, descBridgeQueued, descBridgeQueuedBytes,
		descBridgeInflight, descBridgeForwarded, descBridgeReceived, descBridgeDropped, descBridgeRefused} {
		ch <- d
	}
}

func (bc bridgeCollector) Collect(ch chan<- prometheus.Metric) {
	g, c := prometheus.GaugeValue, prometheus.CounterValue
	for _, b := range bc {
		st := b.Status()
		n := st.Name
		up := 0.0
		if st.State.Connected {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descBridgeUp, g, up, n)
		for _, p := range bridgePhases {
			v := 0.0
			if st.State.Phase == p {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(descBridgeState, g, v, n, p)
		}
		ch <- prometheus.MustNewConstMetric(descBridgeRounds, c, float64(st.State.Rounds), n)
		if st.QueueKnown {
			ch <- prometheus.MustNewConstMetric(descBridgeQueued, g, float64(st.Queue.Entries), n)
			ch <- prometheus.MustNewConstMetric(descBridgeQueuedBytes, g, float64(st.Queue.Bytes), n)
			ch <- prometheus.MustNewConstMetric(descBridgeInflight, g, float64(st.Queue.Inflight), n)
		}
		ch <- prometheus.MustNewConstMetric(descBridgeForwarded, c, float64(st.Stats.Forwarded), n)
		ch <- prometheus.MustNewConstMetric(descBridgeReceived, c, float64(st.Stats.Received), n)
		ch <- prometheus.MustNewConstMetric(descBridgeDropped, c, float64(st.Stats.Dropped), n)
		ch <- prometheus.MustNewConstMetric(descBridgeRefused, c, float64(st.Stats.Refused), n)
	}
}

// bridgeInfo is one bridge in GET /api/bridges.
type bridgeInfo struct {
	Name      string     `json:"name"`
	State     string     `json:"state"` // connecting, connected, backing off, stopped
	Connected bool       `json:"connected"`
	Address   string     `json:"address,omitempty"` // the remote of the current or last connection
	LastError string     `json:"last_error,omitempty"`
	RetryAt   *time.Time `json:"retry_at,omitempty"` // backing off: the next attempt
	Rounds    uint64     `json:"connections"`
	// The local session's stored queue (absent before its first connection).
	QueuedMessages *int64 `json:"queued_messages,omitempty"`
	QueuedBytes    *int64 `json:"queued_bytes,omitempty"`
	Inflight       *int   `json:"inflight,omitempty"`
	Forwarded      uint64 `json:"forwarded"`
	Received       uint64 `json:"received"`
	Dropped        uint64 `json:"dropped"`
	Refused        uint64 `json:"refused"`
}

type bridgesView struct {
	Bridges []bridgeInfo `json:"bridges"`
}

func bridgesOf(bs []*bridge.Bridge) bridgesView {
	v := bridgesView{Bridges: []bridgeInfo{}}
	for _, b := range bs {
		st := b.Status()
		bi := bridgeInfo{Name: st.Name, State: st.State.Phase, Connected: st.State.Connected, Address: st.State.Address,
			LastError: st.State.LastError, Rounds: st.State.Rounds,
			Forwarded: st.Stats.Forwarded, Received: st.Stats.Received, Dropped: st.Stats.Dropped, Refused: st.Stats.Refused}
		if !st.State.RetryAt.IsZero() {
			t := st.State.RetryAt.UTC()
			bi.RetryAt = &t
		}
		if st.QueueKnown {
			q := st.Queue
			bi.QueuedMessages, bi.QueuedBytes, bi.Inflight = &q.Entries, &q.Bytes, &q.Inflight
		}
		v.Bridges = append(v.Bridges, bi)
	}
	return v
}
