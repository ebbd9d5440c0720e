package packet

// This file decodes and encodes MQTT 5.0 properties (section 2.2.2):
//
//	Property Length   Variable Byte Integer: bytes of properties that follow
//	Property ...      Identifier (Variable Byte Integer, one byte in 5.0)
//	                  followed by a value of the identifier's type
//
// Which packet may carry which property is fixed by the tables below; a
// property in the wrong packet is a Protocol Error, as is any property
// other than User Property (and Subscription Identifier in PUBLISH)
// appearing twice. An unknown identifier is a Malformed Packet.

func bit(id PropID) uint64 { return 1 << uint(id) }

// Property sets per packet (section 2.2.2.2, table of properties).
const (
	connectProps = 1<<PropSessionExpiry | 1<<PropAuthMethod | 1<<PropAuthData |
		1<<PropRequestProblemInfo | 1<<PropRequestResponseInfo | 1<<PropReceiveMaximum |
		1<<PropTopicAliasMaximum | 1<<PropUserProperty | 1<<PropMaximumPacketSize

	// willProps are the properties of the Will in CONNECT's payload (3.1.3.2).
	willProps = 1<<PropWillDelay | 1<<PropPayloadFormat | 1<<PropMessageExpiry |
		1<<PropContentType | 1<<PropResponseTopic | 1<<PropCorrelationData |
		1<<PropUserProperty

	connackProps = 1<<PropSessionExpiry | 1<<PropAssignedClientID | 1<<PropServerKeepAlive |
		1<<PropAuthMethod | 1<<PropAuthData | 1<<PropResponseInfo | 1<<PropServerReference |
		1<<PropReasonString | 1<<PropReceiveMaximum | 1<<PropTopicAliasMaximum |
		1<<PropMaximumQoS | 1<<PropRetainAvailable | 1<<PropUserProperty |
		1<<PropMaximumPacketSize | 1<<PropWildcardSubAvailable | 1<<PropSubIDAvailable |
		1<<PropSharedSubAvailable

	publishProps = 1<<PropPayloadFormat | 1<<PropMessageExpiry | 1<<PropContentType |
		1<<PropResponseTopic | 1<<PropCorrelationData | 1<<PropSubscriptionID |
		1<<PropTopicAlias | 1<<PropUserProperty

	// ackProps serve PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK.
	ackProps = 1<<PropReasonString | 1<<PropUserProperty

	subscribeProps   = 1<<PropSubscriptionID | 1<<PropUserProperty
	unsubscribeProps = 1 << PropUserProperty

	disconnectProps = 1<<PropSessionExpiry | 1<<PropServerReference |
		1<<PropReasonString | 1<<PropUserProperty

	authProps = 1<<PropAuthMethod | 1<<PropAuthData | 1<<PropReasonString |
		1<<PropUserProperty

	// knownProps is every identifier MQTT 5.0 defines.
	knownProps = connectProps | willProps | connackProps | publishProps |
		subscribeProps | disconnectProps | authProps
)

// propCtx names the packet whose properties are decoded or encoded.
type propCtx struct {
	name    string // for error messages: "CONNECT", "will", ...
	allowed uint64
	multiID bool // Subscription Identifier may repeat (PUBLISH only)
}

var (
	ctxConnect     = propCtx{"CONNECT", connectProps, false}
	ctxWill        = propCtx{"CONNECT will", willProps, false}
	ctxConnack     = propCtx{"CONNACK", connackProps, false}
	ctxPublish     = propCtx{"PUBLISH", publishProps, true}
	ctxAck         = propCtx{"ack", ackProps, false}
	ctxSubscribe   = propCtx{"SUBSCRIBE", subscribeProps, false}
	ctxSuback      = propCtx{"SUBACK", ackProps, false}
	ctxUnsubscribe = propCtx{"UNSUBSCRIBE", unsubscribeProps, false}
	ctxUnsuback    = propCtx{"UNSUBACK", ackProps, false}
	ctxDisconnect  = propCtx{"DISCONNECT", disconnectProps, false}
	ctxAuth        = propCtx{"AUTH", authProps, false}
)

// decodeProps reads Property Length and the properties into pr, which the
// caller has reset (SubscriptionIDs and User are appended to, so a reused
// Properties keeps their backing arrays).
func decodeProps(p *parser, pr *Properties, ctx *propCtx) error {
	n, err := p.varint("property length")
	if err != nil {
		return prefixErr(ctx.name+" ", err)
	}
	if n > uint32(p.rest()) {
		return truncated(ctx.name + " properties")
	}
	q := parser{b: p.b[:p.i+int(n)], i: p.i}
	p.i += int(n)
	for q.rest() > 0 {
		v, err := q.varint("property identifier")
		if err != nil {
			return prefixErr(ctx.name+" ", err)
		}
		if v >= 64 || knownProps&(1<<v) == 0 {
			return errMalformed(ctx.name + ": unknown property identifier")
		}
		id := PropID(v)
		if ctx.allowed&bit(id) == 0 {
			return errProtocol(ctx.name + ": property " + id.String() + " not allowed in this packet")
		}
		if pr.Has(id) && id != PropUserProperty && !(id == PropSubscriptionID && ctx.multiID) {
			return errProtocol(ctx.name + ": property " + id.String() + " appears twice")
		}
		pr.Set(id)
		if err := decodeProp(&q, pr, id, ctx.name); err != nil {
			if pe, ok := err.(*Error); ok && pe.Msg != "" && pe.Msg[0] == ':' {
				// A parser error ": truncated": say which property.
				return prefixErr(ctx.name+" property "+id.String(), err)
			}
			return err
		}
	}
	// It is a Protocol Error to include Authentication Data if there is no
	// Authentication Method (3.1.2.11.10, 3.2.2.3.18, 3.15.2.2.3).
	if pr.Has(PropAuthData) && !pr.Has(PropAuthMethod) {
		return errProtocol(ctx.name + ": authentication data without authentication method")
	}
	return nil
}

// prefixErr prepends s to the message of an *Error; it is only called on
// error paths, so the hot path builds no strings.
func prefixErr(s string, err error) error {
	if pe, ok := err.(*Error); ok {
		pe.Msg = s + pe.Msg
	}
	return err
}

// bool01 checks a Byte property whose only values are 0 and 1.
func bool01(v byte, id PropID, what string) error {
	if v > 1 {
		return errProtocol(what + ": property " + id.String() + " must be 0 or 1")
	}
	return nil
}

func decodeProp(q *parser, pr *Properties, id PropID, what string) error {
	var err error
	const w = "" // parser errors are prefixed with the property's name by decodeProps
	switch id {
	case PropPayloadFormat:
		if pr.PayloadFormat, err = q.u8(w); err == nil {
			err = bool01(pr.PayloadFormat, id, what)
		}
	case PropMessageExpiry:
		pr.MessageExpiry, err = q.u32(w)
	case PropContentType:
		pr.ContentType, err = q.str(w)
	case PropResponseTopic:
		pr.ResponseTopic, err = q.str(w)
	case PropCorrelationData:
		pr.CorrelationData, err = q.binary(w)
	case PropSubscriptionID:
		var v uint32
		if v, err = q.varint(w); err == nil {
			if v == 0 {
				// The Subscription Identifier can have the value of 1 to
				// 268,435,455. It is a Protocol Error if it has a value of 0.
				return errProtocol(what + ": subscription identifier 0")
			}
			pr.SubscriptionIDs = append(pr.SubscriptionIDs, v)
		}
	case PropSessionExpiry:
		pr.SessionExpiry, err = q.u32(w)
	case PropAssignedClientID:
		pr.AssignedClientID, err = q.str(w)
	case PropServerKeepAlive:
		pr.ServerKeepAlive, err = q.u16(w)
	case PropAuthMethod:
		pr.AuthMethod, err = q.str(w)
	case PropAuthData:
		pr.AuthData, err = q.binary(w)
	case PropRequestProblemInfo:
		if pr.RequestProblemInfo, err = q.u8(w); err == nil {
			err = bool01(pr.RequestProblemInfo, id, what)
		}
	case PropWillDelay:
		pr.WillDelay, err = q.u32(w)
	case PropRequestResponseInfo:
		if pr.RequestResponseInfo, err = q.u8(w); err == nil {
			err = bool01(pr.RequestResponseInfo, id, what)
		}
	case PropResponseInfo:
		pr.ResponseInfo, err = q.str(w)
	case PropServerReference:
		pr.ServerReference, err = q.str(w)
	case PropReasonString:
		pr.ReasonString, err = q.str(w)
	case PropReceiveMaximum:
		if pr.ReceiveMaximum, err = q.u16(w); err == nil && pr.ReceiveMaximum == 0 {
			// It is a Protocol Error to include the Receive Maximum value
			// more than once or for it to have the value 0.
			err = errProtocol(what + ": receive maximum 0")
		}
	case PropTopicAliasMaximum:
		pr.TopicAliasMaximum, err = q.u16(w)
	case PropTopicAlias:
		if pr.TopicAlias, err = q.u16(w); err == nil && pr.TopicAlias == 0 {
			// A Topic Alias of 0 is not permitted [MQTT-3.3.2-8].
			err = errProtocol(what + ": topic alias 0 [MQTT-3.3.2-8]")
		}
	case PropMaximumQoS:
		if pr.MaximumQoS, err = q.u8(w); err == nil {
			err = bool01(pr.MaximumQoS, id, what)
		}
	case PropRetainAvailable:
		if pr.RetainAvailable, err = q.u8(w); err == nil {
			err = bool01(pr.RetainAvailable, id, what)
		}
	case PropUserProperty:
		var u UserProperty
		if u.Key, err = q.str(w); err == nil {
			if u.Value, err = q.str(w); err == nil {
				pr.User = append(pr.User, u)
			}
		}
	case PropMaximumPacketSize:
		if pr.MaximumPacketSize, err = q.u32(w); err == nil && pr.MaximumPacketSize == 0 {
			// It is a Protocol Error to include the Maximum Packet Size
			// more than once, or for the value to be set to zero.
			err = errProtocol(what + ": maximum packet size 0")
		}
	case PropWildcardSubAvailable:
		if pr.WildcardSubAvailable, err = q.u8(w); err == nil {
			err = bool01(pr.WildcardSubAvailable, id, what)
		}
	case PropSubIDAvailable:
		if pr.SubIDAvailable, err = q.u8(w); err == nil {
			err = bool01(pr.SubIDAvailable, id, what)
		}
	case PropSharedSubAvailable:
		if pr.SharedSubAvailable, err = q.u8(w); err == nil {
			err = bool01(pr.SharedSubAvailable, id, what)
		}
	}
	return err
}

// userBits are the properties the encoder writes from their slices,
// whatever Present says.
const sliceProps = 1<<PropSubscriptionID | 1<<PropUserProperty

// checkProps validates pr for encoding in ctx: only allowed properties,
// string and binary lengths, subscription identifier range. It returns the
// encoded size of the properties (without the Property Length prefix).
func checkProps(pr *Properties, ctx *propCtx) (int, error) {
	present := pr.Present &^ sliceProps
	if len(pr.SubscriptionIDs) > 0 {
		present |= bit(PropSubscriptionID)
	}
	if len(pr.User) > 0 {
		present |= bit(PropUserProperty)
	}
	if present == 0 {
		return 0, nil
	}
	if present&^ctx.allowed != 0 {
		return 0, &Error{Code: CodeProtocolError, Msg: "encode " + ctx.name + ": property not allowed in this packet"}
	}
	if len(pr.SubscriptionIDs) > 1 && !ctx.multiID {
		return 0, &Error{Code: CodeProtocolError, Msg: "encode " + ctx.name + ": more than one subscription identifier"}
	}
	n := 0
	str := func(id PropID, s string) bool {
		if present&bit(id) == 0 {
			return true
		}
		n += 3 + len(s)
		return len(s) <= maxString
	}
	bin := func(id PropID, b []byte) bool {
		if present&bit(id) == 0 {
			return true
		}
		n += 3 + len(b)
		return len(b) <= maxString
	}
	fixed := func(id PropID, size int) {
		if present&bit(id) != 0 {
			n += 1 + size
		}
	}
	ok := str(PropContentType, pr.ContentType) &&
		str(PropResponseTopic, pr.ResponseTopic) &&
		bin(PropCorrelationData, pr.CorrelationData) &&
		str(PropAssignedClientID, pr.AssignedClientID) &&
		str(PropAuthMethod, pr.AuthMethod) &&
		bin(PropAuthData, pr.AuthData) &&
		str(PropResponseInfo, pr.ResponseInfo) &&
		str(PropServerReference, pr.ServerReference) &&
		str(PropReasonString, pr.ReasonString)
	if !ok {
		return 0, &Error{Code: CodeMalformedPacket, Msg: "encode " + ctx.name + ": property longer than 65535 bytes"}
	}
	fixed(PropPayloadFormat, 1)
	fixed(PropMessageExpiry, 4)
	fixed(PropSessionExpiry, 4)
	fixed(PropServerKeepAlive, 2)
	fixed(PropRequestProblemInfo, 1)
	fixed(PropWillDelay, 4)
	fixed(PropRequestResponseInfo, 1)
	fixed(PropReceiveMaximum, 2)
	fixed(PropTopicAliasMaximum, 2)
	fixed(PropTopicAlias, 2)
	fixed(PropMaximumQoS, 1)
	fixed(PropRetainAvailable, 1)
	fixed(PropMaximumPacketSize, 4)
	fixed(PropWildcardSubAvailable, 1)
	fixed(PropSubIDAvailable, 1)
	fixed(PropSharedSubAvailable, 1)
	for _, id := range pr.SubscriptionIDs {
		if id > MaxVarInt {
			return 0, &Error{Code: CodeMalformedPacket, Msg: "encode " + ctx.name + ": subscription identifier too large"}
		}
		n += 1 + VarIntLen(id)
	}
	for _, u := range pr.User {
		if len(u.Key) > maxString || len(u.Value) > maxString {
			return 0, &Error{Code: CodeMalformedPacket, Msg: "encode " + ctx.name + ": user property longer than 65535 bytes"}
		}
		n += 5 + len(u.Key) + len(u.Value)
	}
	return n, nil
}

// appendProps writes Property Length n and the properties, in identifier
// order (user properties in their own order).
// REQUIRES: n == the size checkProps returned for pr.
func appendProps(dst []byte, pr *Properties, n int) []byte {
	dst = AppendVarInt(dst, uint32(n))
	if n == 0 {
		return dst
	}
	if pr.Has(PropPayloadFormat) {
		dst = append(dst, byte(PropPayloadFormat), pr.PayloadFormat)
	}
	if pr.Has(PropMessageExpiry) {
		dst = appendU32(append(dst, byte(PropMessageExpiry)), pr.MessageExpiry)
	}
	if pr.Has(PropContentType) {
		dst = appendString(append(dst, byte(PropContentType)), pr.ContentType)
	}
	if pr.Has(PropResponseTopic) {
		dst = appendString(append(dst, byte(PropResponseTopic)), pr.ResponseTopic)
	}
	if pr.Has(PropCorrelationData) {
		dst = appendBinary(append(dst, byte(PropCorrelationData)), pr.CorrelationData)
	}
	for _, id := range pr.SubscriptionIDs {
		dst = AppendVarInt(append(dst, byte(PropSubscriptionID)), id)
	}
	if pr.Has(PropSessionExpiry) {
		dst = appendU32(append(dst, byte(PropSessionExpiry)), pr.SessionExpiry)
	}
	if pr.Has(PropAssignedClientID) {
		dst = appendString(append(dst, byte(PropAssignedClientID)), pr.AssignedClientID)
	}
	if pr.Has(PropServerKeepAlive) {
		dst = appendU16(append(dst, byte(PropServerKeepAlive)), pr.ServerKeepAlive)
	}
	if pr.Has(PropAuthMethod) {
		dst = appendString(append(dst, byte(PropAuthMethod)), pr.AuthMethod)
	}
	if pr.Has(PropAuthData) {
		dst = appendBinary(append(dst, byte(PropAuthData)), pr.AuthData)
	}
	if pr.Has(PropRequestProblemInfo) {
		dst = append(dst, byte(PropRequestProblemInfo), pr.RequestProblemInfo)
	}
	if pr.Has(PropWillDelay) {
		dst = appendU32(append(dst, byte(PropWillDelay)), pr.WillDelay)
	}
	if pr.Has(PropRequestResponseInfo) {
		dst = append(dst, byte(PropRequestResponseInfo), pr.RequestResponseInfo)
	}
	if pr.Has(PropResponseInfo) {
		dst = appendString(append(dst, byte(PropResponseInfo)), pr.ResponseInfo)
	}
	if pr.Has(PropServerReference) {
		dst = appendString(append(dst, byte(PropServerReference)), pr.ServerReference)
	}
	if pr.Has(PropReasonString) {
		dst = appendString(append(dst, byte(PropReasonString)), pr.ReasonString)
	}
	if pr.Has(PropReceiveMaximum) {
		dst = appendU16(append(dst, byte(PropReceiveMaximum)), pr.ReceiveMaximum)
	}
	if pr.Has(PropTopicAliasMaximum) {
		dst = appendU16(append(dst, byte(PropTopicAliasMaximum)), pr.TopicAliasMaximum)
	}
	if pr.Has(PropTopicAlias) {
		dst = appendU16(append(dst, byte(PropTopicAlias)), pr.TopicAlias)
	}
	if pr.Has(PropMaximumQoS) {
		dst = append(dst, byte(PropMaximumQoS), pr.MaximumQoS)
	}
	if pr.Has(PropRetainAvailable) {
		dst = append(dst, byte(PropRetainAvailable), pr.RetainAvailable)
	}
	for _, u := range pr.User {
		dst = appendString(append(dst, byte(PropUserProperty)), u.Key)
		dst = appendString(dst, u.Value)
	}
	if pr.Has(PropMaximumPacketSize) {
		dst = appendU32(append(dst, byte(PropMaximumPacketSize)), pr.MaximumPacketSize)
	}
	if pr.Has(PropWildcardSubAvailable) {
		dst = append(dst, byte(PropWildcardSubAvailable), pr.WildcardSubAvailable)
	}
	if pr.Has(PropSubIDAvailable) {
		dst = append(dst, byte(PropSubIDAvailable), pr.SubIDAvailable)
	}
	if pr.Has(PropSharedSubAvailable) {
		dst = append(dst, byte(PropSharedSubAvailable), pr.SharedSubAvailable)
	}
	return dst
}

// String returns the property's name as the specification spells it.
func (id PropID) String() string {
	switch id {
	case PropPayloadFormat:
		return "Payload Format Indicator"
	case PropMessageExpiry:
		return "Message Expiry Interval"
	case PropContentType:
		return "Content Type"
	case PropResponseTopic:
		return "Response Topic"
	case PropCorrelationData:
		return "Correlation Data"
	case PropSubscriptionID:
		return "Subscription Identifier"
	case PropSessionExpiry:
		return "Session Expiry Interval"
	case PropAssignedClientID:
		return "Assigned Client Identifier"
	case PropServerKeepAlive:
		return "Server Keep Alive"
	case PropAuthMethod:
		return "Authentication Method"
	case PropAuthData:
		return "Authentication Data"
	case PropRequestProblemInfo:
		return "Request Problem Information"
	case PropWillDelay:
		return "Will Delay Interval"
	case PropRequestResponseInfo:
		return "Request Response Information"
	case PropResponseInfo:
		return "Response Information"
	case PropServerReference:
		return "Server Reference"
	case PropReasonString:
		return "Reason String"
	case PropReceiveMaximum:
		return "Receive Maximum"
	case PropTopicAliasMaximum:
		return "Topic Alias Maximum"
	case PropTopicAlias:
		return "Topic Alias"
	case PropMaximumQoS:
		return "Maximum QoS"
	case PropRetainAvailable:
		return "Retain Available"
	case PropUserProperty:
		return "User Property"
	case PropMaximumPacketSize:
		return "Maximum Packet Size"
	case PropWildcardSubAvailable:
		return "Wildcard Subscription Available"
	case PropSubIDAvailable:
		return "Subscription Identifier Available"
	case PropSharedSubAvailable:
		return "Shared Subscription Available"
	}
	return "PropID(0x" + hex2(byte(id)) + ")"
}

func hex2(b byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[b>>4], digits[b&0xf]})
}
