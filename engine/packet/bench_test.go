package packet

import (
	"bufio"
	"bytes"
	"testing"
)

// benchPublish is a typical telemetry message; in 5.0 it carries a few
// properties.
func benchPublish(version byte) *Publish {
	p := &Publish{
		QoS:      1,
		Topic:    "sensors/building-1/floor-3/temperature",
		PacketID: 4242,
		Payload:  bytes.Repeat([]byte("x"), 64),
	}
	if version == V5 {
		p.Props.MessageExpiry = 3600
		p.Props.ContentType = "application/json"
		p.Props.TopicAlias = 7
		p.Props.Set(PropMessageExpiry)
		p.Props.Set(PropContentType)
		p.Props.Set(PropTopicAlias)
		p.Props.User = []UserProperty{{"source", "gw-17"}}
	}
	return p
}

var benchVersions = []struct {
	name string
	v    byte
}{{"version=3.1.1", V311}, {"version=5.0", V5}}

func BenchmarkPublishAppend(b *testing.B) {
	for _, bv := range benchVersions {
		b.Run(bv.name, func(b *testing.B) {
			p := benchPublish(bv.v)
			buf := make([]byte, 0, 256)
			b.ReportAllocs()
			for b.Loop() {
				var err error
				buf, err = p.Append(buf[:0], bv.v)
				if err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(len(buf)))
		})
	}
}

func BenchmarkDecodePublish(b *testing.B) {
	for _, bv := range benchVersions {
		b.Run(bv.name, func(b *testing.B) {
			raw, err := benchPublish(bv.v).Append(nil, bv.v)
			if err != nil {
				b.Fatal(err)
			}
			first, body := splitFrame(b, raw)
			var p Publish
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				if err := DecodePublish(first, body, bv.v, &p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRead measures Read of a PUBLISH from a stream: one body buffer
// and one *Publish per packet.
func BenchmarkRead(b *testing.B) {
	for _, bv := range benchVersions {
		b.Run(bv.name, func(b *testing.B) {
			raw, err := benchPublish(bv.v).Append(nil, bv.v)
			if err != nil {
				b.Fatal(err)
			}
			stream := bytes.Repeat(raw, 1000)
			rd := bytes.NewReader(stream)
			r := bufioReader(rd)
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				if _, err := Read(r, bv.v, 0); err != nil {
					rd.Reset(stream)
					r.Reset(rd)
				}
			}
		})
	}
}

func BenchmarkMatch(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Match("sensors/+/floor-3/#", "sensors/building-1/floor-3/temperature")
	}
}

func bufioReader(r *bytes.Reader) *bufio.Reader { return bufio.NewReaderSize(r, 64<<10) }
