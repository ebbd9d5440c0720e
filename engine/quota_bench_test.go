package engine

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/keelmq/keel/engine/packet"
	"github.com/keelmq/keel/listener"
	"github.com/keelmq/keel/wal"
)

// BenchmarkAdmitQuotas measures what the queue quotas add to routing one
// QoS 1 message on the core: admit (match, then each target's quota
// check) for four persistent subscriber sessions, without any quota
// (every bound negative: none) and with quotas configured (the broker's
// bounds and a per-session override from Options.QueueLimits). The
// end-to-end fan-in (bench/quotas.sh) is too noisy on a shared machine to
// see a few nanoseconds; this is where they are.
func BenchmarkAdmitQuotas(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"quotas=off", Options{MaxQueuedMessages: -1, MaxQueuedBytes: -1, MaxMemQueue: -1}},
		{"quotas=on", Options{MaxQueuedMessages: 1_000_000, MaxQueuedBytes: 1 << 30,
			QueueLimits: func(id, _ string) (int64, int64, bool) { return 2_000_000, 2 << 30, true }}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			br, stop := benchBroker(b, tc.opts)
			defer stop()
			m := &wal.Message{Topic: "f/a", QoS: 1, Payload: make([]byte, 64)}
			done := make(chan struct{})
			b.ReportAllocs()
			br.post(event{kind: evFunc, fn: func() {
				defer close(done)
				for b.Loop() {
					if ok, _ := br.admit(m, nil, true); !ok {
						b.Error("refused")
						return
					}
				}
				if n := len(br.core.targets); n != 4 {
					b.Errorf("targets %d, want 4", n)
				}
			}})
			<-done
		})
	}
}

// benchBroker starts a broker on an in-memory Pebble with four offline
// persistent sessions subscribed to f/#.
func benchBroker(b *testing.B, opts Options) (*Broker, func()) {
	b.Helper()
	l, err := wal.Open(wal.Options{Dir: "data", FS: vfs.NewMem(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	opts.SysInterval = -1
	br, err := New(opts, l)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &listener.Server{Handler: handler(br), Logger: opts.Logger}
	go srv.Serve(ln)
	for i := range 4 {
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		br := bufio.NewReader(nc)
		cp := &packet.Connect{ProtocolName: "MQTT", ProtocolLevel: packet.V311, ClientID: fmt.Sprint("s", i), KeepAlive: 30}
		for _, p := range []packet.Packet{cp, &packet.Subscribe{PacketID: 1, Subs: []packet.Subscription{{Filter: "f/#", QoS: 1}}}} {
			buf, _ := p.Append(nil, packet.V311)
			if _, err := nc.Write(buf); err != nil {
				b.Fatal(err)
			}
			if _, err := packet.Read(br, packet.V311, 0); err != nil {
				b.Fatal(err)
			}
		}
		nc.Write([]byte{byte(packet.DISCONNECT) << 4, 0})
		nc.Close()
	}
	// Wait until all four are offline.
	for {
		n := int64(-1)
		done := make(chan struct{})
		br.post(event{kind: evFunc, fn: func() { n = int64(len(br.core.online)); close(done) }})
		<-done
		if n == 0 {
			break
		}
	}
	return br, func() { ln.Close(); br.Close(); l.Close() }
}
