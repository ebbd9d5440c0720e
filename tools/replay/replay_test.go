// Package replay measures how long keel takes to come back with a large
// store: BenchmarkReplay fills a data directory with queued messages
// across many persistent sessions, starts the real keel binary on it, and
// reports the time until its listener accepts and its RSS after replay.
//
//	go test -run '^$' -bench Replay -benchtime 1x ./tools/replay
//	go test -run '^$' -bench Replay -benchtime 1x ./tools/replay -messages 1000000 -sessions 10000
package replay

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keelmq/keel/wal"
)

var (
	flagMessages = flag.Int("messages", 1000000, "queued messages in the store")
	flagSessions = flag.Int("sessions", 10000, "persistent sessions they are queued for")
	flagPayload  = flag.Int("payload", 64, "payload bytes")
)

// fill writes sessions, a subscription each, and messages queued
// round-robin across them, through the wal as the broker would.
func fill(tb testing.TB, dir string, sessions, messages, payload int) {
	l, err := wal.Open(wal.Options{Dir: dir})
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	txn := &wal.Txn{}
	flushTxn := func() {
		if err := l.Commit(ctx, txn); err != nil {
			tb.Fatal(err)
		}
		txn = &wal.Txn{}
	}
	for s := 0; s < sessions; s++ {
		id := fmt.Sprintf("device-%05d", s)
		txn.Set(wal.SessionKey(id), wal.AppendSession(nil, &wal.Session{Protocol: 4, ExpirySeconds: 0xFFFFFFFF, DisconnectedAt: time.Now().UnixMilli()}, 0))
		txn.Set(wal.SubscriptionKey(id, "devices/"+id+"/#"), wal.AppendSubscription(nil, &wal.Subscription{QoS: 1}))
		if txn.Len() > 10000 {
			flushTxn()
		}
	}
	body := make([]byte, payload)
	for i := range body {
		body[i] = byte('a' + i%26)
	}
	seq := uint64(time.Now().UnixMicro())
	for m := 0; m < messages; m++ {
		s := m % sessions
		id := fmt.Sprintf("device-%05d", s)
		seq++
		e := &wal.Entry{State: wal.EntryQueued, QoS: 1, Inline: &wal.Message{Topic: "devices/" + id + "/telemetry", Payload: body, QoS: 1}}
		txn.Set(wal.QueueKey(id, seq), wal.AppendEntry(nil, e, l.CompressThreshold()))
		if txn.Len() >= 20000 {
			flushTxn()
		}
	}
	flushTxn()
}

func buildKeel(tb testing.TB, dir string) string {
	bin := filepath.Join(dir, "keel")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/keelmq/keel/cmd/keel")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freePort(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func rssMB(pid int) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return float64(kb) / 1024
		}
	}
	return -1
}

// startAndMeasure starts keel on data and returns the time until it
// accepts a TCP connection and its RSS then.
func startAndMeasure(tb testing.TB, bin, data string) (time.Duration, float64) {
	addr := freePort(tb)
	cmd := exec.Command(bin, "serve", "--listen", addr, "--data", data, "--log-level", "warn")
	cmd.Stderr = os.Stderr
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	deadline := t0.Add(2 * time.Minute)
	for {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("keel did not accept within 2 minutes")
		}
		time.Sleep(2 * time.Millisecond)
	}
	took := time.Since(t0)
	return took, rssMB(cmd.Process.Pid)
}

func BenchmarkReplay(b *testing.B) {
	dir := b.TempDir()
	data := filepath.Join(dir, "data")
	t0 := time.Now()
	fill(b, data, *flagSessions, *flagMessages, *flagPayload)
	b.Logf("filled %d messages across %d sessions in %v", *flagMessages, *flagSessions, time.Since(t0).Round(time.Millisecond))
	bin := buildKeel(b, dir)
	var took time.Duration
	var rss float64
	for b.Loop() {
		took, rss = startAndMeasure(b, bin, data)
	}
	b.ReportMetric(took.Seconds(), "s-to-accept")
	b.ReportMetric(rss, "MB-rss")
	b.ReportMetric(0, "ns/op")
}

// TestReplaySmall runs the same measurement on a small store so that it
// keeps working: a restart on a store with queued messages accepts
// connections, and the sessions are there.
func TestReplaySmall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the keel binary")
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	fill(t, data, 50, 2000, 64)
	bin := buildKeel(t, dir)
	took, rss := startAndMeasure(t, bin, data)
	if rss <= 0 {
		t.Fatalf("could not read keel's RSS")
	}
	t.Logf("accepting after %v, RSS %.1f MB", took, rss)
}
