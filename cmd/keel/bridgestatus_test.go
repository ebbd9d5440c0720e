package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"

	"github.com/keelmq/keel/engine/client"
	"github.com/keelmq/keel/engine/packet"
)

// The bridge's state is visible: /api/bridges, /metrics (bridge=NAME) and
// $SYS/broker/bridges/NAME/..., connected and then down (backing off, the
// last error), with the queue on disk growing while the remote is away.
func TestBridgeStatusVisible(t *testing.T) {
	dir := t.TempDir()
	central := startKeel(t, "serve", "--listen", "127.0.0.1:0", "--data", filepath.Join(dir, "central"))
	conf := filepath.Join(dir, "edge.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("listen = 127.0.0.1:0\ndata = %s\nadmin = 127.0.0.1:0\nsys_interval = 1s\n\n"+
		"[bridge central]\naddress = %s\ntopic = up/# out 1\nremote_clientid = edge-1\nbridge_protocol_version = mqttv50\nrestart_timeout = 1\n",
		filepath.Join(dir, "edge"), central.addr)), 0o600); err != nil {
		t.Fatal(err)
	}
	edge := startKeel(t, "serve", "--config", conf)
	bridgeInfoOf := func() bridgeInfo {
		code, body := get(t, "http://"+edge.metrics+"/api/bridges")
		if code != 200 {
			t.Fatalf("/api/bridges: %d %s", code, body)
		}
		var v bridgesView
		if err := json.Unmarshal([]byte(body), &v); err != nil || len(v.Bridges) != 1 {
			t.Fatalf("/api/bridges: %v: %s", err, body)
		}
		return v.Bridges[0]
	}
	metric := func(name string) (float64, bool) {
		_, body := get(t, "http://"+edge.metrics+"/metrics")
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(body)
		if m == nil {
			return 0, false
		}
		v, err := strconv.ParseFloat(m[1], 64)
		return v, err == nil
	}
	waitUntil(t, "the bridge connected (/api/bridges)", func() bool { return bridgeInfoOf().State == "connected" })
	if v, ok := metric(`keel_bridge_connected{bridge="central"}`); !ok || v != 1 {
		t.Fatalf("keel_bridge_connected: got %v (found %t), want 1", v, ok)
	}
	if v, ok := metric(`keel_bridge_state{bridge="central",state="connected"}`); !ok || v != 1 {
		t.Fatalf("keel_bridge_state connected: got %v (found %t), want 1", v, ok)
	}

	var mu sync.Mutex
	sys := map[string]string{}
	watch, err := client.Connect(context.Background(), client.Options{Addr: edge.addr, ClientID: "sys-watch", Version: packet.V5,
		Session: client.NewMemorySession(), CleanStart: true,
		OnMessage: func(p *packet.Publish) { mu.Lock(); sys[p.Topic] = string(p.Payload); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	if _, err := watch.Subscribe(context.Background(), &packet.Subscribe{Subs: []packet.Subscription{{Filter: "$SYS/broker/bridges/#"}}}); err != nil {
		t.Fatal(err)
	}
	sysIs := func(topic, want string) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			return sys["$SYS/broker/bridges/central/"+topic] == want
		}
	}
	waitUntil(t, "$SYS state connected", sysIs("state", "connected"))
	waitUntil(t, "$SYS queue/messages 0", sysIs("queue/messages", "0"))

	central.stop(t)
	waitUntil(t, "the bridge backing off", func() bool { b := bridgeInfoOf(); return b.State == "backing off" && b.LastError != "" })
	waitUntil(t, "$SYS state backing off", sysIs("state", "backing off"))
	mu.Lock()
	lastErr := sys["$SYS/broker/bridges/central/last_error"]
	mu.Unlock()
	if lastErr == "" {
		t.Errorf("$SYS last_error is empty while the bridge is down")
	}
	t.Logf("down: %+v", bridgeInfoOf())

	pub, err := client.Connect(context.Background(), client.Options{Addr: edge.addr, ClientID: "edge-pub", Version: packet.V5,
		Session: client.NewMemorySession(), CleanStart: true})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	const n = 20
	for i := range n {
		if err := pub.Publish(context.Background(), &packet.Publish{QoS: 1, Topic: "up/x", Payload: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	// Publish returns once a message is in the client's session: the
	// edge's acknowledgements follow.
	waitUntil(t, "the queue on disk in /api/bridges", func() bool {
		b := bridgeInfoOf()
		return b.QueuedMessages != nil && *b.QueuedMessages == n && *b.QueuedBytes > 0
	})
	if v, ok := metric(`keel_bridge_queued_messages{bridge="central"}`); !ok || v != n {
		t.Fatalf("keel_bridge_queued_messages: got %v (found %t), want %d", v, ok, n)
	}
	if v, ok := metric(`keel_bridge_connected{bridge="central"}`); !ok || v != 0 {
		t.Fatalf("keel_bridge_connected while down: got %v (found %t), want 0", v, ok)
	}
	waitUntil(t, "$SYS queue/messages 20", sysIs("queue/messages", strconv.Itoa(n)))
	edge.stop(t)
}
