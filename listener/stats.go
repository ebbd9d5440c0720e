package listener

import "sync/atomic"

// Why a connection was refused before its handler saw it as a client
// (Stats.Refused). Every refusal is counted: none is silent.
type refuseReason uint8

const (
	refuseTimeout        refuseReason = iota // the handshake (PROXY header, TLS, WebSocket upgrade) outlived HandshakeTimeout
	refuseProxyUntrusted                     // a PROXY header from a peer outside ProxyTrusted
	refuseProxyInvalid                       // a trusted peer's PROXY header missing, malformed or of the wrong version
	refuseWebSocket                          // a refused WebSocket upgrade (no MQTT subprotocol, wrong path or origin, not an upgrade)
	refuseMaxConnections                     // over the listener's or the global limit (the handler answers with a CONNACK refusal)
	refuseConnectionRate                     // over Limit.Rate (the handler answers with a CONNACK refusal)
	refusePerAddress                         // over Limit.PerAddress (the handler answers with a CONNACK refusal)
	numRefuseReasons
)

var refuseNames = [numRefuseReasons]string{"handshake_timeout", "proxy_untrusted", "proxy_invalid", "websocket", "max_connections",
	"connection_rate", "max_connections_per_address"}

// RefuseReasons are the keys of Stats.Refused, in a fixed order.
func RefuseReasons() []string { return refuseNames[:] }

// Stats are a listener's plain counters; cmd registers them with
// Prometheus under its name.
type Stats struct {
	Open                 int64             // connections its handler is serving as clients
	Accepted             uint64            // connections handed to the handler as clients
	Refused              map[string]uint64 // by reason (RefuseReasons)
	TLSHandshakeFailures uint64            // failed TLS handshakes (plain TCP on a TLS port, a certificate refused, ...)
	TLSReloadFailures    uint64            // ReloadTLS calls that kept the old material
	BytesIn, BytesOut    uint64            // MQTT bytes its clients sent and were sent (Info.BytesIn, BytesOut)
}

type counters struct {
	open          atomic.Int64
	accepted      atomic.Uint64
	refused       [numRefuseReasons]atomic.Uint64
	tlsFailures   atomic.Uint64
	tlsReloadFail atomic.Uint64
	bytesIn       atomic.Uint64
	bytesOut      atomic.Uint64
}

func (c *counters) refuse(why refuseReason) { c.refused[why].Add(1) }

// Stats returns the listener's counters.
func (s *Server) Stats() Stats {
	st := Stats{
		Open:                 s.stats.open.Load(),
		Accepted:             s.stats.accepted.Load(),
		Refused:              make(map[string]uint64, numRefuseReasons),
		TLSHandshakeFailures: s.stats.tlsFailures.Load(),
		TLSReloadFailures:    s.stats.tlsReloadFail.Load(),
		BytesIn:              s.stats.bytesIn.Load(),
		BytesOut:             s.stats.bytesOut.Load(),
	}
	for i := range s.stats.refused {
		st.Refused[refuseNames[i]] = s.stats.refused[i].Load()
	}
	return st
}
