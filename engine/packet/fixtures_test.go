package packet

// The fixture table: raw packets annotated field by field, each with the
// struct it decodes to and the protocol level it is read with. One table
// drives the decode, encode and round-trip tests and seeds the fuzzers.
//
// A fixture with want != nil must decode to want; unless decodeOnly, want
// must also encode to exactly raw. A fixture with want == nil must fail
// to decode with an *Error carrying code.
//
// CONNECT fixtures are decoded with version 0 (before CONNECT) and encoded
// with version.

type fixture struct {
	name       string
	version    byte
	raw        []byte
	want       Packet
	code       ReasonCode // expected error code when want == nil
	decodeOnly bool       // raw is a valid non-canonical form
}

// bits returns a Present mask for ids.
func bits(ids ...PropID) uint64 {
	var m uint64
	for _, id := range ids {
		m |= 1 << uint(id)
	}
	return m
}

var fixtures = []fixture{
	// ---- CONNECT ----------------------------------------------------------
	{
		name: "connect/v31/minimal", version: V31,
		raw: []byte{
			0x10, 0x12, // fixed header: CONNECT, remaining 18
			0x00, 0x06, 'M', 'Q', 'I', 's', 'd', 'p', // protocol name "MQIsdp"
			0x03,       // protocol level 3
			0x02,       // flags: clean session
			0x00, 0x3c, // keep alive 60
			0x00, 0x04, 'z', 'e', 'n', '3', // client id "zen3"
		},
		want: &Connect{ProtocolName: "MQIsdp", ProtocolLevel: V31, CleanStart: true, KeepAlive: 60, ClientID: "zen3"},
	},
	{
		name: "connect/v31/long-client-id", version: V31,
		raw: []byte{
			0x10, 0x28, // fixed header: CONNECT, remaining 40
			0x00, 0x06, 'M', 'Q', 'I', 's', 'd', 'p', // protocol name
			0x03,       // protocol level 3
			0x00,       // flags: none
			0x00, 0x00, // keep alive 0
			0x00, 0x1a, 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', // client id, 26 chars:
			'n', 'o', 'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', //   longer than 3.1's 23, accepted
		},
		want: &Connect{ProtocolName: "MQIsdp", ProtocolLevel: V31, ClientID: "abcdefghijklmnopqrstuvwxyz"},
	},
	{
		name: "connect/v311/minimal", version: V311,
		raw: []byte{
			0x10, 0x10, // fixed header: CONNECT, remaining 16
			0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name "MQTT"
			0x04,       // protocol level 4
			0x02,       // flags: clean session
			0x00, 0x3c, // keep alive 60
			0x00, 0x04, 'z', 'e', 'n', '3', // client id "zen3"
		},
		want: &Connect{ProtocolName: "MQTT", ProtocolLevel: V311, CleanStart: true, KeepAlive: 60, ClientID: "zen3"},
	},
	{
		name: "connect/v311/empty-client-id", version: V311,
		raw: []byte{
			0x10, 0x0c, // fixed header: CONNECT, remaining 12
			0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name
			0x04,       // protocol level 4
			0x02,       // flags: clean session
			0x00, 0x00, // keep alive 0
			0x00, 0x00, // client id "" (the server assigns one)
		},
		want: &Connect{ProtocolName: "MQTT", ProtocolLevel: V311, CleanStart: true},
	},
	{
		name: "connect/v311/will-user-pass", version: V311,
		raw: []byte{
			0x10, 0x2c, // fixed header: CONNECT, remaining 44
			0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name
			0x04,       // protocol level 4
			0xee,       // flags: username, password, will retain, will QoS 1, will, clean session
			0x00, 0x1e, // keep alive 30
			0x00, 0x03, 'z', 'e', 'n', // client id "zen"
			0x00, 0x03, 'l', 'w', 't', // will topic "lwt"
			0x00, 0x08, 'n', 'o', 't', 'a', 'g', 'a', 'i', 'n', // will payload "notagain"
			0x00, 0x05, 'm', 'o', 'c', 'h', 'i', // username "mochi"
			0x00, 0x05, 'm', 'e', 'l', 'o', 'n', // password "melon"
		},
		want: &Connect{
			ProtocolName: "MQTT", ProtocolLevel: V311, CleanStart: true, KeepAlive: 30, ClientID: "zen",
			WillFlag: true, WillQoS: 1, WillRetain: true, WillTopic: "lwt", WillPayload: []byte("notagain"),
			UsernameFlag: true, Username: "mochi", PasswordFlag: true, Password: []byte("melon"),
		},
	},
	{
		name: "connect/v5/full", version: V5,
		raw: []byte{
			0x10, 0x60, // fixed header: CONNECT, remaining 96
			0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name
			0x05,       // protocol level 5
			0xd6,       // flags: username, password, will QoS 2, will, clean start
			0x00, 0x3c, // keep alive 60
			0x19,                         // properties length 25
			0x11, 0x00, 0x00, 0x00, 0x78, //   session expiry interval 120
			0x17, 0x01, //   request problem information 1
			0x21, 0x00, 0x0a, //   receive maximum 10
			0x22, 0x00, 0x05, //   topic alias maximum 5
			0x26, 0x00, 0x01, 'a', 0x00, 0x01, 'b', //   user property a=b
			0x27, 0x00, 0x00, 0x10, 0x00, //   maximum packet size 4096
			0x00, 0x03, 'z', 'e', 'n', // client id "zen"
			0x25,       // will properties length 37
			0x01, 0x01, //   payload format indicator 1 (UTF-8)
			0x02, 0x00, 0x00, 0x00, 0x3c, //   message expiry interval 60
			0x03, 0x00, 0x04, 'j', 's', 'o', 'n', //   content type "json"
			0x08, 0x00, 0x03, 'r', '/', 't', //   response topic "r/t"
			0x09, 0x00, 0x02, 0xca, 0xfe, //   correlation data ca fe
			0x18, 0x00, 0x00, 0x00, 0x0a, //   will delay interval 10
			0x26, 0x00, 0x01, 'w', 0x00, 0x01, 'x', //   user property w=x
			0x00, 0x03, 'l', 'w', 't', // will topic "lwt"
			0x00, 0x03, 'b', 'y', 'e', // will payload "bye"
			0x00, 0x01, 'u', // username "u"
			0x00, 0x02, 0x01, 0x02, // password 01 02
		},
		want: &Connect{
			ProtocolName: "MQTT", ProtocolLevel: V5, CleanStart: true, KeepAlive: 60,
			Props: Properties{
				Present:       bits(PropSessionExpiry, PropRequestProblemInfo, PropReceiveMaximum, PropTopicAliasMaximum, PropUserProperty, PropMaximumPacketSize),
				SessionExpiry: 120, RequestProblemInfo: 1, ReceiveMaximum: 10, TopicAliasMaximum: 5,
				User: []UserProperty{{"a", "b"}}, MaximumPacketSize: 4096,
			},
			ClientID: "zen",
			WillFlag: true, WillQoS: 2,
			WillProps: Properties{
				Present:       bits(PropPayloadFormat, PropMessageExpiry, PropContentType, PropResponseTopic, PropCorrelationData, PropWillDelay, PropUserProperty),
				PayloadFormat: 1, MessageExpiry: 60, ContentType: "json", ResponseTopic: "r/t",
				CorrelationData: []byte{0xca, 0xfe}, WillDelay: 10, User: []UserProperty{{"w", "x"}},
			},
			WillTopic: "lwt", WillPayload: []byte("bye"),
			UsernameFlag: true, Username: "u", PasswordFlag: true, Password: []byte{1, 2},
		},
	},
	{
		name: "connect/v5/password-without-username", version: V5,
		raw: []byte{
			0x10, 0x14, // fixed header: CONNECT, remaining 20
			0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name
			0x05,       // protocol level 5
			0x42,       // flags: password, clean start (5.0 allows a password alone)
			0x00, 0x00, // keep alive 0
			0x00,                      // properties length 0
			0x00, 0x03, 'z', 'e', 'n', // client id "zen"
			0x00, 0x02, 'p', 'w', // password "pw"
		},
		want: &Connect{ProtocolName: "MQTT", ProtocolLevel: V5, CleanStart: true, ClientID: "zen", PasswordFlag: true, Password: []byte("pw")},
	},
	{
		name: "connect/v5/auth", version: V5,
		raw: []byte{
			0x10, 0x1a, // fixed header: CONNECT, remaining 26
			0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name
			0x05,       // protocol level 5
			0x00,       // flags: none
			0x00, 0x0a, // keep alive 10
			0x0c,                                      // properties length 12
			0x15, 0x00, 0x05, 'S', 'C', 'R', 'A', 'M', //   authentication method "SCRAM"
			0x16, 0x00, 0x01, 0x07, //   authentication data 07
			0x00, 0x01, 'c', // client id "c"
		},
		want: &Connect{
			ProtocolName: "MQTT", ProtocolLevel: V5, KeepAlive: 10, ClientID: "c",
			Props: Properties{Present: bits(PropAuthMethod, PropAuthData), AuthMethod: "SCRAM", AuthData: []byte{7}},
		},
	},
	{
		name: "connect/v311/malformed/reserved-flag", version: V311, code: CodeMalformedPacket,
		raw: []byte{
			0x10, 0x0c, // fixed header: CONNECT, remaining 12
			0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name
			0x04,       // protocol level 4
			0x03,       // flags: clean session + reserved bit 0 [MQTT-3.1.2-3]
			0x00, 0x00, // keep alive
			0x00, 0x00, // client id ""
		},
	},
	{
		name: "connect/malformed/header-flags", version: V311, code: CodeMalformedPacket,
		raw: []byte{
			0x11, 0x0c, // fixed header: CONNECT with flags 0001 [MQTT-2.1.3-1]
			0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x00, 0x00, 0x00,
		},
	},
	{
		name: "connect/unsupported-level", version: V311, code: CodeUnsupportedProtocolVersion,
		raw: []byte{
			0x10, 0x0c, // fixed header: CONNECT, remaining 12
			0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name
			0x06, // protocol level 6: unknown
			0x02, 0x00, 0x00, 0x00, 0x00,
		},
	},
	{
		name: "connect/unsupported-name", version: V311, code: CodeUnsupportedProtocolVersion,
		raw: []byte{
			0x10, 0x0c, // fixed header: CONNECT, remaining 12
			0x00, 0x04, 'M', 'Q', 'T', 'X', // protocol name "MQTX" [MQTT-3.1.2-1]
			0x04, 0x02, 0x00, 0x00, 0x00, 0x00,
		},
	},
	{
		name: "connect/unsupported-mqisdp-level-4", version: V311, code: CodeUnsupportedProtocolVersion,
		raw: []byte{
			0x10, 0x0e, // fixed header: CONNECT, remaining 14
			0x00, 0x06, 'M', 'Q', 'I', 's', 'd', 'p', // protocol name "MQIsdp"
			0x04, // protocol level 4: 3.1.1 is "MQTT"
			0x02, 0x00, 0x00, 0x00, 0x00,
		},
	},
	{
		name: "connect/v311/malformed/password-without-username", version: V311, code: CodeMalformedPacket,
		raw: []byte{
			0x10, 0x10, // fixed header: CONNECT, remaining 16
			0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04,
			0x42,       // flags: password, clean session; no username [MQTT-3.1.2-22]
			0x00, 0x00, // keep alive
			0x00, 0x00, // client id
			0x00, 0x02, 'p', 'w', // password
		},
	},
	{
		name: "connect/v311/malformed/will-qos-without-will", version: V311, code: CodeMalformedPacket,
		raw: []byte{
			0x10, 0x0c, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04,
			0x0a, // flags: will QoS 1, clean session, no will flag [MQTT-3.1.2-11]
			0x00, 0x00, 0x00, 0x00,
		},
	},
	{
		name: "connect/v311/malformed/will-retain-without-will", version: V311, code: CodeMalformedPacket,
		raw: []byte{
			0x10, 0x0c, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04,
			0x22, // flags: will retain, clean session, no will flag [MQTT-3.1.2-13]
			0x00, 0x00, 0x00, 0x00,
		},
	},
	{
		name: "connect/v311/malformed/will-qos-3", version: V311, code: CodeMalformedPacket,
		raw: []byte{
			0x10, 0x14, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04,
			0x1e,                   // flags: will QoS 3, will, clean session [MQTT-3.1.2-12]
			0x00, 0x00, 0x00, 0x00, // keep alive, client id ""
			0x00, 0x01, 't', // will topic
			0x00, 0x03, 'b', 'y', 'e', // will payload
		},
	},
	{
		name: "connect/v311/malformed/client-id-nul", version: V311, code: CodeMalformedPacket,
		raw: []byte{
			0x10, 0x0d, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x00,
			0x00, 0x01, 0x00, // client id "\x00" [MQTT-1.5.4-2]
		},
	},
	{
		name: "connect/v311/malformed/client-id-surrogate", version: V311, code: CodeMalformedPacket,
		raw: []byte{
			0x10, 0x0f, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x00,
			0x00, 0x03, 0xed, 0xa0, 0x80, // client id U+D800, a surrogate [MQTT-1.5.4-1]
		},
	},
	{
		name: "connect/v311/malformed/trailing-bytes", version: V311, code: CodeMalformedPacket,
		raw: []byte{
			0x10, 0x0d, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x00, 0x00, 0x00,
			0xff, // one byte after the last field
		},
	},
	{
		name: "connect/v311/malformed/truncated-will", version: V311, code: CodeMalformedPacket,
		raw: []byte{
			0x10, 0x0f, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04,
			0x06,                   // flags: will, clean session
			0x00, 0x00, 0x00, 0x00, // keep alive, client id ""
			0x00, 0x05, 't', // will topic claims 5 bytes, has 1
		},
	},
	{
		name: "connect/v5/protocol/property-not-allowed", version: V5, code: CodeProtocolError,
		raw: []byte{
			0x10, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x02, 0x00, 0x00,
			0x03,             // properties length 3
			0x23, 0x00, 0x01, //   topic alias: PUBLISH only
			0x00, 0x00, // client id
		},
	},
	{
		name: "connect/v5/protocol/receive-maximum-0", version: V5, code: CodeProtocolError,
		raw: []byte{
			0x10, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x02, 0x00, 0x00,
			0x03,             // properties length 3
			0x21, 0x00, 0x00, //   receive maximum 0
			0x00, 0x00,
		},
	},
	{
		name: "connect/v5/protocol/maximum-packet-size-0", version: V5, code: CodeProtocolError,
		raw: []byte{
			0x10, 0x12, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x02, 0x00, 0x00,
			0x05,                         // properties length 5
			0x27, 0x00, 0x00, 0x00, 0x00, //   maximum packet size 0
			0x00, 0x00,
		},
	},
	{
		name: "connect/v5/protocol/duplicate-property", version: V5, code: CodeProtocolError,
		raw: []byte{
			0x10, 0x17, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x02, 0x00, 0x00,
			0x0a,                         // properties length 10
			0x11, 0x00, 0x00, 0x00, 0x01, //   session expiry 1
			0x11, 0x00, 0x00, 0x00, 0x02, //   session expiry again
			0x00, 0x00,
		},
	},
	{
		name: "connect/v5/protocol/request-problem-info-2", version: V5, code: CodeProtocolError,
		raw: []byte{
			0x10, 0x0f, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x02, 0x00, 0x00,
			0x02,       // properties length 2
			0x17, 0x02, //   request problem information 2: only 0 or 1
			0x00, 0x00,
		},
	},
	{
		name: "connect/v5/protocol/auth-data-without-method", version: V5, code: CodeProtocolError,
		raw: []byte{
			0x10, 0x11, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x02, 0x00, 0x00,
			0x04,                   // properties length 4
			0x16, 0x00, 0x01, 0x07, //   authentication data, no method
			0x00, 0x00,
		},
	},
	{
		name: "connect/v5/malformed/unknown-property", version: V5, code: CodeMalformedPacket,
		raw: []byte{
			0x10, 0x0f, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x02, 0x00, 0x00,
			0x02,       // properties length 2
			0x7f, 0x00, //   identifier 0x7f: not defined
			0x00, 0x00,
		},
	},
	{
		name: "connect/v5/protocol/will-property-not-allowed", version: V5, code: CodeProtocolError,
		raw: []byte{
			0x10, 0x18, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05,
			0x06,       // flags: will, clean start
			0x00, 0x00, // keep alive
			0x00,       // properties length 0
			0x00, 0x00, // client id
			0x05,                         // will properties length 5
			0x11, 0x00, 0x00, 0x00, 0x01, //   session expiry: not a will property
			0x00, 0x01, 't', // will topic
			0x00, 0x00, // will payload
		},
	},
	{
		name: "connect/v5/malformed/properties-overrun", version: V5, code: CodeMalformedPacket,
		raw: []byte{
			0x10, 0x0f, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x02, 0x00, 0x00,
			0x09, // properties length 9, but only 4 bytes follow
			0x17, 0x01, 0x00, 0x00,
		},
	},

	// ---- CONNACK ----------------------------------------------------------
	{
		name: "connack/v31/accepted", version: V31,
		raw: []byte{
			0x20, 0x02, // fixed header: CONNACK, remaining 2
			0x00, // flags: none
			0x00, // return code 0: accepted
		},
		want: &Connack{},
	},
	{
		name: "connack/v311/session-present", version: V311,
		raw: []byte{
			0x20, 0x02, // fixed header: CONNACK, remaining 2
			0x01, // flags: session present
			0x00, // return code 0: accepted
		},
		want: &Connack{SessionPresent: true},
	},
	{
		name: "connack/v311/refused", version: V311,
		raw: []byte{
			0x20, 0x02, // fixed header: CONNACK, remaining 2
			0x00, // flags: none
			0x05, // return code 5: not authorized
		},
		want: &Connack{ReasonCode: RetNotAuthorized},
	},
	{
		name: "connack/v5/props", version: V5,
		raw: []byte{
			0x20, 0x24, // fixed header: CONNACK, remaining 36
			0x00,                                           // flags: none
			0x00,                                           // reason code: success
			0x21,                                           // properties length 33
			0x12, 0x00, 0x06, 'a', 'u', 't', 'o', '-', '1', //   assigned client identifier "auto-1"
			0x13, 0x00, 0x1e, //   server keep alive 30
			0x1f, 0x00, 0x02, 'o', 'k', //   reason string "ok"
			0x21, 0x00, 0x14, //   receive maximum 20
			0x22, 0x00, 0x0a, //   topic alias maximum 10
			0x24, 0x01, //   maximum QoS 1
			0x25, 0x00, //   retain available 0
			0x28, 0x00, //   wildcard subscription available 0
			0x29, 0x00, //   subscription identifiers available 0
			0x2a, 0x01, //   shared subscription available 1
		},
		want: &Connack{Props: Properties{
			Present: bits(PropAssignedClientID, PropServerKeepAlive, PropReasonString, PropReceiveMaximum,
				PropTopicAliasMaximum, PropMaximumQoS, PropRetainAvailable, PropWildcardSubAvailable,
				PropSubIDAvailable, PropSharedSubAvailable),
			AssignedClientID: "auto-1", ServerKeepAlive: 30, ReasonString: "ok", ReceiveMaximum: 20,
			TopicAliasMaximum: 10, MaximumQoS: 1, SharedSubAvailable: 1,
		}},
	},
	{
		name: "connack/v5/refused", version: V5,
		raw: []byte{
			0x20, 0x03, // fixed header: CONNACK, remaining 3
			0x00, // flags: none
			0x86, // reason code: bad user name or password
			0x00, // properties length 0
		},
		want: &Connack{ReasonCode: CodeBadUsernameOrPassword},
	},
	{
		name: "connack/v311/malformed/reserved-flags", version: V311, code: CodeMalformedPacket,
		raw: []byte{
			0x20, 0x02, // fixed header: CONNACK, remaining 2
			0x02, // flags: reserved bit 1 [MQTT-3.2.2-1]
			0x00,
		},
	},
	{
		name: "connack/v311/malformed/trailing", version: V311, code: CodeMalformedPacket,
		raw: []byte{0x20, 0x03, 0x00, 0x00, 0x00}, // remaining 3: a byte too many before 5.0
	},
	{
		name: "connack/v311/malformed/header-flags", version: V311, code: CodeMalformedPacket,
		raw: []byte{0x21, 0x02, 0x00, 0x00}, // CONNACK with header flags 0001
	},
	{
		name: "connack/v311/protocol/reserved-return-code", version: V311, code: CodeProtocolError,
		raw: []byte{0x20, 0x02, 0x00, 0x06}, // return code 6: reserved
	},
	{
		name: "connack/v5/malformed/no-properties", version: V5, code: CodeMalformedPacket,
		raw: []byte{0x20, 0x02, 0x00, 0x00}, // 5.0 CONNACK must carry a property length
	},
	{
		name: "connack/v5/protocol/maximum-qos-2", version: V5, code: CodeProtocolError,
		raw: []byte{
			0x20, 0x05, 0x00, 0x00,
			0x02,       // properties length 2
			0x24, 0x02, //   maximum QoS 2: only 0 or 1
		},
	},
	{
		name: "connack/v5/protocol/property-not-allowed", version: V5, code: CodeProtocolError,
		raw: []byte{
			0x20, 0x06, 0x00, 0x00,
			0x03,             // properties length 3
			0x23, 0x00, 0x01, //   topic alias: PUBLISH only
		},
	},
	{
		name: "connack/v5/protocol/invalid-reason-code", version: V5, code: CodeProtocolError,
		raw: []byte{0x20, 0x03, 0x00, 0x10, 0x00}, // reason 0x10 is not a CONNACK code
	},

	// ---- PUBLISH ----------------------------------------------------------
	{
		name: "publish/v31/qos0", version: V31,
		raw: []byte{
			0x30, 0x07, // fixed header: PUBLISH QoS 0, remaining 7
			0x00, 0x03, 'a', '/', 'b', // topic "a/b"
			'h', 'i', // payload "hi"
		},
		want: &Publish{Topic: "a/b", Payload: []byte("hi")},
	},
	{
		name: "publish/v311/qos0", version: V311,
		raw: []byte{
			0x30, 0x0a, // fixed header: PUBLISH QoS 0, remaining 10
			0x00, 0x03, 'a', '/', 'b', // topic "a/b"
			'h', 'e', 'l', 'l', 'o', // payload "hello"
		},
		want: &Publish{Topic: "a/b", Payload: []byte("hello")},
	},
	{
		name: "publish/v311/qos1-retain", version: V311,
		raw: []byte{
			0x33, 0x09, // fixed header: PUBLISH QoS 1 retain, remaining 9
			0x00, 0x03, 'a', '/', 'b', // topic "a/b"
			0x00, 0x07, // packet id 7
			'h', 'i', // payload "hi"
		},
		want: &Publish{QoS: 1, Retain: true, Topic: "a/b", PacketID: 7, Payload: []byte("hi")},
	},
	{
		name: "publish/v311/qos2-dup-empty-payload", version: V311,
		raw: []byte{
			0x3c, 0x07, // fixed header: PUBLISH DUP QoS 2, remaining 7
			0x00, 0x03, 'a', '/', 'b', // topic "a/b"
			0xff, 0xff, // packet id 65535; payload empty
		},
		want: &Publish{Dup: true, QoS: 2, Topic: "a/b", PacketID: 65535},
	},
	{
		name: "publish/v311/wildcard-topic-is-decoded", version: V311,
		raw: []byte{
			0x30, 0x05, // fixed header: PUBLISH QoS 0, remaining 5
			0x00, 0x03, 'a', '/', '+', // topic "a/+": the broker's ValidTopicName refuses it, not the codec
		},
		want: &Publish{Topic: "a/+"},
	},
	{
		name: "publish/v311/non-minimal-remaining-length", version: V311, decodeOnly: true,
		raw: []byte{
			0x30, 0x87, 0x00, // fixed header: PUBLISH QoS 0, remaining 7 in two bytes (accepted)
			0x00, 0x03, 'a', '/', 'b', 'h', 'i',
		},
		want: &Publish{Topic: "a/b", Payload: []byte("hi")},
	},
	{
		name: "publish/v5/props", version: V5,
		raw: []byte{
			0x32, 0x39, // fixed header: PUBLISH QoS 1, remaining 57
			0x00, 0x03, 'a', '/', 'b', // topic "a/b"
			0x00, 0x07, // packet id 7
			0x2f,       // properties length 47
			0x01, 0x01, //   payload format indicator 1
			0x02, 0x00, 0x00, 0x00, 0x78, //   message expiry interval 120
			0x03, 0x00, 0x04, 't', 'e', 'x', 't', //   content type "text"
			0x08, 0x00, 0x03, 'r', '/', 't', //   response topic "r/t"
			0x09, 0x00, 0x02, 0xca, 0xfe, //   correlation data ca fe
			0x0b, 0x05, //   subscription identifier 5
			0x0b, 0x80, 0x01, //   subscription identifier 128 (two bytes)
			0x23, 0x00, 0x03, //   topic alias 3
			0x26, 0x00, 0x01, 'a', 0x00, 0x01, 'b', //   user property a=b
			0x26, 0x00, 0x01, 'a', 0x00, 0x01, 'c', //   user property a=c (repeats allowed, order kept)
			'h', 'i', // payload "hi"
		},
		want: &Publish{QoS: 1, Topic: "a/b", PacketID: 7, Payload: []byte("hi"), Props: Properties{
			Present: bits(PropPayloadFormat, PropMessageExpiry, PropContentType, PropResponseTopic,
				PropCorrelationData, PropSubscriptionID, PropTopicAlias, PropUserProperty),
			PayloadFormat: 1, MessageExpiry: 120, ContentType: "text", ResponseTopic: "r/t",
			CorrelationData: []byte{0xca, 0xfe}, SubscriptionIDs: []uint32{5, 128}, TopicAlias: 3,
			User: []UserProperty{{"a", "b"}, {"a", "c"}},
		}},
	},
	{
		name: "publish/v5/empty-topic-with-alias", version: V5,
		raw: []byte{
			0x30, 0x07, // fixed header: PUBLISH QoS 0, remaining 7
			0x00, 0x00, // topic "": the alias names it
			0x03,             // properties length 3
			0x23, 0x00, 0x01, //   topic alias 1
			'x', // payload "x"
		},
		want: &Publish{Payload: []byte("x"), Props: Properties{Present: bits(PropTopicAlias), TopicAlias: 1}},
	},
	{
		name: "publish/v5/no-props", version: V5,
		raw: []byte{
			0x31, 0x06, // fixed header: PUBLISH QoS 0 retain, remaining 6
			0x00, 0x03, 'a', '/', 'b', // topic "a/b"
			0x00, // properties length 0; payload empty
		},
		want: &Publish{Retain: true, Topic: "a/b"},
	},
	{
		name: "publish/v311/malformed/qos3", version: V311, code: CodeMalformedPacket,
		raw: []byte{0x36, 0x07, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x01}, // QoS 3 [MQTT-3.3.1-4]
	},
	{
		name: "publish/v311/malformed/dup-qos0", version: V311, code: CodeMalformedPacket,
		raw: []byte{0x38, 0x05, 0x00, 0x03, 'a', '/', 'b'}, // DUP with QoS 0 [MQTT-3.3.1-2]
	},
	{
		name: "publish/v311/protocol/packet-id-0", version: V311, code: CodeProtocolError,
		raw: []byte{0x32, 0x07, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x00}, // QoS 1, packet id 0 [MQTT-2.2.1-3]
	},
	{
		name: "publish/v311/malformed/topic-invalid-utf8", version: V311, code: CodeMalformedPacket,
		raw: []byte{0x30, 0x05, 0x00, 0x03, 'a', 0xc0, 0xaf}, // topic with an overlong encoding of '/'
	},
	{
		name: "publish/v311/malformed/topic-overrun", version: V311, code: CodeMalformedPacket,
		raw: []byte{0x30, 0x04, 0x00, 0x09, 'a', '/'}, // topic length 9, 2 bytes left
	},
	{
		name: "publish/v311/malformed/missing-packet-id", version: V311, code: CodeMalformedPacket,
		raw: []byte{0x32, 0x06, 0x00, 0x03, 'a', '/', 'b', 0x01}, // QoS 1, one byte of packet id
	},
	{
		name: "publish/v5/protocol/topic-alias-0", version: V5, code: CodeProtocolError,
		raw: []byte{
			0x30, 0x09, 0x00, 0x03, 'a', '/', 'b',
			0x03,             // properties length 3
			0x23, 0x00, 0x00, //   topic alias 0 [MQTT-3.3.2-8]
		},
	},
	{
		name: "publish/v5/protocol/subscription-id-0", version: V5, code: CodeProtocolError,
		raw: []byte{
			0x30, 0x08, 0x00, 0x03, 'a', '/', 'b',
			0x02,       // properties length 2
			0x0b, 0x00, //   subscription identifier 0
		},
	},
	{
		name: "publish/v5/protocol/payload-format-2", version: V5, code: CodeProtocolError,
		raw: []byte{
			0x30, 0x08, 0x00, 0x03, 'a', '/', 'b',
			0x02,       // properties length 2
			0x01, 0x02, //   payload format indicator 2
		},
	},
	{
		name: "publish/v5/protocol/property-not-allowed", version: V5, code: CodeProtocolError,
		raw: []byte{
			0x30, 0x0b, 0x00, 0x03, 'a', '/', 'b',
			0x05,                         // properties length 5
			0x11, 0x00, 0x00, 0x00, 0x01, //   session expiry: not a PUBLISH property
		},
	},
	{
		name: "publish/v5/protocol/duplicate-property", version: V5, code: CodeProtocolError,
		raw: []byte{
			0x30, 0x0c, 0x00, 0x03, 'a', '/', 'b',
			0x06,             // properties length 6
			0x23, 0x00, 0x01, //   topic alias 1
			0x23, 0x00, 0x02, //   topic alias again
		},
	},
	{
		name: "publish/v5/malformed/property-length-5-bytes", version: V5, code: CodeMalformedPacket,
		raw: []byte{
			0x30, 0x0a, 0x00, 0x03, 'a', '/', 'b',
			0x80, 0x80, 0x80, 0x80, 0x01, // properties length with a fifth byte
		},
	},
	{
		name: "publish/v5/malformed/subscription-id-truncated", version: V5, code: CodeMalformedPacket,
		raw: []byte{
			0x30, 0x08, 0x00, 0x03, 'a', '/', 'b',
			0x02,       // properties length 2
			0x0b, 0x80, //   subscription identifier whose varint continues past the properties
		},
	},
	{
		name: "publish/protocol/before-connect", version: 0, code: CodeProtocolError,
		raw: []byte{0x30, 0x05, 0x00, 0x03, 'a', '/', 'b'}, // first packet is not CONNECT [MQTT-3.1.0-1]
	},

	// ---- PUBACK, PUBREC, PUBREL, PUBCOMP ------------------------------------
	{
		name: "puback/v311", version: V311,
		raw:  []byte{0x40, 0x02, 0x00, 0x07}, // PUBACK, remaining 2, packet id 7
		want: &Ack{Kind: PUBACK, PacketID: 7},
	},
	{
		name: "pubrec/v311", version: V311,
		raw:  []byte{0x50, 0x02, 0x00, 0x07}, // PUBREC, remaining 2, packet id 7
		want: &Ack{Kind: PUBREC, PacketID: 7},
	},
	{
		name: "pubrel/v311", version: V311,
		raw:  []byte{0x62, 0x02, 0x00, 0x07}, // PUBREL (flags 0010), remaining 2, packet id 7
		want: &Ack{Kind: PUBREL, PacketID: 7},
	},
	{
		name: "pubcomp/v311", version: V311,
		raw:  []byte{0x70, 0x02, 0x00, 0x07}, // PUBCOMP, remaining 2, packet id 7
		want: &Ack{Kind: PUBCOMP, PacketID: 7},
	},
	{
		name: "puback/v5/short", version: V5,
		raw:  []byte{0x40, 0x02, 0x00, 0x07}, // PUBACK, remaining 2: reason 0, no properties
		want: &Ack{Kind: PUBACK, PacketID: 7},
	},
	{
		name: "puback/v5/reason-no-props", version: V5,
		raw: []byte{
			0x40, 0x03, // fixed header: PUBACK, remaining 3
			0x00, 0x07, // packet id 7
			0x10, // reason: no matching subscribers; no property length
		},
		want: &Ack{Kind: PUBACK, PacketID: 7, ReasonCode: CodeNoMatchingSubscribers},
	},
	{
		name: "puback/v5/explicit-empty", version: V5, decodeOnly: true,
		raw: []byte{
			0x40, 0x04, // fixed header: PUBACK, remaining 4
			0x00, 0x07, // packet id 7
			0x00, // reason: success
			0x00, // properties length 0 (encodes as the short form)
		},
		want: &Ack{Kind: PUBACK, PacketID: 7},
	},
	{
		name: "pubrec/v5/reason-string", version: V5,
		raw: []byte{
			0x50, 0x0a, // fixed header: PUBREC, remaining 10
			0x00, 0x07, // packet id 7
			0x80,                            // reason: unspecified error
			0x06,                            // properties length 6
			0x1f, 0x00, 0x03, 'b', 'a', 'd', //   reason string "bad"
		},
		want: &Ack{Kind: PUBREC, PacketID: 7, ReasonCode: CodeUnspecifiedError,
			Props: Properties{Present: bits(PropReasonString), ReasonString: "bad"}},
	},
	{
		name: "pubrel/v5/not-found", version: V5,
		raw: []byte{
			0x62, 0x03, // fixed header: PUBREL, remaining 3
			0x00, 0x07, // packet id 7
			0x92, // reason: packet identifier not found
		},
		want: &Ack{Kind: PUBREL, PacketID: 7, ReasonCode: CodePacketIDNotFound},
	},
	{
		name: "pubcomp/v5/user-property", version: V5,
		raw: []byte{
			0x70, 0x0b, // fixed header: PUBCOMP, remaining 11
			0x00, 0x07, // packet id 7
			0x00,                                   // reason: success
			0x07,                                   // properties length 7
			0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v', //   user property k=v
		},
		want: &Ack{Kind: PUBCOMP, PacketID: 7,
			Props: Properties{Present: bits(PropUserProperty), User: []UserProperty{{"k", "v"}}}},
	},
	{
		name: "puback/v311/malformed/trailing", version: V311, code: CodeMalformedPacket,
		raw: []byte{0x40, 0x03, 0x00, 0x07, 0x00}, // before 5.0 an ack is exactly 2 bytes
	},
	{
		name: "puback/v311/malformed/short", version: V311, code: CodeMalformedPacket,
		raw: []byte{0x40, 0x01, 0x07}, // one byte of packet id
	},
	{
		name: "puback/v311/protocol/packet-id-0", version: V311, code: CodeProtocolError,
		raw: []byte{0x40, 0x02, 0x00, 0x00},
	},
	{
		name: "puback/v5/malformed/header-flags", version: V5, code: CodeMalformedPacket,
		raw: []byte{0x42, 0x02, 0x00, 0x07}, // PUBACK with flags 0010 [MQTT-2.1.3-1]
	},
	{
		name: "pubrec/v5/protocol/property-not-allowed", version: V5, code: CodeProtocolError,
		raw: []byte{
			0x50, 0x06, 0x00, 0x07, 0x00,
			0x02,       // properties length 2
			0x0b, 0x01, //   subscription identifier: not an ack property
		},
	},
	{
		name: "pubrec/v5/malformed/properties-overrun", version: V5, code: CodeMalformedPacket,
		raw: []byte{0x50, 0x05, 0x00, 0x07, 0x00, 0x04, 0x1f}, // properties length 4, 1 byte left
	},
	{
		name: "pubrel/v311/malformed/header-flags", version: V311, code: CodeMalformedPacket,
		raw: []byte{0x60, 0x02, 0x00, 0x07}, // PUBREL with flags 0000 [MQTT-3.6.1-1]
	},
	{
		name: "pubrel/v5/protocol/invalid-reason-code", version: V5, code: CodeProtocolError,
		raw: []byte{0x62, 0x03, 0x00, 0x07, 0x10}, // 0x10 is a PUBACK code, not a PUBREL one
	},
	{
		name: "pubcomp/v311/malformed/header-flags", version: V311, code: CodeMalformedPacket,
		raw: []byte{0x72, 0x02, 0x00, 0x07},
	},

	// ---- SUBSCRIBE ----------------------------------------------------------
	{
		name: "subscribe/v311", version: V311,
		raw: []byte{
			0x82, 0x0e, // fixed header: SUBSCRIBE (flags 0010), remaining 14
			0x00, 0x0a, // packet id 10
			0x00, 0x03, 'a', '/', 'b', // filter "a/b"
			0x01,                      //   requested QoS 1
			0x00, 0x03, 'c', '/', '#', // filter "c/#"
			0x02, //   requested QoS 2
		},
		want: &Subscribe{PacketID: 10, Subs: []Subscription{{Filter: "a/b", QoS: 1}, {Filter: "c/#", QoS: 2}}},
	},
	{
		name: "subscribe/v311/invalid-filter-is-decoded", version: V311,
		raw: []byte{
			0x82, 0x07, // fixed header: SUBSCRIBE, remaining 7
			0x00, 0x01, // packet id 1
			0x00, 0x02, 'a', '#', // filter "a#": ValidTopicFilter refuses it (SUBACK 0x80), the codec does not
			0x00, //   requested QoS 0
		},
		want: &Subscribe{PacketID: 1, Subs: []Subscription{{Filter: "a#"}}},
	},
	{
		name: "subscribe/v5/options", version: V5,
		raw: []byte{
			0x82, 0x1f, // fixed header: SUBSCRIBE, remaining 31
			0x00, 0x0b, // packet id 11
			0x09,       // properties length 9
			0x0b, 0x05, //   subscription identifier 5
			0x26, 0x00, 0x01, 'a', 0x00, 0x01, 'b', //   user property a=b
			0x00, 0x03, 'a', '/', '+', // filter "a/+"
			0x2d,                                                         //   options: retain handling 2, retain as published, no local, QoS 1
			0x00, 0x0a, '$', 's', 'h', 'a', 'r', 'e', '/', 'g', '/', 'x', // filter "$share/g/x"
			0x00, //   options: QoS 0
		},
		want: &Subscribe{PacketID: 11,
			Props: Properties{Present: bits(PropSubscriptionID, PropUserProperty), SubscriptionIDs: []uint32{5}, User: []UserProperty{{"a", "b"}}},
			Subs: []Subscription{
				{Filter: "a/+", QoS: 1, NoLocal: true, RetainAsPublished: true, RetainHandling: 2},
				{Filter: "$share/g/x"},
			}},
	},
	{
		name: "subscribe/v311/malformed/header-flags", version: V311, code: CodeMalformedPacket,
		raw: []byte{0x80, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x00}, // SUBSCRIBE with flags 0000 [MQTT-3.8.1-1]
	},
	{
		name: "subscribe/v311/protocol/no-filters", version: V311, code: CodeProtocolError,
		raw: []byte{0x82, 0x02, 0x00, 0x01}, // packet id only [MQTT-3.8.3-2]
	},
	{
		name: "subscribe/v311/protocol/packet-id-0", version: V311, code: CodeProtocolError,
		raw: []byte{0x82, 0x06, 0x00, 0x00, 0x00, 0x01, 'a', 0x00},
	},
	{
		name: "subscribe/v311/malformed/qos3", version: V311, code: CodeMalformedPacket,
		raw: []byte{0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x03}, // requested QoS 3
	},
	{
		name: "subscribe/v311/malformed/reserved-bits", version: V311, code: CodeMalformedPacket,
		raw: []byte{0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x05}, // upper 6 bits of QoS byte set [MQTT-3-8.3-4]
	},
	{
		name: "subscribe/v311/malformed/missing-options", version: V311, code: CodeMalformedPacket,
		raw: []byte{0x82, 0x05, 0x00, 0x01, 0x00, 0x01, 'a'}, // filter without its QoS byte
	},
	{
		name: "subscribe/v5/malformed/reserved-bits", version: V5, code: CodeMalformedPacket,
		raw: []byte{0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, 'a', 0x40}, // option bit 6 [MQTT-3.8.3-5]
	},
	{
		name: "subscribe/v5/protocol/retain-handling-3", version: V5, code: CodeProtocolError,
		raw: []byte{0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, 'a', 0x30}, // retain handling 3
	},
	{
		name: "subscribe/v5/protocol/two-subscription-ids", version: V5, code: CodeProtocolError,
		raw: []byte{
			0x82, 0x0b, 0x00, 0x01,
			0x04,       // properties length 4
			0x0b, 0x01, //   subscription identifier 1
			0x0b, 0x02, //   subscription identifier 2: at most one in SUBSCRIBE
			0x00, 0x01, 'a', 0x00,
		},
	},
	{
		name: "subscribe/v5/protocol/subscription-id-0", version: V5, code: CodeProtocolError,
		raw: []byte{0x82, 0x09, 0x00, 0x01, 0x02, 0x0b, 0x00, 0x00, 0x01, 'a', 0x00},
	},

	// ---- SUBACK -------------------------------------------------------------
	{
		name: "suback/v311", version: V311,
		raw: []byte{
			0x90, 0x06, // fixed header: SUBACK, remaining 6
			0x00, 0x0a, // packet id 10
			0x00, 0x01, 0x02, 0x80, // return codes: QoS 0, QoS 1, QoS 2, failure
		},
		want: &Suback{PacketID: 10, Codes: []ReasonCode{0, 1, 2, 0x80}},
	},
	{
		name: "suback/v5", version: V5,
		raw: []byte{
			0x90, 0x0b, // fixed header: SUBACK, remaining 11
			0x00, 0x0a, // packet id 10
			0x05,                       // properties length 5
			0x1f, 0x00, 0x02, 'n', 'o', //   reason string "no"
			0x01, 0x8f, 0xa2, // reason codes: granted QoS 1, topic filter invalid, wildcards not supported
		},
		want: &Suback{PacketID: 10, Props: Properties{Present: bits(PropReasonString), ReasonString: "no"},
			Codes: []ReasonCode{CodeGrantedQoS1, CodeTopicFilterInvalid, CodeWildcardSubsNotSupported}},
	},
	{
		name: "suback/v311/protocol/reserved-code", version: V311, code: CodeProtocolError,
		raw: []byte{0x90, 0x03, 0x00, 0x0a, 0x8f}, // 0x8f is 5.0 only [MQTT-3.9.3-2]
	},
	{
		name: "suback/v311/protocol/no-codes", version: V311, code: CodeProtocolError,
		raw: []byte{0x90, 0x02, 0x00, 0x0a},
	},
	{
		name: "suback/v5/protocol/invalid-code", version: V5, code: CodeProtocolError,
		raw: []byte{0x90, 0x04, 0x00, 0x0a, 0x00, 0x03}, // reason code 3
	},
	{
		name: "suback/v311/malformed/header-flags", version: V311, code: CodeMalformedPacket,
		raw: []byte{0x92, 0x03, 0x00, 0x0a, 0x00},
	},

	// ---- UNSUBSCRIBE --------------------------------------------------------
	{
		name: "unsubscribe/v311", version: V311,
		raw: []byte{
			0xa2, 0x0c, // fixed header: UNSUBSCRIBE (flags 0010), remaining 12
			0x00, 0x0b, // packet id 11
			0x00, 0x03, 'a', '/', 'b', // filter "a/b"
			0x00, 0x03, 'c', '/', '#', // filter "c/#"
		},
		want: &Unsubscribe{PacketID: 11, Filters: []string{"a/b", "c/#"}},
	},
	{
		name: "unsubscribe/v5", version: V5,
		raw: []byte{
			0xa2, 0x0f, // fixed header: UNSUBSCRIBE, remaining 15
			0x00, 0x0b, // packet id 11
			0x07,                                   // properties length 7
			0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v', //   user property k=v
			0x00, 0x03, 'a', '/', 'b', // filter "a/b"
		},
		want: &Unsubscribe{PacketID: 11, Filters: []string{"a/b"},
			Props: Properties{Present: bits(PropUserProperty), User: []UserProperty{{"k", "v"}}}},
	},
	{
		name: "unsubscribe/v311/protocol/no-filters", version: V311, code: CodeProtocolError,
		raw: []byte{0xa2, 0x02, 0x00, 0x0b}, // [MQTT-3.10.3-2]
	},
	{
		name: "unsubscribe/v311/malformed/header-flags", version: V311, code: CodeMalformedPacket,
		raw: []byte{0xa0, 0x05, 0x00, 0x0b, 0x00, 0x01, 'a'}, // flags 0000 [MQTT-3.10.1-1]
	},
	{
		name: "unsubscribe/v311/protocol/packet-id-0", version: V311, code: CodeProtocolError,
		raw: []byte{0xa2, 0x05, 0x00, 0x00, 0x00, 0x01, 'a'},
	},
	{
		name: "unsubscribe/v5/protocol/property-not-allowed", version: V5, code: CodeProtocolError,
		raw: []byte{
			0xa2, 0x0a, 0x00, 0x0b,
			0x04,                  // properties length 4
			0x1f, 0x00, 0x01, 'x', //   reason string: not an UNSUBSCRIBE property
			0x00, 0x01, 'a',
		},
	},

	// ---- UNSUBACK -----------------------------------------------------------
	{
		name: "unsuback/v311", version: V311,
		raw:  []byte{0xb0, 0x02, 0x00, 0x0b}, // UNSUBACK, remaining 2, packet id 11; no payload before 5.0
		want: &Unsuback{PacketID: 11},
	},
	{
		name: "unsuback/v5", version: V5,
		raw: []byte{
			0xb0, 0x05, // fixed header: UNSUBACK, remaining 5
			0x00, 0x0b, // packet id 11
			0x00,       // properties length 0
			0x00, 0x11, // reason codes: success, no subscription existed
		},
		want: &Unsuback{PacketID: 11, Codes: []ReasonCode{CodeSuccess, CodeNoSubscriptionExisted}},
	},
	{
		name: "unsuback/v311/malformed/payload", version: V311, code: CodeMalformedPacket,
		raw: []byte{0xb0, 0x03, 0x00, 0x0b, 0x00}, // a reason code before 5.0
	},
	{
		name: "unsuback/v5/protocol/no-codes", version: V5, code: CodeProtocolError,
		raw: []byte{0xb0, 0x03, 0x00, 0x0b, 0x00},
	},
	{
		name: "unsuback/v5/protocol/invalid-code", version: V5, code: CodeProtocolError,
		raw: []byte{0xb0, 0x04, 0x00, 0x0b, 0x00, 0x01},
	},

	// ---- PINGREQ, PINGRESP ------------------------------------------------
	{name: "pingreq/v311", version: V311, raw: []byte{0xc0, 0x00}, want: &Pingreq{}},
	{name: "pingreq/v5", version: V5, raw: []byte{0xc0, 0x00}, want: &Pingreq{}},
	{name: "pingresp/v311", version: V311, raw: []byte{0xd0, 0x00}, want: &Pingresp{}},
	{name: "pingresp/v5", version: V5, raw: []byte{0xd0, 0x00}, want: &Pingresp{}},
	{
		name: "pingreq/v311/malformed/body", version: V311, code: CodeMalformedPacket,
		raw: []byte{0xc0, 0x01, 0x00}, // remaining length 1
	},
	{
		name: "pingreq/v5/malformed/header-flags", version: V5, code: CodeMalformedPacket,
		raw: []byte{0xc1, 0x00},
	},
	{
		name: "pingresp/v311/malformed/body", version: V311, code: CodeMalformedPacket,
		raw: []byte{0xd0, 0x01, 0x00},
	},

	// ---- DISCONNECT ---------------------------------------------------------
	{name: "disconnect/v311", version: V311, raw: []byte{0xe0, 0x00}, want: &Disconnect{}},
	{
		name: "disconnect/v5/short", version: V5,
		raw:  []byte{0xe0, 0x00}, // remaining 0: normal disconnection
		want: &Disconnect{},
	},
	{
		name: "disconnect/v5/with-will", version: V5,
		raw:  []byte{0xe0, 0x01, 0x04}, // remaining 1: reason "disconnect with will", no properties
		want: &Disconnect{ReasonCode: CodeDisconnectWithWill},
	},
	{
		name: "disconnect/v5/props", version: V5,
		raw: []byte{
			0xe0, 0x10, // fixed header: DISCONNECT, remaining 16
			0x9c,                         // reason: use another server
			0x0e,                         // properties length 14
			0x11, 0x00, 0x00, 0x00, 0x00, //   session expiry interval 0
			0x1c, 0x00, 0x01, 's', //   server reference "s"
			0x1f, 0x00, 0x02, 'b', 'y', //   reason string "by"
		},
		want: &Disconnect{ReasonCode: CodeUseAnotherServer, Props: Properties{
			Present:         bits(PropSessionExpiry, PropServerReference, PropReasonString),
			ServerReference: "s", ReasonString: "by",
		}},
	},
	{
		name: "disconnect/v5/explicit-empty", version: V5, decodeOnly: true,
		raw:  []byte{0xe0, 0x02, 0x00, 0x00}, // reason 0, properties length 0
		want: &Disconnect{},
	},
	{
		name: "disconnect/v311/malformed/body", version: V311, code: CodeMalformedPacket,
		raw: []byte{0xe0, 0x01, 0x00}, // reason codes are 5.0 only
	},
	{
		name: "disconnect/v5/malformed/header-flags", version: V5, code: CodeMalformedPacket,
		raw: []byte{0xe1, 0x00},
	},
	{
		name: "disconnect/v5/protocol/invalid-code", version: V5, code: CodeProtocolError,
		raw: []byte{0xe0, 0x01, 0x05},
	},
	{
		name: "disconnect/v5/protocol/property-not-allowed", version: V5, code: CodeProtocolError,
		raw: []byte{0xe0, 0x05, 0x00, 0x03, 0x23, 0x00, 0x01}, // topic alias in DISCONNECT
	},

	// ---- AUTH ---------------------------------------------------------------
	{
		name: "auth/v5/short", version: V5,
		raw:  []byte{0xf0, 0x00}, // remaining 0: success
		want: &Auth{},
	},
	{
		name: "auth/v5/continue", version: V5,
		raw: []byte{
			0xf0, 0x0f, // fixed header: AUTH, remaining 15
			0x18,                                      // reason: continue authentication
			0x0d,                                      // properties length 13
			0x15, 0x00, 0x05, 'S', 'C', 'R', 'A', 'M', //   authentication method "SCRAM"
			0x16, 0x00, 0x02, 0x01, 0x02, //   authentication data 01 02
		},
		want: &Auth{ReasonCode: CodeContinueAuthentication, Props: Properties{
			Present: bits(PropAuthMethod, PropAuthData), AuthMethod: "SCRAM", AuthData: []byte{1, 2},
		}},
	},
	{
		name: "auth/v311/protocol/not-in-311", version: V311, code: CodeProtocolError,
		raw: []byte{0xf0, 0x00}, // AUTH does not exist before 5.0
	},
	{
		name: "auth/v5/malformed/no-properties", version: V5, code: CodeMalformedPacket,
		raw: []byte{0xf0, 0x01, 0x18}, // reason without property length
	},
	{
		name: "auth/v5/protocol/invalid-code", version: V5, code: CodeProtocolError,
		raw: []byte{0xf0, 0x02, 0x80, 0x00},
	},
	{
		name: "auth/v5/malformed/header-flags", version: V5, code: CodeMalformedPacket,
		raw: []byte{0xf1, 0x00},
	},

	// ---- reserved type ----------------------------------------------------
	{
		name: "reserved/v311/malformed/type-0", version: V311, code: CodeMalformedPacket,
		raw: []byte{0x00, 0x00},
	},
}
