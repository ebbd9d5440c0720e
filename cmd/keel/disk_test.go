package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/keelmq/keel/wal"
)

func TestParseDiskMark(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want diskMark
		of   uint64 // on a 100 GiB filesystem
	}{
		{"default", diskMark{}, 1 << 30},
		{"0", diskMark{Set: true}, 0},
		{"16MiB", diskMark{Set: true, Bytes: 16 << 20}, 16 << 20},
		{"1 GiB", diskMark{Set: true, Bytes: 1 << 30}, 1 << 30},
		{"500MB", diskMark{Set: true, Bytes: 500e6}, 500e6},
		{"2gb", diskMark{Set: true, Bytes: 2e9}, 2e9},
		{"4096", diskMark{Set: true, Bytes: 4096}, 4096},
		{"5%", diskMark{Set: true, Percent: 5}, 5 << 30},
		{"0.5 %", diskMark{Set: true, Percent: 0.5}, 512 << 20},
	} {
		m, err := parseDiskMark(tc.in)
		if err != nil || m != tc.want || m.of(100<<30) != tc.of {
			t.Errorf("parseDiskMark(%q) = %+v, %v (of 100GiB: %d); want %+v (%d)", tc.in, m, err, m.of(100<<30), tc.want, tc.of)
		}
		if back, err := parseDiskMark(m.String()); err != nil || back != m {
			t.Errorf("parseDiskMark(%q).String() = %q does not read back: %+v, %v", tc.in, m.String(), back, err)
		}
	}
	// The default on a small filesystem: 5% of it.
	if got := (diskMark{}).of(1 << 30); got != (1<<30)/20 {
		t.Errorf("default mark of 1 GiB = %d, want 5%% (%d)", got, (1<<30)/20)
	}
	for _, bad := range []string{"", "-1", "5 percent", "100%", "0%", "12XB", "1.5GiB", "lots"} {
		if _, err := parseDiskMark(bad); err == nil {
			t.Errorf("parseDiskMark(%q): no error, want one", bad)
		}
	}
	p := writeConfig(t, "\nmin_free_disk = 7 pieces\n")
	code, out, errOut := runIn("config", "check", p)
	if want := p + `:2: key "min_free_disk": want bytes with an optional unit`; code != 1 || out != "" || !strings.Contains(errOut, want) {
		t.Errorf("config check: exit %d, stdout %q, stderr %q; want 1 and %q", code, out, errOut, want)
	}
	p = writeConfig(t, "min_free_disk = 500MB\nmax_retained_messages = 10\nmax_retained_bytes = 0\nmax_retained_message_size = 64KiB\n")
	c := defaultConfig()
	if err := c.load(p); err != nil {
		t.Fatal(err)
	}
	if c.Disk.Bytes != 500e6 || c.Engine.MaxRetainedMessages != 10 || c.Engine.MaxRetainedBytes >= 0 || c.Engine.MaxRetainedMessageSize != 64<<10 {
		t.Fatalf("got %+v, %d retained, %d bytes, %d per message; want 500MB, 10, no limit, 64KiB",
			c.Disk, c.Engine.MaxRetainedMessages, c.Engine.MaxRetainedBytes, c.Engine.MaxRetainedMessageSize)
	}
	eff := c.effective()
	for _, want := range []string{"min_free_disk = 500000000\n", "max_retained_messages = 10\n", "max_retained_bytes = 0\n", "max_retained_message_size = 64KiB\n"} {
		if !strings.Contains(eff, want) {
			t.Errorf("effective configuration lacks %q:\n%s", want, eff)
		}
	}
}

// mountTmpfs mounts a tmpfs of size bytes on a new directory, unmounted
// at cleanup (after whatever the test starts later has stopped). It needs
// root (or CAP_SYS_ADMIN): without it the test is skipped, and under
// CI=true it fails, so the disk-full test is not lost there unseen.
func mountTmpfs(t *testing.T, size int64) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.FormatInt(size, 10)); err != nil {
		msg := fmt.Sprintf("mount -t tmpfs -o size=%d tmpfs %s: %v", size, dir, err)
		if errors.Is(err, syscall.EPERM) && os.Getenv("CI") != "true" {
			t.Skip(msg + ": the disk-full test needs root (or CAP_SYS_ADMIN) to make a small filesystem; with CI=true this is a failure")
		}
		t.Fatal(msg)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("umount %s: %v", dir, err)
		}
	})
	return dir
}

func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	free, _, err := statfs(dir)
	if err != nil {
		t.Fatal(err)
	}
	return int64(free)
}

// fillFile writes n bytes (n < 0: until the filesystem is full) to path
// and returns how many it wrote.
func fillFile(t *testing.T, path string, n int64) int64 {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var wrote int64
	for n < 0 || wrote < n {
		chunk := buf
		if n >= 0 && n-wrote < int64(len(chunk)) {
			chunk = chunk[:n-wrote]
		}
		k, err := f.Write(chunk)
		wrote += int64(k)
		if errors.Is(err, syscall.ENOSPC) && n < 0 {
			return wrote
		}
		if err != nil {
			t.Fatalf("fill %s: %v", path, err)
		}
	}
	return wrote
}

// v5 is a Paho 5.0 client of the disk-full test.
type v5 struct {
	*paho.Client
	ack  *paho.Connack
	disc chan byte // reason codes of the server's DISCONNECTs
	mu   sync.Mutex
	got  map[int]int // sequence numbers received, and how often
}

func dialV5(addr, id string, persistent bool) (*v5, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c := &v5{disc: make(chan byte, 4), got: map[int]int{}}
	c.Client = paho.NewClient(paho.ClientConfig{
		Conn: nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			if n, err := strconv.Atoi(string(pr.Packet.Payload[:min(8, len(pr.Packet.Payload))])); err == nil {
				c.mu.Lock()
				c.got[n]++
				c.mu.Unlock()
			}
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) {
			select {
			case c.disc <- d.ReasonCode:
			default:
			}
		},
		PacketTimeout: 10 * time.Second,
	})
	cp := &paho.Connect{ClientID: id, CleanStart: !persistent, KeepAlive: 30}
	if persistent {
		exp := uint32(3600)
		// A window of 64 messages of 64 KiB: a resumed queue is not sent
		// faster than the client reads (max_outbound_bytes).
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &exp, ReceiveMaximum: ptr(uint16(64))}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c.ack, err = c.Connect(ctx, cp)
	if err != nil {
		nc.Close()
		return c, err
	}
	return c, nil
}

func (c *v5) close() {
	_ = c.Disconnect(&paho.Disconnect{})
	<-c.Done()
}

// received is how many distinct sequence numbers of want c has received.
func (c *v5) received(want map[int]bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for s := range want {
		if c.got[s] > 0 {
			n++
		}
	}
	return n
}

// payload is message seq: its number, then random (incompressible) bytes.
func payload(seq, size int) []byte {
	p := make([]byte, size)
	rand.Read(p)
	copy(p, fmt.Sprintf("%08d", seq))
	return p
}

// publish sends message seq at QoS 1 and returns the PUBACK's reason code.
func (c *v5) publish(seq, size int) (byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Publish(ctx, &paho.Publish{Topic: "fill/x", QoS: 1, Payload: payload(seq, size)})
	if r != nil {
		return r.ReasonCode, nil
	}
	return 0, err
}

// The disk-full test: keel on a 1 GiB tmpfs. A publisher fills an
// offline persistent session's queue until the disk is below
// min_free_disk: then keel refuses (5.0 PUBACK 0x97, 3.1.1 disconnected
// without an ack, new persistent sessions CONNACK 0x97), says so on
// /readyz and /metrics, keeps delivering, and accepts again once the
// subscriber has drained, without a restart and without exiting. Then the
// test itself fills the filesystem to the last byte under a keel without
// the mark, so ENOSPC hits Pebble: whatever keel did, every message it
// acknowledged is there after the space is freed and keel restarts.
func TestDiskFull(t *testing.T) {
	const (
		// Pebble preallocates each WAL file to 110% of its 64 MiB
		// memtable, and keeps up to a few: the mark must leave room for
		// them, and the queue must be large next to them, so that what
		// the drain frees brings the disk back above the mark.
		size = 1 << 30
		mark = 256 << 20
		msg  = 64 << 10
	)
	fs := mountTmpfs(t, size)
	data := filepath.Join(fs, "data")
	conf := writeConfig(t, "max_queued_messages = 0\nmax_queued_bytes = 0\n") // the disk is the only limit here
	k := startKeel(t, "serve", "--config", conf, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--data", data, "--min-free-disk", "256MiB")
	admin := "http://" + k.metrics
	alive := func(what string) {
		t.Helper()
		select {
		case <-k.exited:
			t.Fatalf("%s: keel exited (%v), want it serving:\n%s", what, k.err, k.stderr())
		default:
		}
	}

	sink, err := dialV5(k.addr, "sink", true)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := sink.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "fill/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	sink.close()

	acked := map[int]bool{}
	seq := 0
	pub, err := dialV5(k.addr, "pub", false)
	if err != nil {
		t.Fatal(err)
	}
	refusedAt := -1
	for range size / msg {
		rc, err := pub.publish(seq, msg)
		if err != nil {
			t.Fatalf("publish %d above the mark: %v", seq, err)
		}
		if rc == 0x97 {
			refusedAt = seq
			break
		}
		if rc != 0 {
			ls, _ := exec.Command("ls", "-ls", data).CombinedOutput()
			t.Fatalf("publish %d above the mark: reason %#x, want 0 or 0x97; free %d\n%s\n%s", seq, rc, freeBytes(t, fs), ls, k.stderr())
		}
		acked[seq] = true
		seq++
	}
	if refusedAt < 0 {
		t.Fatalf("no refusal after %d publishes; free %d, mark %d:\n%s", seq, freeBytes(t, fs), mark, k.stderr())
	}
	select {
	case rc := <-pub.disc:
		if rc != 0x97 {
			t.Fatalf("DISCONNECT after the refusal: %#x, want 0x97", rc)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no DISCONNECT after the refusal")
	}
	seq++
	t.Logf("refused message %d below the mark (%d accepted); free %d", refusedAt, len(acked), freeBytes(t, fs))

	// Below the mark, every view says so.
	if code, body := get(t, admin+"/readyz"); code != 503 || !strings.Contains(body, "refusing: disk below min_free_disk") {
		t.Errorf("/readyz below the mark: %d %q, want 503 and the reason", code, body)
	}
	_, metrics := get(t, admin+"/metrics")
	for _, want := range []string{`keel_refusals_total{reason="disk_low"} 1`, "keel_disk_low 1", "keel_disk_min_free_bytes 2.68435456e+08", "keel_disk_total_bytes 1.073741824e+09"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics below the mark lacks %q", want)
		}
	}
	if _, body := get(t, admin+"/api/stats"); !strings.Contains(body, `"disk_low":true`) {
		t.Errorf("/api/stats below the mark: no \"disk_low\":true in %s", body)
	}
	if c, err := dialV5(k.addr, "newbie", true); err == nil || c.ack == nil || c.ack.ReasonCode != 0x97 {
		t.Errorf("a new persistent session below the mark: %v (CONNACK %+v), want CONNACK 0x97", err, c.ack)
	}
	// 3.1.1: disconnected without an acknowledgement.
	p3 := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + k.addr).SetClientID("p3").SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectTimeout(10 * time.Second))
	if tok := p3.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("3.1.1 connect below the mark: %v", tok.Error())
	}
	tok := p3.Publish("fill/x", 1, false, payload(seq, 1024))
	waitFor(t, 10*time.Second, "the 3.1.1 publisher to be disconnected", func() bool { return !p3.IsConnected() })
	if tok.WaitTimeout(10*time.Millisecond) && tok.Error() == nil {
		t.Fatal("3.1.1 publish below the mark: acknowledged, want no ack")
	}
	seq++
	// QoS 0 between online clients still flows.
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	watch, err := dialV5(k.addr, "watch", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "live", QoS: 0}}}); err != nil {
		t.Fatal(err)
	}
	pub0, err := dialV5(k.addr, "pub0", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub0.Publish(ctx, &paho.Publish{Topic: "live", Payload: []byte("00000000 live")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "QoS 0 below the mark", func() bool { return watch.received(map[int]bool{0: true}) == 1 })
	alive("below the mark")

	// The subscriber drains below the mark: deliveries and acks go on,
	// and exactly what was acknowledged arrives.
	sink, err = dialV5(k.addr, "sink", true)
	if err != nil || !sink.ack.SessionPresent {
		t.Fatalf("resume the sink below the mark: %v (session present %v), want it resumed", err, sink.ack != nil && sink.ack.SessionPresent)
	}
	waitFor(t, 60*time.Second, "the sink to drain", func() bool { return sink.received(acked) == len(acked) })
	sink.mu.Lock()
	for s := range sink.got {
		if !acked[s] {
			t.Errorf("the sink got message %d, which was refused", s)
		}
	}
	sink.mu.Unlock()
	sink.close()

	// Above the mark again once keel has reclaimed what was drained:
	// accepted, without a restart.
	waitFor(t, 90*time.Second, "keel to accept again", func() bool {
		alive("after the drain")
		c, err := dialV5(k.addr, "pub", false)
		if err != nil {
			return false
		}
		defer c.close()
		rc, err := c.publish(seq, msg)
		if err == nil && rc == 0 {
			acked[seq] = true
			seq++
			return true
		}
		time.Sleep(200 * time.Millisecond) // between two clients: each refusal disconnects
		return false
	})
	if !strings.Contains(k.stderr(), "flushed the store's memtable") {
		t.Errorf("keel's log does not show a reclaim:\n%s", k.stderr())
	}
	if code, body := get(t, admin+"/readyz"); code != 200 {
		t.Errorf("/readyz above the mark: %d %q, want 200", code, body)
	}
	t.Logf("accepted again; free %d", freeBytes(t, fs))
	k.stop(t)

	// ENOSPC in Pebble itself: keel without the mark, the filesystem
	// filled to the last byte by the test.
	k = startKeel(t, "serve", "--listen", "127.0.0.1:0", "--data", data, "--min-free-disk", "0")
	pub, err = dialV5(k.addr, "pub", false)
	if err != nil {
		t.Fatal(err)
	}
	// All but 8 MiB: keel acknowledges what fits (Pebble's preallocation
	// of its WAL fails quietly), then a write meets ENOSPC.
	fillFile(t, filepath.Join(fs, "ballast"), freeBytes(t, fs)-8<<20)
	var stop string
	before := len(acked)
	deadline := time.Now().Add(60 * time.Second)
	for n := 0; stop == ""; n++ {
		rc, err := pub.publish(seq, msg)
		switch {
		case err != nil:
			stop = fmt.Sprintf("publish %d: %v", seq, err)
		case rc != 0:
			stop = fmt.Sprintf("publish %d: reason %#x", seq, rc)
		case n > 4000 || time.Now().After(deadline):
			t.Fatalf("keel acknowledged %d publishes on a full filesystem, want a failure first", n)
		default:
			acked[seq] = true
		}
		seq++
	}
	t.Logf("on the full filesystem: %d acknowledged, then %s", len(acked)-before, stop)
	// Free the space; stop keel if it has not stopped itself (a store
	// failure makes it exit), and start it again on the same data.
	os.Remove(filepath.Join(fs, "ballast"))
	select {
	case <-k.exited:
		t.Logf("keel stopped itself: %v", k.err)
	default:
		_ = k.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-k.exited:
		case <-time.After(30 * time.Second):
			_ = k.cmd.Process.Kill()
			<-k.exited
		}
	}
	if !strings.Contains(k.stderr(), "no space left on device") {
		t.Errorf("keel's log does not show ENOSPC reaching the store:\n%s", k.stderr())
	}
	k = startKeel(t, "serve", "--listen", "127.0.0.1:0", "--data", data)
	sink, err = dialV5(k.addr, "sink", true)
	if err != nil || !sink.ack.SessionPresent {
		t.Fatalf("resume the sink after the restart: %v, want its session", err)
	}
	waitFor(t, 60*time.Second, "every acknowledged message after the restart", func() bool {
		return sink.received(acked) == len(acked)-countBelow(acked, refusedAt) // the first drain took those
	})
	sink.close()
	k.stop(t)
}

// countBelow is how many of the sequence numbers in set are below n.
func countBelow(set map[int]bool, n int) int {
	c := 0
	for s := range set {
		if s < n {
			c++
		}
	}
	return c
}

// waitFor polls cond until it holds or d passes (then the test fails).
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ptr[T any](v T) *T { return &v }

// The watcher on the test's own filesystem (no mount needed): a mark above
// the free space is low at once, and the store is flushed while low; a
// mark of 0 never is; close waits for everything it started.
func TestDiskWatcher(t *testing.T) {
	dir := t.TempDir()
	l, err := wal.Open(wal.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	w, err := startDiskWatcher(dir, diskMark{Set: true, Bytes: 1 << 62}, l.Reclaim, logger)
	if err != nil {
		t.Fatal(err)
	}
	u := w.Usage()
	if !u.Low || u.Total == 0 || u.Free > u.Total || u.MinFree != 1<<62 {
		t.Fatalf("usage %+v with a mark of 4 EiB: want low, a size, free within it", u)
	}
	waitFor(t, 10*time.Second, "a flush while low", func() bool { return strings.Contains(logs.String(), "flushed the store's memtable") })
	w.close()
	w.close() // a second close does nothing

	off, err := startDiskWatcher(dir, diskMark{Set: true}, l.Reclaim, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer off.close()
	if u := off.Usage(); u.Low || u.MinFree != 0 {
		t.Fatalf("usage %+v with min_free_disk = 0: want never low", u)
	}
}
