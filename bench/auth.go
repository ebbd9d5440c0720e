package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// bench auth measures what authentication and ACLs cost (issue 12's
// "Speed"), keel and Mosquitto side by side in one run, interleaved rep by
// rep, every run on a fresh broker:
//
//   - fan-in: the matrix's fanin-qos1-64 load (4 publishers, 1 subscriber,
//     QoS 1, 64 B, window 64, persistent) on keel and Mosquitto, each
//     without authentication and with the password file and the 1,000-rule
//     ACL of authfiles.go (every client logs in);
//   - connects: a storm of new logins at -connect-rate (bench connects)
//     against keel with the verification cap at its default and at each
//     of -caps (max_password_verifications), and Mosquitto, with the same
//     files, beside a synchronous QoS 1 publisher.
//
// auth.sh builds the binaries and writes the report into BENCHMARKS.md.
type authConfig struct {
	keel, mosquitto string
	keelRev         string
	reps            int
	duration        time.Duration
	warmup          time.Duration
	version         int
	connRate        float64
	connDuration    time.Duration
	connInflight    int
	caps            []int
	parts           string // fanin, connects or both
	tmp             string
	out, into       string
	save            string
	command         string
}

// authRun is one broker configuration of bench auth.
type authRun struct {
	name  string
	auth  bool
	cap   int // keel: max_password_verifications; 0: default
	mosq  bool
	fanin []*result
	conns []*connectsResult
}

// authReport is everything bench auth measured (-save).
type authReport struct {
	Started   time.Time     `json:"started"`
	Elapsed   time.Duration `json:"elapsed_ns"`
	Machine   string        `json:"machine"`
	Mosquitto string        `json:"mosquitto_version"`
	KeelRev   string        `json:"keel_rev"`
	Command   string        `json:"command"`
	Reps      int           `json:"reps"`
	Duration  time.Duration `json:"duration_ns"`
	Warmup    time.Duration `json:"warmup_ns"`
	Version   int           `json:"v"`
	Rules     int           `json:"acl_rules"`
	ConnRate  float64       `json:"connect_rate"`
	ConnDur   time.Duration `json:"connect_duration_ns"`
	ConnWait  int           `json:"connect_inflight"`
	GOMAXPROC int           `json:"cpus"`

	Fanin    map[string][]*result         `json:"fanin"`
	Connects map[string][]*connectsResult `json:"connects"`
	Order    []string                     `json:"order"`
	Fails    []string                     `json:"fails,omitempty"`
}

const mosquittoAuthConfFmt = `# written by keel's bench auth: in memory, nothing dropped, the same files as keel
per_listener_settings false
listener %d 127.0.0.1
allow_anonymous false
password_file %s
acl_file %s
persistence false
max_queued_messages 1000000
max_queued_bytes 0
max_inflight_messages 0
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
`

func authMain(args []string) int {
	fs := flag.NewFlagSet("bench auth", flag.ExitOnError)
	var ac authConfig
	fs.StringVar(&ac.keel, "keel", "", "keel binary (required)")
	fs.StringVar(&ac.keelRev, "keel-rev", "", "keel revision to quote in the report")
	fs.StringVar(&ac.mosquitto, "mosquitto", "mosquitto", "mosquitto binary")
	fs.IntVar(&ac.reps, "reps", 5, "runs of each configuration, interleaved")
	fs.DurationVar(&ac.duration, "duration", 5*time.Second, "fan-in: measured time per run")
	fs.DurationVar(&ac.warmup, "warmup", time.Second, "fan-in: warm-up per run")
	fs.IntVar(&ac.version, "v", 5, "MQTT protocol level: 4 or 5")
	fs.Float64Var(&ac.connRate, "connect-rate", 1000, "connects: logins offered per second")
	fs.DurationVar(&ac.connDuration, "connect-duration", 10*time.Second, "connects: offering (and measured) time per run")
	fs.IntVar(&ac.connInflight, "connect-inflight", 500, "connects: logins waiting for a CONNACK at once, at most")
	caps := fs.String("caps", "2,16", "connects: keel's max_password_verifications values measured besides the default (comma-separated)")
	fs.StringVar(&ac.parts, "parts", "fanin,connects", "what to run: fanin, connects or both")
	fs.StringVar(&ac.tmp, "tmp", "", "scratch directory (default: a new temporary directory)")
	fs.StringVar(&ac.out, "out", "", "write the report's Markdown section to this `file`")
	fs.StringVar(&ac.into, "into", "", "also put the section into this Markdown `file` (bench/BENCHMARKS.md), replacing the one there")
	fs.StringVar(&ac.save, "save", "", "write every run's result (JSON) to this `file`")
	fs.StringVar(&ac.command, "command", "", "command line to quote in the report")
	fs.Parse(args)
	if ac.keel == "" || ac.reps < 1 || fs.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "bench auth: want -keel BIN, -reps >= 1, no arguments")
		return 2
	}
	for _, c := range strings.Split(*caps, ",") {
		if c = strings.TrimSpace(c); c == "" {
			continue
		}
		n, err := strconv.Atoi(c)
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bench auth: -caps: %q is not a count >= 1\n", c)
			return 2
		}
		ac.caps = append(ac.caps, n)
	}
	self, cleanup, err := driverSetup(&ac.mosquitto, &ac.tmp, "keel-auth-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench auth:", err)
		return 2
	}
	defer cleanup()
	var rp reaper
	defer rp.onSignal("bench auth", syscall.SIGKILL, func() { os.RemoveAll(ac.tmp) })()

	started := time.Now()
	files, err := writeAuthFiles(ac.keel, ac.tmp)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench auth:", err)
		return 2
	}
	fmt.Fprintf(os.Stderr, "files: %s (%d rules), %s (keel passwd -b) in %.1fs\n", files.acl, files.rules, files.passwd, time.Since(started).Seconds())

	rep := &authReport{
		Started: started, Machine: machineInfo(), Mosquitto: mosquittoVersion(ac.mosquitto), KeelRev: ac.keelRev,
		Command: ac.command, Reps: ac.reps, Duration: ac.duration, Warmup: ac.warmup, Version: ac.version,
		Rules: files.rules, ConnRate: ac.connRate, ConnDur: ac.connDuration, ConnWait: ac.connInflight,
		GOMAXPROC: runtime.NumCPU(), Fanin: map[string][]*result{}, Connects: map[string][]*connectsResult{},
	}
	faninRuns := []*authRun{
		{name: "keel"}, {name: "keel-auth", auth: true},
		{name: "mosquitto", mosq: true}, {name: "mosquitto-auth", mosq: true, auth: true},
	}
	connRuns := []*authRun{{name: "keel-auth", auth: true}}
	for _, c := range ac.caps {
		connRuns = append(connRuns, &authRun{name: fmt.Sprintf("keel-auth-cap%d", c), auth: true, cap: c})
	}
	connRuns = append(connRuns, &authRun{name: "mosquitto-auth", mosq: true, auth: true})

	type job struct {
		run     *authRun
		connect bool
	}
	var jobs []job
	if strings.Contains(ac.parts, "fanin") {
		for range ac.reps {
			for _, r := range faninRuns {
				jobs = append(jobs, job{run: r})
			}
		}
	}
	if strings.Contains(ac.parts, "connects") {
		for range ac.reps {
			for _, r := range connRuns {
				jobs = append(jobs, job{run: r, connect: true})
			}
		}
	}
	for n, j := range jobs {
		kind := "fanin"
		if j.connect {
			kind = "connects"
		}
		fmt.Fprintf(os.Stderr, "[%d/%d] %s, %s ... ", n+1, len(jobs), kind, j.run.name)
		dir := filepath.Join(ac.tmp, fmt.Sprintf("run-%03d-%s", n+1, j.run.name))
		line, err := ac.runOne(&rp, self, files, j.run, j.connect, dir)
		os.RemoveAll(dir)
		if err != nil {
			fmt.Fprintf(os.Stderr, "error: %v\n", err)
			rep.Fails = append(rep.Fails, fmt.Sprintf("%s on %s, run %d: %v", kind, j.run.name, n+1, err))
			continue
		}
		fmt.Fprintln(os.Stderr, line)
	}
	for _, r := range faninRuns {
		if len(r.fanin) > 0 {
			rep.Fanin[r.name] = r.fanin
		}
	}
	for _, r := range connRuns {
		if len(r.conns) > 0 {
			rep.Connects[r.name] = r.conns
			rep.Order = append(rep.Order, r.name)
		}
	}
	rep.Elapsed = time.Since(started).Round(time.Second)

	md := rep.markdown()
	if rc := writeReport("bench auth", rep, md, ac.save, ac.out, ac.into, authBegin, authEnd); rc != 0 {
		return rc
	}
	if len(rep.Fails) > 0 {
		return 1
	}
	return 0
}

// runOne starts the broker of r on a free port in dir, runs one fan-in
// load or connect storm against it in a child process, and stops the
// broker. It returns the progress line.
func (ac *authConfig) runOne(rp *reaper, self string, files *authFiles, r *authRun, connect bool, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	port, err := freePort()
	if err != nil {
		return "", err
	}
	var cmd *exec.Cmd
	switch {
	case r.mosq:
		conf := filepath.Join(dir, "mosquitto.conf")
		text := fmt.Sprintf(mosquittoConfFmt, port)
		if r.auth {
			text = fmt.Sprintf(mosquittoAuthConfFmt, port, files.passwd, files.acl)
			if os.Geteuid() == 0 {
				// Started as root, Mosquitto runs as the user mosquitto,
				// who cannot read the files in this private directory.
				text += "user root\n"
			}
		}
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			return "", err
		}
		cmd = exec.Command(ac.mosquitto, "-c", conf)
	default:
		args := []string{"serve", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--data", filepath.Join(dir, "data")}
		if r.auth {
			conf := filepath.Join(dir, "keel.conf")
			text := fmt.Sprintf("password_file = %s\nacl_file = %s\nmax_password_verifications = %d\n", files.passwd, files.acl, r.cap)
			if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
				return "", err
			}
			args = append(args, "--config", conf)
		}
		cmd = exec.Command(ac.keel, args...)
	}
	bp, err := startProc(r.name, cmd, filepath.Join(dir, "broker.log"))
	if err != nil {
		return "", err
	}
	rp.track(bp.cmd.Process, true)
	defer func() { bp.stop(5 * time.Second); rp.track(bp.cmd.Process, false) }()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := bp.listening(addr, 15*time.Second); err != nil {
		return "", err
	}

	common := []string{"-addr", addr, "-pid", fmt.Sprint(bp.pid()), "-label", r.name, "-q", "-v", fmt.Sprint(ac.version)}
	if connect {
		args := append([]string{"connects"}, common...)
		args = append(args, "-rate", fmt.Sprint(ac.connRate), "-duration", ac.connDuration.String(),
			"-inflight", fmt.Sprint(ac.connInflight), "-username", authPubUser, "-password", files.pubPass)
		var res connectsResult
		err := seamsChild(rp, &res, self, args...)
		if !bp.running() {
			return "", fmt.Errorf("%s exited during the run (%v); log: %s", r.name, bp.err, bp.tail())
		}
		if err != nil {
			return "", err
		}
		r.conns = append(r.conns, &res)
		probe := "-"
		if res.Probe != nil {
			probe = fmtUS(res.Probe.P99)
		}
		return fmt.Sprintf("%.1f logins/s (%d ok, %v refused, %d skipped), broker %.2f cores, probe PUBACK p99 %s",
			res.Rate, res.OK, res.Refused, res.Skipped, res.BrokerCores, probe), nil
	}

	args := append(common, "-duration", ac.duration.String(), "-warmup", ac.warmup.String())
	args = append(args, faninArgs()...)
	if r.auth {
		args = append(args, "-username", authPubUser, "-password", files.pubPass,
			"-sub-username", authSubUser, "-sub-password", files.subPass)
	}
	var res result
	err = seamsChild(rp, &res, self, args...)
	if !bp.running() {
		return "", fmt.Errorf("%s exited during the run (%v); log: %s", r.name, bp.err, bp.tail())
	}
	switch {
	case err != nil:
		return "", err
	case res.Rejected > 0:
		return "", fmt.Errorf("%d publishes refused: the ACL does not grant the benchmark's topics", res.Rejected)
	case res.Delivered == 0:
		return "", errors.New("nothing delivered: the ACL does not grant the benchmark's topics")
	case res.failed():
		return "", fmt.Errorf("LOSS: %d lost, %d duplicates", res.Lost, res.Dups)
	}
	r.fanin = append(r.fanin, &res)
	return fmt.Sprintf("%.0f msg/s delivered, e2e p50 %s, broker %.1fµs/msg", res.DelRate, fmtUS(res.E2EP50), res.BrokerCPUPerMsg), nil
}

// faninScenario is the matrix scenario bench auth runs, unchanged.
const faninScenario = "fanin-qos1-64"

func faninArgs() []string {
	for _, s := range scenarios {
		if s.name == faninScenario {
			return s.args
		}
	}
	panic("bench auth: no scenario " + faninScenario)
}

func faninTitle() string {
	for _, s := range scenarios {
		if s.name == faninScenario {
			return s.title
		}
	}
	return faninScenario
}

// Markers around the section in BENCHMARKS.md: -into replaces what is
// between them, and the matrix's report carries the section over (-extra).
const (
	authBegin = "<!-- bench auth: begin (bench/auth.sh writes this section; the matrix keeps it) -->"
	authEnd   = "<!-- bench auth: end -->"
)

// spliceSection puts md between the markers in the file at path: in place
// of what is there, or before "## Details" (or at the end) the first time.
func spliceSection(path string, md []byte) error {
	return spliceMarked(path, authBegin, authEnd, md)
}

func authBlock(md []byte) string { return markedBlock(md, authBegin, authEnd) }

func markedBlock(md []byte, begin, end string) string {
	return begin + "\n" + strings.TrimSpace(string(md)) + "\n" + end + "\n"
}

// markdown is the report's section.
func (rep *authReport) markdown() []byte {
	var w bytes.Buffer
	p := func(format string, a ...any) { fmt.Fprintf(&w, format, a...) }
	p("## Authentication and ACLs (bench auth)\n\n")
	cmd := rep.Command
	if cmd == "" {
		cmd = "go run ./bench auth " + strings.Join(os.Args[2:], " ")
	}
	p("- Command: `%s`\n", cmd)
	p("- Date: %s (%s for the whole run)\n", rep.Started.UTC().Format("2006-01-02 15:04 MST"), rep.Elapsed)
	p("- Machine: %s; the machine's %d cores are shared with other work (other helpers' builds and tests): "+
		"\"others' cores\" says how much of it they took. Compare the columns of one table (one run, interleaved), not across runs.\n", rep.Machine, rep.GOMAXPROC)
	p("- keel: %s; mosquitto: %s, in memory (persistence false), `per_listener_settings false`, `allow_anonymous false`\n", orUnknown(rep.KeelRev), rep.Mosquitto)
	p("- Files, the same for both brokers (bench/authfiles.go): a password file of 20 users written by `keel passwd -b` "+
		"($7$, PBKDF2-SHA512, 210,000 iterations); an ACL of %d rules: 20 users with 44–45 topic lines each (the benchmark's "+
		"grants last in their user's list, after a deny), 2 anonymous lines, 100 patterns over %%u and %%c (read, write, readwrite, deny) "+
		"that match none of the benchmark's topics. \"-auth\" brokers run with both files and every client logs in.\n", rep.Rules)
	p("- Each run starts a fresh broker on a free loopback port; %d repetitions, interleaved in the order of the columns. "+
		"Cells are the median with min–max.\n\n", rep.Reps)

	if len(rep.Fanin) > 0 {
		p("### %s, MQTT %s\n\n", faninTitle(), map[int]string{4: "3.1.1", 5: "5.0"}[rep.Version])
		p("`bench %s`, %v measured after a %v warm-up, publishers logged in as %s, the subscriber as %s.\n\n",
			strings.Join(faninArgs(), " "), rep.Duration, rep.Warmup, authPubUser, authSubUser)
		names := []string{"keel", "keel-auth", "mosquitto", "mosquitto-auth"}
		w.WriteString(mdRow("figure", "keel", "keel-auth", "mosquitto", "mosquitto-auth", "keel-auth/keel", "keel-auth/mosquitto-auth", "mosquitto-auth/mosquitto"))
		w.WriteString(mdSep(8))
		for _, mt := range []metric{mDel, mPub,
			{label: "end-to-end p50", get: func(r *result) float64 { return r.E2EP50 }, fmt: fmtUS},
			{label: "end-to-end p99", get: func(r *result) float64 { return r.E2EP99 }, fmt: fmtUS},
			mAckP50, mCPUPerMsg,
			{label: "broker cores", get: func(r *result) float64 { return r.BrokerCores }, fmt: cores},
			mOther,
		} {
			row := []string{mt.label}
			sums := map[string]summary{}
			for _, n := range names {
				sums[n] = summarize(rep.Fanin[n], mt.get)
				row = append(row, sums[n].format(mt.fmt))
			}
			row = append(row, ratio(sums["keel-auth"], sums["keel"]), ratio(sums["keel-auth"], sums["mosquitto-auth"]),
				ratio(sums["mosquitto-auth"], sums["mosquitto"]))
			w.WriteString(mdRow(row...))
		}
		p("\n")
		ka, k := summarize(rep.Fanin["keel-auth"], mDel.get), summarize(rep.Fanin["keel"], mDel.get)
		ma := summarize(rep.Fanin["mosquitto-auth"], mDel.get)
		w.WriteString(mdRow("target (issue 12), on the medians of deliveries/s", "measured", "verdict"))
		w.WriteString(mdSep(3))
		verdict := func(a, b summary, min float64) (string, string) {
			if a.n == 0 || b.n == 0 || b.med == 0 {
				return "not measured", "n/a"
			}
			if a.med/b.med >= min {
				return fmt.Sprintf("%.2f", a.med/b.med), "met"
			}
			return fmt.Sprintf("%.2f", a.med/b.med), "not met"
		}
		f, v := verdict(ka, k, 0.9)
		w.WriteString(mdRow("keel with the ACL and passwords ≥ 0.9 × keel without", f, v))
		f, v = verdict(ka, ma, 1.3)
		w.WriteString(mdRow("keel with the ACL and passwords ≥ 1.3 × Mosquitto with the same files", f, v))
		p("\n")
	}

	if len(rep.Connects) > 0 {
		p("### A login storm: %.0f connects per second offered, `$7$` at 210,000 iterations\n\n", rep.ConnRate)
		p("`bench connects -rate %.0f -duration %v -inflight %d -username %s`: for %v a new client (clean session, MQTT %s) "+
			"logs in every %v, whether or not the ones before were answered, with at most %d waiting (one due beyond that is skipped), "+
			"then disconnects; a synchronous QoS 1 publisher (the probe, connected before the storm) shows what the storm does to a client already in. "+
			"\"logins/s\" are the successful CONNACKs that arrived in the window. keel-auth runs with the default cap on verifications at once "+
			"(half of GOMAXPROCS, at least 1: %d here, with %d CPUs), keel-auth-capN with `max_password_verifications = N`.\n\n",
			rep.ConnRate, rep.ConnDur, rep.ConnWait, authPubUser, rep.ConnDur, map[int]string{4: "3.1.1", 5: "5.0"}[rep.Version],
			time.Duration(float64(time.Second)/rep.ConnRate), rep.ConnWait, max(1, rep.GOMAXPROC/2), rep.GOMAXPROC)
		h := []string{"figure"}
		h = append(h, rep.Order...)
		w.WriteString(mdRow(h...))
		w.WriteString(mdSep(len(h)))
		probe := func(get func(*ackFigures) float64) func(*connectsResult) float64 {
			return func(r *connectsResult) float64 {
				if r.Probe == nil {
					return 0
				}
				return get(r.Probe)
			}
		}
		for _, row := range []struct {
			label string
			get   func(*connectsResult) float64
			fmt   func(float64) string
		}{
			{"logins/s (CONNACK 0 in the window)", func(r *connectsResult) float64 { return r.Rate }, func(v float64) string { return fmt.Sprintf("%.1f/s", v) }},
			{"broker cores", func(r *connectsResult) float64 { return r.BrokerCores }, cores},
			{"broker CPU per login", func(r *connectsResult) float64 {
				if r.InWindow == 0 {
					return 0
				}
				return r.BrokerCPU * 1e3 / float64(r.InWindow)
			}, func(v float64) string { return fmt.Sprintf("%.0fms", v) }},
			{"others' cores (noise)", func(r *connectsResult) float64 { return r.OtherCores }, cores},
			{"attempts started", func(r *connectsResult) float64 { return float64(r.Attempts) }, count},
			{"skipped (the broker was that far behind)", func(r *connectsResult) float64 { return float64(r.Skipped) }, count},
			{"refused (keel: 0x89 Server busy, no slot within its 10 s connect timeout)", func(r *connectsResult) float64 {
				n := int64(0)
				for _, v := range r.Refused {
					n += v
				}
				return float64(n)
			}, count},
			{"no CONNACK within 15 s", func(r *connectsResult) float64 { return float64(r.Failed) }, count},
			{"CONNACK p50 (successes)", func(r *connectsResult) float64 { return r.P50 }, fmtUS},
			{"CONNACK p99 (successes)", func(r *connectsResult) float64 { return r.P99 }, fmtUS},
			{"probe PUBACK p50 during the storm", probe(func(f *ackFigures) float64 { return f.P50 }), fmtUS},
			{"probe PUBACK p99 during the storm", probe(func(f *ackFigures) float64 { return f.P99 }), fmtUS},
			{"probe PUBACKs during the storm", probe(func(f *ackFigures) float64 { return float64(f.Count) }), count},
			{"probe's longest wait for a PUBACK", probe(func(f *ackFigures) float64 { return f.Gap }), fmtUS},
			{"probe PUBACK p50 before the storm", func(r *connectsResult) float64 {
				if r.ProbeIdle == nil {
					return 0
				}
				return r.ProbeIdle.P50
			}, fmtUS},
		} {
			cells := []string{row.label}
			for _, n := range rep.Order {
				cells = append(cells, summarize(rep.Connects[n], row.get).format(row.fmt))
			}
			w.WriteString(mdRow(cells...))
		}
		p("\n")
		// The CPU per login of a column includes the probe's publishing,
		// which the cap lets through or not: take the least of keel's.
		best, bestName := summary{}, ""
		for _, n := range rep.Order {
			if !strings.HasPrefix(n, "keel") {
				continue
			}
			sm := summarize(rep.Connects[n], func(r *connectsResult) float64 {
				if r.InWindow == 0 {
					return 0
				}
				return r.BrokerCPU / float64(r.InWindow)
			})
			if sm.n > 0 && sm.med > 0 && (best.n == 0 || sm.med < best.med) {
				best, bestName = sm, n
			}
		}
		if best.n > 0 {
			p("What %.0f logins per second would take: at keel's least CPU per login here (%s, %.0f ms; nearly all of it the $7$ hash, "+
				"see `go test -run - -bench Verify ./engine/auth`), about %.0f cores; this machine has %d. "+
				"A broker sustains its cores over the hash's cost, whatever the cap; what the cap decides is how much of the machine "+
				"the storm takes from the clients already connected (the probe rows).\n\n",
				rep.ConnRate, bestName, best.med*1e3, best.med*rep.ConnRate, rep.GOMAXPROC)
		}
	}
	if len(rep.Fails) > 0 {
		p("Failed runs:\n\n")
		for _, f := range rep.Fails {
			p("- %s\n", f)
		}
		p("\n")
	}
	return w.Bytes()
}
