package auth

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The tests in this package run the real Mosquitto (Debian's mosquitto
// and mosquitto-clients) beside Keel's code on the same files. Outside CI
// a missing program skips the test, saying what to install; with CI=true
// it is a failure.

// mosqWait bounds every wait on a Mosquitto process or client.
const mosqWait = 20 * time.Second

func needTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			msg := fmt.Sprintf("%s not installed (apt-get install -y mosquitto mosquitto-clients)", n)
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Skip(msg + "; with CI=true this is a failure")
		}
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// startMosquitto runs mosquitto on a free loopback port with the config
// lines conf, until the test ends, and returns its address. It waits for
// Mosquitto's own "running" log line, not for a time.
func startMosquitto(t *testing.T, conf ...string) string {
	t.Helper()
	needTools(t, "mosquitto")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	lines := append([]string{
		fmt.Sprintf("listener %d 127.0.0.1", port),
		"persistence false",
		"log_dest stderr", // unbuffered, unlike stdout into a pipe
		"log_type error",
		"log_type warning",
		"log_type notice",
		"log_type information",
		"user root", // run as root: do not switch to the mosquitto user, who cannot read t.TempDir()
	}, conf...)
	path := writeFile(t, t.TempDir(), "mosquitto.conf", strings.Join(lines, "\n")+"\n")
	cmd := exec.Command("mosquitto", "-c", path)
	out, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	running := make(chan struct{})
	var log strings.Builder
	go func() {
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
	case <-time.After(mosqWait):
		t.Fatalf("mosquitto did not say it was running within %v", mosqWait)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// mosquittoPub runs mosquitto_pub against addr with args and returns its
// error (nil: exit status 0) and output.
func mosquittoPub(t *testing.T, addr string, args ...string) (string, error) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), mosqWait)
	defer cancel()
	all := append([]string{"-h", host, "-p", port}, args...)
	out, err := exec.CommandContext(ctx, "mosquitto_pub", all...).CombinedOutput()
	return string(out), err
}
