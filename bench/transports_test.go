package main

import (
	"crypto/x509/pkix"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/keelmq/keel/engine/packet"
	"github.com/keelmq/keel/listener/listenertest"
)

// The load generator over each transport, against keel configured as bench
// transports configures it: every acknowledged message is delivered.
func TestLoadOverTransports(t *testing.T) {
	dir := t.TempDir()
	ca := listenertest.NewCA(t, "ca")
	cert := ca.Issue("server", listenertest.Options{Subject: pkix.Name{CommonName: "localhost"}, Server: true})
	files := &tlsFiles{ca: ca.File, cert: cert.CertFile, key: cert.KeyFile}
	tc := &transportsConfig{keel: buildKeel(t, dir)}
	for _, kind := range []string{"tls", "ws", "wss"} {
		t.Run(kind, func(t *testing.T) {
			port, err := freePort()
			if err != nil {
				t.Fatal(err)
			}
			bdir := t.TempDir()
			cmd, err := tc.brokerCmd("keel", kind, port, files, bdir)
			if err != nil {
				t.Fatal(err)
			}
			p, err := startProc("keel", cmd, filepath.Join(bdir, "keel.log"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.stop(5 * time.Second) })
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			if err := p.listening(addr, 15*time.Second); err != nil {
				t.Fatal(err)
			}
			cfg := testConfig(addr, packet.V5)
			cfg.pattern, cfg.pubs, cfg.subs, cfg.count, cfg.window = "fanin", 2, 1, 200, 16
			if cfg.transport, err = newTransport(kind, files.ca, "/mqtt"); err != nil {
				t.Fatal(err)
			}
			// Plain TCP to a TLS or WebSocket listener gets no CONNACK.
			plain := testConfig(addr, packet.V5)
			plain.count = 1
			plain.quiet = true
			if _, err := runLoad(plain, io.Discard); err == nil {
				t.Fatalf("plain TCP to the %s listener: no error", kind)
			}
			r, err := runLoad(cfg, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if r.Acked != 400 || r.Delivered != 400 || r.failed() {
				t.Fatalf("over %s: %d acked, %d delivered, %d lost, %d dups; want 400, 400, 0, 0", kind, r.Acked, r.Delivered, r.Lost, r.Dups)
			}
		})
	}
}
