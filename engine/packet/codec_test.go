package packet

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

// normalize turns every empty slice in p into nil, so that a decoded
// packet (which aliases its body and leaves absent slices nil) compares
// equal to another decode of the same bytes through a reused struct.
func normalize(p any) {
	normalizeValue(reflect.ValueOf(p))
}

func normalizeValue(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			normalizeValue(v.Elem())
		}
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			normalizeValue(v.Field(i))
		}
	case reflect.Slice:
		if v.Len() == 0 {
			if v.CanSet() {
				v.SetZero()
			}
			return
		}
		for i := 0; i < v.Len(); i++ {
			normalizeValue(v.Index(i))
		}
	}
}

// readVersion is the version a fixture is decoded with: CONNECT before
// CONNECT (0), everything else with its level.
func readVersion(f *fixture) byte {
	if len(f.raw) > 0 && Type(f.raw[0]>>4) == CONNECT {
		return 0
	}
	return f.version
}

func readOne(raw []byte, version byte) (Packet, error) {
	return Read(bufio.NewReader(bytes.NewReader(raw)), version, 0)
}

func TestDecodeFixtures(t *testing.T) {
	for i := range fixtures {
		f := &fixtures[i]
		t.Run(f.name, func(t *testing.T) {
			got, err := readOne(f.raw, readVersion(f))
			if f.want == nil {
				var pe *Error
				if !errors.As(err, &pe) {
					t.Fatalf("Read: got (%+v, %v), want *Error with code %v", got, err, f.code)
				}
				if pe.Code != f.code {
					t.Fatalf("Read: got code %#x (%v), want %#x (%v)", byte(pe.Code), pe, byte(f.code), f.code)
				}
				return
			}
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			normalize(got)
			want := clonePacket(t, f.want, f.version)
			normalize(want)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("Read:\ngot  %+v\nwant %+v", got, want)
			}
			// Decode over the split header must agree with Read.
			first, body := splitFrame(t, f.raw)
			got2, err := Decode(first, body, readVersion(f))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			normalize(got2)
			if !reflect.DeepEqual(got2, want) {
				t.Fatalf("Decode:\ngot  %+v\nwant %+v", got2, want)
			}
		})
	}
}

// clonePacket returns want itself: fixtures are not mutated by normalize in
// a way that matters (they hold no empty slices), but keep the hook for
// clarity.
func clonePacket(t *testing.T, p Packet, _ byte) Packet {
	t.Helper()
	return p
}

// splitFrame splits a raw packet into its first byte and body.
func splitFrame(t testing.TB, raw []byte) (byte, []byte) {
	t.Helper()
	n := 1
	for raw[n]&0x80 != 0 {
		n++
	}
	return raw[0], raw[n+1:]
}

func TestEncodeFixtures(t *testing.T) {
	for i := range fixtures {
		f := &fixtures[i]
		if f.want == nil || f.decodeOnly {
			continue
		}
		t.Run(f.name, func(t *testing.T) {
			prefix := []byte("prefix")
			got, err := f.want.Append(bytes.Clone(prefix), f.version)
			if err != nil {
				t.Fatalf("Append: %v", err)
			}
			if !bytes.HasPrefix(got, prefix) {
				t.Fatalf("Append overwrote dst")
			}
			got = got[len(prefix):]
			if !bytes.Equal(got, f.raw) {
				t.Fatalf("Append:\ngot  % x\nwant % x", got, f.raw)
			}
		})
	}
}

// TestConnectUnsupportedVersion checks the documented behaviour: an
// unknown protocol yields CodeUnsupportedProtocolVersion together with a
// *Connect carrying the name and level, so the caller can pick its answer.
func TestConnectUnsupportedVersion(t *testing.T) {
	raw := []byte{0x10, 0x0c, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x06, 0x02, 0x00, 0x00, 0x00, 0x00}
	p, err := readOne(raw, 0)
	var pe *Error
	if !errors.As(err, &pe) || pe.Code != CodeUnsupportedProtocolVersion {
		t.Fatalf("got error %v, want code %v", err, CodeUnsupportedProtocolVersion)
	}
	c, ok := p.(*Connect)
	if !ok || c.ProtocolName != "MQTT" || c.ProtocolLevel != 6 {
		t.Fatalf("got packet %+v, want *Connect with name MQTT and level 6", p)
	}
	// A later error in a 5.0 CONNECT still reports the level.
	raw = []byte{0x10, 0x0f, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x02, 0x00, 0x00, 0x02, 0x7f, 0x00, 0x00, 0x00}
	p, err = readOne(raw, 0)
	if c, ok := p.(*Connect); !ok || c.ProtocolLevel != V5 || err == nil {
		t.Fatalf("got (%+v, %v), want *Connect level 5 and an error", p, err)
	}
}

func TestEncodeErrors(t *testing.T) {
	long := strings.Repeat("x", 65536)
	tests := []struct {
		name    string
		p       Packet
		version byte
		code    ReasonCode
	}{
		{"publish/qos3", &Publish{QoS: 3, PacketID: 1, Topic: "a"}, V311, CodeMalformedPacket},
		{"publish/dup-qos0", &Publish{Dup: true, Topic: "a"}, V311, CodeMalformedPacket},
		{"publish/packet-id-0", &Publish{QoS: 1, Topic: "a"}, V311, CodeProtocolError},
		{"publish/long-topic", &Publish{Topic: long}, V311, CodeMalformedPacket},
		{"publish/bad-version", &Publish{Topic: "a"}, 6, CodeUnsupportedProtocolVersion},
		{"publish/prop-not-allowed", &Publish{Topic: "a", Props: Properties{Present: bits(PropSessionExpiry)}}, V5, CodeProtocolError},
		{"publish/unknown-present-bit", &Publish{Topic: "a", Props: Properties{Present: 1 << 63}}, V5, CodeProtocolError},
		{"publish/long-content-type", &Publish{Topic: "a", Props: Properties{Present: bits(PropContentType), ContentType: long}}, V5, CodeMalformedPacket},
		{"publish/subscription-id-too-large", &Publish{Topic: "a", Props: Properties{SubscriptionIDs: []uint32{MaxVarInt + 1}}}, V5, CodeMalformedPacket},
		{"publish/too-large", &Publish{Topic: "a", Payload: make([]byte, MaxVarInt)}, V311, CodePacketTooLarge},
		{"connack/user-prop-in-311-ignored-but-sub-id-in-5", &Connack{Props: Properties{SubscriptionIDs: []uint32{1}}}, V5, CodeProtocolError},
		{"connect/will-qos3", &Connect{WillFlag: true, WillQoS: 3}, V311, CodeMalformedPacket},
		{"connect/no-version", &Connect{}, 0, CodeUnsupportedProtocolVersion},
		{"ack/bad-kind", &Ack{Kind: PUBLISH, PacketID: 1}, V311, CodeProtocolError},
		{"ack/packet-id-0", &Ack{Kind: PUBACK}, V311, CodeProtocolError},
		{"subscribe/empty", &Subscribe{PacketID: 1}, V311, CodeProtocolError},
		{"subscribe/two-ids", &Subscribe{PacketID: 1, Subs: []Subscription{{Filter: "a"}}, Props: Properties{SubscriptionIDs: []uint32{1, 2}}}, V5, CodeProtocolError},
		{"subscribe/retain-handling-3", &Subscribe{PacketID: 1, Subs: []Subscription{{Filter: "a", RetainHandling: 3}}}, V5, CodeMalformedPacket},
		{"suback/empty", &Suback{PacketID: 1}, V311, CodeProtocolError},
		{"unsubscribe/empty", &Unsubscribe{PacketID: 1}, V311, CodeProtocolError},
		{"unsuback/v5-empty", &Unsuback{PacketID: 1}, V5, CodeProtocolError},
		{"auth/v311", &Auth{}, V311, CodeProtocolError},
		{"disconnect/prop-not-allowed", &Disconnect{Props: Properties{Present: bits(PropTopicAlias), TopicAlias: 1}}, V5, CodeProtocolError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := []byte("keep")
			got, err := tt.p.Append(dst, tt.version)
			var pe *Error
			if !errors.As(err, &pe) || pe.Code != tt.code {
				t.Fatalf("got error %v, want code %v", err, tt.code)
			}
			if string(got) != "keep" {
				t.Fatalf("got dst %q, want it unchanged", got)
			}
		})
	}
}

// TestVersionFieldsDropped checks that fields a version lacks are not
// written: 5.0 properties, codes and options before 5.0.
func TestVersionFieldsDropped(t *testing.T) {
	tests := []struct {
		p    Packet
		want []byte
	}{
		{&Disconnect{ReasonCode: CodeServerBusy}, []byte{0xe0, 0x00}},
		{&Unsuback{PacketID: 1, Codes: []ReasonCode{0}}, []byte{0xb0, 0x02, 0x00, 0x01}},
		{&Ack{Kind: PUBACK, PacketID: 1, ReasonCode: 0x80}, []byte{0x40, 0x02, 0x00, 0x01}},
		{&Subscribe{PacketID: 1, Subs: []Subscription{{Filter: "a", QoS: 1, NoLocal: true, RetainHandling: 2}}},
			[]byte{0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x01}},
		{&Publish{Topic: "a", Props: Properties{Present: bits(PropTopicAlias), TopicAlias: 1}}, []byte{0x30, 0x03, 0x00, 0x01, 'a'}},
	}
	for _, tt := range tests {
		got, err := tt.p.Append(nil, V311)
		if err != nil || !bytes.Equal(got, tt.want) {
			t.Errorf("%T: got (% x, %v), want % x", tt.p, got, err, tt.want)
		}
	}
}

// TestRoundTrip encodes each fixture's packet in every version it can be
// encoded in, decodes the bytes, and compares.
func TestRoundTrip(t *testing.T) {
	for i := range fixtures {
		f := &fixtures[i]
		if f.want == nil {
			continue
		}
		t.Run(f.name, func(t *testing.T) {
			b, err := f.want.Append(nil, f.version)
			if err != nil {
				t.Fatal(err)
			}
			if p, ok := f.want.(*Publish); ok {
				if n, err := p.Size(f.version); err != nil || n != len(b) {
					t.Fatalf("Size = %d, %v; Append wrote %d bytes", n, err, len(b))
				}
			}
			v := f.version
			if f.want.Type() == CONNECT {
				v = 0
			}
			got, err := readOne(b, v)
			if err != nil {
				t.Fatal(err)
			}
			normalize(got)
			normalize(f.want)
			if !reflect.DeepEqual(got, f.want) {
				t.Fatalf("got  %+v\nwant %+v", got, f.want)
			}
		})
	}
}

func TestReadErrors(t *testing.T) {
	var pe *Error
	// Nothing at all: io.EOF.
	if _, err := readOne(nil, V311); err != io.EOF {
		t.Fatalf("empty stream: got %v, want io.EOF", err)
	}
	// Ends in the remaining length, or in the body: io.ErrUnexpectedEOF.
	for _, raw := range [][]byte{{0x30}, {0x30, 0x80}, {0x30, 0x0a, 0x00, 0x03}, {0x30, 0xff, 0xff, 0xff, 0x3f, 1, 2, 3}} {
		if _, err := readOne(raw, V311); err != io.ErrUnexpectedEOF {
			t.Fatalf("% x: got %v, want io.ErrUnexpectedEOF", raw, err)
		}
	}
	// A fifth remaining-length byte is malformed.
	if _, err := readOne([]byte{0x30, 0x80, 0x80, 0x80, 0x80, 0x01}, V311); !errors.As(err, &pe) || pe.Code != CodeMalformedPacket {
		t.Fatalf("5-byte remaining length: got %v, want malformed", err)
	}
	// Larger than maxSize, counting the fixed header: too large, body unread.
	raw := []byte{0x30, 0x07, 0x00, 0x03, 'a', '/', 'b', 'h', 'i'} // 9 bytes
	if _, err := Read(bufio.NewReader(bytes.NewReader(raw)), V311, 9); err != nil {
		t.Fatalf("size 9, max 9: %v", err)
	}
	r := bufio.NewReader(bytes.NewReader(raw))
	if _, err := Read(r, V311, 8); !errors.As(err, &pe) || pe.Code != CodePacketTooLarge {
		t.Fatalf("size 9, max 8: got %v, want too large", err)
	}
	if r.Buffered() != 7 {
		t.Fatalf("too large: %d bytes buffered, want the 7-byte body left unread", r.Buffered())
	}
	// 0 means MaxPacketSize: the largest Remaining Length plus its header
	// is over it.
	if _, err := readOne([]byte{0x30, 0xff, 0xff, 0xff, 0x7f}, V311); !errors.As(err, &pe) || pe.Code != CodePacketTooLarge {
		t.Fatalf("remaining 268435455 with maxSize 0: got %v, want too large", err)
	}
	// Before CONNECT anything else is refused after its first byte.
	r = bufio.NewReader(bytes.NewReader([]byte{0xc0, 0x00}))
	if _, err := Read(r, 0, 0); !errors.As(err, &pe) || pe.Code != CodeProtocolError {
		t.Fatalf("PINGREQ before CONNECT: got %v, want protocol error", err)
	}
	// Unknown version after CONNECT.
	if _, err := readOne([]byte{0xc0, 0x00}, 9); !errors.As(err, &pe) || pe.Code != CodeUnsupportedProtocolVersion {
		t.Fatalf("version 9: got %v, want unsupported", err)
	}
}

// TestReadStream reads several packets back to back from one reader.
func TestReadStream(t *testing.T) {
	var stream []byte
	var want []Packet
	for i := range fixtures {
		f := &fixtures[i]
		if f.want != nil && f.version == V5 && f.want.Type() != CONNECT {
			stream = append(stream, f.raw...)
			want = append(want, f.want)
		}
	}
	r := bufio.NewReaderSize(bytes.NewReader(stream), 16)
	for i, w := range want {
		got, err := Read(r, V5, 0)
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		normalize(got)
		normalize(w)
		if !reflect.DeepEqual(got, w) {
			t.Fatalf("packet %d: got %+v, want %+v", i, got, w)
		}
	}
	if _, err := Read(r, V5, 0); err != io.EOF {
		t.Fatalf("after the last packet: got %v, want io.EOF", err)
	}
}

// slowReader returns at most n bytes per Read and counts the bytes read.
type slowReader struct {
	data []byte
	n    int
}

func (s *slowReader) Read(p []byte) (int, error) {
	if len(s.data) == 0 {
		return 0, io.EOF
	}
	m := min(len(p), s.n, len(s.data))
	copy(p, s.data[:m])
	s.data = s.data[m:]
	return m, nil
}

// TestReadLargeBody reads a body bigger than the growth chunk through a
// reader that trickles bytes, and checks a huge declared size with few
// bytes behind it allocates little.
func TestReadLargeBody(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320,000 bytes
	raw, err := (&Publish{Topic: "big", Payload: payload}).Append(nil, V311)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Read(bufio.NewReader(&slowReader{data: raw, n: 1000}), V311, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p.(*Publish).Payload, payload) {
		t.Fatal("payload differs")
	}

	huge := AppendVarInt([]byte{0x30}, 250<<20)    // claims 250 MB...
	huge = append(huge, 0x00, 0x01, 'a', 'x', 'y') // ...has 5 bytes
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 10 {
		if _, err := Read(bufio.NewReader(bytes.NewReader(huge)), V311, 0); err != io.ErrUnexpectedEOF {
			t.Fatalf("got %v, want io.ErrUnexpectedEOF", err)
		}
	}
	runtime.ReadMemStats(&after)
	if perRead := (after.TotalAlloc - before.TotalAlloc) / 10; perRead > 1<<20 {
		t.Fatalf("a 256 MB header with 5 bytes behind it allocated %d bytes per Read", perRead)
	}
}

func TestReadFrameReusesBuffer(t *testing.T) {
	raw := []byte{0x30, 0x07, 0x00, 0x03, 'a', '/', 'b', 'h', 'i'}
	buf := make([]byte, 0, 64)
	first, body, err := ReadFrame(bufio.NewReader(bytes.NewReader(raw)), 0, buf)
	if err != nil || first != 0x30 || !bytes.Equal(body, raw[2:]) || &body[0] != &buf[:1][0] {
		t.Fatalf("got (%#x, % x, %v), want the body in buf", first, body, err)
	}
	var p Publish
	if err := DecodePublish(first, body, V311, &p); err != nil || p.Topic != "a/b" || string(p.Payload) != "hi" {
		t.Fatalf("DecodePublish: %+v, %v", p, err)
	}
}

// Mosquitto's bridge flag (try_private): the high bit of a 3.1.1 or 3.1
// protocol level. Decoded as Bridge with the level without it, encoded
// back the same; 5.0 with the flag (0x85) is no protocol.
func TestConnectBridgeFlag(t *testing.T) {
	for _, tc := range []struct {
		raw   []byte
		level byte
	}{
		{[]byte{0x10, 0x0c, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x84, 0x02, 0x00, 0x3c, 0x00, 0x00}, V311},
		{[]byte{0x10, 0x0e, 0x00, 0x06, 'M', 'Q', 'I', 's', 'd', 'p', 0x83, 0x02, 0x00, 0x3c, 0x00, 0x00}, V31},
	} {
		p, err := readOne(tc.raw, 0)
		c, ok := p.(*Connect)
		if err != nil || !ok || !c.Bridge || c.ProtocolLevel != tc.level {
			t.Fatalf("% x: got (%+v, %v), want a bridge's CONNECT at level %d", tc.raw, p, err, tc.level)
		}
		out, err := c.Append(nil, 0)
		if err != nil || !bytes.Equal(out, tc.raw) {
			t.Fatalf("encoded back: % x (%v), want % x", out, err, tc.raw)
		}
	}
	raw := []byte{0x10, 0x0d, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x85, 0x02, 0x00, 0x3c, 0x00, 0x00, 0x00}
	_, err := readOne(raw, 0)
	var pe *Error
	if !errors.As(err, &pe) || pe.Code != CodeUnsupportedProtocolVersion {
		t.Fatalf("level 0x85: got error %v, want code %v", err, CodeUnsupportedProtocolVersion)
	}
}
