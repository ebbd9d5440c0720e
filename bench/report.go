package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
)

// metric is one figure of a run, summarised over the repetitions.
type metric struct {
	label string
	get   func(*result) float64
	fmt   func(float64) string
	when  func(scenario, *result) bool // nil: always
	// noRatio: the brokers' figures are not compared (a ratio would mean
	// nothing, e.g. of a difference that may be negative).
	noRatio bool
}

func rate(v float64) string { return fmt.Sprintf("%.0f/s", v) }

func cores(v float64) string  { return fmt.Sprintf("%.2f", v) }
func count(v float64) string  { return fmt.Sprintf("%.0f", v) }
func perMsg(v float64) string { return fmt.Sprintf("%.1fµs", v) }

func qosAtLeast(q int) func(scenario, *result) bool {
	return func(_ scenario, r *result) bool { return r.QoS >= q }
}

var (
	mPub     = metric{label: "acked publishes", get: func(r *result) float64 { return r.PubRate }, fmt: rate}
	mDel     = metric{label: "deliveries", get: func(r *result) float64 { return r.DelRate }, fmt: rate}
	mAckP50  = metric{label: "ack p50 (PUBACK/PUBREC)", get: func(r *result) float64 { return r.AckP50 }, fmt: fmtUS, when: qosAtLeast(1)}
	mOther   = metric{label: "others' cores (noise)", get: func(r *result) float64 { return r.OtherCores }, fmt: cores}
	mAckMean = metric{label: "ack mean", get: func(r *result) float64 { return r.AckMean }, fmt: fmtUS, when: qosAtLeast(1)}
	// Bytes the subscribers read per delivery: what topic aliases save.
	mSubBytes = metric{label: "subscriber bytes per delivery", get: func(r *result) float64 { return r.SubBytesPerMsg },
		fmt: func(v float64) string { return fmt.Sprintf("%.1f B", v) }, when: func(_ scenario, r *result) bool { return r.SubBytesPerMsg > 0 }}
)

var metrics = []metric{
	mPub,
	mDel,
	mSubBytes,
	{label: "end-to-end p50", get: func(r *result) float64 { return r.E2EP50 }, fmt: fmtUS},
	{label: "end-to-end p99", get: func(r *result) float64 { return r.E2EP99 }, fmt: fmtUS},
	{label: "end-to-end p99.9", get: func(r *result) float64 { return r.E2EP999 }, fmt: fmtUS},
	mAckP50,
	{label: "ack p99", get: func(r *result) float64 { return r.AckP99 }, fmt: fmtUS, when: qosAtLeast(1)},
	mAckMean,
	mFsync,
	mAckOverFsync,
	{label: "PUBCOMP p50", get: func(r *result) float64 { return r.DoneP50 }, fmt: fmtUS, when: qosAtLeast(2)},
	mCPUPerMsg,
	{label: "broker cores", get: func(r *result) float64 { return r.BrokerCores }, fmt: cores},
	{label: "bench cores", get: func(r *result) float64 { return r.BenchCores }, fmt: cores},
	mOther,
	{label: "lost (QoS 0: dropped)", get: func(r *result) float64 { return float64(r.Lost) }, fmt: count},
}

// summary is the median and range of one figure over the repetitions.
type summary struct {
	med, lo, hi float64
	n           int
}

func summarize[R any](rs []R, get func(R) float64) summary {
	if len(rs) == 0 {
		return summary{}
	}
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = get(r)
	}
	slices.Sort(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return summary{med: med, lo: v[0], hi: v[len(v)-1], n: len(v)}
}

func (s summary) format(f func(float64) string) string {
	switch {
	case s.n == 0:
		return "n/a"
	case s.n == 1 || s.lo == s.hi:
		return f(s.med)
	}
	return fmt.Sprintf("%s (%s–%s)", f(s.med), f(s.lo), f(s.hi))
}

func ratio(a, b summary) string {
	if a.n == 0 || b.n == 0 || b.med == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", a.med/b.med)
}

func (m *matrix) shown(s scenario, mt metric) bool {
	if mt.when == nil {
		return true
	}
	for _, rs := range m.results[s.name] {
		for _, r := range rs {
			if mt.when(s, r) {
				return true
			}
		}
	}
	return false
}

// rows are the detail lines of one scenario: label, then one cell per
// broker, then the ratio of the first broker to the last.
func (m *matrix) rows(s scenario) [][]string {
	var rows [][]string
	for _, mt := range metrics {
		if !m.shown(s, mt) {
			continue
		}
		row := []string{mt.label}
		var sums []summary
		for _, b := range m.brokers {
			sm := summarize(m.results[s.name][b.name], mt.get)
			sums = append(sums, sm)
			row = append(row, sm.format(mt.fmt))
		}
		if len(sums) > 1 {
			if mt.noRatio {
				row = append(row, "n/a")
			} else {
				row = append(row, ratio(sums[0], sums[len(sums)-1]))
			}
		}
		rows = append(rows, row)
	}
	return rows
}

func (m *matrix) header() []string {
	h := []string{"figure"}
	for _, b := range m.brokers {
		h = append(h, b.name)
	}
	if len(m.brokers) > 1 {
		h = append(h, m.brokers[0].name+"/"+m.brokers[len(m.brokers)-1].name)
	}
	return h
}

func (m *matrix) printScenario(s scenario) {
	fmt.Printf("\n== %s  [%s]\n", s.title, s.name)
	printTable(append([][]string{m.header()}, m.rows(s)...))
	if s.sync && m.fsync != nil {
		fmt.Printf("  one 64 B write + fdatasync on the data disk (matrix start): p50 %s (rewrite) / %s (prealloc, as Pebble's WAL) / %s (append)\n",
			fmtUS(m.fsync.RewriteP50), fmtUS(m.fsync.PreallocP50), fmtUS(m.fsync.AppendP50))
	}
	if s.rabbit {
		fmt.Printf("  RabbitMQ, published (durable MQTT, %s): %.0f msg/s, mean PUBACK %s\n", rabbitMachine, rabbitRate, fmtUS(rabbitAckMeanUS))
	}
}

func mdRow(cells ...string) string { return "| " + strings.Join(cells, " | ") + " |\n" }

func mdSep(n int) string { return "|" + strings.Repeat(" --- |", n) + "\n" }

// markdown renders the whole matrix as bench/BENCHMARKS.md.
func (m *matrix) markdown(todo []scenario) []byte {
	var w bytes.Buffer
	p := func(format string, a ...any) { fmt.Fprintf(&w, format, a...) }
	first, last := m.brokers[0].name, m.brokers[len(m.brokers)-1].name

	p("# Keel and Mosquitto, side by side\n\n")
	p("Generated by `bench/matrix.sh` (`go run ./bench matrix`); do not edit by hand: run it again (or, to change only the analysis, edit bench/ANALYSIS.md and write it again from the saved results with `go run ./bench matrix -load bench/BENCHMARKS.json -notes bench/ANALYSIS.md -extra bench/AUTH.md -carry bench/DEDUP.md,bench/BRIDGE.md,bench/TRANSPORTS.md -out bench/BENCHMARKS.md`). " +
		"The section on authentication and ACLs is bench/auth.sh's (bench/AUTH.md), measured on its own and carried over.\n\n")
	cmd := m.mc.command
	if cmd == "" {
		cmd = "go run ./bench matrix " + strings.Join(os.Args[2:], " ")
	}
	p("- Command: `%s`\n", cmd)
	p("- Date: %s (%s for the whole matrix)\n", m.info.Started.UTC().Format("2006-01-02 15:04 MST"), m.info.Elapsed)
	p("- Machine: %s\n", m.info.Machine)
	p("- Data disk: %s\n", m.info.Disk)
	if f := m.fsync; f != nil {
		p("- One 64 B write + fdatasync on that disk (`bench -fsync-probe`, at the start of the matrix): "+
			"append p50 %s (p99 %s); append into preallocated space, as Pebble's WAL, p50 %s (p99 %s); "+
			"rewrite in place p50 %s (p99 %s); the kernel charged the syncing thread %.0fµs of CPU per sync (%.0f%% of its wall time)\n",
			fmtUS(f.AppendP50), fmtUS(f.AppendP99), fmtUS(f.PreallocP50), fmtUS(f.PreallocP99),
			fmtUS(f.RewriteP50), fmtUS(f.RewriteP99), f.CPUPerSync, 100*f.CPUShare)
	}
	for _, b := range m.brokers {
		switch b.name {
		case "keel":
			rev := m.mc.keelRev
			if rev == "" {
				rev = "unknown revision"
			}
			p("- keel: %s; every QoS 1/2 acknowledgement waits for a synced commit\n", rev)
		case "keel-base":
			p("- keel-base: %s, the same keel before a change, measured in the same runs for comparison\n", m.mc.keelBaseRev)
		case "mosquitto":
			p("- mosquitto: %s, in memory (persistence false; its configuration is at the end): it keeps nothing\n", m.info.Mosquitto)
		}
	}
	if m.mc.keel == "" {
		note := m.mc.keelNote
		if note == "" {
			note = "no -keel binary given"
		}
		p("- keel: not measured: %s\n", note)
	}
	p("- Load: MQTT %s; each run starts a fresh broker (and data directory) on a free loopback port, "+
		"publishes for %v after a %v warm-up, then drains; %d repetitions per broker, interleaved (%s). "+
		"Cells are the median with min–max.\n",
		map[int]string{4: "3.1.1", 5: "5.0"}[m.mc.version], m.mc.duration, m.mc.warmup, m.mc.reps, interleaving(m.brokers))
	p("- The machine is shared: \"others' cores\" is what the rest of the machine (other processes, steal) used during a run. " +
		"Compare brokers within one run of this matrix, not across runs.\n")
	p("- Latencies are measured by the load generator on the same machine: end-to-end is publisher encode to subscriber decode; " +
		"ack is PUBLISH sent to PUBACK (QoS 1) or PUBREC (QoS 2) received.\n\n")

	if rows := m.targetRows(todo); len(rows) > 0 && m.mc.keel != "" {
		p("## Targets\n\n")
		p("The issue's goals for Keel, judged on the medians of this run (range over the repetitions in brackets). " +
			"\"One fsync\" is a 64 B append + fdatasync into preallocated space (what Pebble does with its WAL), " +
			"measured in each synchronous run's data directory just before the broker started.\n\n")
		w.WriteString(mdRow("target", "measured", "verdict"))
		w.WriteString(mdSep(3))
		for _, r := range rows {
			w.WriteString(mdRow(r...))
		}
		p("\n")
		if note := m.syncCPUNote(); note != "" {
			p("%s\n\n", note)
		}
	}
	if m.mc.notes != "" {
		b, err := os.ReadFile(m.mc.notes)
		if err == nil && len(bytes.TrimSpace(b)) > 0 {
			p("%s\n\n", bytes.TrimSpace(b))
		}
	}

	p("## Summary\n\n")
	p("Throughput scenarios: deliveries per second (higher is better). Synchronous scenarios: acknowledgement p50 (lower is better). " +
		"The last column is how many of the machine's cores other processes took during these runs (median over both brokers): the noise.\n\n")
	w.WriteString(mdRow("scenario", "figure", first, last, first+"/"+last, "others' cores"))
	w.WriteString(mdSep(6))
	for _, s := range todo {
		mt := mDel
		if s.sync {
			mt = mAckP50
		}
		a := summarize(m.results[s.name][first], mt.get)
		b := summarize(m.results[s.name][last], mt.get)
		cell := func(sm summary) string { return sm.format(mt.fmt) }
		r := ratio(a, b)
		if len(m.brokers) == 1 {
			r = "n/a"
		}
		label := mt.label
		if s.sync {
			label = "ack p50"
		}
		var all []*result
		for _, rs := range m.results[s.name] {
			all = append(all, rs...)
		}
		noise := summarize(all, mOther.get).format(mOther.fmt)
		if len(m.brokers) == 1 {
			w.WriteString(mdRow(s.title, label, "n/a", cell(b), r, noise))
		} else {
			w.WriteString(mdRow(s.title, label, cell(a), cell(b), r, noise))
		}
	}
	p("\n")

	for _, s := range todo {
		if !s.rabbit {
			continue
		}
		p("## Beside RabbitMQ's published figure\n\n")
		p("RabbitMQ's published durable MQTT figure: 100 synchronous QoS 1 publisher/subscriber pairs, 100 B payloads, on %s. "+
			"Ours is the same load on this machine (%d CPUs); different hardware, so this is context, not a ratio.\n\n", rabbitMachine, m.info.CPUs)
		w.WriteString(mdRow("broker", "acked publishes/s", "mean PUBACK", "machine"))
		w.WriteString(mdSep(4))
		w.WriteString(mdRow("RabbitMQ (published)", fmt.Sprintf("%.0f", rabbitRate), fmtUS(rabbitAckMeanUS), rabbitMachine))
		for _, b := range m.brokers {
			rs := m.results[s.name][b.name]
			w.WriteString(mdRow(b.name+" (here)", summarize(rs, mPub.get).format(rate), summarize(rs, mAckMean.get).format(fmtUS),
				fmt.Sprintf("%d CPUs", m.info.CPUs)))
		}
		p("\n")
	}

	if m.mc.extra != "" {
		b, err := os.ReadFile(m.mc.extra)
		if err == nil && len(bytes.TrimSpace(b)) > 0 {
			p("%s\n", authBlock(b))
		}
	}
	for _, f := range strings.Split(m.mc.carry, ",") {
		begin, end := dedupBegin, dedupEnd
		switch filepath.Base(strings.TrimSpace(f)) {
		case "DEDUP.md":
		case "BRIDGE.md":
			begin, end = bridgeBegin, bridgeEnd
		case "TRANSPORTS.md":
			begin, end = transportsBegin, transportsEnd
		default:
			continue
		}
		if b, err := os.ReadFile(strings.TrimSpace(f)); err == nil && len(bytes.TrimSpace(b)) > 0 {
			p("%s\n%s\n%s\n\n", begin, strings.TrimSpace(string(b)), end)
		}
	}

	p("## Details\n\n")
	for _, s := range todo {
		p("### %s\n\n", s.title)
		p("`bench %s`\n\n", strings.Join(s.args, " "))
		if s.sync && m.fsync != nil {
			p("One 64 B write + fdatasync on the data disk takes %s (p50, rewrite in place) to %s (append); %s appending into preallocated space "+
				"as Pebble's WAL does (matrix start; each run's own probe is in the table): "+
				"the floor under a durable synchronous acknowledgement.\n\n", fmtUS(m.fsync.RewriteP50), fmtUS(m.fsync.AppendP50), fmtUS(m.fsync.PreallocP50))
		}
		h := m.header()
		w.WriteString(mdRow(h...))
		w.WriteString(mdSep(len(h)))
		for _, r := range m.rows(s) {
			w.WriteString(mdRow(r...))
		}
		if rs := m.results[s.name]; len(rs) > 0 {
			for _, b := range m.brokers {
				for _, r := range rs[b.name] {
					if r.Window > 0 && s.args != nil && r.QoS > 0 && fmt.Sprint(r.Window) != flagValue(s.args, "-window") {
						p("\n%s capped the window at %d (its Receive Maximum).\n", b.name, r.Window)
						break
					}
				}
			}
		}
		p("\n")
	}

	if len(m.fails) > 0 {
		p("## Failed runs\n\n")
		for _, f := range m.fails {
			p("- %s\n", f)
		}
		p("\n")
	}
	p("## Mosquitto configuration\n\n```\n%s```\n", fmt.Sprintf(mosquittoConfFmt, 0))
	return w.Bytes()
}

func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

func interleaving(bs []broker) string {
	var names []string
	for range 2 {
		for _, b := range bs {
			names = append(names, b.name)
		}
	}
	return strings.Join(names, ", ") + ", ..."
}

func machineInfo() string {
	model := "unknown CPU"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			mem = fmt.Sprintf(", %.0f GiB", float64(kb)/(1<<20))
		}
	}
	kernel := ""
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = ", Linux " + strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%d CPUs (nproc), %s%s%s, %s", runtime.NumCPU(), model, mem, kernel, runtime.Version())
}

// diskInfo names the filesystem under dir: device, type, and whether the
// device says it is rotational.
func diskInfo(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "unknown"
	}
	abs, _ = filepath.EvalSymlinks(abs)
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "unknown"
	}
	var best, fstype, source string
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 2 {
			continue
		}
		mp := f[4]
		if (abs == mp || strings.HasPrefix(abs, strings.TrimSuffix(mp, "/")+"/")) && len(mp) >= len(best) {
			best, fstype, source = mp, g[0], g[1]
		}
	}
	if best == "" {
		return "unknown"
	}
	s := fmt.Sprintf("%s on %s (%s, mounted at %s)", abs, source, fstype, best)
	if dev, ok := strings.CutPrefix(source, "/dev/"); ok {
		for d := dev; d != ""; d = d[:len(d)-1] {
			if r, err := os.ReadFile("/sys/block/" + d + "/queue/rotational"); err == nil {
				// Virtual disks often say 1 whatever backs them.
				s += fmt.Sprintf(", %s/queue/rotational = %s", d, strings.TrimSpace(string(r)))
				break
			}
		}
	}
	return s
}

func mosquittoVersion(bin string) string {
	out, _ := exec.Command(bin, "-h").CombinedOutput()
	line, _, _ := strings.Cut(string(out), "\n")
	if v, ok := strings.CutPrefix(strings.TrimSpace(line), "mosquitto version "); ok {
		return "Mosquitto " + v
	}
	return "Mosquitto (version unknown)"
}
