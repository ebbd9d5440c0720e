package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keelmq/keel/engine/client"
	"github.com/keelmq/keel/engine/packet"
)

// startKeelConf runs bin with the config text conf until the test ends and
// returns its address.
func startKeelConf(t *testing.T, bin, conf string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "keel.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p, err := startProc("keel", exec.Command(bin, "serve", "--listen", addr, "--data", filepath.Join(dir, "data"), "--config", path), filepath.Join(dir, "keel.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.stop(5 * time.Second) })
	if err := p.listening(addr, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	return addr
}

// With -msg-id every publish carries its own id: keel's dedup window (on)
// holds none of them back, and a subscriber of its own sees the property.
func TestRunMsgID(t *testing.T) {
	bin := buildKeel(t, t.TempDir())
	addr := startKeelConf(t, bin, "dedup_window = 10m\n")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ids := make(chan string, 1)
	watch, err := client.Connect(ctx, client.Options{Addr: addr, Version: packet.V5, ClientID: "watch", CleanStart: true,
		OnMessage: func(p *packet.Publish) {
			for _, u := range p.Props.User {
				if u.Key == "msg-id" {
					select {
					case ids <- strings.Clone(u.Value): // p aliases the read buffer
					default:
					}
				}
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	if _, err := watch.Subscribe(ctx, &packet.Subscribe{Subs: []packet.Subscription{{Filter: "bench/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(addr, packet.V5)
	cfg.msgID = "msg-id"
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	r, err := runLoad(cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if r.Acked != 1000 || r.Delivered != 2000 || r.Lost != 0 {
		t.Errorf("acked %d, delivered %d, lost %d; want 1000, 2000, 0 (no unique id taken for a duplicate)", r.Acked, r.Delivered, r.Lost)
	}
	select {
	case id := <-ids:
		var pub, seq int
		if n, err := fmt.Sscanf(id, "p%d-%d", &pub, &seq); n != 2 || err != nil || pub > 1 {
			t.Errorf("msg-id %q, want p{publisher}-{sequence} of publisher 0 or 1", id)
		}
	default:
		t.Errorf("no delivery carried the msg-id property")
	}
	cfg.version = packet.V311
	if err := cfg.validate(); err == nil {
		t.Errorf("-msg-id with -v 4 validated; want an error (3.1.1 has no user properties)")
	}
}

// A keel edge bridged to a keel central one, as bench bridge runs them:
// the probe crosses, and the load published on the edge is all delivered
// by the central broker (-sub-addr).
func TestRunThroughBridge(t *testing.T) {
	bin := buildKeel(t, t.TempDir())
	central := startKeelConf(t, bin, "")
	_, port, err := net.SplitHostPort(central)
	if err != nil {
		t.Fatal(err)
	}
	cport, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	edge := startKeelConf(t, bin, fmt.Sprintf(keelEdgeConfFmt, cport))
	if err := waitBridged(edge, central, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(edge, packet.V5)
	cfg.subAddr, cfg.persistent, cfg.drain = central, true, 2*time.Second
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	r, err := runLoad(cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if r.Acked != 1000 || r.Delivered != 2000 || r.Lost != 0 {
		t.Errorf("acked %d on the edge, delivered %d by the central broker, lost %d; want 1000, 2000, 0", r.Acked, r.Delivered, r.Lost)
	}
}
