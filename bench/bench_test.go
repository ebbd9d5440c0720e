package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/keelmq/keel/engine/packet"
)

// BenchmarkPubSub publishes 64-byte messages from one publisher to one
// subscriber over persistent 5.0 sessions; one op is one message
// acknowledged and delivered. With window=1 the publisher waits for each
// acknowledgement, so ns/op is the synchronous round trip (on Keel: one
// synced commit); window=64 lets commits be shared.
//
// The broker is KEEL_BENCH_ADDR (host:port; KEEL_BENCH_BROKER names it in
// the results) or, when that is unset, a keel built from ./cmd/keel and
// started on a free loopback port with a fresh data directory.
//
//	go test ./bench -run '^$' -bench PubSub -count 10 | tee new.txt
//	KEEL_BENCH_ADDR=127.0.0.1:1883 KEEL_BENCH_BROKER=mosquitto go test ./bench -run '^$' -bench PubSub
func BenchmarkPubSub(b *testing.B) {
	addr, name := os.Getenv("KEEL_BENCH_ADDR"), os.Getenv("KEEL_BENCH_BROKER")
	if addr == "" {
		addr, name = startKeel(b), "keel"
	} else if name == "" {
		name = "external"
	}
	for _, qos := range []byte{1, 2} {
		for _, window := range []int{1, 64} {
			b.Run(fmt.Sprintf("broker=%s/qos=%d/window=%d", name, qos, window), func(b *testing.B) {
				benchPubSub(b, addr, qos, window)
			})
		}
	}
}

func benchPubSub(b *testing.B, addr string, qos byte, window int) {
	cfg := &config{
		addr: addr, version: packet.V5, pubs: 1, subs: 1, qos: qos, size: 64,
		window: window, persistent: true, pattern: "fanin", ackTimeout: 10 * time.Second,
	}
	id := newRunID()
	opts := func(name string) connOptions {
		return connOptions{addr: addr, version: cfg.version, clientID: "kb-" + id + "-" + name, persistent: true, expiry: 3600}
	}
	topic := "bench/" + id + "/t"
	sub := newSubscriber(0, topic, 0, 1, cfg)
	sc, err := dial(sub.connOptions(opts("s0")))
	if err != nil {
		b.Fatal(err)
	}
	sub.c = sc
	if err := subscribe(sc, topic, qos); err != nil {
		b.Fatal(err)
	}
	pub := newPublisher(0, topic, cfg)
	pc, err := dial(pub.connOptions(opts("p0")))
	if err != nil {
		b.Fatal(err)
	}
	pub.attach(pc)
	measureStart = 0
	subDone := make(chan error, 1)
	go func() { subDone <- sub.wait() }()
	defer func() {
		sub.stop()
		disconnect(sc, true)
		disconnect(pc, true)
		if err := <-subDone; err != nil {
			b.Error(err)
		}
	}()

	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		if err := pub.sendOne(); err != nil {
			b.Fatal(err)
		}
	}
	if err := pub.finish(cfg.ackTimeout); err != nil {
		b.Fatal(err)
	}
	sent := pub.sent.Load()
	for deadline := time.Now().Add(10 * time.Second); sub.unique.Load() < sent; {
		if time.Now().After(deadline) {
			b.Fatalf("delivered %d of %d acknowledged messages", sub.unique.Load(), sent)
		}
		time.Sleep(100 * time.Microsecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(sent)/time.Since(start).Seconds(), "msg/s")
	b.ReportMetric(pub.ackHist.quantile(0.5)/1e3, "ack-p50-µs")
	b.ReportMetric(pub.ackHist.quantile(0.99)/1e3, "ack-p99-µs")
	if qos == 2 {
		b.ReportMetric(pub.doneHist.quantile(0.5)/1e3, "pubcomp-p50-µs")
	}
}

// startKeel builds ./cmd/keel and serves it on a free loopback port with a
// fresh data directory until the test or benchmark ends.
func startKeel(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	bin := buildKeel(tb, dir)
	port, err := freePort()
	if err != nil {
		tb.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p, err := startProc("keel", exec.Command(bin, "serve", "--listen", addr, "--data", filepath.Join(dir, "data")), filepath.Join(dir, "keel.log"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.stop(5 * time.Second) })
	if err := p.listening(addr, 15*time.Second); err != nil {
		tb.Fatal(err)
	}
	return addr
}

// buildKeel builds ./cmd/keel into dir.
func buildKeel(tb testing.TB, dir string) string {
	tb.Helper()
	bin := filepath.Join(dir, "keel")
	gobin, err := exec.LookPath("go")
	if err != nil {
		tb.Fatalf("building keel: %v", err)
	}
	build := exec.Command(gobin, "build", "-o", bin, "github.com/keelmq/keel/cmd/keel")
	if out, err := build.CombinedOutput(); err != nil {
		tb.Fatalf("building keel: %v\n%s", err, out)
	}
	return bin
}
