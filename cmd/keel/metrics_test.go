package main

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/keelmq/keel/engine"
	"github.com/keelmq/keel/wal"
)

func TestMetricsExposeTheStoreAndBroker(t *testing.T) {
	l, err := wal.Open(wal.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	txn := &wal.Txn{}
	txn.Set([]byte("k"), []byte("v"))
	if err := l.Commit(context.Background(), txn); err != nil {
		t.Fatal(err)
	}
	b, err := engine.New(engine.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), SysInterval: -1}, l)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	srv := httptest.NewServer(metricsHandler(b, nil))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"keel_clients_connected 0", "keel_store_syncs_total", "keel_store_txns_total", "keel_messages_received_total 0", "keel_store_bytes",
		"keel_sessions_persistent 0", "keel_sessions_offline 0", "keel_queued_messages 0", "keel_queued_bytes 0",
		`keel_messages_dropped_total{reason="too_large"} 0`, `keel_messages_dropped_total{reason="queue_full"} 0`,
		`keel_messages_dropped_total{reason="expired"} 0`, `keel_messages_dropped_total{reason="offline_qos0"} 0`,
		`keel_messages_dropped_total{reason="queue_full_oldest"} 0`, `keel_messages_dropped_total{reason="memory_queue_full"} 0`,
		`keel_refusals_total{reason="store_failed"} 0`, `keel_refusals_total{reason="queue_full"} 0`,
		`keel_refusals_total{reason="memory_queue_full"} 0`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	syncs := metricValue(t, body, "keel_store_syncs_total")
	if syncs == "0" {
		t.Errorf("keel_store_syncs_total is 0 after a synced commit")
	}
	// The fsync histogram holds one sample per counted sync; the buckets
	// are cumulative, so the last bound and +Inf hold them all.
	for _, name := range []string{"keel_store_fsync_seconds_count", `keel_store_fsync_seconds_bucket{le="+Inf"}`, `keel_store_fsync_seconds_bucket{le="1"}`} {
		if got := metricValue(t, body, name); got != syncs {
			t.Errorf("%s = %s, want keel_store_syncs_total (%s)", name, got, syncs)
		}
	}
	if !strings.Contains(string(body), `keel_store_fsync_seconds_bucket{le="5e-05"}`) {
		t.Errorf("keel_store_fsync_seconds lacks its 50us bucket")
	}
}

// metricValue is the value of the sample named name in a text exposition.
func metricValue(t *testing.T, body []byte, name string) string {
	t.Helper()
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Errorf("metrics lack %s", name)
	return ""
}

// scrapeBroker starts a broker on a real store, with no $SYS updates (the
// only other reader of the store's metrics), and serves its /metrics.
func scrapeBroker(tb testing.TB) (*wal.Log, *httptest.Server) {
	l, err := wal.Open(wal.Options{Dir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	b, err := engine.New(engine.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), SysInterval: -1}, l)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { b.Close() })
	srv := httptest.NewServer(metricsHandler(b, nil))
	tb.Cleanup(srv.Close)
	return l, srv
}

func scrape(tb testing.TB, srv *httptest.Server) []byte {
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return body
}

// One scrape takes one snapshot of the broker, and so asks Pebble for its
// metrics once: keel_store_metrics_reads_total, which counts those reads
// in the store, grows by exactly one from one scrape to the next, and the
// store's own count agrees.
func TestMetricsOneSnapshotPerScrape(t *testing.T) {
	l, srv := scrapeBroker(t)
	var last uint64
	for i := range 4 {
		before := l.Stats().MetricsReads // counts itself
		v, err := strconv.ParseUint(metricValue(t, scrape(t, srv), "keel_store_metrics_reads_total"), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		if v != before+1 {
			t.Errorf("scrape %d: keel_store_metrics_reads_total = %d, want %d (one more than before it)", i, v, before+1)
		}
		if i > 0 && v != last+2 { // the scrape and the l.Stats above
			t.Errorf("scrape %d: keel_store_metrics_reads_total = %d after %d, want %d", i, v, last, last+2)
		}
		last = v
	}
}

// BenchmarkScrape: one /metrics scrape, with the Pebble metric reads it
// costs (pebble-reads/op, 1 when the collector takes one snapshot).
func BenchmarkScrape(b *testing.B) {
	l, srv := scrapeBroker(b)
	b.ReportAllocs()
	before := l.Stats().MetricsReads
	n := 0
	for b.Loop() {
		scrape(b, srv)
		n++
	}
	reads := l.Stats().MetricsReads - before - 1
	b.ReportMetric(float64(reads)/float64(n), "pebble-reads/op")
}
