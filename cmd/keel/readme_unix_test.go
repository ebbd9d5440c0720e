//go:build unix

package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// The README's "Try the promise" block, run as it is with bash in a fresh
// copy of the repository, on a free port: 1,000 QoS 2 messages survive
// kill -9, each once, in order.
func TestReadmeTryThePromise(t *testing.T) {
	needTools(t, "bash", "mosquitto_sub", "mosquitto_pub", "go", "seq", "cmp", "mktemp")
	block := readmeBlock(t, "try-the-promise", "bash")
	dir := clone(t)
	script := filepath.Join(t.TempDir(), "try.sh")
	if err := os.WriteFile(script, []byte(block), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), fmt.Sprintf("PORT=%d", freePort(t)), "TMPDIR="+t.TempDir())
	// Its own process group, so whatever the block leaves running is
	// killed below, and only that.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if err != nil {
		t.Fatalf("bash README block: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	if got, want := stdout.String(), "1000\neach once, in order\n"; got != want {
		t.Fatalf("README block printed %q, want %q\nstderr:\n%s", got, want, stderr.String())
	}
}
