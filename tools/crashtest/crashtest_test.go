package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The broker under test is keel (built from ./cmd/keel) unless
// KEEL_CRASHTEST_BROKER says otherwise:
//
//	mosquitto        mosquitto without persistence: it keeps nothing across
//	                 kill -9, so every crash case must report violations
//	                 (the proof that the tester can fail)
//	mosquitto-proxy  a TCP proxy in front of one long-lived mosquitto is
//	                 what gets killed: connections drop as in a crash but
//	                 no state is lost, so every case must pass (the proof
//	                 that the tester raises no false alarm)
const brokerEnv = "KEEL_CRASHTEST_BROKER"

// Set in the environment of the test binary re-executed as the proxy.
const (
	proxyListenEnv = "CRASHTEST_PROXY_LISTEN"
	proxyTargetEnv = "CRASHTEST_PROXY_TARGET"
)

func TestMain(m *testing.M) {
	if target := os.Getenv(proxyTargetEnv); target != "" {
		runProxy(os.Getenv(proxyListenEnv), target)
		return
	}
	code := m.Run()
	if keelDir != "" {
		os.RemoveAll(keelDir)
	}
	os.Exit(code)
}

// runProxy forwards every connection on listen to target until killed.
func runProxy(listen, target string) {
	l, err := net.Listen("tcp", listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "proxy:", err)
		os.Exit(1)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "proxy:", err)
			os.Exit(1)
		}
		go func() {
			defer c.Close()
			u, err := net.Dial("tcp", target)
			if err != nil {
				return
			}
			defer u.Close()
			go func() {
				io.Copy(u, c)
				u.Close()
			}()
			io.Copy(c, u)
		}()
	}
}

var (
	keelOnce sync.Once
	keelDir  string
	keelBin  string
	keelErr  error
)

// builtKeel builds ./cmd/keel once per test binary.
func builtKeel(t *testing.T) string {
	keelOnce.Do(func() {
		keelDir, keelErr = os.MkdirTemp("", "crashtest-keel-")
		if keelErr == nil {
			keelBin, keelErr = buildKeel(context.Background(), keelDir)
		}
	})
	if keelErr != nil {
		t.Fatalf("%v", keelErr)
	}
	return keelBin
}

// startMosquitto runs one mosquitto for the whole test.
func startMosquitto(t *testing.T) string {
	addr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	if err := writeMosquittoConf(conf, addr, false, false, false, dir); err != nil {
		t.Fatal(err)
	}
	b := &broker{args: []string{"mosquitto", "-c", conf}, addr: addr, logPath: filepath.Join(dir, "mosquitto.log")}
	if err := b.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.stop)
	if _, err := b.waitReady(context.Background(), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return addr
}

type testCase struct {
	name string
	cfg  Config
}

var cases = []testCase{
	{"online/qos1", Config{Mode: ModeOnline, QoS: 1}},
	{"online/qos2", Config{Mode: ModeOnline, QoS: 2}},
	{"offline/qos1", Config{Mode: ModeOffline, QoS: 1}},
	{"offline/qos2", Config{Mode: ModeOffline, QoS: 2, Version: 5}},
	{"replay-crash/qos2", Config{Mode: ModeReplayCrash, QoS: 2, Crashes: 8}},
	{"retain-will/qos1", Config{Mode: ModeRetainWill, QoS: 1, Version: 5}},
	{"many-sessions/qos2", Config{Mode: ModeManySessions, QoS: 2, Sessions: 500}},
	// With a password file and an ACL (auth.go): every client logs in, and
	// sessions are owned by their user across every restart.
	{"online/qos2/auth", Config{Mode: ModeOnline, QoS: 2, Version: 5, Crashes: 3, Auth: true}},
	// Over TLS (tls.go): kill -9 cuts TLS sessions; every client
	// reconnects with a new handshake.
	{"offline/qos2/tls", Config{Mode: ModeOffline, QoS: 2, Version: 5, Crashes: 3, TLS: true}},
	{"online/qos2/wss", Config{Mode: ModeOnline, QoS: 2, Crashes: 3, TLS: true, WebSocket: true}},
}

// TestCrash runs a short crash test per mode. Against keel (the default)
// every case must pass.
func TestCrash(t *testing.T) {
	which := os.Getenv(brokerEnv)
	base := Config{
		Crashes:      5,
		Duration:     10 * time.Second,
		Timeout:      60 * time.Second,
		DrainTimeout: 20 * time.Second,
		Seed:         uint64(time.Now().UnixNano()),
	}
	wantViolations := false
	switch which {
	case "", "keel":
		base.Broker, base.KeelPath = BrokerKeel, builtKeel(t)
	case "mosquitto":
		base.Broker = BrokerMosquitto
		wantViolations = true
	case "mosquitto-proxy":
		target := startMosquitto(t)
		base.Broker = BrokerCmd
		base.BrokerCmd = []string{"env", proxyTargetEnv + "=" + target, proxyListenEnv + "={addr}", os.Args[0]}
	default:
		t.Fatalf("%s=%q: want keel, mosquitto or mosquitto-proxy", brokerEnv, which)
	}
	if which == "mosquitto" {
		if _, err := exec.LookPath("mosquitto"); err != nil {
			t.Fatalf("%s=mosquitto: %v", brokerEnv, err)
		}
	}

	for i, tc := range cases {
		if (tc.cfg.TLS || tc.cfg.WebSocket) && base.Broker == BrokerCmd {
			// The proxy in front of the test's mosquitto forwards plain
			// TCP to a plain listener: a TLS client has no one to talk to.
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			merge(&cfg, base)
			cfg.Seed = base.Seed + uint64(i) // a different crash schedule per case
			cfg.WorkDir = t.TempDir()
			cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
			res, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Log(res.Summary())
			for _, e := range res.Examples {
				t.Log("example:", e)
			}
			v := res.Violations()
			switch {
			case wantViolations && len(v) == 0:
				t.Errorf("seed %d: %s keeps nothing across kill -9, yet no violation was reported", res.Seed, which)
			case !wantViolations && len(v) > 0:
				t.Errorf("seed %d: violations: %s", res.Seed, strings.Join(v, "; "))
				b := &broker{logPath: filepath.Join(cfg.WorkDir, "broker.log")}
				t.Logf("broker log tail:\n%s", b.logTail(4096))
			}
			if res.Crashes == 0 {
				t.Errorf("no crash happened")
			}
			if tc.cfg.Auth && res.Accepted == 0 {
				t.Errorf("accepted=0: nothing was published, so the run proves nothing")
			}
		})
	}

	if which == "mosquitto" {
		// Without crashes, mosquitto keeps its promises: the tester must
		// not report anything.
		t.Run("no-crash", func(t *testing.T) {
			cfg := Config{Mode: ModeOffline, QoS: 2, Crashes: -1}
			merge(&cfg, base)
			cfg.WorkDir = t.TempDir()
			cfg.Duration = 2 * time.Second
			res, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Log(res.Summary())
			if v := res.Violations(); len(v) > 0 {
				t.Errorf("violations without crashes: %s", strings.Join(v, "; "))
			}
			if res.Accepted == 0 {
				t.Errorf("accepted=0: nothing was published")
			}
		})
	}
}

// merge fills cfg's zero fields from base.
func merge(cfg *Config, base Config) {
	if cfg.Crashes == 0 {
		cfg.Crashes = base.Crashes
	}
	cfg.Duration = base.Duration
	cfg.Timeout = base.Timeout
	cfg.DrainTimeout = base.DrainTimeout
	cfg.Seed = base.Seed
	cfg.Broker = base.Broker
	cfg.KeelPath = base.KeelPath
	cfg.BrokerCmd = base.BrokerCmd
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
