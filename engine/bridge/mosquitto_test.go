package bridge

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keelmq/keel/engine/packet"
)

// These tests run the real Mosquitto (Debian's mosquitto) as the remote.
// Outside CI a missing program skips the test, saying what to install;
// with CI=true it is a failure.

// startMosquitto runs mosquitto on a free loopback port with the config
// lines conf, until the test ends, and returns its address. It waits for
// Mosquitto's own "running" log line, not for a time.
func startMosquitto(t *testing.T, conf ...string) string {
	t.Helper()
	return newMosquitto(t, conf...).addr
}

// mosquitto is a Mosquitto process that can be stopped (SIGTERM: it saves
// its persistence file) and started again on the same port and files.
type mosquitto struct {
	t      *testing.T
	addr   string
	path   string
	cmd    *exec.Cmd
	exited chan struct{}
}

func newMosquitto(t *testing.T, conf ...string) *mosquitto {
	t.Helper()
	if _, err := exec.LookPath("mosquitto"); err != nil {
		msg := "mosquitto not installed (apt-get install -y mosquitto)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg + "; with CI=true this is a failure")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	lines := append([]string{
		fmt.Sprintf("listener %d 127.0.0.1", port),
		"allow_anonymous true",
		"persistence false",
		"log_dest stderr",
		"log_type error",
		"log_type warning",
		"log_type notice",
		"log_type information",
		"user root", // do not switch to the mosquitto user, who cannot read t.TempDir()
	}, conf...)
	path := filepath.Join(t.TempDir(), "mosquitto.conf")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := &mosquitto{t: t, addr: fmt.Sprintf("127.0.0.1:%d", port), path: path}
	m.start()
	t.Cleanup(m.kill)
	return m
}

func (m *mosquitto) kill() {
	if m.cmd != nil {
		_ = m.cmd.Process.Kill()
		<-m.exited
		m.cmd = nil
	}
}

// stop ends Mosquitto with SIGTERM, as a clean shutdown.
func (m *mosquitto) stop() {
	m.t.Helper()
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(wait):
		m.t.Fatal("mosquitto did not stop on SIGTERM")
	}
	m.cmd = nil
}

func (m *mosquitto) start() {
	t := m.t
	t.Helper()
	cmd := exec.Command("mosquitto", "-c", m.path)
	out, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	m.cmd, m.exited = cmd, exited
	running := make(chan struct{})
	var log strings.Builder
	go func() { // owner: exited, waited for by the cleanup
		defer close(exited)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			log.WriteString(line + "\n")
			if strings.Contains(line, " running") {
				close(running)
			}
		}
		_ = cmd.Wait()
	}()
	select {
	case <-running:
	case <-exited:
		t.Fatalf("mosquitto exited at start:\n%s", log.String())
	case <-time.After(wait):
		t.Fatalf("mosquitto did not say it was running within %v", wait)
	}
}

// only is the messages of got on topic.
func only(got []string, topic string) []string {
	var out []string
	for _, m := range got {
		if strings.HasPrefix(m, topic+" ") {
			out = append(out, m)
		}
	}
	return out
}

// Mosquitto as the remote, over 3.1.1 (try_private) and 5.0 (No Local):
// QoS 2 both ways, each message once and in order, and a topic bridged
// both ways comes back neither way.
func TestBridgeMosquittoBothWays(t *testing.T) {
	for _, v := range []struct {
		name    string
		version byte
	}{{"mqttv311", packet.V311}, {"mqttv50", packet.V5}} {
		t.Run(v.name, func(t *testing.T) {
			mosq := startMosquitto(t)
			cfg := bridgeConfig(t, mosq, v.version, "up/# out 2", "down/# in 2", "loop/# both 2")
			cfg.TryPrivate = true // ignored for 5.0
			e := startEdge(t, cfg)
			connected(t, e.br)

			up := newSink(t, mosq, "up-sink", "up/#", packet.V311)
			down := newSink(t, e.Addr(), "down-sink", "down/#", packet.V5)
			loopM := newSink(t, mosq, "loop-m", "loop/#", packet.V5)
			loopE := newSink(t, e.Addr(), "loop-e", "loop/#", packet.V5)
			pe := newSource(t, e.Addr(), "edge-pub")
			pm := newSource(t, mosq, "mosq-pub")
			const n, k = 300, 50
			pe.publish("up/x", 1, n)
			pm.publish("down/y", 1, n)
			pe.publish("loop/e", 1, k)
			pm.publish("loop/m", 1, k)
			checkSeq(t, up.waitN(n), "up/x", n)
			checkSeq(t, down.waitN(n), "down/y", n)
			loopM.waitN(2 * k)
			loopE.waitN(2 * k)
			pe.settle()
			pm.settle()
			// A last message each way through the loop topic: when it has
			// arrived, an echo of the earlier ones would have too.
			pe.publish("loop/e", k+1, k+1)
			pm.publish("loop/m", k+1, k+1)
			loopM.waitN(2*k + 2)
			loopE.waitN(2*k + 2)
			e.br.Close()
			for _, s := range []*sink{loopM, loopE} {
				got := s.got()
				if len(got) != 2*k+2 {
					t.Fatalf("%s: got %d messages, want %d: a loop", s.id, len(got), 2*k+2)
				}
				checkSeq(t, only(got, "loop/e"), "loop/e", k+1)
				checkSeq(t, only(got, "loop/m"), "loop/m", k+1)
			}
			checkSeq(t, up.got(), "up/x", n)
			checkSeq(t, down.got(), "down/y", n)
		})
	}
}

// Mosquitto (persistence on) as the remote, stopped while the edge goes on
// taking messages and started again: the edge's queue held them on disk,
// and each arrives once, in order, at a persistent subscriber there.
func TestBridgeMosquittoRestart(t *testing.T) {
	m := newMosquitto(t, "persistence true", "persistence_location "+t.TempDir()+"/", "autosave_interval 0")
	// After the base lines' "persistence false": the later line wins (the
	// subscriber's session, which only persistence keeps, proves it).
	e := startEdge(t, bridgeConfig(t, m.addr, packet.V311, "up/# out 2"))
	connected(t, e.br)
	up := newSink(t, m.addr, "up-sink", "up/#", packet.V311)
	pe := newSource(t, e.Addr(), "edge-pub")
	const n = 400
	pe.publish("up/x", 1, n/2)
	up.waitN(n / 2)
	m.stop()
	pe.publish("up/x", n/2+1, n)
	pe.settle() // all acknowledged by the edge: in its queue on disk
	m.start()
	up.reconnect()
	checkSeq(t, up.waitN(n), "up/x", n)
	waitFor(t, "the edge's queue empty", func() bool { return e.b.Engine.Stats().QueuedMessages == 0 })
	checkSeq(t, up.got(), "up/x", n)
}

// A Mosquitto bridge to Keel with try_private (Mosquitto's default): Keel
// takes the bridge flag and echoes nothing back, so a topic bridged both
// ways carries each message once each way.
func TestMosquittoBridgeToKeelTryPrivate(t *testing.T) {
	central := startRemote(t)
	m := newMosquitto(t,
		"connection keel",
		"address "+central.Addr(),
		"topic x/# both 2",
		"bridge_protocol_version mqttv311",
		"try_private true",
		"cleansession false",
		"restart_timeout 1",
		// Mosquitto's notifications are a will on $SYS/broker/connection/...,
		// which Keel refuses (no client publishes to $SYS): CONNACK 5.
		"notifications false",
	)
	atKeel := newSink(t, central.Addr(), "keel-sink", "x/#", packet.V5)
	atMosq := newSink(t, m.addr, "mosq-sink", "x/#", packet.V5)
	// The bridge is up both ways once a probe crosses each way.
	probe := func(from string, to *sink, topic string) {
		t.Helper()
		p := newSource(t, from, "probe-"+topic)
		for i := 1; len(only(to.got(), topic)) == 0; i++ {
			if i > 200 {
				t.Fatalf("no probe on %s crossed the bridge", topic)
			}
			p.publish(topic, i, i)
			time.Sleep(50 * time.Millisecond) // between probes, not a wait for a condition
		}
	}
	probe(central.Addr(), atMosq, "x/probe-in")
	probe(m.addr, atKeel, "x/probe-out")
	pk := newSource(t, central.Addr(), "keel-pub")
	pm := newSource(t, m.addr, "mosq-pub")
	const n = 20
	pk.publish("x/k", 1, n)
	pm.publish("x/m", 1, n)
	for _, s := range []*sink{atKeel, atMosq} {
		waitFor(t, s.id+" to have every message", func() bool {
			return len(only(s.got(), "x/k")) >= n && len(only(s.got(), "x/m")) >= n
		})
	}
	// Marks: an echo of the first n would have come before them.
	pk.publish("x/k", n+1, n+1)
	pm.publish("x/m", n+1, n+1)
	for _, s := range []*sink{atKeel, atMosq} {
		waitFor(t, s.id+" to have the marks", func() bool {
			return len(only(s.got(), "x/k")) >= n+1 && len(only(s.got(), "x/m")) >= n+1
		})
		checkSeq(t, only(s.got(), "x/k"), "x/k", n+1)
		checkSeq(t, only(s.got(), "x/m"), "x/m", n+1)
	}
}
