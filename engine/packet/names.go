package packet

// Aliases for reason code 0x00, named as the packets that use it.
const (
	CodeGrantedQoS0         ReasonCode = 0x00 // SUBACK
	CodeNormalDisconnection ReasonCode = 0x00 // DISCONNECT
)

// String returns the reason code's name as MQTT 5.0 spells it. A value
// with several meanings (0x00: Success, Normal disconnection, Granted QoS
// 0) gets its first name; 3.1.1 CONNACK return codes 1-5 print as their
// 5.0 meanings are unrelated, so callers printing a 3.1.1 CONNACK should
// use the number.
func (c ReasonCode) String() string {
	switch c {
	case CodeSuccess:
		return "Success"
	case CodeGrantedQoS1:
		return "Granted QoS 1"
	case CodeGrantedQoS2:
		return "Granted QoS 2"
	case CodeDisconnectWithWill:
		return "Disconnect with Will Message"
	case CodeNoMatchingSubscribers:
		return "No matching subscribers"
	case CodeNoSubscriptionExisted:
		return "No subscription existed"
	case CodeContinueAuthentication:
		return "Continue authentication"
	case CodeReAuthenticate:
		return "Re-authenticate"
	case CodeUnspecifiedError:
		return "Unspecified error"
	case CodeMalformedPacket:
		return "Malformed Packet"
	case CodeProtocolError:
		return "Protocol Error"
	case CodeImplementationSpecificError:
		return "Implementation specific error"
	case CodeUnsupportedProtocolVersion:
		return "Unsupported Protocol Version"
	case CodeClientIDNotValid:
		return "Client Identifier not valid"
	case CodeBadUsernameOrPassword:
		return "Bad User Name or Password"
	case CodeNotAuthorized:
		return "Not authorized"
	case CodeServerUnavailable:
		return "Server unavailable"
	case CodeServerBusy:
		return "Server busy"
	case CodeBanned:
		return "Banned"
	case CodeServerShuttingDown:
		return "Server shutting down"
	case CodeBadAuthenticationMethod:
		return "Bad authentication method"
	case CodeKeepAliveTimeout:
		return "Keep Alive timeout"
	case CodeSessionTakenOver:
		return "Session taken over"
	case CodeTopicFilterInvalid:
		return "Topic Filter invalid"
	case CodeTopicNameInvalid:
		return "Topic Name invalid"
	case CodePacketIDInUse:
		return "Packet Identifier in use"
	case CodePacketIDNotFound:
		return "Packet Identifier not found"
	case CodeReceiveMaximumExceeded:
		return "Receive Maximum exceeded"
	case CodeTopicAliasInvalid:
		return "Topic Alias invalid"
	case CodePacketTooLarge:
		return "Packet too large"
	case CodeMessageRateTooHigh:
		return "Message rate too high"
	case CodeQuotaExceeded:
		return "Quota exceeded"
	case CodeAdministrativeAction:
		return "Administrative action"
	case CodePayloadFormatInvalid:
		return "Payload format invalid"
	case CodeRetainNotSupported:
		return "Retain not supported"
	case CodeQoSNotSupported:
		return "QoS not supported"
	case CodeUseAnotherServer:
		return "Use another server"
	case CodeServerMoved:
		return "Server moved"
	case CodeSharedSubsNotSupported:
		return "Shared Subscriptions not supported"
	case CodeConnectionRateExceeded:
		return "Connection rate exceeded"
	case CodeMaximumConnectTime:
		return "Maximum connect time"
	case CodeSubIDsNotSupported:
		return "Subscription Identifiers not supported"
	case CodeWildcardSubsNotSupported:
		return "Wildcard Subscriptions not supported"
	}
	return "ReasonCode(" + c.hex() + ")"
}

func (c ReasonCode) hex() string { return "0x" + hex2(byte(c)) }

// String returns the packet type's name ("PUBLISH").
func (t Type) String() string {
	switch t {
	case CONNECT:
		return "CONNECT"
	case CONNACK:
		return "CONNACK"
	case PUBLISH:
		return "PUBLISH"
	case PUBACK:
		return "PUBACK"
	case PUBREC:
		return "PUBREC"
	case PUBREL:
		return "PUBREL"
	case PUBCOMP:
		return "PUBCOMP"
	case SUBSCRIBE:
		return "SUBSCRIBE"
	case SUBACK:
		return "SUBACK"
	case UNSUBSCRIBE:
		return "UNSUBSCRIBE"
	case UNSUBACK:
		return "UNSUBACK"
	case PINGREQ:
		return "PINGREQ"
	case PINGRESP:
		return "PINGRESP"
	case DISCONNECT:
		return "DISCONNECT"
	case AUTH:
		return "AUTH"
	}
	return "Type(" + hex2(byte(t)) + ")"
}
