package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"

	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// testVersion is stamped into the binary the tests build, as a release
// build would be with -ldflags.
const testVersion = "v0.0.0-keeltest"

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// keelBinary builds ./cmd/keel once per test binary, with testVersion.
func keelBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "keel-cmd-test-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-ldflags", "-X main.version="+testVersion,
			"-o", filepath.Join(buildDir, "keel"), ".")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "keel")
}

// keelProc is a keel process started by a test.
type keelProc struct {
	cmd     *exec.Cmd
	addr    string // MQTT address, from the start log line
	metrics string // metrics address, if any
	mu      sync.Mutex
	log     bytes.Buffer // stderr
	exited  chan struct{}
	err     error // Wait's, once exited is closed
}

var addrRE = regexp.MustCompile(`\baddr=(\S+)`)

// startKeel starts keel with args and waits until it logs that it is
// listening; it fails the test if keel exits first. The process is stopped
// (SIGKILL) at cleanup if the test has not stopped it.
func startKeel(t *testing.T, args ...string) *keelProc {
	t.Helper()
	p, err := launchKeel(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func launchKeel(t *testing.T, args ...string) (*keelProc, error) {
	t.Helper()
	p := &keelProc{cmd: exec.Command(keelBinary(t), args...), exited: make(chan struct{})}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
	})
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			if m := addrRE.FindStringSubmatch(line); m != nil {
				switch {
				case strings.Contains(line, `msg="admin listening"`):
					p.metrics = m[1]
				case strings.Contains(line, `msg="keel listening"`):
					p.addr = m[1]
					close(ready)
				}
			}
			p.mu.Unlock()
		}
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	select {
	case <-ready:
		return p, nil
	case <-p.exited:
		return p, fmt.Errorf("keel %s exited before listening: %v\n%s", strings.Join(args, " "), p.err, p.stderr())
	case <-time.After(30 * time.Second):
		return p, fmt.Errorf("keel %s did not log that it listens within 30s:\n%s", strings.Join(args, " "), p.stderr())
	}
}

func (p *keelProc) stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// stop sends SIGTERM and waits for a clean exit.
func (p *keelProc) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("keel did not exit within 30s of SIGTERM:\n%s", p.stderr())
	}
	if p.err != nil {
		t.Fatalf("keel exited with %v after SIGTERM:\n%s", p.err, p.stderr())
	}
}

// runKeel runs keel to its exit and returns its exit status and output.
func runKeel(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(keelBinary(t), args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("keel %s still running after 30s (want it to exit):\n%s", strings.Join(args, " "), e.String())
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatal(err)
	}
	return code, o.String(), e.String()
}

// waitLog waits until keel's log has a line containing s.
func (p *keelProc) waitLog(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.stderr(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("keel's log has no %q after 10s:\n%s", s, p.stderr())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var listenerRE = regexp.MustCompile(`msg="mqtt listener" addr=(\S+) listener=(\S+)`)

// listenerAddrs are the addresses keel logged for its listeners, by name.
func (p *keelProc) listenerAddrs(t *testing.T) map[string]string {
	t.Helper()
	addrs := map[string]string{}
	for _, m := range listenerRE.FindAllStringSubmatch(p.stderr(), -1) {
		addrs[m[2]] = m[1]
	}
	return addrs
}
