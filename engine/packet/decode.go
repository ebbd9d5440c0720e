package packet

import "strconv"

// This file decodes packet bodies. The fixed header (section 2.1) is
//
//	byte 1      bits 7-4 packet type, bits 3-0 flags
//	byte 2..5   Remaining Length, a Variable Byte Integer
//
// and reaches decode as first (byte 1) and body (exactly Remaining Length
// bytes). Every decoder consumes the body exactly; trailing bytes are a
// Malformed Packet.

// codeSet is a set of reason codes, one bit per value.
type codeSet [4]uint64

func (s *codeSet) has(c ReasonCode) bool { return s[c>>6]&(1<<(c&63)) != 0 }

func mkCodes(codes ...ReasonCode) (s codeSet) {
	for _, c := range codes {
		s[c>>6] |= 1 << (c & 63)
	}
	return s
}

// The reason codes MQTT 5.0 allows in each packet (sections 3.x.2.1).
var (
	connackCodes = mkCodes(CodeSuccess, CodeUnspecifiedError, CodeMalformedPacket,
		CodeProtocolError, CodeImplementationSpecificError, CodeUnsupportedProtocolVersion,
		CodeClientIDNotValid, CodeBadUsernameOrPassword, CodeNotAuthorized,
		CodeServerUnavailable, CodeServerBusy, CodeBanned, CodeBadAuthenticationMethod,
		CodeTopicNameInvalid, CodePacketTooLarge, CodeQuotaExceeded,
		CodePayloadFormatInvalid, CodeRetainNotSupported, CodeQoSNotSupported,
		CodeUseAnotherServer, CodeServerMoved, CodeConnectionRateExceeded)
	pubackCodes = mkCodes(CodeSuccess, CodeNoMatchingSubscribers, CodeUnspecifiedError,
		CodeImplementationSpecificError, CodeNotAuthorized, CodeTopicNameInvalid,
		CodePacketIDInUse, CodeQuotaExceeded, CodePayloadFormatInvalid)
	pubrelCodes = mkCodes(CodeSuccess, CodePacketIDNotFound)
	subackCodes = mkCodes(CodeGrantedQoS0, CodeGrantedQoS1, CodeGrantedQoS2,
		CodeUnspecifiedError, CodeImplementationSpecificError, CodeNotAuthorized,
		CodeTopicFilterInvalid, CodePacketIDInUse, CodeQuotaExceeded,
		CodeSharedSubsNotSupported, CodeSubIDsNotSupported, CodeWildcardSubsNotSupported)
	subackCodes311 = mkCodes(0x00, 0x01, 0x02, 0x80) // [MQTT-3.9.3-2] (3.1.1)
	unsubackCodes  = mkCodes(CodeSuccess, CodeNoSubscriptionExisted, CodeUnspecifiedError,
		CodeImplementationSpecificError, CodeNotAuthorized, CodeTopicFilterInvalid,
		CodePacketIDInUse)
	disconnectCodes = mkCodes(CodeSuccess, CodeDisconnectWithWill, CodeUnspecifiedError,
		CodeMalformedPacket, CodeProtocolError, CodeImplementationSpecificError,
		CodeNotAuthorized, CodeServerBusy, CodeServerShuttingDown, CodeKeepAliveTimeout,
		CodeSessionTakenOver, CodeTopicFilterInvalid, CodeTopicNameInvalid,
		CodeReceiveMaximumExceeded, CodeTopicAliasInvalid, CodePacketTooLarge,
		CodeMessageRateTooHigh, CodeQuotaExceeded, CodeAdministrativeAction,
		CodePayloadFormatInvalid, CodeRetainNotSupported, CodeQoSNotSupported,
		CodeUseAnotherServer, CodeServerMoved, CodeSharedSubsNotSupported,
		CodeConnectionRateExceeded, CodeMaximumConnectTime, CodeSubIDsNotSupported,
		CodeWildcardSubsNotSupported)
	authCodes = mkCodes(CodeSuccess, CodeContinueAuthentication, CodeReAuthenticate)
)

func validVersion(v byte) bool { return v == V31 || v == V311 || v == V5 }

func errVersion(v byte) error {
	return &Error{Code: CodeUnsupportedProtocolVersion, Msg: "unsupported protocol level " + strconv.Itoa(int(v))}
}

// decode implements Decode.
//
// version 0 means no CONNECT has been seen: only CONNECT is accepted
// [MQTT-3.1.0-1]. CONNECT is always decoded per its own protocol level,
// whatever version says; refusing a second CONNECT [MQTT-3.1.0-2] is the
// caller's business.
func decode(first byte, body []byte, version byte) (Packet, error) {
	t := Type(first >> 4)
	if t == CONNECT {
		if first&0x0f != 0 {
			return nil, errMalformed("CONNECT: reserved header flags set [MQTT-2.1.3-1]")
		}
		c, err := decodeConnect(body)
		if c == nil {
			return nil, err // not a typed nil in the interface
		}
		return c, err
	}
	if version == 0 {
		return nil, errProtocol("first packet is not CONNECT [MQTT-3.1.0-1]")
	}
	if !validVersion(version) {
		return nil, errVersion(version)
	}
	if t == PUBLISH {
		p := new(Publish)
		if err := decodePublish(first, body, version, p); err != nil {
			return nil, err
		}
		return p, nil
	}
	// Where a flag bit is marked as Reserved it MUST be set to the value
	// listed [MQTT-2.1.3-1]: 0b0010 for PUBREL [MQTT-3.6.1-1], SUBSCRIBE
	// [MQTT-3.8.1-1] and UNSUBSCRIBE [MQTT-3.10.1-1], 0 for all others.
	want := byte(0)
	if t == PUBREL || t == SUBSCRIBE || t == UNSUBSCRIBE {
		want = 2
	}
	if first&0x0f != want {
		return nil, errMalformed(t.String() + ": invalid fixed header flags [MQTT-2.1.3-1]")
	}
	switch t {
	case CONNACK:
		return packetOrNil(decodeConnack(body, version))
	case PUBACK, PUBREC, PUBREL, PUBCOMP:
		return packetOrNil(decodeAck(t, body, version))
	case SUBSCRIBE:
		return packetOrNil(decodeSubscribe(body, version))
	case SUBACK:
		return packetOrNil(decodeSuback(body, version))
	case UNSUBSCRIBE:
		return packetOrNil(decodeUnsubscribe(body, version))
	case UNSUBACK:
		return packetOrNil(decodeUnsuback(body, version))
	case PINGREQ:
		if len(body) != 0 {
			return nil, errMalformed("PINGREQ: remaining length not 0")
		}
		return &Pingreq{}, nil
	case PINGRESP:
		if len(body) != 0 {
			return nil, errMalformed("PINGRESP: remaining length not 0")
		}
		return &Pingresp{}, nil
	case DISCONNECT:
		return packetOrNil(decodeDisconnect(body, version))
	case AUTH:
		return packetOrNil(decodeAuth(body, version))
	}
	return nil, errMalformed("reserved packet type 0")
}

// packetOrNil returns a nil Packet (not an interface holding a nil
// pointer) on error.
func packetOrNil[P Packet](p P, err error) (Packet, error) {
	if err != nil {
		return nil, err
	}
	return p, nil
}

// bridgeFlag is the bit Mosquitto's bridges set in a 3.1/3.1.1
// CONNECT's protocol level (try_private).
const bridgeFlag = 0x80

// decodeConnect decodes CONNECT (section 3.1).
//
//	Protocol Name    UTF-8 string: "MQTT" (4, 5) or "MQIsdp" (3)
//	Protocol Level   byte: 3, 4 or 5
//	Connect Flags    byte: 7 username, 6 password, 5 will retain,
//	                 4-3 will QoS, 2 will, 1 clean start, 0 reserved
//	Keep Alive       Two Byte Integer
//	Properties       5.0 only
//	Payload          Client Identifier, [Will Properties (5.0), Will
//	                 Topic, Will Payload], [User Name], [Password]
//
// Once the protocol name and level are read, a failure still returns the
// *Connect decoded so far alongside the error, so the caller knows which
// CONNACK (3.1.1 or 5.0) to answer with. An unknown name or level yields
// Code CodeUnsupportedProtocolVersion [MQTT-3.1.2-1] [MQTT-3.1.2-2].
func decodeConnect(body []byte) (*Connect, error) {
	p := parser{b: body}
	name, err := p.str("CONNECT protocol name")
	if err != nil {
		return nil, err
	}
	level, err := p.u8("CONNECT protocol level")
	if err != nil {
		return nil, err
	}
	c := &Connect{ProtocolName: name, ProtocolLevel: level}
	if level&bridgeFlag != 0 && (level&^bridgeFlag == V311 || level&^bridgeFlag == V31) {
		// Mosquitto's bridge flag (try_private): not in the standard,
		// which names only levels 3, 4 and 5.
		c.Bridge, c.ProtocolLevel = true, level&^bridgeFlag
		level = c.ProtocolLevel
	}
	switch {
	case name == "MQTT" && (level == V311 || level == V5):
	case name == "MQIsdp" && level == V31:
	default:
		return c, &Error{Code: CodeUnsupportedProtocolVersion,
			Msg: "CONNECT: unsupported protocol " + quote(name) + " level " + strconv.Itoa(int(level)) + " [MQTT-3.1.2-1] [MQTT-3.1.2-2]"}
	}
	flags, err := p.u8("CONNECT flags")
	if err != nil {
		return c, err
	}
	if flags&0x01 != 0 {
		return c, errMalformed("CONNECT: reserved flag set [MQTT-3.1.2-3]")
	}
	c.CleanStart = flags&0x02 != 0
	c.WillFlag = flags&0x04 != 0
	c.WillQoS = flags >> 3 & 0x03
	c.WillRetain = flags&0x20 != 0
	c.PasswordFlag = flags&0x40 != 0
	c.UsernameFlag = flags&0x80 != 0
	if !c.WillFlag && c.WillQoS != 0 {
		return c, errMalformed("CONNECT: will QoS without will flag [MQTT-3.1.2-11]")
	}
	if !c.WillFlag && c.WillRetain {
		return c, errMalformed("CONNECT: will retain without will flag [MQTT-3.1.2-13]")
	}
	if c.WillQoS == 3 {
		return c, errMalformed("CONNECT: will QoS 3 [MQTT-3.1.2-12]")
	}
	if level != V5 && c.PasswordFlag && !c.UsernameFlag {
		// 3.1.1 only; 5.0 allows a password without a user name.
		return c, errMalformed("CONNECT: password flag without username flag [MQTT-3.1.2-22]")
	}
	if c.KeepAlive, err = p.u16("CONNECT keep alive"); err != nil {
		return c, err
	}
	if level == V5 {
		if err := decodeProps(&p, &c.Props, &ctxConnect); err != nil {
			return c, err
		}
	}
	// The Client Identifier MUST be present and is the first field in the
	// payload [MQTT-3.1.3-3]; its length is the server's business.
	if c.ClientID, err = p.str("CONNECT client identifier"); err != nil {
		return c, err
	}
	if c.WillFlag {
		if level == V5 {
			if err := decodeProps(&p, &c.WillProps, &ctxWill); err != nil {
				return c, err
			}
		}
		if c.WillTopic, err = p.str("CONNECT will topic"); err != nil {
			return c, err
		}
		if c.WillPayload, err = p.binary("CONNECT will payload"); err != nil {
			return c, err
		}
	}
	if c.UsernameFlag {
		if c.Username, err = p.str("CONNECT username"); err != nil {
			return c, err
		}
	}
	if c.PasswordFlag {
		if c.Password, err = p.binary("CONNECT password"); err != nil {
			return c, err
		}
	}
	return c, p.end("CONNECT")
}

// decodeConnack decodes CONNACK (section 3.2): Connect Acknowledge Flags
// (bit 0 Session Present, bits 7-1 reserved [MQTT-3.2.2-1]), the return
// code (3.1.1) or reason code (5.0), and 5.0 properties.
func decodeConnack(body []byte, version byte) (*Connack, error) {
	p := parser{b: body}
	flags, err := p.u8("CONNACK flags")
	if err != nil {
		return nil, err
	}
	if flags&^0x01 != 0 {
		return nil, errMalformed("CONNACK: reserved flags set [MQTT-3.2.2-1]")
	}
	c := &Connack{SessionPresent: flags&0x01 != 0}
	code, err := p.u8("CONNACK code")
	if err != nil {
		return nil, err
	}
	c.ReasonCode = ReasonCode(code)
	if version == V5 {
		if !connackCodes.has(c.ReasonCode) {
			return nil, errProtocol("CONNACK: invalid reason code " + c.ReasonCode.hex())
		}
		if err := decodeProps(&p, &c.Props, &ctxConnack); err != nil {
			return nil, err
		}
	} else if c.ReasonCode > RetNotAuthorized {
		return nil, errProtocol("CONNACK: reserved return code " + c.ReasonCode.hex())
	}
	return c, p.end("CONNACK")
}

// decodePublish implements DecodePublish (section 3.3).
//
//	header flags   bit 3 DUP, bits 2-1 QoS, bit 0 RETAIN
//	Topic Name     UTF-8 string (wildcards and emptiness are checked by the
//	               caller with ValidTopicName: an empty topic is legal in 5.0
//	               with a Topic Alias)
//	Packet Id      Two Byte Integer, QoS > 0 only
//	Properties     5.0 only
//	Payload        the rest
func decodePublish(first byte, body []byte, version byte, pub *Publish) error {
	if Type(first>>4) != PUBLISH {
		return errProtocol("not a PUBLISH")
	}
	if version == 0 {
		return errProtocol("first packet is not CONNECT [MQTT-3.1.0-1]")
	}
	if !validVersion(version) {
		return errVersion(version)
	}
	ids, user := pub.Props.SubscriptionIDs[:0], pub.Props.User[:0]
	*pub = Publish{
		Dup:    first&0x08 != 0,
		QoS:    first >> 1 & 0x03,
		Retain: first&0x01 != 0,
	}
	pub.Props.SubscriptionIDs, pub.Props.User = ids, user
	if pub.QoS == 3 {
		return errMalformed("PUBLISH: QoS 3 [MQTT-3.3.1-4]")
	}
	if pub.Dup && pub.QoS == 0 {
		return errMalformed("PUBLISH: DUP set with QoS 0 [MQTT-3.3.1-2]")
	}
	p := parser{b: body}
	var err error
	if pub.Topic, err = p.str("PUBLISH topic"); err != nil { // [MQTT-3.3.2-1]
		return err
	}
	if pub.QoS > 0 {
		if pub.PacketID, err = p.u16("PUBLISH packet identifier"); err != nil {
			return err
		}
		if pub.PacketID == 0 {
			return errProtocol("PUBLISH: packet identifier 0 [MQTT-2.2.1-3]")
		}
	}
	if version == V5 {
		if err := decodeProps(&p, &pub.Props, &ctxPublish); err != nil {
			return err
		}
	}
	if p.rest() > 0 {
		// Capacity clipped: an append to Payload must not write past body.
		pub.Payload = body[p.i:len(body):len(body)]
	}
	return nil
}

// decodeAck decodes PUBACK, PUBREC, PUBREL and PUBCOMP (sections 3.4-3.7):
// Packet Identifier, then in 5.0 an optional Reason Code and optional
// Properties. Remaining Length 2 means reason 0 and no properties; 3 means
// no properties.
func decodeAck(t Type, body []byte, version byte) (*Ack, error) {
	p := parser{b: body}
	a := &Ack{Kind: t}
	var err error
	if a.PacketID, err = p.u16("packet identifier"); err != nil {
		return nil, prefixErr(t.String()+" ", err)
	}
	if a.PacketID == 0 {
		return nil, errProtocol(t.String() + ": packet identifier 0 [MQTT-2.2.1-3]")
	}
	if version == V5 && p.rest() > 0 {
		c, _ := p.u8("")
		a.ReasonCode = ReasonCode(c)
		valid := &pubackCodes
		if t == PUBREL || t == PUBCOMP {
			valid = &pubrelCodes
		}
		if !valid.has(a.ReasonCode) {
			return nil, errProtocol(t.String() + ": invalid reason code " + a.ReasonCode.hex())
		}
		if p.rest() > 0 {
			if err := decodeProps(&p, &a.Props, &ctxAck); err != nil {
				return nil, err
			}
		}
	}
	return a, p.end(t.String())
}

// decodeSubscribe decodes SUBSCRIBE (section 3.8): Packet Identifier,
// Properties (5.0), then one or more Topic Filter + Subscription Options.
//
//	options  bits 7-6 reserved, 5-4 Retain Handling, 3 Retain As Published,
//	         2 No Local, 1-0 Maximum QoS (3.1.1: bits 7-2 reserved)
//
// Filters are checked for UTF-8 only; the caller applies ValidTopicFilter
// so that it can answer 0x8F per filter.
func decodeSubscribe(body []byte, version byte) (*Subscribe, error) {
	p := parser{b: body}
	s := &Subscribe{}
	var err error
	if s.PacketID, err = p.u16("SUBSCRIBE packet identifier"); err != nil {
		return nil, err
	}
	if s.PacketID == 0 {
		return nil, errProtocol("SUBSCRIBE: packet identifier 0 [MQTT-2.2.1-3]")
	}
	if version == V5 {
		if err := decodeProps(&p, &s.Props, &ctxSubscribe); err != nil {
			return nil, err
		}
	}
	for p.rest() > 0 {
		var sub Subscription
		if sub.Filter, err = p.str("SUBSCRIBE topic filter"); err != nil { // [MQTT-3.8.3-1]
			return nil, err
		}
		opts, err := p.u8("SUBSCRIBE options")
		if err != nil {
			return nil, err
		}
		sub.QoS = opts & 0x03
		if sub.QoS == 3 {
			return nil, errMalformed("SUBSCRIBE: QoS 3 [MQTT-3-8.3-4]")
		}
		if version == V5 {
			if opts&0xc0 != 0 {
				return nil, errMalformed("SUBSCRIBE: reserved option bits set [MQTT-3.8.3-5]")
			}
			sub.NoLocal = opts&0x04 != 0
			sub.RetainAsPublished = opts&0x08 != 0
			sub.RetainHandling = opts >> 4 & 0x03
			if sub.RetainHandling == 3 {
				// "It is a Protocol Error to send a Retain Handling value
				// of 3" (3.8.3.1).
				return nil, errProtocol("SUBSCRIBE: retain handling 3")
			}
		} else if opts&0xfc != 0 {
			return nil, errMalformed("SUBSCRIBE: reserved option bits set [MQTT-3-8.3-4]")
		}
		s.Subs = append(s.Subs, sub)
	}
	if len(s.Subs) == 0 {
		return nil, errProtocol("SUBSCRIBE: no topic filter [MQTT-3.8.3-2]")
	}
	return s, nil
}

// decodeSuback decodes SUBACK (section 3.9): Packet Identifier,
// Properties (5.0), one reason code per filter.
func decodeSuback(body []byte, version byte) (*Suback, error) {
	p := parser{b: body}
	s := &Suback{}
	var err error
	if s.PacketID, err = p.u16("SUBACK packet identifier"); err != nil {
		return nil, err
	}
	if s.PacketID == 0 {
		return nil, errProtocol("SUBACK: packet identifier 0")
	}
	valid := &subackCodes311
	if version == V5 {
		valid = &subackCodes
		if err := decodeProps(&p, &s.Props, &ctxSuback); err != nil {
			return nil, err
		}
	}
	if p.rest() == 0 {
		return nil, errProtocol("SUBACK: no reason code")
	}
	s.Codes = make([]ReasonCode, p.rest())
	for i, c := range body[p.i:] {
		s.Codes[i] = ReasonCode(c)
		if !valid.has(s.Codes[i]) {
			return nil, errProtocol("SUBACK: invalid reason code " + s.Codes[i].hex() + " [MQTT-3.9.3-2]")
		}
	}
	return s, nil
}

// decodeUnsubscribe decodes UNSUBSCRIBE (section 3.10): Packet Identifier,
// Properties (5.0), one or more Topic Filters.
func decodeUnsubscribe(body []byte, version byte) (*Unsubscribe, error) {
	p := parser{b: body}
	u := &Unsubscribe{}
	var err error
	if u.PacketID, err = p.u16("UNSUBSCRIBE packet identifier"); err != nil {
		return nil, err
	}
	if u.PacketID == 0 {
		return nil, errProtocol("UNSUBSCRIBE: packet identifier 0 [MQTT-2.2.1-3]")
	}
	if version == V5 {
		if err := decodeProps(&p, &u.Props, &ctxUnsubscribe); err != nil {
			return nil, err
		}
	}
	for p.rest() > 0 {
		f, err := p.str("UNSUBSCRIBE topic filter") // [MQTT-3.10.3-1]
		if err != nil {
			return nil, err
		}
		u.Filters = append(u.Filters, f)
	}
	if len(u.Filters) == 0 {
		return nil, errProtocol("UNSUBSCRIBE: no topic filter [MQTT-3.10.3-2]")
	}
	return u, nil
}

// decodeUnsuback decodes UNSUBACK (section 3.11): Packet Identifier; in 5.0
// Properties and one reason code per filter.
func decodeUnsuback(body []byte, version byte) (*Unsuback, error) {
	p := parser{b: body}
	u := &Unsuback{}
	var err error
	if u.PacketID, err = p.u16("UNSUBACK packet identifier"); err != nil {
		return nil, err
	}
	if u.PacketID == 0 {
		return nil, errProtocol("UNSUBACK: packet identifier 0")
	}
	if version != V5 {
		return u, p.end("UNSUBACK")
	}
	if err := decodeProps(&p, &u.Props, &ctxUnsuback); err != nil {
		return nil, err
	}
	if p.rest() == 0 {
		return nil, errProtocol("UNSUBACK: no reason code")
	}
	u.Codes = make([]ReasonCode, p.rest())
	for i, c := range body[p.i:] {
		u.Codes[i] = ReasonCode(c)
		if !unsubackCodes.has(u.Codes[i]) {
			return nil, errProtocol("UNSUBACK: invalid reason code " + u.Codes[i].hex())
		}
	}
	return u, nil
}

// decodeDisconnect decodes DISCONNECT (section 3.14). Before 5.0 the body
// is empty. In 5.0 Remaining Length 0 means reason 0, and below 2 means no
// properties.
func decodeDisconnect(body []byte, version byte) (*Disconnect, error) {
	d := &Disconnect{}
	if version != V5 {
		if len(body) != 0 {
			return nil, errMalformed("DISCONNECT: remaining length not 0")
		}
		return d, nil
	}
	p := parser{b: body}
	if p.rest() == 0 {
		return d, nil
	}
	c, _ := p.u8("")
	d.ReasonCode = ReasonCode(c)
	if !disconnectCodes.has(d.ReasonCode) {
		return nil, errProtocol("DISCONNECT: invalid reason code " + d.ReasonCode.hex())
	}
	if p.rest() > 0 {
		if err := decodeProps(&p, &d.Props, &ctxDisconnect); err != nil {
			return nil, err
		}
	}
	return d, p.end("DISCONNECT")
}

// decodeAuth decodes AUTH (section 3.15, 5.0 only). Remaining Length 0
// means Success with no properties; otherwise reason code and properties
// are both present.
func decodeAuth(body []byte, version byte) (*Auth, error) {
	if version != V5 {
		return nil, errProtocol("AUTH before MQTT 5.0")
	}
	a := &Auth{}
	p := parser{b: body}
	if p.rest() == 0 {
		return a, nil
	}
	c, _ := p.u8("")
	a.ReasonCode = ReasonCode(c)
	if !authCodes.has(a.ReasonCode) {
		return nil, errProtocol("AUTH: invalid reason code " + a.ReasonCode.hex())
	}
	if err := decodeProps(&p, &a.Props, &ctxAuth); err != nil {
		return nil, err
	}
	return a, p.end("AUTH")
}

func quote(s string) string {
	if len(s) > 32 {
		s = s[:32] + "..."
	}
	return strconv.Quote(s)
}
