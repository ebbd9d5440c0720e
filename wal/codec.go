package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/klauspost/compress/s2"
)

// Record codecs. The layouts are drawn in doc.go; every constant here is part
// of the on-disk format.

// recordV1 is the leading byte of every record written by this version.
const recordV1 byte = 1

// Message flags (part of the on-disk format).
const (
	msgRetain          = 1 << 0
	msgPayloadFormat   = 1 << 1 // a payload format indicator byte follows qos
	msgCompressed      = 1 << 2 // the payload is an S2 block
	msgProperties      = 1 << 3 // content type .. user properties are present
	msgCorrelationData = 1 << 4 // correlation data is present (may be empty)
	msgKnown           = 1<<5 - 1
)

// Entry flags (part of the on-disk format).
const (
	entryRetain = 1 << 0
	entryInline = 1 << 1 // an inline message follows
	entryKnown  = 1<<2 - 1
)

// Session flags (part of the on-disk format).
const (
	sessionWill      = 1 << 0
	sessionOwner     = 1 << 1 // format 2: the owner's username follows
	sessionAnonymous = 1 << 2 // format 2: the owner is anonymous (with sessionOwner)
	sessionKnown     = 1<<3 - 1
)

// Subscription flags (part of the on-disk format).
const (
	subNoLocal = 1 << 0
	subRAP     = 1 << 1
	subKnown   = 1<<2 - 1
)

// maxPayload is MQTT's largest packet (256 MiB); a compressed payload that
// claims to inflate to more is garbage, not a reason to allocate.
const maxPayload = 268_435_455

// ErrCorruptRecord is wrapped by the Decode functions' errors.
var ErrCorruptRecord = errors.New("wal: corrupt record")

// AppendMessage appends the encoding of m to dst. A payload of at least
// compressThreshold bytes is S2-compressed when that makes it smaller; a
// negative threshold disables compression.
func AppendMessage(dst []byte, m *Message, compressThreshold int) []byte {
	dst = append(dst, recordV1)
	return appendMsg(dst, m, compressThreshold)
}

// DecodeMessage decodes a record written by AppendMessage. The result shares
// no memory with b.
func DecodeMessage(b []byte) (Message, error) {
	d := decoder{b: b}
	d.version()
	var m Message
	d.msg(&m)
	return m, d.finish("message")
}

// AppendEntry appends the encoding of e to dst. An inline message's payload
// is compressed as by AppendMessage.
func AppendEntry(dst []byte, e *Entry, compressThreshold int) []byte {
	var flags byte
	if e.Retain {
		flags |= entryRetain
	}
	if e.Inline != nil {
		flags |= entryInline
	}
	dst = append(dst, recordV1, flags, e.State, e.QoS)
	dst = binary.AppendUvarint(dst, uint64(e.PacketID))
	dst = binary.AppendUvarint(dst, uint64(len(e.SubIDs)))
	for _, id := range e.SubIDs {
		dst = binary.AppendUvarint(dst, uint64(id))
	}
	dst = binary.AppendUvarint(dst, e.Shared)
	if e.Inline != nil {
		dst = appendMsg(dst, e.Inline, compressThreshold)
	}
	return dst
}

// DecodeEntry decodes a record written by AppendEntry. The result shares no
// memory with b.
func DecodeEntry(b []byte) (Entry, error) {
	d := decoder{b: b}
	flags, h := d.entryHeader(true)
	e := Entry{State: h.State, QoS: h.QoS, PacketID: h.PacketID, Shared: h.Shared, SubIDs: h.subIDs}
	e.Retain = flags&entryRetain != 0
	if flags&entryInline != 0 {
		e.Inline = new(Message)
		d.msg(e.Inline)
	}
	return e, d.finish("entry")
}

// EntryHeader is what replay needs of a queue entry without its message.
type EntryHeader struct {
	State    byte
	QoS      byte
	PacketID uint16
	Shared   uint64
	subIDs   []uint32
}

// PeekEntry decodes only the header of an entry encoded by AppendEntry:
// replay reads every queued entry, and skipping the message keeps it cheap.
func PeekEntry(b []byte) (EntryHeader, error) {
	d := decoder{b: b}
	_, h := d.entryHeader(false)
	return h, d.err
}

// entryHeader decodes an entry up to its message; subscription ids are
// kept only if wantSubIDs.
func (d *decoder) entryHeader(wantSubIDs bool) (flags byte, h EntryHeader) {
	d.version()
	flags = d.flags(entryKnown)
	h.State = d.byte()
	if h.State > EntryReleased {
		d.fail("entry state %d", h.State)
	}
	h.QoS = d.qos()
	h.PacketID = uint16(d.uvarint(1<<16 - 1))
	n := d.count(1)
	if wantSubIDs && n > 0 {
		h.subIDs = make([]uint32, n)
	}
	for i := 0; i < n; i++ {
		id := uint32(d.uvarint(1<<32 - 1))
		if wantSubIDs {
			h.subIDs[i] = id
		}
	}
	h.Shared = d.uvarint(1<<64 - 1)
	return flags, h
}

// AppendSession appends the encoding of s to dst. The will's payload is
// compressed as by AppendMessage.
func AppendSession(dst []byte, s *Session, compressThreshold int) []byte {
	var flags byte
	if s.Will != nil {
		flags |= sessionWill
	}
	if s.Owner != nil {
		flags |= sessionOwner
		if s.Owner.Anonymous {
			flags |= sessionAnonymous
		}
	}
	dst = append(dst, recordV1, flags, s.Protocol)
	dst = binary.AppendUvarint(dst, uint64(s.ExpirySeconds))
	dst = binary.AppendVarint(dst, s.DisconnectedAt)
	if s.Will != nil {
		dst = binary.AppendUvarint(dst, uint64(s.Will.DelaySeconds))
		dst = appendMsg(dst, &s.Will.Message, compressThreshold)
	}
	if s.Owner != nil {
		dst = appendString(dst, s.Owner.Username)
	}
	return dst
}

// DecodeSession decodes a record written by AppendSession. The result shares
// no memory with b.
func DecodeSession(b []byte) (Session, error) {
	d := decoder{b: b}
	d.version()
	var s Session
	flags := d.flags(sessionKnown)
	s.Protocol = d.byte()
	s.ExpirySeconds = uint32(d.uvarint(1<<32 - 1))
	s.DisconnectedAt = d.varint()
	if flags&sessionWill != 0 {
		s.Will = new(Will)
		s.Will.DelaySeconds = uint32(d.uvarint(1<<32 - 1))
		d.msg(&s.Will.Message)
	}
	if flags&sessionOwner != 0 {
		s.Owner = &Owner{Anonymous: flags&sessionAnonymous != 0, Username: d.string()}
	} else if flags&sessionAnonymous != 0 {
		d.fail("anonymous flag without an owner")
	}
	return s, d.finish("session")
}

// AppendSubscription appends the encoding of s to dst.
func AppendSubscription(dst []byte, s *Subscription) []byte {
	var flags byte
	if s.NoLocal {
		flags |= subNoLocal
	}
	if s.RetainAsPublished {
		flags |= subRAP
	}
	dst = append(dst, recordV1, flags, s.QoS, s.RetainHandling)
	return binary.AppendUvarint(dst, uint64(s.SubID))
}

// DecodeSubscription decodes a record written by AppendSubscription.
func DecodeSubscription(b []byte) (Subscription, error) {
	d := decoder{b: b}
	d.version()
	var s Subscription
	flags := d.flags(subKnown)
	s.NoLocal = flags&subNoLocal != 0
	s.RetainAsPublished = flags&subRAP != 0
	s.QoS = d.qos()
	s.RetainHandling = d.byte()
	if s.RetainHandling > 2 {
		d.fail("retain handling %d", s.RetainHandling)
	}
	s.SubID = uint32(d.uvarint(1<<28 - 1)) // MQTT: 1 .. 268,435,455
	return s, d.finish("subscription")
}

// appendMsg appends a message body (no version byte).
func appendMsg(dst []byte, m *Message, threshold int) []byte {
	var flags byte
	if m.Retain {
		flags |= msgRetain
	}
	if m.HasPayloadFormat {
		flags |= msgPayloadFormat
	}
	props := m.ContentType != "" || m.ResponseTopic != "" || m.CorrelationData != nil || len(m.User) > 0
	if props {
		flags |= msgProperties
		if m.CorrelationData != nil {
			flags |= msgCorrelationData
		}
	}
	flagsAt := len(dst)
	dst = append(dst, flags, m.QoS)
	if m.HasPayloadFormat {
		dst = append(dst, m.PayloadFormat)
	}
	dst = binary.AppendVarint(dst, m.ExpireAt)
	dst = appendString(dst, m.Topic)
	if props {
		dst = appendString(dst, m.ContentType)
		dst = appendString(dst, m.ResponseTopic)
		dst = appendBytes(dst, m.CorrelationData)
		dst = binary.AppendUvarint(dst, uint64(len(m.User)))
		for _, u := range m.User {
			dst = appendString(dst, u.Key)
			dst = appendString(dst, u.Value)
		}
	}
	if threshold >= 0 && len(m.Payload) >= threshold && len(m.Payload) > 0 {
		if out, ok := appendCompressed(dst, m.Payload); ok {
			out[flagsAt] |= msgCompressed
			return out
		}
	}
	return appendBytes(dst, m.Payload)
}

// appendCompressed appends uvarint(len(c)) c, c being p as an S2 block, if c
// is shorter than p. It compresses straight into dst's spare capacity and
// moves the block down behind its length, so nothing else is allocated.
func appendCompressed(dst, p []byte) ([]byte, bool) {
	maxLen := s2.MaxEncodedLen(len(p))
	if maxLen < 0 {
		return dst, false
	}
	start := len(dst)
	gap := binary.MaxVarintLen64
	buf := slices.Grow(dst, gap+maxLen)[:start+gap+maxLen]
	enc := s2.Encode(buf[start+gap:], p)
	if len(enc) >= len(p) {
		return buf[:start], false
	}
	n := binary.PutUvarint(buf[start:], uint64(len(enc)))
	copy(buf[start+n:], enc)
	return buf[:start+n+len(enc)], true
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendBytes(dst []byte, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// decoder reads a record; the first problem is kept in err and every later
// read returns zero values, so decoding code reads straight through.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{ErrCorruptRecord}, args...)...)
	}
	d.b = nil
}

func (d *decoder) finish(what string) error {
	if d.err == nil && len(d.b) > 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return fmt.Errorf("wal: decode %s: %w", what, d.err)
	}
	return nil
}

func (d *decoder) version() {
	if v := d.byte(); d.err == nil && v != recordV1 {
		d.fail("unknown record version %d", v)
	}
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail("truncated")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) flags(known byte) byte {
	f := d.byte()
	if f&^known != 0 {
		d.fail("unknown flags %#x", f)
	}
	return f
}

func (d *decoder) qos() byte {
	q := d.byte()
	if q > 2 {
		d.fail("qos %d", q)
	}
	return q
}

func (d *decoder) uvarint(max uint64) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	if v > max {
		d.fail("value %d out of range", v)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a count of items each at least minSize bytes long, refusing
// counts the remaining input cannot hold.
func (d *decoder) count(minSize int) int {
	n := d.uvarint(uint64(len(d.b) / minSize))
	return int(n)
}

// raw returns the next length-prefixed field, still pointing into the input.
func (d *decoder) raw() []byte {
	n := d.uvarint(uint64(len(d.b)))
	if d.err != nil {
		return nil
	}
	if uint64(len(d.b)) < n {
		d.fail("truncated")
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string { return string(d.raw()) }

// bytes returns a copy of the next length-prefixed field; empty is nil.
func (d *decoder) bytes() []byte {
	v := d.raw()
	if len(v) == 0 {
		return nil
	}
	return append([]byte(nil), v...)
}

func (d *decoder) msg(m *Message) {
	flags := d.flags(msgKnown)
	m.Retain = flags&msgRetain != 0
	m.QoS = d.qos()
	if flags&msgPayloadFormat != 0 {
		m.HasPayloadFormat = true
		m.PayloadFormat = d.byte()
	}
	m.ExpireAt = d.varint()
	m.Topic = d.string()
	if flags&msgProperties != 0 {
		m.ContentType = d.string()
		m.ResponseTopic = d.string()
		cd := d.raw()
		if flags&msgCorrelationData != 0 {
			m.CorrelationData = append([]byte{}, cd...)
		} else if len(cd) > 0 {
			d.fail("correlation data without its flag")
		}
		if n := d.count(2); n > 0 {
			m.User = make([]UserProperty, n)
			for i := range m.User {
				m.User[i] = UserProperty{Key: d.string(), Value: d.string()}
			}
		}
	} else if flags&msgCorrelationData != 0 {
		d.fail("correlation data flag without properties")
	}
	if flags&msgCompressed == 0 {
		m.Payload = d.bytes()
		return
	}
	c := d.raw()
	if d.err != nil {
		return
	}
	n, err := s2.DecodedLen(c)
	if err != nil || n > maxPayload {
		d.fail("compressed payload: bad length")
		return
	}
	p, err := s2.Decode(make([]byte, n), c)
	if err != nil {
		d.fail("compressed payload: %v", err)
		return
	}
	m.Payload = p
}
