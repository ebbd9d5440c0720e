package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// bench dedup measures what keel's dedup window costs (issue 17: fan-in
// QoS 1 with the window on ≥ 0.9 × without): the matrix's fanin-qos1-64
// load at MQTT 5.0, every publish carrying a unique message id in the
// user property msg-id (bench -msg-id), against keel with dedup_window on
// (10m, the default) and off (negative), and, for scale, keel with the
// same load and no message id. Interleaved rep by rep, every run on a
// fresh keel; dedup.sh builds the binaries and puts the section into
// BENCHMARKS.md.
//
// The ids are unique, so the window finds no duplicate and every message
// must be delivered (a false hit would show as loss and fail the run):
// what is measured is the cost of looking each id up, keeping it, and
// writing its record in the message's batch. At this rate every
// publisher passes dedup_max_ids (100,000) within the run, so the window
// also evicts an id (and deletes its record) for every one it keeps: the
// steady state of a busy producer.
type dedupConfig struct {
	keel, keelRev string
	reps          int
	duration      time.Duration
	warmup        time.Duration
	tmp           string
	out, into     string
	save          string
	command       string
}

// dedupRun is one keel configuration of bench dedup.
type dedupRun struct {
	name   string
	window string // dedup_window
	msgID  bool   // publishers send msg-id
	res    []*result
	rssKB  []float64 // broker VmHWM at the end of each run
}

type dedupReport struct {
	Started  time.Time            `json:"started"`
	Elapsed  time.Duration        `json:"elapsed_ns"`
	Machine  string               `json:"machine"`
	KeelRev  string               `json:"keel_rev"`
	Command  string               `json:"command"`
	Reps     int                  `json:"reps"`
	Duration time.Duration        `json:"duration_ns"`
	Warmup   time.Duration        `json:"warmup_ns"`
	CPUs     int                  `json:"cpus"`
	Runs     map[string][]*result `json:"runs"`
	PeakRSS  map[string][]float64 `json:"peak_rss_kb"`
	Fails    []string             `json:"fails,omitempty"`
}

const dedupBegin = "<!-- bench dedup: begin (bench/dedup.sh writes this section) -->"
const dedupEnd = "<!-- bench dedup: end -->"

func dedupMain(args []string) int {
	fs := flag.NewFlagSet("bench dedup", flag.ExitOnError)
	var dc dedupConfig
	fs.StringVar(&dc.keel, "keel", "", "keel binary (required)")
	fs.StringVar(&dc.keelRev, "keel-rev", "", "keel revision to quote in the report")
	fs.IntVar(&dc.reps, "reps", 3, "runs of each configuration, interleaved")
	fs.DurationVar(&dc.duration, "duration", 5*time.Second, "measured time per run")
	fs.DurationVar(&dc.warmup, "warmup", time.Second, "warm-up per run")
	fs.StringVar(&dc.tmp, "tmp", "", "scratch directory (default: a new temporary directory)")
	fs.StringVar(&dc.out, "out", "", "write the report's Markdown section to this `file`")
	fs.StringVar(&dc.into, "into", "", "also put the section into this Markdown `file` (bench/BENCHMARKS.md), between its markers")
	fs.StringVar(&dc.save, "save", "", "write every run's result (JSON) to this `file`")
	fs.StringVar(&dc.command, "command", "", "command line to quote in the report")
	fs.Parse(args)
	if dc.keel == "" || dc.reps < 1 || fs.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "bench dedup: want -keel BIN, -reps >= 1, no arguments")
		return 2
	}
	if dc.tmp == "" {
		d, err := os.MkdirTemp("", "keel-dedup-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench dedup:", err)
			return 2
		}
		defer os.RemoveAll(d)
		dc.tmp = d
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench dedup:", err)
		return 2
	}
	var rp reaper
	defer rp.onSignal("bench dedup", syscall.SIGKILL, func() { os.RemoveAll(dc.tmp) })()

	started := time.Now()
	runs := []*dedupRun{
		{name: "keel-window-off", window: "-1s", msgID: true},
		{name: "keel-window", window: "10m", msgID: true},
		{name: "keel-no-id", window: "10m"},
	}
	rep := &dedupReport{Started: started, Machine: machineInfo(), KeelRev: dc.keelRev, Command: dc.command,
		Reps: dc.reps, Duration: dc.duration, Warmup: dc.warmup, CPUs: runtime.NumCPU(),
		Runs: map[string][]*result{}, PeakRSS: map[string][]float64{}}
	n, total := 0, dc.reps*len(runs)
	for range dc.reps {
		for _, r := range runs {
			n++
			fmt.Fprintf(os.Stderr, "[%d/%d] %s ... ", n, total, r.name)
			dir := filepath.Join(dc.tmp, fmt.Sprintf("run-%03d-%s", n, r.name))
			line, err := dc.runOne(&rp, self, r, dir)
			os.RemoveAll(dir)
			if err != nil {
				fmt.Fprintf(os.Stderr, "error: %v\n", err)
				rep.Fails = append(rep.Fails, fmt.Sprintf("%s, run %d: %v", r.name, n, err))
				continue
			}
			fmt.Fprintln(os.Stderr, line)
		}
	}
	for _, r := range runs {
		rep.Runs[r.name], rep.PeakRSS[r.name] = r.res, r.rssKB
	}
	rep.Elapsed = time.Since(started).Round(time.Second)
	md := rep.markdown()
	if rc := writeReport("bench dedup", rep, md, dc.save, dc.out, dc.into, dedupBegin, dedupEnd); rc != 0 {
		return rc
	}
	if len(rep.Fails) > 0 {
		return 1
	}
	return 0
}

// runOne starts keel with r's window on a free port in dir, runs one
// fan-in load against it in a child process, and stops keel.
func (dc *dedupConfig) runOne(rp *reaper, self string, r *dedupRun, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	port, err := freePort()
	if err != nil {
		return "", err
	}
	conf := filepath.Join(dir, "keel.conf")
	if err := os.WriteFile(conf, []byte("dedup_window = "+r.window+"\n"), 0o644); err != nil {
		return "", err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(dc.keel, "serve", "--listen", addr, "--data", filepath.Join(dir, "data"), "--config", conf)
	bp, err := startProc(r.name, cmd, filepath.Join(dir, "broker.log"))
	if err != nil {
		return "", err
	}
	rp.track(bp.cmd.Process, true)
	defer func() { bp.stop(5 * time.Second); rp.track(bp.cmd.Process, false) }()
	if err := bp.listening(addr, 15*time.Second); err != nil {
		return "", err
	}
	args := []string{"-addr", addr, "-pid", fmt.Sprint(bp.pid()), "-label", r.name, "-q", "-v", "5",
		"-duration", dc.duration.String(), "-warmup", dc.warmup.String()}
	args = append(args, faninArgs()...)
	if r.msgID {
		args = append(args, "-msg-id", "msg-id")
	}
	var res result
	err = seamsChild(rp, &res, self, args...)
	if !bp.running() {
		return "", fmt.Errorf("%s exited during the run (%v); log: %s", r.name, bp.err, bp.tail())
	}
	switch {
	case err != nil:
		return "", err
	case res.failed() || res.Lost > 0:
		return "", fmt.Errorf("LOSS: %d lost, %d duplicates (a unique id taken for a duplicate?)", res.Lost, res.Dups)
	}
	hwm, _ := procMemKB(bp.pid(), "VmHWM")
	r.res = append(r.res, &res)
	r.rssKB = append(r.rssKB, float64(hwm))
	return fmt.Sprintf("%.0f msg/s delivered, e2e p99 %s, broker %.1fµs/msg, peak RSS %d MB", res.DelRate, fmtUS(res.E2EP99), res.BrokerCPUPerMsg, hwm/1024), nil
}

func (rep *dedupReport) markdown() []byte {
	var w bytes.Buffer
	p := func(format string, a ...any) { fmt.Fprintf(&w, format, a...) }
	p("## The dedup window (bench dedup)\n\n")
	cmd := rep.Command
	if cmd == "" {
		cmd = "go run ./bench dedup " + strings.Join(os.Args[2:], " ")
	}
	p("- Command: `%s`\n", cmd)
	p("- Date: %s (%s for the whole run)\n", rep.Started.UTC().Format("2006-01-02 15:04 MST"), rep.Elapsed)
	p("- Machine: %s; its %d cores are shared with other work (other helpers' builds and tests): \"others' cores\" says how much of it they took. "+
		"Compare the columns of this table (one run, interleaved), not across runs.\n", rep.Machine, rep.CPUs)
	p("- keel: %s. Load: `bench %s -v 5`, %v measured after a %v warm-up; keel-window-off and keel-window publishers put a unique id in the user "+
		"property `msg-id` of every publish (`-msg-id msg-id`), keel-window-off runs with `dedup_window = -1s`, keel-window with `10m` (the default); "+
		"keel-no-id is the same load without the property. Every id is new, so nothing may be held back: a run that loses a message fails. "+
		"At these rates each publisher passes `dedup_max_ids` (100,000) within the run, so the window evicts an id for each one it keeps.\n",
		orUnknown(rep.KeelRev), strings.Join(faninArgs(), " "), rep.Duration, rep.Warmup)
	p("- %d repetitions, interleaved in the order of the columns; cells are the median with min–max.\n\n", rep.Reps)
	names := []string{"keel-window-off", "keel-window", "keel-no-id"}
	w.WriteString(mdRow("figure", "keel-window-off", "keel-window", "keel-no-id", "window/window-off", "window/no-id"))
	w.WriteString(mdSep(6))
	rows := []metric{mDel, mPub,
		{label: "end-to-end p50", get: func(r *result) float64 { return r.E2EP50 }, fmt: fmtUS},
		{label: "end-to-end p99", get: func(r *result) float64 { return r.E2EP99 }, fmt: fmtUS},
		mAckP50, mCPUPerMsg,
		{label: "broker cores", get: func(r *result) float64 { return r.BrokerCores }, fmt: cores},
		mOther,
	}
	for _, mt := range rows {
		row := []string{mt.label}
		sums := map[string]summary{}
		for _, n := range names {
			sums[n] = summarize(rep.Runs[n], mt.get)
			row = append(row, sums[n].format(mt.fmt))
		}
		row = append(row, ratio(sums["keel-window"], sums["keel-window-off"]), ratio(sums["keel-window"], sums["keel-no-id"]))
		w.WriteString(mdRow(row...))
	}
	mb := func(v float64) string { return fmt.Sprintf("%.0f MB", v/1024) }
	row := []string{"broker peak RSS (VmHWM)"}
	sums := map[string]summary{}
	for _, n := range names {
		sums[n] = summarize(rep.PeakRSS[n], func(v float64) float64 { return v })
		row = append(row, sums[n].format(mb))
	}
	row = append(row, ratio(sums["keel-window"], sums["keel-window-off"]), ratio(sums["keel-window"], sums["keel-no-id"]))
	w.WriteString(mdRow(row...))
	p("\n")
	on, off := summarize(rep.Runs["keel-window"], mDel.get), summarize(rep.Runs["keel-window-off"], mDel.get)
	w.WriteString(mdRow("target (issue 17), on the medians of deliveries/s", "measured", "verdict"))
	w.WriteString(mdSep(3))
	verdict, f := "not measured", "n/a"
	if on.n > 0 && off.n > 0 && off.med > 0 {
		f = fmt.Sprintf("%.2f", on.med/off.med)
		verdict = "met"
		if on.med/off.med < 0.9 {
			verdict = "not met"
		}
	}
	w.WriteString(mdRow("fan-in QoS 1 with the window on ≥ 0.9 × off", f, verdict))
	p("\n")
	if len(rep.Fails) > 0 {
		p("Failed runs:\n\n")
		for _, f := range rep.Fails {
			p("- %s\n", f)
		}
		p("\n")
	}
	return w.Bytes()
}
