package client

import (
	"errors"
	"fmt"

	"github.com/keelmq/keel/engine/packet"
)

var (
	// ErrClosed: the connection is over (Close, Disconnect, or the network).
	ErrClosed = errors.New("client: connection closed")
	// ErrPacketTooLarge: the packet exceeds the server's Maximum Packet
	// Size, so it is not sent [MQTT-3.2.2-15].
	ErrPacketTooLarge = errors.New("client: packet exceeds the server's maximum packet size")
	// ErrKeepAlive: no PINGRESP (or anything else) came within the keep
	// alive period after a PINGREQ.
	ErrKeepAlive = errors.New("client: keep alive timeout")
	// ErrProtocol: the server sent something MQTT does not allow here.
	ErrProtocol = errors.New("client: protocol violation by the server")
)

// ConnectError is a CONNACK that refused the connection. Code is the 5.0
// reason code or the 3.1.1 return code (1..5), as Version says.
type ConnectError struct {
	Version byte
	Code    packet.ReasonCode
	Reason  string // 5.0 Reason String, if the server sent one
}

func (e *ConnectError) Error() string {
	s := fmt.Sprintf("client: connection refused: %v", e.Code)
	if e.Version != packet.V5 {
		s = fmt.Sprintf("client: connection refused: return code %d", byte(e.Code))
	}
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// DisconnectError is a DISCONNECT from the server (5.0), which ended the
// connection.
type DisconnectError struct {
	Code   packet.ReasonCode
	Reason string
}

func (e *DisconnectError) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("client: server sent DISCONNECT: %v: %s", e.Code, e.Reason)
	}
	return fmt.Sprintf("client: server sent DISCONNECT: %v", e.Code)
}

// AckError is a PUBACK or PUBREC (5.0) with a reason code of 0x80 or
// more: the server refused the message, and it is not resent
// [MQTT-4.4.0-2].
type AckError struct {
	Kind packet.Type
	ID   uint16
	Code packet.ReasonCode
}

func (e *AckError) Error() string {
	return fmt.Sprintf("client: %v for packet id %d: %v", e.Kind, e.ID, e.Code)
}

func protocolErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrProtocol}, args...)...)
}
