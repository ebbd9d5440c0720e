package wal

import (
	"bytes"
	"crypto/rand"
	"errors"
	"reflect"
	"testing"
)

func fullMessage(payload []byte) Message {
	return Message{
		Topic:            "meter/42/reading",
		Payload:          payload,
		QoS:              2,
		Retain:           true,
		ExpireAt:         1_700_000_000_123,
		HasPayloadFormat: true,
		PayloadFormat:    1,
		ContentType:      "application/json",
		ResponseTopic:    "reply/42",
		CorrelationData:  []byte{1, 2, 3},
		User:             []UserProperty{{"a", "1"}, {"b", ""}, {"a", "2"}},
	}
}

func compressible(n int) []byte { return bytes.Repeat([]byte("kwh=12.5;"), n/9+1)[:n] }

func random(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func TestMessageRoundTrip(t *testing.T) {
	cases := []struct {
		name       string
		m          Message
		threshold  int
		compressed bool
	}{
		{"zero", Message{}, 1024, false},
		{"plain 3.1.1", Message{Topic: "a/b", Payload: []byte("hi"), QoS: 1}, 1024, false},
		{"all properties", fullMessage([]byte("x")), 1024, false},
		{"empty correlation data", Message{Topic: "t", CorrelationData: []byte{}}, 1024, false},
		{"negative expiry", Message{Topic: "t", ExpireAt: -5}, 1024, false},
		{"below threshold", Message{Topic: "t", Payload: compressible(1023)}, 1024, false},
		{"at threshold", Message{Topic: "t", Payload: compressible(1024)}, 1024, true},
		{"large compressible", fullMessage(compressible(1 << 20)), 1024, true},
		{"incompressible stays raw", Message{Topic: "t", Payload: random(8192)}, 1024, false},
		{"compression disabled", Message{Topic: "t", Payload: compressible(8192)}, -1, false},
		{"threshold zero value compresses everything", Message{Topic: "t", Payload: compressible(100)}, 0, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := AppendMessage([]byte("prefix"), &c.m, c.threshold)
			if !bytes.HasPrefix(b, []byte("prefix")) {
				t.Fatalf("Append overwrote dst")
			}
			b = b[len("prefix"):]
			if got := b[1]&msgCompressed != 0; got != c.compressed {
				t.Errorf("compressed = %v, want %v", got, c.compressed)
			}
			if c.compressed && len(b) >= len(c.m.Payload) {
				t.Errorf("compressed record is %d bytes for a %d byte payload", len(b), len(c.m.Payload))
			}
			got, err := DecodeMessage(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.m) {
				t.Errorf("got %+v, want %+v", got, c.m)
			}
			// The decoded message must not alias the input.
			clear(b)
			if !reflect.DeepEqual(got, c.m) {
				t.Errorf("decoded message changed with its input")
			}
		})
	}
}

func TestEntrySessionSubscriptionRoundTrip(t *testing.T) {
	inline := fullMessage(compressible(4096))
	entries := []Entry{
		{},
		{State: EntryQueued, QoS: 1, Shared: 77},
		{State: EntrySent, PacketID: 65535, QoS: 2, Retain: true, SubIDs: []uint32{1, 268435455}, Inline: &inline},
		{State: EntryReleased, PacketID: 9, QoS: 2},
	}
	for _, e := range entries {
		got, err := DecodeEntry(AppendEntry(nil, &e, 1024))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, e) {
			t.Errorf("entry: got %+v, want %+v", got, e)
		}
	}
	sessions := []Session{
		{},
		{Protocol: 4, ExpirySeconds: 0xFFFFFFFF},
		{Protocol: 5, ExpirySeconds: 3600, DisconnectedAt: 1_700_000_000_000,
			Will: &Will{Message: fullMessage(compressible(3000)), DelaySeconds: 30}},
		{Protocol: 5, Owner: &Owner{Username: "alice"}},
		{Protocol: 4, Owner: &Owner{Anonymous: true}},
		{Protocol: 5, Owner: &Owner{Username: ""}, // MQTT allows an empty username
			Will: &Will{Message: fullMessage(nil), DelaySeconds: 1}},
	}
	for _, s := range sessions {
		got, err := DecodeSession(AppendSession(nil, &s, 1024))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, s) {
			t.Errorf("session: got %+v, want %+v", got, s)
		}
	}
	subs := []Subscription{
		{},
		{QoS: 2, NoLocal: true, RetainAsPublished: true, RetainHandling: 2, SubID: 268435455},
		{QoS: 1, RetainHandling: 1, SubID: 7},
	}
	for _, s := range subs {
		got, err := DecodeSubscription(AppendSubscription(nil, &s))
		if err != nil {
			t.Fatal(err)
		}
		if got != s {
			t.Errorf("subscription: got %+v, want %+v", got, s)
		}
	}
}

// TestDecodeGarbage feeds every decoder every truncation of a valid record,
// single-byte corruptions and random bytes: each must return an error or a
// value, never panic, and truncations must always be errors.
func TestDecodeGarbage(t *testing.T) {
	inline := fullMessage(compressible(2048))
	m := fullMessage(compressible(2048))
	e := Entry{State: EntrySent, PacketID: 3, QoS: 1, SubIDs: []uint32{4, 5}, Inline: &inline}
	s := Session{Protocol: 5, ExpirySeconds: 10, Will: &Will{Message: m, DelaySeconds: 1}}
	sub := Subscription{QoS: 1, SubID: 3}
	decoders := []struct {
		name   string
		valid  []byte
		decode func([]byte) error
	}{
		{"message", AppendMessage(nil, &m, 1024), func(b []byte) error { _, err := DecodeMessage(b); return err }},
		{"entry", AppendEntry(nil, &e, 1024), func(b []byte) error { _, err := DecodeEntry(b); return err }},
		{"session", AppendSession(nil, &s, 1024), func(b []byte) error { _, err := DecodeSession(b); return err }},
		{"subscription", AppendSubscription(nil, &sub), func(b []byte) error { _, err := DecodeSubscription(b); return err }},
	}
	for _, d := range decoders {
		t.Run(d.name, func(t *testing.T) {
			for i := range len(d.valid) {
				if err := d.decode(d.valid[:i]); err == nil {
					t.Fatalf("truncated to %d of %d bytes: no error", i, len(d.valid))
				} else if !errors.Is(err, ErrCorruptRecord) {
					t.Fatalf("error %v does not wrap ErrCorruptRecord", err)
				}
			}
			if err := d.decode(append(bytes.Clone(d.valid), 0)); err == nil {
				t.Errorf("trailing byte: no error")
			}
			bad := bytes.Clone(d.valid)
			bad[0] = 2
			if err := d.decode(bad); err == nil {
				t.Errorf("unknown version: no error")
			}
			for i := range d.valid {
				for _, x := range []byte{0xff, 0x80, 0x01} {
					b := bytes.Clone(d.valid)
					b[i] ^= x
					_ = d.decode(b) // must not panic
				}
			}
			for range 2000 {
				_ = d.decode(random(int(random(1)[0])))
			}
		})
	}
}

func TestCompressedLengthBomb(t *testing.T) {
	// A compressed payload whose S2 header claims 4 GiB must be refused, not
	// allocated.
	b := []byte{recordV1, msgCompressed, 0, 0, 0, 6, 0xff, 0xff, 0xff, 0xff, 0x0f, 0}
	if _, err := DecodeMessage(b); err == nil {
		t.Fatal("no error")
	}
}

func FuzzDecodeEntry(f *testing.F) {
	inline := fullMessage(compressible(2048))
	e := Entry{State: EntrySent, PacketID: 3, QoS: 1, SubIDs: []uint32{4, 5}, Inline: &inline}
	f.Add(AppendEntry(nil, &e, 1024))
	f.Add(AppendEntry(nil, &Entry{Shared: 5}, 1024))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeEntry(b)
		if err != nil {
			return
		}
		// What decodes re-encodes to something that decodes the same.
		again, err := DecodeEntry(AppendEntry(nil, &e, 1024))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(again, e) {
			t.Fatalf("got %+v, want %+v", again, e)
		}
	})
}
