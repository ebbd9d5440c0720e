package packet

// ReasonCode is an MQTT 5.0 reason code (section 2.4). In 3.1/3.1.1 the same
// type carries CONNACK return codes (0..5) and SUBACK return codes (0, 1, 2,
// 0x80).
type ReasonCode byte

// Reason codes of MQTT 5.0, by name. Several share a value; the packet says
// which meaning applies.
const (
	CodeSuccess                     ReasonCode = 0x00 // also Normal disconnection, Granted QoS 0
	CodeGrantedQoS1                 ReasonCode = 0x01
	CodeGrantedQoS2                 ReasonCode = 0x02
	CodeDisconnectWithWill          ReasonCode = 0x04
	CodeNoMatchingSubscribers       ReasonCode = 0x10
	CodeNoSubscriptionExisted       ReasonCode = 0x11
	CodeContinueAuthentication      ReasonCode = 0x18
	CodeReAuthenticate              ReasonCode = 0x19
	CodeUnspecifiedError            ReasonCode = 0x80
	CodeMalformedPacket             ReasonCode = 0x81
	CodeProtocolError               ReasonCode = 0x82
	CodeImplementationSpecificError ReasonCode = 0x83
	CodeUnsupportedProtocolVersion  ReasonCode = 0x84
	CodeClientIDNotValid            ReasonCode = 0x85
	CodeBadUsernameOrPassword       ReasonCode = 0x86
	CodeNotAuthorized               ReasonCode = 0x87
	CodeServerUnavailable           ReasonCode = 0x88
	CodeServerBusy                  ReasonCode = 0x89
	CodeBanned                      ReasonCode = 0x8A
	CodeServerShuttingDown          ReasonCode = 0x8B
	CodeBadAuthenticationMethod     ReasonCode = 0x8C
	CodeKeepAliveTimeout            ReasonCode = 0x8D
	CodeSessionTakenOver            ReasonCode = 0x8E
	CodeTopicFilterInvalid          ReasonCode = 0x8F
	CodeTopicNameInvalid            ReasonCode = 0x90
	CodePacketIDInUse               ReasonCode = 0x91
	CodePacketIDNotFound            ReasonCode = 0x92
	CodeReceiveMaximumExceeded      ReasonCode = 0x93
	CodeTopicAliasInvalid           ReasonCode = 0x94
	CodePacketTooLarge              ReasonCode = 0x95
	CodeMessageRateTooHigh          ReasonCode = 0x96
	CodeQuotaExceeded               ReasonCode = 0x97
	CodeAdministrativeAction        ReasonCode = 0x98
	CodePayloadFormatInvalid        ReasonCode = 0x99
	CodeRetainNotSupported          ReasonCode = 0x9A
	CodeQoSNotSupported             ReasonCode = 0x9B
	CodeUseAnotherServer            ReasonCode = 0x9C
	CodeServerMoved                 ReasonCode = 0x9D
	CodeSharedSubsNotSupported      ReasonCode = 0x9E
	CodeConnectionRateExceeded      ReasonCode = 0x9F
	CodeMaximumConnectTime          ReasonCode = 0xA0
	CodeSubIDsNotSupported          ReasonCode = 0xA1
	CodeWildcardSubsNotSupported    ReasonCode = 0xA2
)

// CONNACK return codes of MQTT 3.1 and 3.1.1 (section 3.2.2.3 of 3.1.1).
const (
	RetAccepted              ReasonCode = 0x00
	RetUnacceptableVersion   ReasonCode = 0x01
	RetIdentifierRejected    ReasonCode = 0x02
	RetServerUnavailable     ReasonCode = 0x03
	RetBadUsernameOrPassword ReasonCode = 0x04
	RetNotAuthorized         ReasonCode = 0x05
)
