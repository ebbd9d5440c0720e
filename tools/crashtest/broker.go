package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// broker runs the broker under test as a child process: started on a fixed
// loopback address and data directory, killed with SIGKILL, restarted on
// the same directory. Only the process it started is ever signalled, by
// its PID (through os.Process, which cannot hit a reused PID).
type broker struct {
	args    []string // expanded command line
	addr    string
	logPath string

	mu struct {
		sync.Mutex
		cmd    *exec.Cmd
		exited chan struct{} // closed once cmd.Wait returned
		state  *os.ProcessState
		starts int
	}
}

// errBrokerExited means the broker process ended by itself.
var errBrokerExited = errors.New("broker exited by itself")

// expandArgs replaces {addr}, {port}, {data}, {work}, {passwd} and {acl}
// (the -auth files, in work) in every argument.
func expandArgs(tmpl []string, addr, data, work string) []string {
	_, port, _ := net.SplitHostPort(addr)
	r := strings.NewReplacer("{addr}", addr, "{port}", port, "{data}", data, "{work}", work,
		"{passwd}", filepath.Join(work, authFile), "{acl}", filepath.Join(work, aclFile),
		"{cafile}", filepath.Join(work, tlsCAFile), "{certfile}", filepath.Join(work, tlsCertFile), "{keyfile}", filepath.Join(work, tlsKeyFile))
	out := make([]string, len(tmpl))
	for i, a := range tmpl {
		out[i] = r.Replace(a)
	}
	return out
}

// start starts a new broker process. The previous one must have been
// killed.
func (b *broker) start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.mu.cmd != nil {
		select {
		case <-b.mu.exited:
		default:
			panic("crashtest: broker started twice")
		}
	}
	b.mu.starts++
	logf, err := os.OpenFile(b.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("broker: log: %w", err)
	}
	fmt.Fprintf(logf, "=== crashtest: start %d at %s: %s\n", b.mu.starts, time.Now().Format(time.RFC3339Nano), strings.Join(b.args, " "))
	cmd := exec.Command(b.args[0], b.args[1:]...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = sysProcAttr()
	err = cmd.Start()
	logf.Close() // the child has its own descriptor
	if err != nil {
		return fmt.Errorf("broker: start %s: %w", b.args[0], err)
	}
	exited := make(chan struct{})
	b.mu.cmd, b.mu.exited, b.mu.state = cmd, exited, nil
	// Owner: every start is followed by kill or stop, which wait for
	// exited.
	go func() {
		cmd.Wait()
		b.mu.Lock()
		b.mu.state = cmd.ProcessState
		b.mu.Unlock()
		close(exited)
	}()
	return nil
}

func (b *broker) current() (*exec.Cmd, chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.mu.cmd, b.mu.exited
}

// alive returns errBrokerExited (with the exit status and the log's tail)
// if the current process ended by itself.
func (b *broker) alive() error {
	cmd, exited := b.current()
	if cmd == nil {
		return nil
	}
	select {
	case <-exited:
		b.mu.Lock()
		st, n := b.mu.state, b.mu.starts
		b.mu.Unlock()
		return fmt.Errorf("%w (start %d): %v; log tail:\n%s", errBrokerExited, n, st, b.logTail(2048))
	default:
		return nil
	}
}

// kill sends SIGKILL to the running broker and waits for it to be gone.
// It fails with errBrokerExited if the process had already ended on its
// own.
func (b *broker) kill() error {
	if err := b.alive(); err != nil {
		return err
	}
	cmd, exited := b.current()
	if cmd == nil {
		return nil
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("broker: kill pid %d: %w", cmd.Process.Pid, err)
	}
	<-exited
	return nil
}

// stop kills the broker if it runs and waits for it; safe to call at any
// time, more than once.
func (b *broker) stop() {
	cmd, exited := b.current()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

// waitReady polls the port until it accepts a TCP connection, and reports
// how long that took from the call. It fails if the process exits or the
// timeout passes.
func (b *broker) waitReady(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	d := net.Dialer{Timeout: 100 * time.Millisecond}
	for {
		if err := b.alive(); err != nil {
			return 0, err
		}
		c, err := d.DialContext(ctx, "tcp", b.addr)
		if err == nil {
			c.Close()
			return time.Since(start), nil
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("broker: %s not accepting after %v: %v", b.addr, timeout, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// logTail returns at most n bytes from the end of the broker's log.
func (b *broker) logTail(n int64) string {
	f, err := os.Open(b.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(st.Size()-n, 0)
	buf, _ := io.ReadAll(io.NewSectionReader(f, off, n))
	return string(buf)
}

// freeAddr returns a loopback address whose port was free a moment ago.
// The port is taken below the kernel's ephemeral range when possible: the
// broker is down between a kill and its restart, and an outbound socket
// (of this process or any other) must not grab the port meanwhile.
func freeAddr() (string, error) {
	lo := ephemeralLow()
	for range 100 {
		if lo <= 10000 {
			break
		}
		port := 10000 + rand.IntN(lo-10000)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		l.Close()
		return l.Addr().String(), nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// ephemeralLow is the first port of the ephemeral range (Linux; else the
// IANA one).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				return n
			}
		}
	}
	return 49152
}

// buildKeel builds ./cmd/keel into dir and returns the binary's path.
func buildKeel(ctx context.Context, dir string) (string, error) {
	out := filepath.Join(dir, "keel")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/keelmq/keel/cmd/keel")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build keel: %w\n%s", err, msg)
	}
	return out, nil
}

// writeMosquittoConf writes a configuration that serves addr on loopback
// without persistence: Mosquitto then keeps nothing across kill -9, which
// is what the tester must detect. With auth it reads the -auth files in
// work and lets no anonymous client in.
func writeMosquittoConf(path, addr string, auth, withTLS, ws bool, work string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if _, err := strconv.Atoi(port); err != nil {
		return err
	}
	anon := "allow_anonymous true\n"
	if auth {
		anon = "per_listener_settings false\nallow_anonymous false\n" +
			"password_file " + filepath.Join(work, authFile) + "\n" +
			"acl_file " + filepath.Join(work, aclFile) + "\n"
		if os.Geteuid() == 0 {
			// Started as root, Mosquitto runs as the user mosquitto, who
			// cannot read the files in the private work dir.
			anon += "user root\n"
		}
	}
	conf := "listener " + port + " 127.0.0.1\n"
	if ws {
		conf += "protocol websockets\n"
	}
	if withTLS {
		if os.Geteuid() == 0 && !auth {
			// Started as root, Mosquitto runs as the user mosquitto, who
			// cannot read the key in the private work dir.
			anon += "user root\n"
		}
		conf += "cafile " + filepath.Join(work, tlsCAFile) + "\ncertfile " + filepath.Join(work, tlsCertFile) +
			"\nkeyfile " + filepath.Join(work, tlsKeyFile) + "\n"
	}
	conf += anon +
		"persistence false\n" +
		"max_queued_messages 1000000\n" +
		"max_inflight_messages 0\n" +
		"log_dest stderr\n" +
		"log_type error\n" +
		"log_type warning\n"
	return os.WriteFile(path, []byte(conf), 0o644)
}
