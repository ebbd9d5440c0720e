package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// proc is a child process bench started (a broker, or a load run), with
// its output in a log file. It is only ever stopped by its own pid.
type proc struct {
	name   string
	cmd    *exec.Cmd
	logf   *os.File
	exited chan struct{} // closed when the process has been waited for
	err    error         // Wait's result; read only after exited is closed
}

// startProc starts cmd with its stdout and stderr appended to logPath.
func startProc(name string, cmd *exec.Cmd, logPath string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logf: logf, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// tail is the part of the log that explains a failure (see logTail).
func (p *proc) tail() string { return logTail(p.logf.Name()) }

// running reports whether the process has not exited yet.
func (p *proc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// listening waits until addr answers, failing with the log's tail if the
// process exits or the timeout passes first.
func (p *proc) listening(addr string, timeout time.Duration) error {
	if err := waitListening(addr, p.exited, timeout); err != nil {
		return fmt.Errorf("%s did not start: %w; log: %s", p.name, err, p.tail())
	}
	return nil
}

// stop sends SIGTERM, then SIGKILL if the process is still there after
// grace, and waits for it.
func (p *proc) stop(grace time.Duration) {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		p.kill()
	}
}

// kill sends SIGKILL (a crash, for a broker) and waits for the process.
func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// reaper knows the children running now, so that a SIGINT or SIGTERM to
// bench stops each of them by pid before bench exits.
type reaper struct {
	mu struct {
		sync.Mutex
		procs map[int]*os.Process
	}
}

func (r *reaper) track(p *os.Process, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mu.procs == nil {
		r.mu.procs = map[int]*os.Process{}
	}
	if on {
		r.mu.procs[p.Pid] = p
	} else {
		delete(r.mu.procs, p.Pid)
	}
}

// signalAll sends sig to every tracked child.
func (r *reaper) signalAll(sig os.Signal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.mu.procs {
		p.Signal(sig)
	}
}

// onSignal installs the handler: on SIGINT or SIGTERM every child gets
// sig, cleanup runs, and bench exits with 130. The returned func removes
// the handler.
func (r *reaper) onSignal(who string, sig os.Signal, cleanup func()) (remove func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			r.signalAll(sig)
			if cleanup != nil {
				cleanup()
			}
			fmt.Fprintf(os.Stderr, "%s: %v: stopped\n", who, s)
			os.Exit(130)
		case <-done:
		}
	}()
	return func() { signal.Stop(sigs); close(done) }
}
