package main

import (
	"io"
	"testing"
	"time"

	"github.com/keelmq/keel/engine/packet"
)

// TestBurst runs a small burst against a keel built from the tree: every
// clean reconnect gets its CONNACK without the old session, and the
// publisher's latencies are kept on both sides of the burst's start.
func TestBurst(t *testing.T) {
	addr := startKeel(t)
	for _, v := range []byte{packet.V311, packet.V5} {
		cfg := &burstConfig{addr: addr, version: v, n: 100, concurrency: 20, queued: 2, size: 64,
			idle: 200 * time.Millisecond, ackTimeout: 10 * time.Second}
		r, err := runBurst(cfg, io.Discard)
		if err != nil {
			t.Fatalf("v%d: %v", v, err)
		}
		if r.Failed != 0 || r.Present != 0 {
			t.Errorf("v%d: %d reconnects failed, %d had session present; want 0 and 0", v, r.Failed, r.Present)
		}
		if r.Burst.Count == 0 || r.Idle.Count == 0 {
			t.Errorf("v%d: PUBACKs during the burst %d, before it %d; want some of each", v, r.Burst.Count, r.Idle.Count)
		}
		if r.Seconds <= 0 || r.Burst.Max < r.Burst.P99 || r.Burst.P99 < r.Burst.P50 {
			t.Errorf("v%d: burst %.3fs, PUBACK p50 %v p99 %v max %v: not in order", v, r.Seconds, r.Burst.P50, r.Burst.P99, r.Burst.Max)
		}
	}
}

// TestExpiry runs a small mass expiry after kill -9 against a keel built
// from the tree: the sessions come back and then go, the publishers are
// measured inside and outside the window, and the fsyncs are read.
func TestExpiry(t *testing.T) {
	dir := t.TempDir()
	cfg := &expiryConfig{keel: buildKeel(t, dir), tmp: dir, n: 100, expiry: 2, pubs: 4, size: 64,
		before: 500 * time.Millisecond, after: time.Second, post: 500 * time.Millisecond, ackTimeout: 10 * time.Second}
	var rp reaper
	r, err := runExpiry(cfg, &rp, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if r.Checked != 3 || r.Present != 0 {
		t.Errorf("%d of %d sessions still present after the window; want 0 of 3", r.Present, r.Checked)
	}
	if r.In.Count == 0 || r.Out.Count == 0 || r.Delivered == 0 {
		t.Errorf("PUBACKs in the window %d, outside %d, delivered %d; want some of each", r.In.Count, r.Out.Count, r.Delivered)
	}
	if r.WindowTo <= r.WindowFrom || r.WindowFrom <= 0 {
		t.Errorf("window %.2fs to %.2fs after the restart: want a positive span", r.WindowFrom, r.WindowTo)
	}
	// The publishers' messages go to a non-persistent subscriber and cost
	// no sync: a sync in the window is the expiry's deletions.
	if r.Syncs < 1 {
		t.Errorf("fsyncs in the window %d: want at least 1 (the expired sessions' deletion)", r.Syncs)
	}
}
