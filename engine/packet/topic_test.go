package packet

import (
	"errors"
	"strings"
	"testing"
)

func TestValidTopicName(t *testing.T) {
	tests := []struct {
		topic string
		ok    bool
	}{
		{"a", true},
		{"a/b/c", true},
		{"/", true},
		{"//", true},
		{"$SYS/broker", true},
		{"a b/ü/日本", true},
		{"ctl\x01\x1f\x7f", true}, // control characters are allowed
		{"\u0080\u009f", true},
		{strings.Repeat("x", 65535), true},
		{"", false},
		{"a/+", false},
		{"a/#", false},
		{"#", false},
		{"a+b", false},
		{"a\x00b", false},
		{"\xed\xa0\x80", false}, // surrogate U+D800
		{"\xc0\xaf", false},     // overlong '/'
		{"\xff", false},
		{strings.Repeat("x", 65536), false},
	}
	for _, tt := range tests {
		err := ValidTopicName(tt.topic)
		if (err == nil) != tt.ok {
			t.Errorf("ValidTopicName(%.20q): got %v, want ok=%v", tt.topic, err, tt.ok)
		}
		var pe *Error
		if err != nil && (!errors.As(err, &pe) || pe.Code != CodeTopicNameInvalid) {
			t.Errorf("ValidTopicName(%.20q): got %v, want code %v", tt.topic, err, CodeTopicNameInvalid)
		}
	}
}

func TestValidTopicFilter(t *testing.T) {
	tests := []struct {
		filter string
		ok     bool
	}{
		{"a", true},
		{"#", true},
		{"+", true},
		{"a/#", true},
		{"a/+/c", true},
		{"+/+", true},
		{"/+", true},
		{"+/", true},
		{"/#", true},
		{"$SYS/#", true},
		{"a//b", true},
		{"$share/g/a/b", true},
		{"$share/g/#", true},
		{"$share/g/+/x", true},
		{"$share/g//", true},
		{"$shared/x", true}, // not the shared prefix: an ordinary filter
		{"$share", true},
		{"", false},
		{"a#", false},
		{"a/#/b", false},
		{"#/", false},
		{"##", false},
		{"a+", false},
		{"+a", false},
		{"a/b+/c", false},
		{"a\x00", false},
		{"\xff", false},
		{"$share/", false},
		{"$share//a", false},   // empty group
		{"$share/g", false},    // no filter
		{"$share/g/", false},   // empty filter
		{"$share/g+/a", false}, // wildcard in group
		{"$share/#/a", false},
		{"$share/g/a#", false},
		{strings.Repeat("x", 65536), false},
	}
	for _, tt := range tests {
		err := ValidTopicFilter(tt.filter)
		if (err == nil) != tt.ok {
			t.Errorf("ValidTopicFilter(%.20q): got %v, want ok=%v", tt.filter, err, tt.ok)
		}
		var pe *Error
		if err != nil && (!errors.As(err, &pe) || pe.Code != CodeTopicFilterInvalid) {
			t.Errorf("ValidTopicFilter(%.20q): got %v, want code %v", tt.filter, err, CodeTopicFilterInvalid)
		}
	}
}

func TestParseShared(t *testing.T) {
	tests := []struct {
		in, group, filter string
		ok                bool
	}{
		{"$share/g/a/b", "g", "a/b", true},
		{"$share/group/#", "group", "#", true},
		{"$share/g//", "g", "/", true},
		{"$share/g+/a", "g+", "a", true}, // split only; ValidTopicFilter refuses the group
		{"a/b", "", "", false},
		{"$share", "", "", false},
		{"$share/", "", "", false},
		{"$share//a", "", "", false},
		{"$share/g", "", "", false},
		{"$share/g/", "", "", false},
		{"$SHARE/g/a", "", "", false},
	}
	for _, tt := range tests {
		g, f, ok := ParseShared(tt.in)
		if g != tt.group || f != tt.filter || ok != tt.ok {
			t.Errorf("ParseShared(%q): got (%q, %q, %v), want (%q, %q, %v)", tt.in, g, f, ok, tt.group, tt.filter, tt.ok)
		}
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
		{"a/+", "a/b", true},
		{"a/+", "a/b/c", false},
		{"a/+", "a/", true}, // empty level
		{"a/+", "a", false},
		{"+/+", "/finance", true},
		{"/+", "/finance", true},
		{"+", "/finance", false},
		{"+", "a", true},
		{"a/#", "a", true}, // parent level
		{"a/#", "a/", true},
		{"a/#", "a/b/c", true},
		{"a/#", "b", false},
		{"a/#", "ab", false},
		{"#", "a/b/c", true},
		{"#", "/", true},
		{"+/#", "a", true},
		{"+/+/#", "a", false},
		{"a/+/#", "a/b", true},
		{"sport/tennis/+", "sport/tennis/player1", true},
		{"sport/tennis/+", "sport/tennis/player1/ranking", false},
		{"sport/+/player1", "sport/tennis/player1", true},
		// Topics beginning with '$' are not matched by a leading wildcard
		// [MQTT-4.7.2-1].
		{"#", "$SYS/x", false},
		{"+/x", "$SYS/x", false},
		{"+", "$", false},
		{"$SYS/#", "$SYS/x", true},
		{"$SYS/+", "$SYS/x", true},
		{"a/#", "a/$x", true},
		{"a/+", "a/$x", true},
		{"A/b", "a/b", false}, // case sensitive
	}
	for _, tt := range tests {
		if got := Match(tt.filter, tt.topic); got != tt.want {
			t.Errorf("Match(%q, %q): got %v, want %v", tt.filter, tt.topic, got, tt.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { Match("a/+/c/#", "a/b/c/d/e") }); n != 0 {
		t.Errorf("Match allocates %v times, want 0", n)
	}
}

func TestVarInt(t *testing.T) {
	tests := []struct {
		v   uint32
		enc []byte
	}{
		{0, []byte{0x00}},
		{127, []byte{0x7f}},
		{128, []byte{0x80, 0x01}},
		{16383, []byte{0xff, 0x7f}},
		{16384, []byte{0x80, 0x80, 0x01}},
		{2097151, []byte{0xff, 0xff, 0x7f}},
		{2097152, []byte{0x80, 0x80, 0x80, 0x01}},
		{MaxVarInt, []byte{0xff, 0xff, 0xff, 0x7f}},
	}
	for _, tt := range tests {
		got := AppendVarInt(nil, tt.v)
		if string(got) != string(tt.enc) {
			t.Errorf("AppendVarInt(%d): got % x, want % x", tt.v, got, tt.enc)
		}
		if n := VarIntLen(tt.v); n != len(tt.enc) {
			t.Errorf("VarIntLen(%d): got %d, want %d", tt.v, n, len(tt.enc))
		}
		p := parser{b: tt.enc}
		if v, err := p.varint("v"); err != nil || v != tt.v || p.rest() != 0 {
			t.Errorf("varint(% x): got (%d, %v), want %d", tt.enc, v, err, tt.v)
		}
	}
	// Decoding: non-minimal forms are accepted; a fifth byte is malformed,
	// as is a truncated integer.
	decodeTests := []struct {
		enc []byte
		v   uint32
		ok  bool
	}{
		{[]byte{0x80, 0x00}, 0, true},
		{[]byte{0x81, 0x80, 0x80, 0x00}, 1, true},
		{[]byte{0x80, 0x80, 0x80, 0x80, 0x01}, 0, false},
		{[]byte{0xff, 0xff, 0xff, 0xff, 0x7f}, 0, false},
		{[]byte{0x80}, 0, false},
		{nil, 0, false},
	}
	for _, tt := range decodeTests {
		p := parser{b: tt.enc}
		v, err := p.varint("v")
		if (err == nil) != tt.ok || v != tt.v {
			t.Errorf("varint(% x): got (%d, %v), want (%d, ok=%v)", tt.enc, v, err, tt.v, tt.ok)
		}
	}
}

func TestValidUTF8String(t *testing.T) {
	tests := []struct {
		s  string
		ok bool
	}{
		{"", true},
		{"hello", true},
		{"\x01\x1f\x7f", true},              // control characters: allowed
		{"\u0080\u009f", true},              // C1 controls: allowed
		{"\uffff\ufffe", true},              // non-characters: allowed
		{"\ufeffbom", true},                 // BOM: kept [MQTT-1.5.4-3]
		{"\U0010ffff", true},                // highest code point
		{"\xef\xbf\xbd", true},              // a genuine U+FFFD
		{"a\x00", false},                    // U+0000 [MQTT-1.5.4-2]
		{"\xed\xa0\x80", false},             // U+D800 [MQTT-1.5.4-1]
		{"\xed\xbf\xbf", false},             // U+DFFF
		{"\xc0\x80", false},                 // overlong NUL
		{"\xe0\x80\xaf", false},             // overlong '/'
		{"\xf4\x90\x80\x80", false},         // above U+10FFFF
		{"\xc3", false},                     // truncated
		{"\x80", false},                     // stray continuation byte
		{strings.Repeat("a", 65536), false}, // too long for the wire
	}
	for _, tt := range tests {
		err := ValidUTF8String(tt.s)
		if (err == nil) != tt.ok {
			t.Errorf("ValidUTF8String(%.20q): got %v, want ok=%v", tt.s, err, tt.ok)
		}
		var pe *Error
		if err != nil && (!errors.As(err, &pe) || pe.Code != CodeMalformedPacket) {
			t.Errorf("ValidUTF8String(%.20q): got %v, want code %v", tt.s, err, CodeMalformedPacket)
		}
	}
}

func TestReasonCodeString(t *testing.T) {
	for c := 0; c < 256; c++ {
		s := ReasonCode(c).String()
		if s == "" {
			t.Errorf("ReasonCode(%#x).String() is empty", c)
		}
	}
	if got := CodeMalformedPacket.String(); got != "Malformed Packet" {
		t.Errorf("got %q, want %q", got, "Malformed Packet")
	}
	if got := ReasonCode(0x7f).String(); got != "ReasonCode(0x7f)" {
		t.Errorf("got %q, want %q", got, "ReasonCode(0x7f)")
	}
	// Every code a packet may carry has a name.
	for _, set := range []*codeSet{&connackCodes, &pubackCodes, &pubrelCodes, &subackCodes, &unsubackCodes, &disconnectCodes, &authCodes} {
		for c := 0; c < 256; c++ {
			if set.has(ReasonCode(c)) && strings.HasPrefix(ReasonCode(c).String(), "ReasonCode(") {
				t.Errorf("code %#x has no name", c)
			}
		}
	}
}
