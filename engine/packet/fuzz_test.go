package packet

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
)

// FuzzDecode feeds arbitrary packets to Decode. It must never panic; every
// error must be an *Error; and whatever decodes must encode, and the
// encoding must decode to the same value and re-encode to the same bytes.
func FuzzDecode(f *testing.F) {
	for i := range fixtures {
		fx := &fixtures[i]
		first, body := splitFrame(f, fx.raw)
		f.Add(first, body, readVersion(fx))
		f.Add(first, body, fx.version)
	}
	f.Fuzz(func(t *testing.T, first byte, body []byte, version byte) {
		orig := bytes.Clone(body)
		p, err := Decode(first, body, version)
		if !bytes.Equal(body, orig) {
			t.Fatal("Decode modified its input")
		}
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("Decode error %v (%T) is not an *Error", err, err)
			}
			if p != nil {
				if _, ok := p.(*Connect); !ok {
					t.Fatalf("Decode returned %T with error %v; only *Connect may accompany an error", p, err)
				}
			}
			return
		}
		checkRoundTrip(t, p, version)

		if p.Type() == PUBLISH {
			// DecodePublish into a dirty reused struct agrees with Decode.
			reused := Publish{Topic: "junk", QoS: 2, Payload: []byte("junk"), Props: Properties{
				Present: ^uint64(0), ContentType: "junk",
				User: make([]UserProperty, 3, 8), SubscriptionIDs: make([]uint32, 2, 8)}}
			if err := DecodePublish(first, body, version, &reused); err != nil {
				t.Fatalf("DecodePublish: %v, Decode succeeded", err)
			}
			want := p.(*Publish)
			normalize(&reused)
			normalize(want)
			if !reflect.DeepEqual(&reused, want) {
				t.Fatalf("DecodePublish into a reused struct:\ngot  %+v\nwant %+v", &reused, want)
			}
		}
	})
}

// checkRoundTrip encodes p, decodes the result and compares.
func checkRoundTrip(t *testing.T, p Packet, version byte) {
	t.Helper()
	v := version
	readV := version
	if c, ok := p.(*Connect); ok {
		v, readV = c.ProtocolLevel, 0
	}
	enc, err := p.Append(nil, v)
	if err != nil {
		t.Fatalf("decoded %+v but cannot encode it: %v", p, err)
	}
	p2, err := Read(bufio.NewReader(bytes.NewReader(enc)), readV, 0)
	if err != nil {
		t.Fatalf("re-encoded % x does not decode: %v\npacket %+v", enc, err, p)
	}
	enc2, err := p2.Append(nil, v)
	if err != nil || !bytes.Equal(enc, enc2) {
		t.Fatalf("encoding is not stable:\n% x\n% x (%v)", enc, enc2, err)
	}
	normalize(p)
	normalize(p2)
	if !reflect.DeepEqual(p, p2) {
		t.Fatalf("round trip differs:\ngot  %+v\nwant %+v", p2, p)
	}
}

// FuzzRead feeds arbitrary byte streams to Read as a connection would:
// version 0 until a CONNECT decodes, then that CONNECT's level. Errors
// must be io.EOF, io.ErrUnexpectedEOF or *Error; packets must fit maxSize
// and round-trip.
func FuzzRead(f *testing.F) {
	streams := map[byte][]byte{}
	for i := range fixtures {
		fx := &fixtures[i]
		if fx.want == nil {
			continue
		}
		if fx.want.Type() == CONNECT {
			streams[fx.version] = append(bytes.Clone(fx.raw), streams[fx.version]...)
		} else {
			streams[fx.version] = append(streams[fx.version], fx.raw...)
		}
		f.Add(fx.raw, readVersion(fx), uint32(0))
	}
	for v, s := range streams {
		f.Add(s, byte(0), uint32(0))
		f.Add(s, v, uint32(0))
		f.Add(s, v, uint32(20))
	}
	f.Fuzz(func(t *testing.T, data []byte, version byte, maxSize uint32) {
		br := bytes.NewReader(data)
		r := bufio.NewReaderSize(br, 16)
		consumed := func() int64 { return br.Size() - int64(br.Len()) - int64(r.Buffered()) }
		for range 1000 {
			before := consumed()
			p, err := Read(r, version, maxSize)
			if err != nil {
				var pe *Error
				if err != io.EOF && err != io.ErrUnexpectedEOF && !errors.As(err, &pe) {
					t.Fatalf("Read error %v (%T) is neither EOF nor *Error", err, err)
				}
				return
			}
			if n := consumed() - before; maxSize != 0 && n > int64(maxSize) {
				t.Fatalf("Read returned a %d-byte packet with maxSize %d", n, maxSize)
			}
			checkRoundTrip(t, p, version)
			if c, ok := p.(*Connect); ok && version == 0 {
				version = c.ProtocolLevel
			}
		}
	})
}
