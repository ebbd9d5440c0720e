package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// scenario is one row of the matrix: the load flags, run unchanged against
// every broker.
type scenario struct {
	name  string // key, for -only
	title string
	args  []string
	// sync marks a synchronous scenario, judged by acknowledgement latency
	// rather than throughput.
	sync bool
	// rabbit prints RabbitMQ's published durable MQTT figure beside ours.
	rabbit bool
}

func throughput(name, title string, args ...string) scenario {
	return scenario{name: name, title: title, args: args}
}

var scenarios = []scenario{
	throughput("fanin-qos1-64", "fan-in 4→1, QoS 1, 64 B, window 64, persistent",
		"-pattern", "fanin", "-pub", "4", "-sub", "1", "-qos", "1", "-size", "64", "-window", "64", "-persistent"),
	throughput("fanin-qos1-1k", "fan-in 4→1, QoS 1, 1 KiB, window 64, persistent",
		"-pattern", "fanin", "-pub", "4", "-sub", "1", "-qos", "1", "-size", "1024", "-window", "64", "-persistent"),
	throughput("fanin-qos2-64", "fan-in 4→1, QoS 2, 64 B, window 64, persistent",
		"-pattern", "fanin", "-pub", "4", "-sub", "1", "-qos", "2", "-size", "64", "-window", "64", "-persistent"),
	throughput("fanin-qos2-1k", "fan-in 4→1, QoS 2, 1 KiB, window 64, persistent",
		"-pattern", "fanin", "-pub", "4", "-sub", "1", "-qos", "2", "-size", "1024", "-window", "64", "-persistent"),
	throughput("fanout-qos1-64", "fan-out 1→4, QoS 1, 64 B, window 64, persistent",
		"-pattern", "fanout", "-pub", "1", "-sub", "4", "-qos", "1", "-size", "64", "-window", "64", "-persistent"),
	throughput("fanout-qos1-1k", "fan-out 1→4, QoS 1, 1 KiB, window 64, persistent",
		"-pattern", "fanout", "-pub", "1", "-sub", "4", "-qos", "1", "-size", "1024", "-window", "64", "-persistent"),
	throughput("fanout-qos2-64", "fan-out 1→4, QoS 2, 64 B, window 64, persistent",
		"-pattern", "fanout", "-pub", "1", "-sub", "4", "-qos", "2", "-size", "64", "-window", "64", "-persistent"),
	throughput("fanout-qos2-1k", "fan-out 1→4, QoS 2, 1 KiB, window 64, persistent",
		"-pattern", "fanout", "-pub", "1", "-sub", "4", "-qos", "2", "-size", "1024", "-window", "64", "-persistent"),
	{name: "sync-qos1", title: "synchronous 1→1, QoS 1, 64 B, persistent", sync: true,
		args: []string{"-pattern", "fanin", "-pub", "1", "-sub", "1", "-qos", "1", "-size", "64", "-window", "1", "-persistent"}},
	{name: "sync-qos2", title: "synchronous 1→1, QoS 2, 64 B, persistent", sync: true,
		args: []string{"-pattern", "fanin", "-pub", "1", "-sub", "1", "-qos", "2", "-size", "64", "-window", "1", "-persistent"}},
	{name: "pairs-qos1-100", title: "100 synchronous pairs, QoS 1, 100 B, persistent", sync: true, rabbit: true,
		args: []string{"-pattern", "pairs", "-pub", "100", "-qos", "1", "-size", "100", "-window", "1", "-persistent"}},
	throughput("fanin-qos0-64", "fan-in 4→1, QoS 0, 64 B",
		"-pattern", "fanin", "-pub", "4", "-sub", "1", "-qos", "0", "-size", "64"),
	throughput("fanout-qos0-64", "fan-out 1→4, QoS 0, 64 B",
		"-pattern", "fanout", "-pub", "1", "-sub", "4", "-qos", "0", "-size", "64"),
	// Server-assigned topic aliases: a 60 B topic, as a device's
	// telemetry topic may be, without and with subscribers that allow
	// aliases (5.0; under -v 4 both rows are the same load).
	throughput("fanout-qos0-t60", "fan-out 1→4, QoS 0, 64 B, 60 B topic",
		"-pattern", "fanout", "-pub", "1", "-sub", "4", "-qos", "0", "-size", "64", "-topic-len", "60"),
	throughput("fanout-qos0-t60-alias", "fan-out 1→4, QoS 0, 64 B, 60 B topic, subscribers allow 16 topic aliases",
		"-pattern", "fanout", "-pub", "1", "-sub", "4", "-qos", "0", "-size", "64", "-topic-len", "60", "-sub-aliases", "16"),
	throughput("fanout-qos1-t60", "fan-out 1→4, QoS 1, 64 B, 60 B topic, window 64, persistent",
		"-pattern", "fanout", "-pub", "1", "-sub", "4", "-qos", "1", "-size", "64", "-window", "64", "-persistent", "-topic-len", "60"),
	throughput("fanout-qos1-t60-alias", "fan-out 1→4, QoS 1, 64 B, 60 B topic, window 64, persistent, subscribers allow 16 topic aliases",
		"-pattern", "fanout", "-pub", "1", "-sub", "4", "-qos", "1", "-size", "64", "-window", "64", "-persistent", "-topic-len", "60", "-sub-aliases", "16"),
}

// RabbitMQ's published figure for durable MQTT, 100 synchronous QoS 1
// publisher/subscriber pairs with 100 B payloads, on 8 CPUs.
const (
	rabbitRate       = 17995.0
	rabbitAckMeanUS  = 5550.0
	rabbitMachine    = "8 CPUs"
	mosquittoConfFmt = `# written by keel's bench matrix: in memory, nothing dropped
listener %d 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 1000000
max_queued_bytes 0
max_inflight_messages 0
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
`
)

// broker is one contender.
type broker struct {
	name string
	// start launches it listening on port, with dir as scratch space.
	start func(port int, dir string) *exec.Cmd
}

type matrixConfig struct {
	keel, mosquitto string
	reps            int
	duration        time.Duration
	warmup          time.Duration
	version         int
	only            *regexp.Regexp
	out             string
	tmp             string
	command         string
	keelRev         string
	keelBase        string // a second keel ("keel-base"), or ""
	keelBaseRev     string
	keelNote        string
	notes           string
	extra           string // bench auth's section (bench/AUTH.md), carried into the report
	carry           string // bench dedup's and bench bridge's sections (bench/DEDUP.md, bench/BRIDGE.md), comma-separated
	save            string
}

func matrixMain(args []string) int {
	fs := flag.NewFlagSet("bench matrix", flag.ExitOnError)
	var mc matrixConfig
	fs.StringVar(&mc.keel, "keel", "", "keel binary (empty: Mosquitto only)")
	fs.StringVar(&mc.keelBase, "keel-base", "", "a second keel binary, measured as \"keel-base\" between keel and Mosquitto (before/after a change)")
	fs.StringVar(&mc.keelBaseRev, "keel-base-rev", "", "keel-base's revision to quote in the report")
	fs.StringVar(&mc.mosquitto, "mosquitto", "mosquitto", "mosquitto binary")
	fs.IntVar(&mc.reps, "reps", 3, "runs of each scenario on each broker, interleaved")
	fs.DurationVar(&mc.duration, "duration", 5*time.Second, "measured time per run")
	fs.DurationVar(&mc.warmup, "warmup", time.Second, "warm-up per run (not measured)")
	fs.IntVar(&mc.version, "v", 5, "MQTT protocol level: 4 or 5")
	only := fs.String("only", "", "run only scenarios whose name matches this `regexp`")
	fs.StringVar(&mc.out, "out", "", "write the report as Markdown to this `file`")
	fs.StringVar(&mc.tmp, "tmp", "", "scratch directory on the disk to measure (default: a new temporary directory)")
	fs.StringVar(&mc.command, "command", "", "command line to quote in the report")
	fs.StringVar(&mc.keelRev, "keel-rev", "", "keel revision to quote in the report")
	fs.StringVar(&mc.keelNote, "keel-note", "", "why keel is missing, to quote in the report")
	fs.StringVar(&mc.notes, "notes", "", "Markdown `file` of hand-written analysis (profiles) to include in the report after the targets")
	fs.StringVar(&mc.carry, "carry", "", "comma-separated Markdown `files` of bench dedup's (DEDUP.md) and bench bridge's (BRIDGE.md) sections to carry into the report after bench auth's")
	fs.StringVar(&mc.extra, "extra", "", "Markdown `file` of bench auth's section (bench/AUTH.md) to carry into the report before the details")
	fs.StringVar(&mc.save, "save", "", "write every run's result (JSON) to this `file`, for -load")
	load := fs.String("load", "", "measure nothing: write the report (-out, -notes) again from a -save `file`")
	list := fs.Bool("list", false, "list the scenarios and exit")
	fs.Parse(args)
	if *list {
		for _, s := range scenarios {
			fmt.Printf("%-16s %s\n", s.name, s.title)
		}
		return 0
	}
	if *load != "" {
		m, todo, err := loadMatrix(*load, mc)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench matrix: -load:", err)
			return 2
		}
		if mc.out == "" {
			fmt.Fprintln(os.Stderr, "bench matrix: -load needs -out")
			return 2
		}
		if err := os.WriteFile(mc.out, m.markdown(todo), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "bench matrix:", err)
			return 2
		}
		m.printTargets(todo)
		return 0
	}
	if *only != "" {
		re, err := regexp.Compile(*only)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench matrix: -only:", err)
			return 2
		}
		mc.only = re
	}
	if mc.reps < 1 {
		fmt.Fprintln(os.Stderr, "bench matrix: -reps must be at least 1")
		return 2
	}
	if mc.tmp == "" {
		d, err := os.MkdirTemp("", "keel-bench-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench matrix:", err)
			return 2
		}
		defer os.RemoveAll(d)
		mc.tmp = d
	}
	mosq, err := exec.LookPath(mc.mosquitto)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench matrix: mosquitto:", err)
		return 2
	}
	mc.mosquitto = mosq

	var brokers []broker
	if mc.keel != "" {
		brokers = append(brokers, broker{name: "keel", start: func(port int, dir string) *exec.Cmd {
			return exec.Command(mc.keel, "serve", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--data", filepath.Join(dir, "data"))
		}})
	}
	if mc.keelBase != "" {
		brokers = append(brokers, broker{name: "keel-base", start: func(port int, dir string) *exec.Cmd {
			return exec.Command(mc.keelBase, "serve", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--data", filepath.Join(dir, "data"))
		}})
	}
	brokers = append(brokers, broker{name: "mosquitto", start: func(port int, dir string) *exec.Cmd {
		conf := filepath.Join(dir, "mosquitto.conf")
		os.WriteFile(conf, fmt.Appendf(nil, mosquittoConfFmt, port), 0o644)
		return exec.Command(mc.mosquitto, "-c", conf)
	}})

	m := &matrix{mc: mc, brokers: brokers}
	return m.run()
}

// matrix runs every scenario on every broker and reports.
type matrix struct {
	mc      matrixConfig
	brokers []broker

	fsync   *fsyncResult
	results map[string]map[string][]*result // scenario -> broker -> reps
	fails   []string
	started time.Time
	info    reportInfo

	reaper // running children, stopped on a signal
}

func (m *matrix) run() int {
	m.results = map[string]map[string][]*result{}
	m.started = time.Now()

	// Stop every child on SIGINT/SIGTERM, by pid.
	defer m.onSignal("bench matrix", syscall.SIGKILL, func() { os.RemoveAll(m.mc.tmp) })()

	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench matrix:", err)
		return 2
	}

	if r, err := fsyncProbe(m.mc.tmp, time.Second); err != nil {
		fmt.Fprintln(os.Stderr, "bench matrix:", err)
	} else {
		m.fsync = r
		fmt.Printf("fsync probe (%s): 64 B + fdatasync p50: append %s, rewrite %s, prealloc (as Pebble's WAL) %s; %.0fµs CPU per sync (%.0f%% of its wall time)\n",
			r.Dir, fmtUS(r.AppendP50), fmtUS(r.RewriteP50), fmtUS(r.PreallocP50), r.CPUPerSync, 100*r.CPUShare)
	}

	var todo []scenario
	for _, s := range scenarios {
		if m.mc.only == nil || m.mc.only.MatchString(s.name) {
			todo = append(todo, s)
		}
	}
	runs := len(todo) * m.mc.reps * len(m.brokers)
	n := 0
	for _, s := range todo {
		m.results[s.name] = map[string][]*result{}
		for rep := range m.mc.reps {
			for _, b := range m.brokers {
				n++
				fmt.Fprintf(os.Stderr, "[%d/%d] %s, %s, rep %d ... ", n, runs, s.name, b.name, rep+1)
				r, err := m.runOne(self, s, b, n)
				switch {
				case err != nil:
					fmt.Fprintf(os.Stderr, "error: %v\n", err)
					m.fails = append(m.fails, fmt.Sprintf("%s on %s, rep %d: %v", s.name, b.name, rep+1, err))
				case r.failed():
					fmt.Fprintf(os.Stderr, "LOSS: %d lost, %d duplicates\n", r.Lost, r.Dups)
					m.fails = append(m.fails, fmt.Sprintf("%s on %s, rep %d: %d acknowledged messages lost, %d duplicates", s.name, b.name, rep+1, r.Lost, r.Dups))
				default:
					fmt.Fprintf(os.Stderr, "%s\n", headline(s, r))
				}
				// A run that failed to finish has no figures worth a median;
				// a run that lost messages has, and is listed as failed.
				if err == nil && r != nil {
					m.results[s.name][b.name] = append(m.results[s.name][b.name], r)
				}
			}
		}
		m.printScenario(s)
	}

	m.gatherInfo()
	if m.mc.save != "" {
		if err := m.save(m.mc.save, todo); err != nil {
			fmt.Fprintln(os.Stderr, "bench matrix: -save:", err)
			return 2
		}
		fmt.Printf("\nsaved %s\n", m.mc.save)
	}
	if m.mc.out != "" {
		if err := os.WriteFile(m.mc.out, m.markdown(todo), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "bench matrix:", err)
			return 2
		}
		fmt.Printf("\nwrote %s\n", m.mc.out)
	}
	m.printTargets(todo)
	if len(m.fails) > 0 {
		fmt.Println("\nFAILED RUNS:")
		for _, f := range m.fails {
			fmt.Println("  " + f)
		}
		return 1
	}
	return 0
}

func headline(s scenario, r *result) string {
	if s.sync {
		return fmt.Sprintf("%.0f msg/s, ack p50 %s", r.PubRate, fmtUS(r.AckP50))
	}
	return fmt.Sprintf("%.0f msg/s delivered, e2e p50 %s", r.DelRate, fmtUS(r.E2EP50))
}

// runOne starts broker b on a free port with a fresh directory, runs the
// scenario against it in a child process, and stops the broker.
func (m *matrix) runOne(self string, s scenario, b broker, n int) (*result, error) {
	dir := filepath.Join(m.mc.tmp, fmt.Sprintf("run-%03d-%s", n, b.name))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	// A synchronous scenario is judged against one fsync of this disk:
	// measure it here, in this run's directory, right before the broker
	// starts, so the two figures share the disk's state of the moment.
	var probe *fsyncResult
	if s.sync {
		if probe, err = fsyncProbe(dir, 500*time.Millisecond); err != nil {
			return nil, err
		}
	}
	bp, err := startProc(b.name, b.start(port, dir), filepath.Join(dir, "broker.log"))
	if err != nil {
		return nil, err
	}
	m.track(bp.cmd.Process, true)
	defer func() {
		bp.stop(5 * time.Second)
		m.track(bp.cmd.Process, false)
	}()

	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := bp.listening(addr, 15*time.Second); err != nil {
		return nil, err
	}

	args := append([]string{
		"-addr", addr, "-pid", fmt.Sprint(bp.pid()), "-label", b.name, "-q",
		"-v", fmt.Sprint(m.mc.version), "-duration", m.mc.duration.String(), "-warmup", m.mc.warmup.String(),
	}, s.args...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*(m.mc.duration+m.mc.warmup)+90*time.Second)
	defer cancel()
	load := exec.CommandContext(ctx, self, args...)
	var stdout, stderr bytes.Buffer
	load.Stdout, load.Stderr = &stdout, &stderr
	if err := load.Start(); err != nil {
		return nil, err
	}
	m.track(load.Process, true)
	err = load.Wait()
	m.track(load.Process, false)
	r := parseResult(stdout.Bytes())
	if !bp.running() {
		return r, fmt.Errorf("%s exited during the run (%v); log: %s", b.name, bp.err, bp.tail())
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.ExitCode() == 1 && r != nil:
		// Loss: the result says so.
	default:
		msg := strings.TrimSpace(stderr.String())
		return r, fmt.Errorf("load: %v: %s", err, msg)
	}
	if r == nil {
		return nil, fmt.Errorf("load: no RESULT line: %s", strings.TrimSpace(stderr.String()))
	}
	r.Fsync = probe
	return r, nil
}

func parseResult(out []byte) *result {
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	var r *result
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "RESULT ")
		if !ok {
			continue
		}
		var x result
		if json.Unmarshal([]byte(line), &x) == nil {
			r = &x
		}
	}
	return r
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

var errExited = errors.New("exited")

// logTail returns the part of a broker's log that explains a failure: from
// the first panic on if there is one, else the last lines; a dozen lines
// at most, joined with " | ".
func logTail(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "panic:") || strings.HasPrefix(l, "fatal error:") {
			lines = lines[i:min(i+12, len(lines))]
			break
		}
	}
	if len(lines) > 12 {
		lines = lines[len(lines)-12:]
	}
	return strings.Join(lines, " | ")
}

// waitListening dials addr until it answers, the process exits, or the
// timeout passes.
func waitListening(addr string, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return errExited
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening on %s after %v", addr, timeout)
		}
	}
}

func (m *matrix) printTargets(todo []scenario) {
	if m.mc.keel == "" {
		return
	}
	if rows := m.targetRows(todo); len(rows) > 0 {
		fmt.Println("\n== targets")
		for _, r := range rows {
			fmt.Printf("  %-8s %s: %s\n", r[2], r[0], r[1])
		}
	}
}
