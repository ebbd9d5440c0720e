package packet

// This file encodes packets. Each Append computes the Remaining Length
// first (validating what the wire format cannot carry), then appends the
// whole packet to dst in one pass: on error dst is returned unchanged.
//
// The encoder refuses what would make the packet malformed or a protocol
// error at the framing level (QoS 3, DUP with QoS 0, packet identifier 0
// where one is required, no filters, a property the packet may not carry,
// strings over 65,535 bytes, a Remaining Length over MaxVarInt). It does
// not validate UTF-8, topic names or property values: that is the
// caller's business (ValidTopicName, ValidTopicFilter, ValidUTF8String).
//
// Fields that do not exist in the target version are not written:
// properties and 5.0 reason codes before 5.0, No Local / Retain As
// Published / Retain Handling before 5.0.

func errEncode(code ReasonCode, msg string) error { return &Error{Code: code, Msg: "encode " + msg} }

func checkVersionEnc(v byte) error {
	if !validVersion(v) {
		return &Error{Code: CodeUnsupportedProtocolVersion, Msg: "encode: unsupported protocol level"}
	}
	return nil
}

func errLong(what string) error {
	return errEncode(CodeMalformedPacket, what+": longer than 65535 bytes")
}

// appendFixed appends the fixed header, or fails if remaining exceeds what
// a Remaining Length can carry.
func appendFixed(dst []byte, first byte, remaining int) ([]byte, error) {
	if remaining > MaxVarInt {
		return dst, errEncode(CodePacketTooLarge, Type(first>>4).String()+": remaining length exceeds 268435455")
	}
	return AppendVarInt(append(dst, first), uint32(remaining)), nil
}

// propsField returns the bytes the Properties field takes (length prefix
// included) and the content length.
func propsField(pr *Properties, ctx *propCtx) (field, n int, err error) {
	n, err = checkProps(pr, ctx)
	return VarIntLen(uint32(n)) + n, n, err
}

// Append encodes CONNECT. version 0 means c.ProtocolLevel. The protocol
// name is c.ProtocolName, or if empty "MQIsdp" for level 3 and "MQTT"
// otherwise. The username and password flags are set when the flag field
// is true or the value is non-empty.
func (c *Connect) Append(dst []byte, version byte) ([]byte, error) {
	if version == 0 {
		version = c.ProtocolLevel
	}
	if err := checkVersionEnc(version); err != nil {
		return dst, err
	}
	name := c.ProtocolName
	if name == "" {
		name = "MQTT"
		if version == V31 {
			name = "MQIsdp"
		}
	}
	userFlag := c.UsernameFlag || c.Username != ""
	passFlag := c.PasswordFlag || len(c.Password) > 0
	if len(name) > maxString || len(c.ClientID) > maxString || len(c.Username) > maxString ||
		len(c.Password) > maxString || len(c.WillTopic) > maxString || len(c.WillPayload) > maxString {
		return dst, errLong("CONNECT field")
	}
	flags := byte(0)
	if c.CleanStart {
		flags |= 0x02
	}
	if c.WillFlag {
		if c.WillQoS > 2 {
			return dst, errEncode(CodeMalformedPacket, "CONNECT: will QoS > 2")
		}
		flags |= 0x04 | c.WillQoS<<3
		if c.WillRetain {
			flags |= 0x20
		}
	}
	if passFlag {
		flags |= 0x40
	}
	if userFlag {
		flags |= 0x80
	}
	n := 2 + len(name) + 1 + 1 + 2 + 2 + len(c.ClientID)
	var pn, wn int
	if version == V5 {
		f, m, err := propsField(&c.Props, &ctxConnect)
		if err != nil {
			return dst, err
		}
		n, pn = n+f, m
	}
	if c.WillFlag {
		if version == V5 {
			f, m, err := propsField(&c.WillProps, &ctxWill)
			if err != nil {
				return dst, err
			}
			n, wn = n+f, m
		}
		n += 2 + len(c.WillTopic) + 2 + len(c.WillPayload)
	}
	if userFlag {
		n += 2 + len(c.Username)
	}
	if passFlag {
		n += 2 + len(c.Password)
	}
	dst, err := appendFixed(dst, byte(CONNECT)<<4, n)
	if err != nil {
		return dst, err
	}
	dst = appendString(dst, name)
	level := version
	if c.Bridge && version != V5 {
		level |= bridgeFlag
	}
	dst = append(dst, level, flags)
	dst = appendU16(dst, c.KeepAlive)
	if version == V5 {
		dst = appendProps(dst, &c.Props, pn)
	}
	dst = appendString(dst, c.ClientID)
	if c.WillFlag {
		if version == V5 {
			dst = appendProps(dst, &c.WillProps, wn)
		}
		dst = appendString(dst, c.WillTopic)
		dst = appendBinary(dst, c.WillPayload)
	}
	if userFlag {
		dst = appendString(dst, c.Username)
	}
	if passFlag {
		dst = appendBinary(dst, c.Password)
	}
	return dst, nil
}

// Append encodes CONNACK.
func (c *Connack) Append(dst []byte, version byte) ([]byte, error) {
	if err := checkVersionEnc(version); err != nil {
		return dst, err
	}
	n, pn := 2, 0
	if version == V5 {
		f, m, err := propsField(&c.Props, &ctxConnack)
		if err != nil {
			return dst, err
		}
		n, pn = n+f, m
	}
	dst, err := appendFixed(dst, byte(CONNACK)<<4, n)
	if err != nil {
		return dst, err
	}
	flags := byte(0)
	if c.SessionPresent {
		flags = 1
	}
	dst = append(dst, flags, byte(c.ReasonCode))
	if version == V5 {
		dst = appendProps(dst, &c.Props, pn)
	}
	return dst, nil
}

// Size is the number of bytes Append writes for p in version, or an
// error where Append would fail on p's properties.
func (p *Publish) Size(version byte) (int, error) {
	n := 2 + len(p.Topic) + len(p.Payload)
	if p.QoS > 0 {
		n += 2
	}
	if version == V5 {
		f, _, err := propsField(&p.Props, &ctxPublish)
		if err != nil {
			return 0, err
		}
		n += f
	}
	return 1 + VarIntLen(uint32(n)) + n, nil
}

// Append encodes PUBLISH. It allocates nothing when dst has room.
func (p *Publish) Append(dst []byte, version byte) ([]byte, error) {
	if err := checkVersionEnc(version); err != nil {
		return dst, err
	}
	if p.QoS > 2 {
		return dst, errEncode(CodeMalformedPacket, "PUBLISH: QoS > 2")
	}
	if p.Dup && p.QoS == 0 {
		return dst, errEncode(CodeMalformedPacket, "PUBLISH: DUP with QoS 0 [MQTT-3.3.1-2]")
	}
	if p.QoS > 0 && p.PacketID == 0 {
		return dst, errEncode(CodeProtocolError, "PUBLISH: packet identifier 0 [MQTT-2.2.1-3]")
	}
	if len(p.Topic) > maxString {
		return dst, errLong("PUBLISH topic")
	}
	n, pn := 2+len(p.Topic)+len(p.Payload), 0
	if p.QoS > 0 {
		n += 2
	}
	if version == V5 {
		f, m, err := propsField(&p.Props, &ctxPublish)
		if err != nil {
			return dst, err
		}
		n, pn = n+f, m
	}
	first := byte(PUBLISH)<<4 | p.QoS<<1
	if p.Dup {
		first |= 0x08
	}
	if p.Retain {
		first |= 0x01
	}
	dst, err := appendFixed(dst, first, n)
	if err != nil {
		return dst, err
	}
	dst = appendString(dst, p.Topic)
	if p.QoS > 0 {
		dst = appendU16(dst, p.PacketID)
	}
	if version == V5 {
		dst = appendProps(dst, &p.Props, pn)
	}
	return append(dst, p.Payload...), nil
}

// Append encodes PUBACK, PUBREC, PUBREL or PUBCOMP, as a.Kind says. In
// 5.0 it writes the short forms: Remaining Length 2 when the reason code is
// 0 and there are no properties, 3 when there are no properties.
func (a *Ack) Append(dst []byte, version byte) ([]byte, error) {
	if err := checkVersionEnc(version); err != nil {
		return dst, err
	}
	if a.Kind < PUBACK || a.Kind > PUBCOMP {
		return dst, errEncode(CodeProtocolError, "ack: Kind is not PUBACK, PUBREC, PUBREL or PUBCOMP")
	}
	if a.PacketID == 0 {
		return dst, errEncode(CodeProtocolError, a.Kind.String()+": packet identifier 0")
	}
	first := byte(a.Kind) << 4
	if a.Kind == PUBREL {
		first |= 0x02 // [MQTT-3.6.1-1]
	}
	n, pn := 2, 0
	if version == V5 {
		f, m, err := propsField(&a.Props, &ctxAck)
		if err != nil {
			return dst, err
		}
		pn = m
		switch {
		case m > 0:
			n += 1 + f
		case a.ReasonCode != 0:
			n++
		}
	}
	dst, err := appendFixed(dst, first, n)
	if err != nil {
		return dst, err
	}
	dst = appendU16(dst, a.PacketID)
	if n > 2 {
		dst = append(dst, byte(a.ReasonCode))
	}
	if n > 3 {
		dst = appendProps(dst, &a.Props, pn)
	}
	return dst, nil
}

// Append encodes SUBSCRIBE.
func (s *Subscribe) Append(dst []byte, version byte) ([]byte, error) {
	if err := checkVersionEnc(version); err != nil {
		return dst, err
	}
	if s.PacketID == 0 {
		return dst, errEncode(CodeProtocolError, "SUBSCRIBE: packet identifier 0 [MQTT-2.2.1-3]")
	}
	if len(s.Subs) == 0 {
		return dst, errEncode(CodeProtocolError, "SUBSCRIBE: no topic filter [MQTT-3.8.3-2]")
	}
	n, pn := 2, 0
	if version == V5 {
		f, m, err := propsField(&s.Props, &ctxSubscribe)
		if err != nil {
			return dst, err
		}
		n, pn = n+f, m
	}
	for i := range s.Subs {
		sub := &s.Subs[i]
		if len(sub.Filter) > maxString {
			return dst, errLong("SUBSCRIBE topic filter")
		}
		if sub.QoS > 2 || (version == V5 && sub.RetainHandling > 2) {
			return dst, errEncode(CodeMalformedPacket, "SUBSCRIBE: QoS or retain handling > 2")
		}
		n += 2 + len(sub.Filter) + 1
	}
	dst, err := appendFixed(dst, byte(SUBSCRIBE)<<4|0x02, n) // [MQTT-3.8.1-1]
	if err != nil {
		return dst, err
	}
	dst = appendU16(dst, s.PacketID)
	if version == V5 {
		dst = appendProps(dst, &s.Props, pn)
	}
	for i := range s.Subs {
		sub := &s.Subs[i]
		dst = appendString(dst, sub.Filter)
		opts := sub.QoS
		if version == V5 {
			opts |= sub.RetainHandling << 4
			if sub.NoLocal {
				opts |= 0x04
			}
			if sub.RetainAsPublished {
				opts |= 0x08
			}
		}
		dst = append(dst, opts)
	}
	return dst, nil
}

// Append encodes SUBACK.
func (s *Suback) Append(dst []byte, version byte) ([]byte, error) {
	if err := checkVersionEnc(version); err != nil {
		return dst, err
	}
	if s.PacketID == 0 {
		return dst, errEncode(CodeProtocolError, "SUBACK: packet identifier 0")
	}
	if len(s.Codes) == 0 {
		return dst, errEncode(CodeProtocolError, "SUBACK: no reason code")
	}
	n, pn := 2+len(s.Codes), 0
	if version == V5 {
		f, m, err := propsField(&s.Props, &ctxSuback)
		if err != nil {
			return dst, err
		}
		n, pn = n+f, m
	}
	dst, err := appendFixed(dst, byte(SUBACK)<<4, n)
	if err != nil {
		return dst, err
	}
	dst = appendU16(dst, s.PacketID)
	if version == V5 {
		dst = appendProps(dst, &s.Props, pn)
	}
	for _, c := range s.Codes {
		dst = append(dst, byte(c))
	}
	return dst, nil
}

// Append encodes UNSUBSCRIBE.
func (u *Unsubscribe) Append(dst []byte, version byte) ([]byte, error) {
	if err := checkVersionEnc(version); err != nil {
		return dst, err
	}
	if u.PacketID == 0 {
		return dst, errEncode(CodeProtocolError, "UNSUBSCRIBE: packet identifier 0 [MQTT-2.2.1-3]")
	}
	if len(u.Filters) == 0 {
		return dst, errEncode(CodeProtocolError, "UNSUBSCRIBE: no topic filter [MQTT-3.10.3-2]")
	}
	n, pn := 2, 0
	if version == V5 {
		f, m, err := propsField(&u.Props, &ctxUnsubscribe)
		if err != nil {
			return dst, err
		}
		n, pn = n+f, m
	}
	for _, f := range u.Filters {
		if len(f) > maxString {
			return dst, errLong("UNSUBSCRIBE topic filter")
		}
		n += 2 + len(f)
	}
	dst, err := appendFixed(dst, byte(UNSUBSCRIBE)<<4|0x02, n) // [MQTT-3.10.1-1]
	if err != nil {
		return dst, err
	}
	dst = appendU16(dst, u.PacketID)
	if version == V5 {
		dst = appendProps(dst, &u.Props, pn)
	}
	for _, f := range u.Filters {
		dst = appendString(dst, f)
	}
	return dst, nil
}

// Append encodes UNSUBACK. Codes and properties are written in 5.0 only.
func (u *Unsuback) Append(dst []byte, version byte) ([]byte, error) {
	if err := checkVersionEnc(version); err != nil {
		return dst, err
	}
	if u.PacketID == 0 {
		return dst, errEncode(CodeProtocolError, "UNSUBACK: packet identifier 0")
	}
	n, pn := 2, 0
	if version == V5 {
		if len(u.Codes) == 0 {
			return dst, errEncode(CodeProtocolError, "UNSUBACK: no reason code")
		}
		f, m, err := propsField(&u.Props, &ctxUnsuback)
		if err != nil {
			return dst, err
		}
		n, pn = n+f+len(u.Codes), m
	}
	dst, err := appendFixed(dst, byte(UNSUBACK)<<4, n)
	if err != nil {
		return dst, err
	}
	dst = appendU16(dst, u.PacketID)
	if version == V5 {
		dst = appendProps(dst, &u.Props, pn)
		for _, c := range u.Codes {
			dst = append(dst, byte(c))
		}
	}
	return dst, nil
}

// Append encodes PINGREQ.
func (*Pingreq) Append(dst []byte, version byte) ([]byte, error) {
	if err := checkVersionEnc(version); err != nil {
		return dst, err
	}
	return append(dst, byte(PINGREQ)<<4, 0), nil
}

// Append encodes PINGRESP.
func (*Pingresp) Append(dst []byte, version byte) ([]byte, error) {
	if err := checkVersionEnc(version); err != nil {
		return dst, err
	}
	return append(dst, byte(PINGRESP)<<4, 0), nil
}

// Append encodes DISCONNECT. In 5.0 it writes Remaining Length 0 when the
// reason code is 0 and there are no properties, and omits the Property
// Length when there are none.
func (d *Disconnect) Append(dst []byte, version byte) ([]byte, error) {
	if err := checkVersionEnc(version); err != nil {
		return dst, err
	}
	n, pn := 0, 0
	if version == V5 {
		f, m, err := propsField(&d.Props, &ctxDisconnect)
		if err != nil {
			return dst, err
		}
		pn = m
		switch {
		case m > 0:
			n = 1 + f
		case d.ReasonCode != 0:
			n = 1
		}
	}
	dst, err := appendFixed(dst, byte(DISCONNECT)<<4, n)
	if err != nil {
		return dst, err
	}
	if n > 0 {
		dst = append(dst, byte(d.ReasonCode))
	}
	if n > 1 {
		dst = appendProps(dst, &d.Props, pn)
	}
	return dst, nil
}

// Append encodes AUTH (5.0 only). Remaining Length is 0 when the reason
// code is 0 and there are no properties.
func (a *Auth) Append(dst []byte, version byte) ([]byte, error) {
	if version != V5 {
		return dst, errEncode(CodeProtocolError, "AUTH: MQTT 5.0 only")
	}
	f, pn, err := propsField(&a.Props, &ctxAuth)
	if err != nil {
		return dst, err
	}
	n := 0
	if pn > 0 || a.ReasonCode != 0 {
		n = 1 + f
	}
	dst, err = appendFixed(dst, byte(AUTH)<<4, n)
	if err != nil {
		return dst, err
	}
	if n > 0 {
		dst = append(dst, byte(a.ReasonCode))
		dst = appendProps(dst, &a.Props, pn)
	}
	return dst, nil
}
