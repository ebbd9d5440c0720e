package engine

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keelmq/keel/engine/packet"
)

// The retained count is the clients' retained messages: the $SYS topics
// the broker keeps retained are not in it.
func TestRetainedCountExcludesSys(t *testing.T) {
	tb := startBroker(t, Options{SysInterval: time.Hour}) // $SYS published once, at start
	p := dialRaw(t, tb.addr, packet.V5)
	p.connect("p", true, nil)
	p.send(&packet.Publish{QoS: 1, PacketID: 1, Retain: true, Topic: "r/1", Payload: []byte("x")})
	p.expectAck(packet.PUBACK, 1)
	if got := tb.b.Stats().Retained; got != 1 {
		t.Fatalf("Retained = %d, want 1 (the client's one; $SYS not counted)", got)
	}
}

// Stored sessions and their queues are counted, online or not, across a
// restart, and uncounted when they end.
func TestSessionAndQueueCounts(t *testing.T) {
	tb := startBroker(t, Options{})
	off := dialRaw(t, tb.addr, packet.V5)
	off.connect("off", false, nil)
	off.subscribe(1, "q", 1)
	off.disconnect(tb)
	on := dialRaw(t, tb.addr, packet.V5)
	on.connect("on", false, nil)
	clean := dialRaw(t, tb.addr, packet.V5)
	clean.connect("clean", true, nil)
	clean.subscribe(1, "q", 1)
	p := dialRaw(t, tb.addr, packet.V5)
	p.connect("p", true, nil)
	for i := range 3 {
		p.pubAcked(uint16(i+1), "q", "m")
	}
	check := func(when string, persistent, offline, queued int64) {
		t.Helper()
		st := tb.b.Stats()
		if st.SessionsPersistent != persistent || st.SessionsOffline != offline || st.QueuedMessages != queued {
			t.Fatalf("%s: persistent %d, offline %d, queued %d; want %d, %d, %d", when,
				st.SessionsPersistent, st.SessionsOffline, st.QueuedMessages, persistent, offline, queued)
		}
		if (st.QueuedBytes > 0) != (queued > 0) {
			t.Fatalf("%s: %d queued bytes for %d messages", when, st.QueuedBytes, queued)
		}
	}
	check("before the restart", 2, 1, 3)
	tb.restart()
	check("after the restart", 2, 2, 3)
	off = dialRaw(t, tb.addr, packet.V5)
	off.connect("off", false, nil)
	for range 3 {
		off.ackPub(off.expectPublish())
	}
	tb.waitIdle("off")
	check("after the queue was delivered", 2, 1, 0)
	c := dialRaw(t, tb.addr, packet.V5)
	c.connect("on", true, nil) // clean start, expiry 0: no longer stored
	check("after a clean start", 1, 0, 0)
}

// Messages that are not delivered are counted by reason, and so are
// refusals.
func TestDropsCountedByReason(t *testing.T) {
	tb := startBroker(t, Options{MaxMemQueue: 1, QueueFull: QueueDropNew})
	small := dialRaw(t, tb.addr, packet.V5)
	small.connect("small", true, func(cp *packet.Connect) {
		cp.Props.MaximumPacketSize = 64
		cp.Props.Set(packet.PropMaximumPacketSize)
		cp.Props.ReceiveMaximum = 1
		cp.Props.Set(packet.PropReceiveMaximum)
	})
	small.subscribe(1, "d/#", 1)
	off := dialRaw(t, tb.addr, packet.V5)
	off.connect("off", false, nil)
	off.subscribe(1, "d/#", 1)
	off.disconnect(tb)
	p := dialRaw(t, tb.addr, packet.V5)
	p.connect("p", true, nil)
	p.pubAcked(1, "d/big", strings.Repeat("x", 100)) // too large for small
	p.publish(0, "d/q0", 0, "qos 0")                 // offline_qos0 for off
	p.pubAcked(2, "d/1", "first")                    // in small's window
	p.pubAcked(3, "d/2", "second")                   // waits in memory (MaxMemQueue 1)
	p.pubAcked(4, "d/3", "third")                    // queue full
	small.expectPub("d/q0", "qos 0")
	want := map[string]uint64{"too_large": 1, "offline_qos0": 1, "memory_queue_full": 1, "queue_full": 0, "expired": 0}
	got := tb.b.Stats().Dropped
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("Dropped = %v, want %v", got, want)
		}
	}
	if r := tb.b.Stats().Refused; len(r) == 0 || r["store_failed"] != 0 {
		t.Fatalf("Refused = %v, want every reason present and store_failed 0", r)
	}
}

// syncBuffer is a bytes.Buffer for a logger written from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A connect and a disconnect are logged at info level, once each, with the
// client id once per line and the reason the connection ended.
func TestConnectAndDisconnectLogged(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	tb := startBroker(t, Options{Logger: logger})
	c := dialRaw(t, tb.addr, packet.V5)
	c.connect("dev-1", false, nil)
	c.disconnect(tb)
	waitFor(t, "the disconnect line", func() bool { return strings.Contains(buf.String(), "client disconnected") })
	var connects, disconnects int
	for _, line := range strings.Split(buf.String(), "\n") {
		if !strings.Contains(line, "client=dev-1") {
			continue
		}
		if n := strings.Count(line, "client="); n != 1 {
			t.Fatalf("client= %d times in %q", n, line)
		}
		switch {
		case strings.Contains(line, "client connected"):
			connects++
			if !strings.Contains(line, "session_present=false") || !strings.Contains(line, "protocol=5") {
				t.Fatalf("connect line %q lacks protocol or session present", line)
			}
		case strings.Contains(line, "client disconnected"):
			disconnects++
			if !strings.Contains(line, "DISCONNECT") {
				t.Fatalf("disconnect line %q does not say why", line)
			}
		}
	}
	if connects != 1 || disconnects != 1 {
		t.Fatalf("%d connect and %d disconnect lines, want 1 each:\n%s", connects, disconnects, buf.String())
	}
}

// Under a storm the connection lines are bounded per second, and the next
// line says how many were left out.
func TestConnLogRateLimited(t *testing.T) {
	var buf syncBuffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	var l connLogger
	for range connLogPerSecond + 10 {
		l.log(logger, "client connected")
	}
	if n := strings.Count(buf.String(), "client connected"); n != connLogPerSecond {
		t.Fatalf("%d lines in one second, want %d", n, connLogPerSecond)
	}
	l.mu.Lock()
	l.second = l.second.Add(-time.Second) // the next second
	l.mu.Unlock()
	l.log(logger, "client connected")
	if !strings.Contains(buf.String(), "suppressed_before=10") {
		t.Fatalf("the line after the storm does not count the 10 left out:\n%s", buf.String())
	}
}
