package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Without --listen, keel listens on loopback port 1883. The port may be
// taken on the machine running the test: either way the address keel
// tried is in its log (the start line or the bind error).
func TestServeDefaultsToLoopback(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	p, err := launchKeel(t, "serve", "--data", data)
	if err != nil {
		if !strings.Contains(err.Error(), "mqtt listener 127.0.0.1:1883: listen tcp 127.0.0.1:1883") {
			t.Fatalf("got %v; want keel on 127.0.0.1:1883, or its bind error for that address", err)
		}
		return
	}
	if p.addr != "127.0.0.1:1883" {
		t.Errorf("keel listens on %s, want 127.0.0.1:1883", p.addr)
	}
	p.stop(t)
}

// A second keel on a data directory in use names the first by its PID and
// exits 1.
func TestSecondKeelNamesTheFirst(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	first := startKeel(t, "serve", "--listen", "127.0.0.1:0", "--data", data)
	code, _, stderr := runKeel(t, "serve", "--listen", "127.0.0.1:0", "--data", data)
	want := fmt.Sprintf("another keel (pid %d) holds data directory %s", first.cmd.Process.Pid, data)
	if code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("second keel: exit %d, stderr:\n%s\nwant exit 1 and %q", code, stderr, want)
	}
	first.stop(t)
}

// A directory holding other files is not made a data directory.
func TestServeRefusesForeignDirectory(t *testing.T) {
	data := t.TempDir()
	if err := os.WriteFile(filepath.Join(data, "x.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runKeel(t, "serve", "--listen", "127.0.0.1:0", "--data", data)
	if code != 1 || !strings.Contains(stderr, data+" holds x.txt and no Pebble store") {
		t.Errorf("exit %d, stderr:\n%s\nwant exit 1 and a refusal naming %s and x.txt", code, stderr, data)
	}
	if ents, _ := os.ReadDir(data); len(ents) != 1 {
		t.Errorf("%s holds %d entries after the refusal, want only x.txt", data, len(ents))
	}
}

// An admin (metrics) address that cannot be served stops keel at start.
func TestMetricsBindFailureIsFatal(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, addr := range []string{taken.Addr().String(), "127.0.0.1:99999"} {
		data := filepath.Join(t.TempDir(), "data")
		code, _, stderr := runKeel(t, "serve", "--listen", "127.0.0.1:0", "--data", data, "--metrics", addr)
		if code != 1 || !strings.Contains(stderr, "keel: admin listener "+addr+":") {
			t.Errorf("--metrics %s: exit %d, stderr:\n%s\nwant exit 1 and an error naming the address", addr, code, stderr)
		}
	}
}

func httpStatus(t *testing.T, url string) int {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// /debug/pprof/ is served only when asked for, by flag or by config key;
// /metrics always.
func TestPprofIsOptIn(t *testing.T) {
	conf := writeConfig(t, "metrics = 127.0.0.1:0\npprof = true\n")
	for _, tc := range []struct {
		name  string
		args  []string
		pprof bool
	}{
		{"default", []string{"--metrics", "127.0.0.1:0"}, false},
		{"flag", []string{"--metrics", "127.0.0.1:0", "--pprof"}, true},
		{"config", []string{"--config", conf}, true},
		{"flag over config", []string{"--config", conf, "--pprof=false"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"serve", "--listen", "127.0.0.1:0", "--data", filepath.Join(t.TempDir(), "data")}, tc.args...)
			p := startKeel(t, args...)
			if p.metrics == "" {
				t.Fatalf("keel did not log its metrics address:\n%s", p.stderr())
			}
			if got := httpStatus(t, "http://"+p.metrics+"/metrics"); got != http.StatusOK {
				t.Errorf("/metrics: status %d, want 200", got)
			}
			want := http.StatusNotFound
			if tc.pprof {
				want = http.StatusOK
			}
			if got := httpStatus(t, "http://"+p.metrics+"/debug/pprof/"); got != want {
				t.Errorf("/debug/pprof/: status %d, want %d", got, want)
			}
			p.stop(t)
		})
	}
	code, _, stderr := runKeel(t, "serve", "--listen", "127.0.0.1:0", "--data", filepath.Join(t.TempDir(), "data"), "--pprof")
	if code != 1 || !strings.Contains(stderr, "flag --pprof: /debug/pprof/ is served on the admin address: set admin too") {
		t.Errorf("--pprof without --metrics: exit %d, stderr:\n%s\nwant exit 1 and why", code, stderr)
	}
}

// $SYS/broker/version carries the version stamped at build time.
func TestSysBrokerVersion(t *testing.T) {
	p := startKeel(t, "serve", "--listen", "127.0.0.1:0", "--data", filepath.Join(t.TempDir(), "data"))
	got := make(chan string, 1)
	o := mqtt.NewClientOptions().AddBroker("tcp://" + p.addr).SetClientID("version-reader").
		SetAutoReconnect(false).SetConnectTimeout(10 * time.Second)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(0)
	tok := c.Subscribe("$SYS/broker/version", 0, func(_ mqtt.Client, m mqtt.Message) {
		select {
		case got <- string(m.Payload()):
		default:
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	select {
	case v := <-got:
		if want := "keel " + testVersion; v != want {
			t.Errorf("$SYS/broker/version = %q, want %q", v, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no $SYS/broker/version within 10s")
	}
	p.stop(t)
}

// --listen on every interface needs --allow-anonymous; with it keel serves.
func TestServeEveryInterfaceNeedsAllowAnonymous(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	code, _, stderr := runKeel(t, "serve", "--listen", "0.0.0.0:0", "--data", data)
	if want := `flag --listen: 0.0.0.0:0 is reachable from other hosts`; code != 1 || !strings.Contains(stderr, want) {
		t.Fatalf("exit %d, stderr:\n%s\nwant exit 1 and %q", code, stderr, want)
	}
	p := startKeel(t, "serve", "--listen", "0.0.0.0:0", "--allow-anonymous", "--data", data)
	_, port, _ := net.SplitHostPort(p.addr)
	c, err := net.Dial("tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatalf("keel on %s: %v", p.addr, err)
	}
	c.Close()
	p.stop(t)
}
