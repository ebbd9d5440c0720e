package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// connsDriveConfig is bench conns as a driver: the conns scenario against
// keel (and keel-base, another build) and Mosquitto, each run a fresh
// broker on a free port, interleaved rep by rep; medians, ratios, and a
// Markdown section that bench matrix includes in BENCHMARKS.md (-conns).
type connsDriveConfig struct {
	keel, keelBase, mosquitto string
	keelRev, keelBaseRev      string
	reps                      int
	modes                     string
	tmp, out, command         string

	ns  []int       // from -n
	run connsConfig // the per-run flags (-v, -keepalive, -concurrency, -subs, ...)
}

// A connsMode is what each connection holds.
type connsMode struct {
	name       string
	persistent bool
	subs       int
}

func (dc *connsDriveConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&dc.keel, "keel", "", "driver: keel binary")
	fs.StringVar(&dc.keelBase, "keel-base", "", "driver: a second keel binary (\"keel-base\": before a change)")
	fs.StringVar(&dc.mosquitto, "mosquitto", "", "driver: mosquitto binary")
	fs.StringVar(&dc.keelRev, "keel-rev", "", "driver: keel's revision, for the report")
	fs.StringVar(&dc.keelBaseRev, "keel-base-rev", "", "driver: keel-base's revision, for the report")
	fs.IntVar(&dc.reps, "reps", 3, "driver: runs of each case on each broker, interleaved")
	fs.StringVar(&dc.modes, "modes", "clean,persistent", "driver: clean (clean session, no subscriptions) and/or persistent (persistent session, -subs filters; 0: 10)")
	fs.StringVar(&dc.tmp, "tmp", "", "driver: scratch directory (default: a new temporary directory)")
	fs.StringVar(&dc.out, "out", "", "driver: write the report section as Markdown to this `file` (bench matrix -conns includes it)")
	fs.StringVar(&dc.command, "command", "", "driver: command line to quote in the report")
}

func (dc *connsDriveConfig) driving() bool {
	return dc.keel != "" || dc.keelBase != "" || dc.mosquitto != ""
}

type connsBroker struct {
	name  string
	start func(port int, dir string) *exec.Cmd
}

// connsCase is one (connections, mode) cell: results per broker.
type connsCase struct {
	n       int
	mode    connsMode
	results map[string][]*connsResult
}

func (dc *connsDriveConfig) main() int {
	var modes []connsMode
	for _, m := range strings.Split(dc.modes, ",") {
		switch strings.TrimSpace(m) {
		case "clean":
			modes = append(modes, connsMode{name: "clean"})
		case "persistent":
			subs := dc.run.subs
			if subs == 0 {
				subs = 10
			}
			modes = append(modes, connsMode{name: "persistent", persistent: true, subs: subs})
		default:
			fmt.Fprintf(os.Stderr, "bench conns: -modes: unknown mode %q (clean, persistent)\n", m)
			return 2
		}
	}
	if dc.reps < 1 {
		fmt.Fprintln(os.Stderr, "bench conns: -reps must be at least 1")
		return 2
	}
	var brokers []connsBroker
	keelStart := func(bin string) func(int, string) *exec.Cmd {
		return func(port int, dir string) *exec.Cmd {
			return exec.Command(bin, "serve", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--data", filepath.Join(dir, "data"))
		}
	}
	if dc.keel != "" {
		brokers = append(brokers, connsBroker{"keel", keelStart(dc.keel)})
	}
	if dc.keelBase != "" {
		brokers = append(brokers, connsBroker{"keel-base", keelStart(dc.keelBase)})
	}
	if dc.mosquitto != "" {
		mosq, err := exec.LookPath(dc.mosquitto)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench conns: mosquitto:", err)
			return 2
		}
		dc.mosquitto = mosq
		brokers = append(brokers, connsBroker{"mosquitto", func(port int, dir string) *exec.Cmd {
			conf := filepath.Join(dir, "mosquitto.conf")
			os.WriteFile(conf, fmt.Appendf(nil, mosquittoConfFmt, port), 0o644)
			return exec.Command(dc.mosquitto, "-c", conf)
		}})
	}
	if dc.tmp == "" {
		d, err := os.MkdirTemp("", "keel-conns-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench conns:", err)
			return 2
		}
		defer os.RemoveAll(d)
		dc.tmp = d
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench conns:", err)
		return 2
	}
	var rp reaper
	defer rp.onSignal("bench conns", syscall.SIGTERM, nil)()

	started := time.Now()
	var cases []*connsCase
	var fails []string
	total := len(dc.ns) * len(modes) * dc.reps * len(brokers)
	k := 0
	for _, n := range dc.ns {
		for _, mode := range modes {
			cs := &connsCase{n: n, mode: mode, results: map[string][]*connsResult{}}
			cases = append(cases, cs)
			for rep := range dc.reps {
				for _, b := range brokers {
					k++
					fmt.Fprintf(os.Stderr, "[%d/%d] %d %s, %s, rep %d ... ", k, total, n, mode.name, b.name, rep+1)
					r, err := dc.runOne(&rp, self, b, n, mode, k)
					if err != nil {
						fmt.Fprintf(os.Stderr, "error: %v\n", err)
						fails = append(fails, fmt.Sprintf("%d %s on %s, rep %d: %v", n, mode.name, b.name, rep+1, err))
						continue
					}
					fmt.Fprintf(os.Stderr, "%.2f kB per connection (%.2f after the round), %.0f connects/s\n", r.PerConn, r.PerConnPng, r.ConnectRate)
					cs.results[b.name] = append(cs.results[b.name], r)
				}
			}
		}
	}
	rep := connsReport{dc: dc, brokers: brokers, cases: cases, fails: fails, started: started, elapsed: time.Since(started).Round(time.Second)}
	rep.print()
	if dc.out != "" {
		if err := os.WriteFile(dc.out, rep.markdown(), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "bench conns:", err)
			return 2
		}
		fmt.Printf("\nwrote %s\n", dc.out)
	}
	if len(fails) > 0 {
		fmt.Println("\nFAILED RUNS:")
		for _, f := range fails {
			fmt.Println("  " + f)
		}
		return 1
	}
	return 0
}

// runOne starts broker b on a free port with a fresh directory, runs one
// conns scenario against it in a child process, and stops the broker.
func (dc *connsDriveConfig) runOne(rp *reaper, self string, b connsBroker, n int, mode connsMode, k int) (*connsResult, error) {
	dir := filepath.Join(dc.tmp, fmt.Sprintf("run-%03d-%s", k, b.name))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	bp, err := startProc(b.name, b.start(port, dir), filepath.Join(dir, "broker.log"))
	if err != nil {
		return nil, err
	}
	rp.track(bp.cmd.Process, true)
	defer func() { bp.stop(10 * time.Second); rp.track(bp.cmd.Process, false) }()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := bp.listening(addr, 15*time.Second); err != nil {
		return nil, err
	}
	c := dc.run
	args := []string{"conns", "-addr", addr, "-pid", fmt.Sprint(bp.pid()), "-label", b.name, "-q",
		"-n", fmt.Sprint(n), "-v", fmt.Sprint(c.version), "-keepalive", fmt.Sprint(c.keepAlive),
		"-concurrency", fmt.Sprint(c.concurrency), "-sources", fmt.Sprint(c.sources),
		"-settle", c.settle.String(), "-idle", c.idle.String(), "-subs", fmt.Sprint(mode.subs)}
	if mode.persistent {
		args = append(args, "-persistent")
	}
	var r connsResult
	err = seamsChild(rp, &r, self, args...)
	if !bp.running() {
		return nil, fmt.Errorf("%s exited during the run (%v); log: %s", b.name, bp.err, bp.tail())
	}
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// connsReport renders the driver's results.
type connsReport struct {
	dc      *connsDriveConfig
	brokers []connsBroker
	cases   []*connsCase
	fails   []string
	started time.Time
	elapsed time.Duration
}

type connsFigure struct {
	label string
	get   func(*connsResult) float64
	fmt   func(float64) string
}

func kb(v float64) string { return fmt.Sprintf("%.2f KB", v) }
func mb(v float64) string { return fmt.Sprintf("%.0f MB", v/1024) }
func us(v float64) string { return fmt.Sprintf("%.1fµs", v) }
func cores3(v float64) string {
	return fmt.Sprintf("%.3f", v)
}

var connsFigures = []connsFigure{
	{"RSS per connection, after CONNACK", func(r *connsResult) float64 { return r.PerConn }, kb},
	{"RSS per connection, after the keep-alive round", func(r *connsResult) float64 { return r.PerConnPng }, kb},
	{"broker RSS before / after the connections", nil, nil}, // two figures: see rows
	{"connections per second", func(r *connsResult) float64 { return r.ConnectRate }, rate},
	{"broker CPU per connect", func(r *connsResult) float64 { return r.ConnectCPU }, us},
	{"generator CPU while connecting (cores)", func(r *connsResult) float64 { return r.BenchCores }, cores},
	{"broker CPU while idle (cores)", func(r *connsResult) float64 { return r.IdleCores }, cores3},
	{"keep-alive round: every PINGRESP in", func(r *connsResult) float64 { return r.PingSeconds }, seconds},
	{"broker CPU per PINGREQ", func(r *connsResult) float64 { return r.PingCPU }, us},
}

func (cr *connsReport) names() []string {
	var ns []string
	for _, b := range cr.brokers {
		ns = append(ns, b.name)
	}
	return ns
}

func (cs *connsCase) title() string {
	if cs.mode.persistent {
		return fmt.Sprintf("%d connections, persistent sessions, %d subscriptions each", cs.n, cs.mode.subs)
	}
	return fmt.Sprintf("%d connections, clean sessions, no subscriptions", cs.n)
}

// rows is one case's table: a row per figure, a column per broker, then
// keel's ratio to Mosquitto (and keel-base's) where both ran.
func (cr *connsReport) rows(cs *connsCase) [][]string {
	names := cr.names()
	head := append([]string{"figure"}, names...)
	_, haveMosq := cs.results["mosquitto"]
	ratios := []string{}
	if haveMosq {
		for _, n := range names {
			if n != "mosquitto" {
				ratios = append(ratios, n)
				head = append(head, n+"/mosquitto")
			}
		}
	}
	rows := [][]string{head}
	for _, f := range connsFigures {
		if f.get == nil {
			row := []string{f.label}
			for _, n := range names {
				rs := cs.results[n]
				b := summarize(rs, func(r *connsResult) float64 { return float64(r.RSSBefore) })
				a := summarize(rs, func(r *connsResult) float64 { return float64(r.RSSAfter) })
				row = append(row, b.format(mb)+" / "+a.format(mb))
			}
			for range ratios {
				row = append(row, "")
			}
			rows = append(rows, row)
			continue
		}
		row := []string{f.label}
		for _, n := range names {
			row = append(row, summarize(cs.results[n], f.get).format(f.fmt))
		}
		m := summarize(cs.results["mosquitto"], f.get)
		for _, n := range ratios {
			row = append(row, ratio(summarize(cs.results[n], f.get), m))
		}
		rows = append(rows, row)
	}
	return rows
}

// targets are issue 16's goals, judged on keel's medians.
func (cr *connsReport) targets() [][]string {
	var out [][]string
	for _, cs := range cr.cases {
		k, m := cs.results["keel"], cs.results["mosquitto"]
		if len(k) == 0 {
			continue
		}
		bound := 4.0
		if cs.mode.persistent {
			bound = 8.0
		}
		kc := summarize(k, func(r *connsResult) float64 { return r.PerConn })
		kp := summarize(k, func(r *connsResult) float64 { return r.PerConnPng })
		out = append(out, []string{fmt.Sprintf("%s: ≤ %.0f KB RSS per connection", cs.title(), bound),
			fmt.Sprintf("%s after CONNACK, %s after the keep-alive round", kc.format(kb), kp.format(kb)),
			verdictWord(kc.med <= bound && kp.med <= bound)})
		if len(m) > 0 {
			kr := summarize(k, func(r *connsResult) float64 { return r.ConnectRate })
			mr := summarize(m, func(r *connsResult) float64 { return r.ConnectRate })
			out = append(out, []string{fmt.Sprintf("%s: connect rate ≥ Mosquitto's", cs.title()),
				fmt.Sprintf("%s vs %s (%s)", kr.format(rate), mr.format(rate), ratio(kr, mr)), verdictWord(kr.med >= mr.med)})
		}
		ka := int(k[0].KeepAlive)
		kpng := summarize(k, func(r *connsResult) float64 { return r.PingSeconds })
		kidle := summarize(k, func(r *connsResult) float64 { return r.IdleCores })
		out = append(out, []string{fmt.Sprintf("%s: every PINGRESP within the keep alive (%d s); idle CPU ≈ 0", cs.title(), ka),
			fmt.Sprintf("round %s; idle %s cores", kpng.format(seconds), kidle.format(cores3)),
			verdictWord(kpng.hi < float64(ka) && kidle.med < 0.01)})
	}
	return out
}

func verdictWord(ok bool) string {
	if ok {
		return "met"
	}
	return "not met"
}

func (cr *connsReport) print() {
	dc := cr.dc
	fmt.Printf("\nkeel:      %s\n", orUnknown(dc.keelRev))
	if dc.keelBase != "" {
		fmt.Printf("keel-base: %s\n", orUnknown(dc.keelBaseRev))
	}
	if dc.mosquitto != "" {
		fmt.Printf("mosquitto: %s, in memory\n", mosquittoVersion(dc.mosquitto))
	}
	fmt.Printf("Cells are medians over the repetitions with min–max; the machine is shared, so compare within this run only.\n")
	for _, cs := range cr.cases {
		fmt.Printf("\n== %s\n", cs.title())
		printTable(cr.rows(cs))
	}
	if t := cr.targets(); len(t) > 0 {
		fmt.Println("\n== targets (issue 16), on medians")
		for _, r := range t {
			fmt.Printf("  %-8s %s: %s\n", r[2], r[0], r[1])
		}
	}
}

func (cr *connsReport) markdown() []byte {
	var w bytes.Buffer
	p := func(format string, a ...any) { fmt.Fprintf(&w, format, a...) }
	dc, c := cr.dc, cr.dc.run
	p("## Idle connections\n\n")
	p("Generated by `bench/conns.sh` (`go run ./bench conns`, bench/conns.go); bench matrix includes it from bench/CONNS.md.\n\n")
	cmd := dc.command
	if cmd == "" {
		cmd = "go run ./bench conns " + strings.Join(os.Args[2:], " ")
	}
	p("- Command: `%s`\n", cmd)
	p("- Date: %s (%s for these runs)\n", cr.started.UTC().Format("2006-01-02 15:04 MST"), cr.elapsed)
	p("- Machine: %s; open files per process: at most %s (ulimit -Hn)\n", machineInfo(), hardFileLimit())
	for _, b := range cr.brokers {
		switch b.name {
		case "keel":
			p("- keel: %s\n", orUnknown(dc.keelRev))
		case "keel-base":
			p("- keel-base: %s, the same keel before a change, measured in the same runs\n", orUnknown(dc.keelBaseRev))
		case "mosquitto":
			p("- mosquitto: %s, in memory (persistence false; the matrix's configuration)\n", mosquittoVersion(dc.mosquitto))
		}
	}
	p("- Load: bare MQTT %s clients (a socket each in the generator, no goroutine), keep alive %d s, %d connecting at a time from %s; "+
		"each connection sends CONNECT (and, for persistent sessions, one SUBSCRIBE of %s QoS 1 filters of its own) and then nothing. "+
		"Each run starts a fresh broker on a free loopback port with a fresh data directory; %d repetitions per broker, interleaved (%s). "+
		"Cells are the median with min–max.\n",
		map[byte]string{4: "3.1.1", 5: "5.0"}[c.version], c.keepAlive, c.concurrency, sourcesNote(c.sources), subsNote(cr.cases), dc.reps, strings.Join(cr.names(), ", ")+", ...")
	p("- RSS per connection is the broker's VmRSS (/proc/PID/status) after the connections minus before them, over their number, each read %v after the last connect "+
		"or after the keep-alive round (a PINGREQ on every connection, all answered). Idle CPU is the broker's over %v with every connection open and quiet.\n\n",
		c.settle, c.idle)
	if t := cr.targets(); len(t) > 0 {
		p("| target (issue 16) | measured | verdict |\n")
		w.WriteString(mdSep(3))
		for _, r := range t {
			w.WriteString(mdRow(r...))
		}
		p("\n")
	}
	for _, cs := range cr.cases {
		p("### %s\n\n", cs.title())
		rows := cr.rows(cs)
		w.WriteString(mdRow(rows[0]...))
		w.WriteString(mdSep(len(rows[0])))
		for _, r := range rows[1:] {
			w.WriteString(mdRow(r...))
		}
		p("\n")
	}
	if len(cr.fails) > 0 {
		p("Failed runs:\n\n")
		for _, f := range cr.fails {
			p("- %s\n", f)
		}
		p("\n")
	}
	return bytes.TrimSpace(w.Bytes())
}

func sourcesNote(n int) string {
	if n == 0 {
		return "one 127.0.0.x address per 5,000 connections"
	}
	return fmt.Sprintf("%d 127.0.0.x addresses", n)
}

func subsNote(cases []*connsCase) string {
	for _, cs := range cases {
		if cs.mode.persistent {
			return fmt.Sprint(cs.mode.subs)
		}
	}
	return "no"
}

func hardFileLimit() string {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return "unknown"
	}
	return fmt.Sprint(l.Max)
}
