package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// bench seams runs the burst and expiry scenarios (burst.go, expiry.go)
// against two keel binaries (before and after a change) and, for the
// burst, Mosquitto in memory; interleaved, rep by rep, and prints medians
// and ratios. seams.sh builds the binaries.
type seamsConfig struct {
	before, after, mosquitto string
	revBefore, revAfter      string
	reps                     int
	burstN, expiryN          int
	concurrency              int
	version                  int
	expiry                   int
	tmp                      string
	profiles                 string // directory for keel CPU profiles of each expiry window
}

type seamsRun struct {
	name   string // keel-before, keel-after, mosquitto
	burst  []*burstResult
	expiry []*expiryResult
}

func seamsMain(args []string) int {
	fs := flag.NewFlagSet("bench seams", flag.ExitOnError)
	var sc seamsConfig
	fs.StringVar(&sc.before, "keel-before", "", "keel binary before the change (required)")
	fs.StringVar(&sc.after, "keel-after", "", "keel binary after the change (required)")
	fs.StringVar(&sc.mosquitto, "mosquitto", "mosquitto", "mosquitto binary (burst only)")
	fs.StringVar(&sc.revBefore, "rev-before", "", "revision of -keel-before, for the report")
	fs.StringVar(&sc.revAfter, "rev-after", "", "revision of -keel-after, for the report")
	fs.IntVar(&sc.reps, "reps", 3, "repetitions of each run, interleaved")
	fs.IntVar(&sc.burstN, "burst-n", 5000, "burst: stored sessions")
	fs.IntVar(&sc.concurrency, "concurrency", 50, "burst: reconnects in flight")
	fs.IntVar(&sc.version, "v", 4, "burst: MQTT protocol level, 4 or 5")
	fs.IntVar(&sc.expiryN, "expiry-n", 10000, "expiry: sessions")
	fs.IntVar(&sc.expiry, "expiry", 5, "expiry: Session Expiry Interval, seconds")
	fs.StringVar(&sc.tmp, "tmp", "", "scratch directory (default: a new temporary directory)")
	fs.StringVar(&sc.profiles, "profiles", "", "write keel's CPU profile over each expiry window into this `dir`")
	fs.Parse(args)
	if sc.before == "" || sc.after == "" || sc.reps < 1 || fs.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "bench seams: want -keel-before BIN -keel-after BIN, -reps >= 1, no arguments")
		return 2
	}
	mosq, err := exec.LookPath(sc.mosquitto)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench seams: mosquitto:", err)
		return 2
	}
	sc.mosquitto = mosq
	if sc.tmp == "" {
		d, err := os.MkdirTemp("", "keel-seams-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench seams:", err)
			return 2
		}
		defer os.RemoveAll(d)
		sc.tmp = d
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench seams:", err)
		return 2
	}
	var rp reaper
	// Children get SIGTERM: an expiry run stops its own keel by pid.
	defer rp.onSignal("bench seams", syscall.SIGTERM, nil)()

	before := &seamsRun{name: "keel-before"}
	after := &seamsRun{name: "keel-after"}
	mosquitto := &seamsRun{name: "mosquitto"}
	keelStart := func(bin string) func(port int, dir string) *exec.Cmd {
		return func(port int, dir string) *exec.Cmd {
			return exec.Command(bin, "serve", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--data", filepath.Join(dir, "data"))
		}
	}
	mosqStart := func(port int, dir string) *exec.Cmd {
		conf := filepath.Join(dir, "mosquitto.conf")
		os.WriteFile(conf, fmt.Appendf(nil, mosquittoConfFmt, port), 0o644)
		return exec.Command(sc.mosquitto, "-c", conf)
	}
	type job struct {
		run    *seamsRun
		burst  func(port int, dir string) *exec.Cmd // nil: expiry
		keel   string
		prefix string
	}
	var jobs []job
	for range sc.reps {
		jobs = append(jobs,
			job{run: before, burst: keelStart(sc.before)},
			job{run: after, burst: keelStart(sc.after)},
			job{run: mosquitto, burst: mosqStart},
			job{run: before, keel: sc.before},
			job{run: after, keel: sc.after},
		)
	}
	var fails []string
	for n, j := range jobs {
		dir := filepath.Join(sc.tmp, fmt.Sprintf("run-%03d-%s", n+1, j.run.name))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "bench seams:", err)
			return 2
		}
		kind := "burst"
		if j.burst == nil {
			kind = "expiry"
		}
		fmt.Fprintf(os.Stderr, "[%d/%d] %s, %s ... ", n+1, len(jobs), kind, j.run.name)
		var line string
		if j.burst != nil {
			r, err := seamsBurst(&sc, &rp, self, j.run.name, j.burst, dir)
			if err != nil {
				fails = append(fails, fmt.Sprintf("burst on %s: %v", j.run.name, err))
				fmt.Fprintf(os.Stderr, "error: %v\n", err)
			}
			if r != nil {
				j.run.burst = append(j.run.burst, r)
				line = fmt.Sprintf("%.2fs, PUBACK p99 %s", r.Seconds, fmtUS(r.Burst.P99))
			}
		} else {
			var prof string
			if sc.profiles != "" {
				prof = filepath.Join(sc.profiles, fmt.Sprintf("expiry-%03d-%s.pprof", n+1, j.run.name))
			}
			r, err := seamsExpiry(&sc, &rp, self, j.run.name, j.keel, dir, prof)
			if err != nil {
				fails = append(fails, fmt.Sprintf("expiry on %s: %v", j.run.name, err))
				fmt.Fprintf(os.Stderr, "error: %v\n", err)
			}
			if r != nil {
				j.run.expiry = append(j.run.expiry, r)
				line = fmt.Sprintf("PUBACK p99 %s max %s in the window, %d fsyncs (%.0f beyond the rate outside)", fmtUS(r.In.P99), fmtUS(r.In.Max), r.Syncs, r.SyncsExcess)
			}
		}
		if line != "" {
			fmt.Fprintln(os.Stderr, line)
		}
		os.RemoveAll(dir)
	}
	printSeams(&sc, before, after, mosquitto)
	if len(fails) > 0 {
		fmt.Println("\nFAILED RUNS:")
		for _, f := range fails {
			fmt.Println("  " + f)
		}
		return 1
	}
	return 0
}

// seamsBurst starts a broker on a free port, runs bench burst against it
// in a child process, and stops the broker.
func seamsBurst(sc *seamsConfig, rp *reaper, self, name string, start func(int, string) *exec.Cmd, dir string) (*burstResult, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	bp, err := startProc(name, start(port, dir), filepath.Join(dir, "broker.log"))
	if err != nil {
		return nil, err
	}
	rp.track(bp.cmd.Process, true)
	defer func() { bp.stop(5 * time.Second); rp.track(bp.cmd.Process, false) }()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := bp.listening(addr, 15*time.Second); err != nil {
		return nil, err
	}
	var r burstResult
	err = seamsChild(rp, &r, self, "burst", "-addr", addr, "-label", name, "-q",
		"-n", fmt.Sprint(sc.burstN), "-concurrency", fmt.Sprint(sc.concurrency), "-v", fmt.Sprint(sc.version))
	if !bp.running() {
		return nil, fmt.Errorf("%s exited during the run (%v); log: %s", name, bp.err, bp.tail())
	}
	if err != nil {
		return nil, err
	}
	return &r, nil
}

func seamsExpiry(sc *seamsConfig, rp *reaper, self, name, keel, dir, profile string) (*expiryResult, error) {
	args := []string{"expiry", "-keel", keel, "-tmp", dir, "-label", name, "-q",
		"-n", fmt.Sprint(sc.expiryN), "-expiry", fmt.Sprint(sc.expiry)}
	if profile != "" {
		args = append(args, "-broker-profile", profile)
	}
	var r expiryResult
	if err := seamsChild(rp, &r, self, args...); err != nil {
		return nil, err
	}
	return &r, nil
}

// seamsChild runs bench with args and decodes its RESULT line into v.
func seamsChild(rp *reaper, v any, self string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, self, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	rp.track(cmd.Process, true)
	err := cmd.Wait()
	rp.track(cmd.Process, false)
	found := false
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if line, ok := strings.CutPrefix(sc.Text(), "RESULT "); ok {
			found = json.Unmarshal([]byte(line), v) == nil
		}
	}
	switch {
	case err != nil:
		return fmt.Errorf("bench %s: %v: %s", args[0], err, strings.TrimSpace(stderr.String()))
	case !found:
		return fmt.Errorf("bench %s: no RESULT line: %s", args[0], strings.TrimSpace(stderr.String()))
	}
	return nil
}

func seconds(v float64) string { return fmt.Sprintf("%.3fs", v) }

func printSeams(sc *seamsConfig, before, after, mosquitto *seamsRun) {
	fmt.Printf("\nkeel-before: %s\nkeel-after:  %s\nmosquitto:   %s, in memory\n", orUnknown(sc.revBefore), orUnknown(sc.revAfter), mosquittoVersion(sc.mosquitto))
	fmt.Printf("Cells are medians over the repetitions with min–max; the machine is shared, so compare within this run only.\n")

	type brow struct {
		label string
		get   func(*burstResult) float64
		fmt   func(float64) string
	}
	fmt.Printf("\n== burst: %d clean-session reconnects over stored sessions, %d at a time, MQTT v%d, beside a sync QoS 1 publisher\n",
		sc.burstN, sc.concurrency, sc.version)
	rows := [][]string{{"figure", "keel-before", "keel-after", "mosquitto", "before/mosquitto", "after/mosquitto"}}
	for _, b := range []brow{
		{"burst wall time", func(r *burstResult) float64 { return r.Seconds }, seconds},
		{"reconnects/s", func(r *burstResult) float64 { return r.Rate }, rate},
		{"PUBACK p50 during", func(r *burstResult) float64 { return r.Burst.P50 }, fmtUS},
		{"PUBACK p99 during", func(r *burstResult) float64 { return r.Burst.P99 }, fmtUS},
		{"PUBACK max during", func(r *burstResult) float64 { return r.Burst.Max }, fmtUS},
		{"PUBACKs during", func(r *burstResult) float64 { return float64(r.Burst.Count) }, count},
		{"longest PUBACK wait", func(r *burstResult) float64 { return r.Burst.Gap }, fmtUS},
		{"PUBACK p99 idle (before the burst)", func(r *burstResult) float64 { return r.Idle.P99 }, fmtUS},
		{"failed reconnects", func(r *burstResult) float64 { return float64(r.Failed) }, count},
		{"session present after clean start", func(r *burstResult) float64 { return float64(r.Present) }, count},
	} {
		sb, sa, sm := summarize(before.burst, b.get), summarize(after.burst, b.get), summarize(mosquitto.burst, b.get)
		rows = append(rows, []string{b.label, sb.format(b.fmt), sa.format(b.fmt), sm.format(b.fmt), ratio(sb, sm), ratio(sa, sm)})
	}
	printTable(rows)

	type erow struct {
		label string
		get   func(*expiryResult) float64
		fmt   func(float64) string
	}
	fmt.Printf("\n== expiry: %d persistent 5.0 sessions (expiry %d s) restored after kill -9 expire together, beside 4 sync QoS 1 publishers\n",
		sc.expiryN, sc.expiry)
	rows = [][]string{{"figure", "keel-before", "keel-after", "after/before"}}
	for _, e := range []erow{
		{"PUBACK p50 in the window", func(r *expiryResult) float64 { return r.In.P50 }, fmtUS},
		{"PUBACK p99 in the window", func(r *expiryResult) float64 { return r.In.P99 }, fmtUS},
		{"PUBACK max in the window", func(r *expiryResult) float64 { return r.In.Max }, fmtUS},
		{"longest PUBACK wait in the window", func(r *expiryResult) float64 { return r.In.Gap }, fmtUS},
		{"PUBACKs in the window", func(r *expiryResult) float64 { return float64(r.In.Count) }, count},
		{"PUBACK p50 outside", func(r *expiryResult) float64 { return r.Out.P50 }, fmtUS},
		{"PUBACK p99 outside", func(r *expiryResult) float64 { return r.Out.P99 }, fmtUS},
		{"window length", func(r *expiryResult) float64 { return r.WindowTo - r.WindowFrom }, seconds},
		{"fsyncs in the window", func(r *expiryResult) float64 { return float64(r.Syncs) }, count},
		{"fsyncs/s outside", func(r *expiryResult) float64 { return r.SyncsPerSecOut }, rate},
		{"fsyncs beyond that rate (the expiry's)", func(r *expiryResult) float64 { return r.SyncsExcess }, count},
		{"restart (replay) time", func(r *expiryResult) float64 { return r.RestartSeconds }, seconds},
		{"sessions left after expiry (of 3 checked)", func(r *expiryResult) float64 { return float64(r.Present) }, count},
	} {
		sb, sa := summarize(before.expiry, e.get), summarize(after.expiry, e.get)
		rows = append(rows, []string{e.label, sb.format(e.fmt), sa.format(e.fmt), ratio(sa, sb)})
	}
	printTable(rows)

	fmt.Println("\n== targets (issue 9), on medians")
	sa, sm := summarize(after.burst, func(r *burstResult) float64 { return r.Seconds }), summarize(mosquitto.burst, func(r *burstResult) float64 { return r.Seconds })
	p99 := summarize(after.burst, func(r *burstResult) float64 { return r.Burst.P99 })
	verdict := func(ok bool) string {
		if ok {
			return "MET"
		}
		return "MISSED"
	}
	if sa.n > 0 && sm.n > 0 {
		fmt.Printf("  %-6s burst within 1.5x Mosquitto's time: %s / %s = %.2fx\n", verdict(sa.med <= 1.5*sm.med), seconds(sa.med), seconds(sm.med), sa.med/sm.med)
	}
	if p99.n > 0 {
		fmt.Printf("  %-6s PUBACK p99 during the burst <= 10 ms: %s\n", verdict(p99.med <= 10000), fmtUS(p99.med))
	}
	ein := summarize(after.expiry, func(r *expiryResult) float64 { return r.In.P99 })
	eout := summarize(after.expiry, func(r *expiryResult) float64 { return r.Out.P99 })
	ex := summarize(after.expiry, func(r *expiryResult) float64 { return r.SyncsExcess })
	exb := summarize(before.expiry, func(r *expiryResult) float64 { return r.SyncsExcess })
	if ein.n > 0 {
		fmt.Printf("  expiry after: PUBACK p99 in the window %s vs %s outside; fsyncs beyond the rate: %.0f (before: %.0f, for %d sessions)\n",
			fmtUS(ein.med), fmtUS(eout.med), ex.med, exb.med, sc.expiryN)
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown revision"
	}
	return s
}

// printTable prints rows as aligned columns, the first row a header.
func printTable(rows [][]string) {
	widths := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	for _, r := range rows {
		var b strings.Builder
		for i, c := range r {
			fmt.Fprintf(&b, "  %s%s", c, strings.Repeat(" ", widths[i]-len([]rune(c))))
		}
		fmt.Println(strings.TrimRight(b.String(), " "))
	}
}
