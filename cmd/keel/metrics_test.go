package main

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
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
	for _, want := range []string{"keel_clients_connected 0", "keel_store_syncs_total", "keel_store_txns_total", "keel_messages_received_total 0", "keel_store_bytes"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(string(body), "keel_store_syncs_total 0\n") {
		t.Errorf("keel_store_syncs_total is 0 after a synced commit")
	}
}
