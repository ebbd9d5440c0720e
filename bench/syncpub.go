package main

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/keelmq/keel/engine/client"
	"github.com/keelmq/keel/engine/packet"
)

// ackSample is one synchronous QoS 1 publish: when it was sent and when
// its PUBACK came back, on clock().
type ackSample struct{ sent, acked int64 }

// syncPublisher publishes QoS 1 with a window of 1 (each PUBLISH waits for
// the PUBACK of the one before) and keeps every round trip with its time,
// so that figures can be taken afterwards for any window of the run: the
// latency of a core that stalls shows up in the publishes that overlap
// the stall.
type syncPublisher struct {
	c        *client.Client
	topic    string
	payload  []byte
	samples  []ackSample  // owned by run until it returns
	rejected int64        // PUBACKs with a failure reason code; owned by run
	acked    atomic.Int64 // progress
	lastAck  atomic.Int64 // clock() of the last PUBACK (or of the start)
}

func newSyncPublisher(c *client.Client, topic string, size int) *syncPublisher {
	p := &syncPublisher{c: c, topic: topic, payload: make([]byte, size)}
	for i := range p.payload {
		p.payload[i] = byte('a' + i%26)
	}
	return p
}

// run publishes until stop is closed (the publish in flight then finishes).
// A PUBACK that does not come within ackTimeout ends the run with an
// error.
func (p *syncPublisher) run(stop <-chan struct{}, ackTimeout time.Duration) error {
	pub := packet.Publish{QoS: 1, Topic: p.topic, Payload: p.payload}
	p.lastAck.Store(clock())
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
		sent := clock()
		code, err := p.c.PublishWait(ctx, &pub)
		acked := clock()
		cancel()
		p.lastAck.Store(acked)
		if err != nil {
			return fmt.Errorf("sync publisher %s: %w", p.topic, err)
		}
		if code >= 0x80 {
			p.rejected++
			continue
		}
		p.samples = append(p.samples, ackSample{sent, acked})
		p.acked.Add(1)
	}
}

// span is a stretch of a run on clock(): [from, to].
type span struct{ from, to int64 }

func (s span) seconds() float64 { return float64(s.to-s.from) / 1e9 }

func (s span) overlaps(a ackSample) bool { return a.sent <= s.to && a.acked >= s.from }

// within reports whether a lies wholly inside s.
func (s span) within(a ackSample) bool { return a.sent >= s.from && a.acked <= s.to }

// ackFigures are the PUBACK latencies of the publishes in one window.
type ackFigures struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_us"`
	P99   float64 `json:"p99_us"`
	Max   float64 `json:"max_us"`
	// Gap is the longest time in the window with no PUBACK arriving at
	// any publisher: how long the broker kept everyone waiting.
	Gap float64 `json:"gap_us"`
}

// figures summarises the samples that keep says to keep. gapIn, if its
// length is positive, bounds the ack-gap computation (the gap to its edges
// counts too).
func figures(samples []ackSample, keep func(ackSample) bool, gapIn span) ackFigures {
	var h hist
	var acks []int64
	for _, a := range samples {
		if keep(a) {
			h.record(a.acked - a.sent)
			acks = append(acks, a.acked)
		}
	}
	f := ackFigures{Count: int64(h.n), P50: h.quantile(0.5) / 1e3, P99: h.quantile(0.99) / 1e3, Max: float64(h.max) / 1e3}
	if gapIn.to > gapIn.from {
		slices.Sort(acks)
		prev := gapIn.from
		var gap int64
		for _, t := range acks {
			if t > gapIn.to {
				break
			}
			if t > prev {
				gap = max(gap, t-prev)
				prev = t
			}
		}
		gap = max(gap, gapIn.to-prev)
		f.Gap = float64(gap) / 1e3
	}
	return f
}

func (f ackFigures) String() string {
	s := fmt.Sprintf("p50 %s  p99 %s  max %s  (%d PUBACKs)", fmtUS(f.P50), fmtUS(f.P99), fmtUS(f.Max), f.Count)
	if f.Gap > 0 {
		s += fmt.Sprintf(", longest wait for any PUBACK %s", fmtUS(f.Gap))
	}
	return s
}
