package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/keelmq/keel/engine/client"
	"github.com/keelmq/keel/engine/packet"
)

// The backup test of issue 14's done-when, on the binary: real clients
// publish QoS 2 to a persistent session that is offline, on a running
// keel; keel backup --admin ADDR --to DIR takes the backup while they
// keep publishing; keel restore checks and places it; a second keel
// serves it, and the session is drained.
//
// "Acknowledged before the backup started" is exact: a message counts
// when its publisher had received the acknowledgement before keel
// backup was run. For the two publishers on our client that is the
// PUBREC (the ack that says the message is stored: the commit-before-send
// row "PUBLISH QoS 2 in"), seen in OnAck; for the Paho 3.1.1 and 5.0
// publishers it is the end of the flow, the PUBCOMP, which is all Paho
// reports (it follows the PUBREC, so it is a subset of what is stored).
// Each payload carries its publisher and sequence number.
//
// Checked: every acknowledged message is in the drained session exactly
// once; no message at all is there twice; each publisher's messages are
// a gapless prefix of what it sent, in order (a backup is a crash-
// consistent cut: of what came meanwhile, each commit is wholly there or
// absent, and one publisher's commits are in order); nothing arrives
// past the queue the backup holds.
func TestLiveBackupQoS2ExactlyOnce(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	k := startKeel(t, "serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--data", data)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// The sink: a 3.1.1 persistent session subscribed at QoS 2, then
	// offline, so every message is queued for it on disk.
	sink := pahoSink(t, k.addr, nil)
	if tok := sink.Subscribe("load/#", 2, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("sink subscribe: %v", tok.Error())
	}
	sink.Disconnect(250)
	waitAdmin(t, k.metrics, "the sink offline", func() bool {
		var v oneSessionView
		return adminGet(k.metrics, "/api/sessions/sink", nil, &v) == nil && !v.Session.Connected
	})

	const publishers = 4 // 0, 1: our client (PUBREC); 2: Paho 3.1.1; 3: Paho 5.0 (PUBCOMP)
	const most = 50000
	payload := func(p, i int) string { return fmt.Sprintf("p%d-%06d-%s", p, i, strings.Repeat("q", 64)) }
	var acked [publishers]atomic.Int64 // messages acknowledged, per publisher (a prefix: acks come in order)
	stop := make(chan struct{})
	done := make(chan error, publishers)
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	for p := range 2 {
		go func() {
			c, err := client.Connect(ctx, client.Options{Addr: k.addr, ClientID: fmt.Sprintf("pub%d", p), CleanStart: true,
				MaxInflight: 8, // several QoS 2 flows in flight on the connection
				OnAck: func(a *client.Ack) {
					if a.Kind != packet.PUBREC || a.Code >= 0x80 || a.Publish == nil {
						return
					}
					var q, i int
					if _, err := fmt.Sscanf(string(a.Publish.Payload), "p%d-%06d-", &q, &i); err == nil && q == p {
						acked[p].Store(int64(i + 1))
					}
				}})
			if err != nil {
				done <- err
				return
			}
			defer c.Close()
			for i := 0; i < most && !stopped(); i++ {
				if err := c.Publish(ctx, &packet.Publish{Topic: fmt.Sprintf("load/p%d", p), QoS: 2, Payload: []byte(payload(p, i))}); err != nil {
					done <- fmt.Errorf("publisher %d message %d: %v", p, i, err)
					return
				}
			}
			done <- nil
		}()
	}
	go func() { // Paho 3.1.1
		const p = 2
		o := mqtt.NewClientOptions().AddBroker("tcp://" + k.addr).SetClientID("pub2").SetCleanSession(true).
			SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false)
		c := mqtt.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			done <- fmt.Errorf("paho 3.1.1 connect: %v", tok.Error())
			return
		}
		defer c.Disconnect(250)
		for i := 0; i < most && !stopped(); i++ {
			tok := c.Publish(fmt.Sprintf("load/p%d", p), 2, false, payload(p, i))
			if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				done <- fmt.Errorf("paho 3.1.1 message %d: %v", i, tok.Error())
				return
			}
			acked[p].Store(int64(i + 1))
		}
		done <- nil
	}()
	go func() { // Paho 5.0
		const p = 3
		nc, err := net.Dial("tcp", k.addr)
		if err != nil {
			done <- err
			return
		}
		c := paho.NewClient(paho.ClientConfig{Conn: nc, PacketTimeout: 10 * time.Second})
		if _, err := c.Connect(ctx, &paho.Connect{ClientID: "pub3", CleanStart: true, KeepAlive: 30}); err != nil {
			done <- fmt.Errorf("paho 5.0 connect: %v", err)
			return
		}
		defer c.Disconnect(&paho.Disconnect{})
		for i := 0; i < most && !stopped(); i++ {
			r, err := c.Publish(ctx, &paho.Publish{Topic: fmt.Sprintf("load/p%d", p), QoS: 2, Payload: []byte(payload(p, i))})
			if err != nil || r.ReasonCode >= 0x80 {
				done <- fmt.Errorf("paho 5.0 message %d: %v %+v", i, err, r)
				return
			}
			acked[p].Store(int64(i + 1))
		}
		done <- nil
	}()

	// Some load first, then note what is acknowledged and back up.
	waitAdmin(t, k.metrics, "load from every publisher", func() bool {
		for p := range publishers {
			if acked[p].Load() < 200 {
				return false
			}
		}
		return true
	})
	var before [publishers]int
	for p := range publishers {
		before[p] = int(acked[p].Load())
	}
	dest := filepath.Join(t.TempDir(), "backup")
	code, out, errOut := runKeel(t, "backup", "--admin", k.metrics, "--to", dest)
	var after [publishers]int
	for p := range publishers {
		after[p] = int(acked[p].Load())
	}
	close(stop)
	for range publishers {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
	if code != 0 || !strings.Contains(out, dest+": backup taken at") {
		t.Fatalf("keel backup --admin --to: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	t.Logf("acknowledged before the backup %v, when it returned %v; %s", before, after, strings.TrimSpace(out))
	if after == before {
		t.Errorf("nothing was acknowledged while the backup ran: keel did not serve meanwhile")
	}
	k.stop(t)

	restored := filepath.Join(t.TempDir(), "restored")
	if code, out, errOut := runKeel(t, "restore", dest, restored); code != 0 {
		t.Fatalf("keel restore: exit %d, %q %q", code, out, errOut)
	}
	st := inspectJSON[sessionsView](t, restored, "sessions")
	if len(st.Sessions) != 1 || st.Sessions[0].ClientID != "sink" {
		t.Fatalf("restored sessions: %+v, want the sink only", st.Sessions)
	}
	n := int(st.Sessions[0].Queue.Entries)

	k2 := startKeel(t, "serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--data", restored)
	got := make(chan string, n+1024)
	drain := pahoSink(t, k2.addr, func(m mqtt.Message) { got <- m.Topic() + " " + string(m.Payload()) })
	next := [publishers]int{}
	for range n {
		var m string
		select {
		case m = <-got:
		case <-ctx.Done():
			t.Fatalf("drained %v of %d messages, then nothing", next, n)
		}
		var p, q, i int
		if _, err := fmt.Sscanf(m, "load/p%d p%d-%06d-", &p, &q, &i); err != nil || p != q || p < 0 || p >= publishers {
			t.Fatalf("drained %q: not one of ours", m)
		}
		if want := fmt.Sprintf("load/p%d %s", p, payload(p, i)); m != want {
			t.Fatalf("drained %q, want %q: half-written", m, want)
		}
		switch {
		case i < next[p]:
			t.Fatalf("publisher %d: message %d again after %d: doubled", p, i, next[p]-1)
		case i > next[p]:
			t.Fatalf("publisher %d: message %d after %d: lost or out of order", p, i, next[p]-1)
		}
		next[p]++
	}
	// The queue is empty once the sink has acknowledged everything (Paho
	// 3.1.1 sends PUBREC after its handler returns): nothing more came.
	waitAdmin(t, k2.metrics, "the drained queue empty", func() bool {
		var v oneSessionView
		return adminGet(k2.metrics, "/api/sessions/sink", nil, &v) == nil && v.Session.Queue.Entries == 0
	})
	if len(got) != 0 {
		t.Errorf("%d messages past the %d the backup held: %q ...", len(got), n, <-got)
	}
	drain.Disconnect(250)
	for p := range publishers {
		if next[p] < before[p] {
			t.Errorf("publisher %d: the backup holds %d messages, %d were acknowledged before it began", p, next[p], before[p])
		}
		if next[p] > int(acked[p].Load())+8 {
			t.Errorf("publisher %d: the backup holds %d messages, more than it sent", p, next[p])
		}
	}
	t.Logf("drained %d messages: %v per publisher", n, next)
	k2.stop(t)
}

// pahoSink connects the 3.1.1 persistent session "sink" with Paho; on,
// if set, gets every message.
func pahoSink(t *testing.T, addr string, on func(mqtt.Message)) mqtt.Client {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("sink").SetCleanSession(false).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false)
	if on != nil {
		o.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { on(m) })
	}
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho connect sink: %v", tok.Error())
	}
	t.Cleanup(func() {
		if c.IsConnected() {
			c.Disconnect(0)
		}
	})
	return c
}

// waitAdmin polls cond until it holds, for at most 30 s.
func waitAdmin(t *testing.T, addr, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s (admin %s)", what, addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
