package main

import (
	"bytes"
	"crypto/x509/pkix"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/keelmq/keel/listener/listenertest"
)

// bench transports measures keel's TLS and WebSocket listeners (issue 11's
// "Speed") beside Mosquitto's own, in one run, interleaved rep by rep,
// every run on a fresh broker:
//
//   - fan-in: the matrix's fanin-qos1-64 (4 publishers, 1 subscriber, QoS
//     1, 64 B, window 64, persistent) over plain TCP, TLS and WebSocket,
//     keel durable and Mosquitto in memory;
//   - sync: the matrix's sync-qos1 (one synchronous QoS 1 publisher) over
//     TLS, its PUBACK p50 beside an fsync probe of the same disk;
//   - conns: N connections over TLS (bench conns: a full handshake each,
//     no session resumption), time, broker CPU per handshake and RSS per
//     connection.
//
// The certificates (a CA and a server certificate for 127.0.0.1, ECDSA
// P-256) are made for the run. transports.sh builds the binaries and puts
// the report into BENCHMARKS.md.
type transportsConfig struct {
	keel, mosquitto string
	keelRev         string
	reps            int
	duration        time.Duration
	warmup          time.Duration
	version         int
	conns           int
	connReps        int
	parts           string
	tmp             string
	out, into, save string
	command         string
}

// transportsReport is everything bench transports measured (-save).
type transportsReport struct {
	Started   time.Time                 `json:"started"`
	Elapsed   time.Duration             `json:"elapsed_ns"`
	Machine   string                    `json:"machine"`
	CPUs      int                       `json:"cpus"`
	Mosquitto string                    `json:"mosquitto_version"`
	KeelRev   string                    `json:"keel_rev"`
	Command   string                    `json:"command"`
	Reps      int                       `json:"reps"`
	Duration  time.Duration             `json:"duration_ns"`
	Warmup    time.Duration             `json:"warmup_ns"`
	Version   int                       `json:"v"`
	Fanin     map[string][]*result      `json:"fanin"` // by broker-transport: keel-tls, mosquitto-ws, ...
	Sync      map[string][]*result      `json:"sync"`
	Fsync     []*fsyncResult            `json:"fsync"`
	Conns     map[string][]*connsResult `json:"conns"`
	N         int                       `json:"conns_n"`
	Fails     []string                  `json:"fails,omitempty"`
}

func transportsMain(args []string) int {
	fs := flag.NewFlagSet("bench transports", flag.ExitOnError)
	var tc transportsConfig
	fs.StringVar(&tc.keel, "keel", "", "keel binary (required)")
	fs.StringVar(&tc.keelRev, "keel-rev", "", "keel revision to quote in the report")
	fs.StringVar(&tc.mosquitto, "mosquitto", "mosquitto", "mosquitto binary")
	fs.IntVar(&tc.reps, "reps", 3, "runs of each fan-in and sync configuration, interleaved")
	fs.DurationVar(&tc.duration, "duration", 5*time.Second, "measured time per fan-in and sync run")
	fs.DurationVar(&tc.warmup, "warmup", time.Second, "warm-up per fan-in and sync run")
	fs.IntVar(&tc.version, "v", 5, "MQTT protocol level: 4 or 5")
	fs.IntVar(&tc.conns, "n", 10000, "conns: TLS connections per run")
	fs.IntVar(&tc.connReps, "conn-reps", 2, "conns: runs per broker, interleaved")
	fs.StringVar(&tc.parts, "parts", "fanin,sync,conns", "what to run: fanin, sync, conns (comma-separated)")
	fs.StringVar(&tc.tmp, "tmp", "", "scratch directory (default: a new temporary directory); also the disk measured")
	fs.StringVar(&tc.out, "out", "", "write the report's Markdown section to this `file`")
	fs.StringVar(&tc.into, "into", "", "also put the section into this Markdown `file` (bench/BENCHMARKS.md), replacing the one there")
	fs.StringVar(&tc.save, "save", "", "write every run's result (JSON) to this `file`")
	fs.StringVar(&tc.command, "command", "", "command line to quote in the report")
	fs.Parse(args)
	if tc.keel == "" || tc.reps < 1 || tc.connReps < 1 || tc.conns < 1 || fs.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "bench transports: want -keel BIN, -reps, -conn-reps, -n >= 1, no arguments")
		return 2
	}
	self, cleanup, err := driverSetup(&tc.mosquitto, &tc.tmp, "keel-transports-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench transports:", err)
		return 2
	}
	defer cleanup()
	var rp reaper
	defer rp.onSignal("bench transports", syscall.SIGKILL, func() { os.RemoveAll(tc.tmp) })()

	ca, err := listenertest.MakeCA(tc.tmp, "bench-ca")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench transports:", err)
		return 2
	}
	cert, err := ca.MakeCert("bench-server", listenertest.Options{Subject: pkix.Name{CommonName: "localhost"}, Server: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench transports:", err)
		return 2
	}
	files := &tlsFiles{ca: ca.File, cert: cert.CertFile, key: cert.KeyFile}

	rep := &transportsReport{
		Started: time.Now(), Machine: machineInfo(), CPUs: runtime.NumCPU(), Mosquitto: mosquittoVersion(tc.mosquitto),
		KeelRev: tc.keelRev, Command: tc.command, Reps: tc.reps, Duration: tc.duration, Warmup: tc.warmup,
		Version: tc.version, N: tc.conns,
		Fanin: map[string][]*result{}, Sync: map[string][]*result{}, Conns: map[string][]*connsResult{},
	}
	type job struct {
		kind, broker, transport string
	}
	var jobs []job
	parts := strings.Split(tc.parts, ",")
	has := func(p string) bool {
		for _, q := range parts {
			if strings.TrimSpace(q) == p {
				return true
			}
		}
		return false
	}
	for range tc.reps {
		if has("fanin") {
			for _, t := range []string{"tcp", "tls", "ws"} {
				for _, b := range []string{"keel", "mosquitto"} {
					jobs = append(jobs, job{"fanin", b, t})
				}
			}
		}
		if has("sync") {
			// The probe right before keel over TLS: the target compares
			// the two of one rep.
			jobs = append(jobs, job{"sync", "keel", "tcp"}, job{"fsync", "", ""}, job{"sync", "keel", "tls"}, job{"sync", "mosquitto", "tls"})
		}
	}
	if has("conns") {
		for range tc.connReps {
			for _, b := range []string{"keel", "mosquitto"} {
				jobs = append(jobs, job{"conns", b, "tls"})
			}
		}
	}
	for n, j := range jobs {
		name := j.broker + "-" + j.transport
		fmt.Fprintf(os.Stderr, "[%d/%d] %s %s ... ", n+1, len(jobs), j.kind, name)
		if j.kind == "fsync" {
			r, err := fsyncProbe(tc.tmp, time.Second)
			if err != nil {
				fmt.Fprintf(os.Stderr, "error: %v\n", err)
				rep.Fails = append(rep.Fails, fmt.Sprintf("fsync probe: %v", err))
				continue
			}
			rep.Fsync = append(rep.Fsync, r)
			fmt.Fprintf(os.Stderr, "prealloc p50 %s\n", fmtUS(r.PreallocP50))
			continue
		}
		dir := filepath.Join(tc.tmp, fmt.Sprintf("run-%03d-%s", n+1, name))
		line, err := tc.runOne(&rp, self, files, rep, j.kind, j.broker, j.transport, dir)
		os.RemoveAll(dir)
		if err != nil {
			fmt.Fprintf(os.Stderr, "error: %v\n", err)
			rep.Fails = append(rep.Fails, fmt.Sprintf("%s on %s, run %d: %v", j.kind, name, n+1, err))
			continue
		}
		fmt.Fprintln(os.Stderr, line)
	}
	rep.Elapsed = time.Since(rep.Started).Round(time.Second)

	md := rep.markdown()
	if rc := writeReport("bench transports", rep, md, tc.save, tc.out, tc.into, transportsBegin, transportsEnd); rc != 0 {
		return rc
	}
	if len(rep.Fails) > 0 {
		return 1
	}
	return 0
}

// tlsFiles are the run's CA and server certificate.
type tlsFiles struct{ ca, cert, key string }

// brokerCmd is the command line of broker (keel or mosquitto) serving
// MQTT over transport on port, with its data (keel) in dir.
func (tc *transportsConfig) brokerCmd(broker, transport string, port int, files *tlsFiles, dir string) (*exec.Cmd, error) {
	withTLS := transport == "tls" || transport == "wss"
	ws := transport == "ws" || transport == "wss"
	if broker == "mosquitto" {
		text := fmt.Sprintf(mosquittoConfFmt, port)
		var extra string
		if ws {
			extra += "protocol websockets\n"
		}
		if withTLS {
			extra += "certfile " + files.cert + "\nkeyfile " + files.key + "\n"
		}
		if os.Geteuid() == 0 {
			// Started as root, Mosquitto runs as the user mosquitto, who
			// cannot read the key in this private directory.
			extra += "user root\n"
		}
		listen := fmt.Sprintf("listener %d 127.0.0.1\n", port)
		if ws {
			// Debian's Mosquitto 2.0 (libwebsockets) cannot bind a
			// WebSocket listener to an address (mosquitto#3383: only an
			// interface; it still listens on every address here), and
			// refuses to start with only WebSocket listeners
			// (mosquitto#2284): a plain listener on another port comes
			// first. The load only ever dials 127.0.0.1.
			plain, err := freePort()
			if err != nil {
				return nil, err
			}
			extra = fmt.Sprintf("bind_interface lo\n") + extra
			text = strings.Replace(text, listen, fmt.Sprintf("listener %d 127.0.0.1\nlistener %d\n", plain, port), 1)
			listen = fmt.Sprintf("listener %d\n", port)
		}
		// The listener's options follow its listener line.
		text = strings.Replace(text, listen, listen+extra, 1)
		conf := filepath.Join(dir, "mosquitto.conf")
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			return nil, err
		}
		return exec.Command(tc.mosquitto, "-c", conf), nil
	}
	text := "# written by keel's bench transports\n"
	if withTLS {
		text += "certfile = " + files.cert + "\nkeyfile = " + files.key + "\n"
	}
	if ws {
		text += "protocol = websockets\n"
	}
	conf := filepath.Join(dir, "keel.conf")
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return nil, err
	}
	return exec.Command(tc.keel, "serve", "--config", conf, "--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--data", filepath.Join(dir, "data")), nil
}

// runOne starts a broker on a free port in dir, runs one load (kind fanin
// or sync) or conns run against it in a child process, records the result
// in rep and stops the broker. It returns the progress line.
func (tc *transportsConfig) runOne(rp *reaper, self string, files *tlsFiles, rep *transportsReport, kind, broker, transport, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	port, err := freePort()
	if err != nil {
		return "", err
	}
	cmd, err := tc.brokerCmd(broker, transport, port, files, dir)
	if err != nil {
		return "", err
	}
	name := broker + "-" + transport
	bp, err := startProc(name, cmd, filepath.Join(dir, "broker.log"))
	if err != nil {
		return "", err
	}
	rp.track(bp.cmd.Process, true)
	defer func() { bp.stop(5 * time.Second); rp.track(bp.cmd.Process, false) }()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := bp.listening(addr, 15*time.Second); err != nil {
		return "", err
	}
	common := []string{"-addr", addr, "-pid", fmt.Sprint(bp.pid()), "-label", name, "-q", "-v", fmt.Sprint(tc.version),
		"-transport", transport, "-cafile", files.ca}

	if kind == "conns" {
		args := append([]string{"conns"}, common...)
		args = append(args, "-n", fmt.Sprint(tc.conns))
		var res connsResult
		err := seamsChild(rp, &res, self, args...)
		if !bp.running() {
			return "", fmt.Errorf("%s exited during the run (%v); log: %s", name, bp.err, bp.tail())
		}
		if err != nil {
			return "", err
		}
		rep.Conns[name] = append(rep.Conns[name], &res)
		return fmt.Sprintf("%d in %.2fs, %.0fµs broker CPU per handshake, %.2f KB per connection",
			res.N, res.ConnectSeconds, res.ConnectCPU, res.PerConn), nil
	}

	scen := faninScenario
	if kind == "sync" {
		scen = "sync-qos1"
	}
	args := append(common, "-duration", tc.duration.String(), "-warmup", tc.warmup.String())
	args = append(args, scenarioArgs(scen)...)
	var res result
	err = seamsChild(rp, &res, self, args...)
	if !bp.running() {
		return "", fmt.Errorf("%s exited during the run (%v); log: %s", name, bp.err, bp.tail())
	}
	switch {
	case err != nil:
		return "", err
	case res.Delivered == 0:
		return "", errors.New("nothing delivered")
	case res.failed():
		return "", fmt.Errorf("LOSS: %d lost, %d duplicates", res.Lost, res.Dups)
	}
	if kind == "sync" {
		rep.Sync[name] = append(rep.Sync[name], &res)
		return fmt.Sprintf("PUBACK p50 %s, p99 %s", fmtUS(res.AckP50), fmtUS(res.AckP99)), nil
	}
	rep.Fanin[name] = append(rep.Fanin[name], &res)
	return fmt.Sprintf("%.0f msg/s delivered, e2e p50 %s, broker %.1fµs/msg", res.DelRate, fmtUS(res.E2EP50), res.BrokerCPUPerMsg), nil
}

// scenarioArgs are the load flags of the matrix scenario name.
func scenarioArgs(name string) []string {
	for _, s := range scenarios {
		if s.name == name {
			return s.args
		}
	}
	panic("bench: no scenario " + name)
}

func scenarioTitle(name string) string {
	for _, s := range scenarios {
		if s.name == name {
			return s.title
		}
	}
	return name
}

// Markers around the section in BENCHMARKS.md (see authBegin).
const (
	transportsBegin = "<!-- bench transports: begin (bench/transports.sh writes this section; the matrix keeps it) -->"
	transportsEnd   = "<!-- bench transports: end -->"
)

// markdown is the report's section.
func (rep *transportsReport) markdown() []byte {
	var w bytes.Buffer
	p := func(format string, a ...any) { fmt.Fprintf(&w, format, a...) }
	p("## TLS and WebSocket (bench transports)\n\n")
	cmd := rep.Command
	if cmd == "" {
		cmd = "go run ./bench transports " + strings.Join(os.Args[2:], " ")
	}
	p("- Command: `%s`\n", cmd)
	p("- Date: %s (%s for the whole run)\n", rep.Started.UTC().Format("2006-01-02 15:04 MST"), rep.Elapsed)
	p("- Machine: %s, %d cores, shared with other work: \"others' cores\" says how much it took. "+
		"Compare the columns of one table (one run, interleaved), not across runs.\n", rep.Machine, rep.CPUs)
	p("- keel: %s, durable (every QoS 1 PUBLISH synced before its PUBACK); mosquitto: %s, in memory (persistence false, the matrix's configuration)\n",
		orUnknown(rep.KeelRev), rep.Mosquitto)
	p("- Mosquitto's WebSocket listener: Debian's build cannot bind it to an address (mosquitto#3383) nor start it alone (mosquitto#2284), so it listens on every address beside a plain listener on another port; the load dials 127.0.0.1 only.\n")
	p("- TLS: a CA and an ECDSA P-256 server certificate made for the run; clients verify it; TLS 1.3 (both brokers' default with Go's and OpenSSL's clients); " +
		"WebSocket: subprotocol `mqtt`, path `/mqtt`, binary frames (github.com/coder/websocket on the client side).\n")
	p("- Each run starts a fresh broker on a free loopback port; cells are the median with min–max over %d repetitions.\n\n", rep.Reps)

	v := map[int]string{4: "3.1.1", 5: "5.0"}[rep.Version]
	if len(rep.Fanin) > 0 {
		p("### %s, MQTT %s, over TCP, TLS and WebSocket\n\n", scenarioTitle(faninScenario), v)
		p("`bench %s -transport T`, %v measured after a %v warm-up.\n\n", strings.Join(scenarioArgs(faninScenario), " "), rep.Duration, rep.Warmup)
		names := []string{"keel-tcp", "mosquitto-tcp", "keel-tls", "mosquitto-tls", "keel-ws", "mosquitto-ws"}
		w.WriteString(mdRow("figure", "keel tcp", "mosquitto tcp", "keel tls", "mosquitto tls", "keel ws", "mosquitto ws",
			"keel/mosquitto tcp", "keel/mosquitto tls", "keel/mosquitto ws"))
		w.WriteString(mdSep(10))
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
			for _, t := range []string{"tcp", "tls", "ws"} {
				row = append(row, ratio(sums["keel-"+t], sums["mosquitto-"+t]))
			}
			w.WriteString(mdRow(row...))
		}
		p("\n")
	}
	if len(rep.Sync) > 0 {
		p("### %s, MQTT %s, over TLS\n\n", scenarioTitle("sync-qos1"), v)
		p("`bench %s -transport tls`; the fsync probe (`bench -fsync-probe`, 64 B appended into preallocated space + fdatasync, as Pebble's WAL) "+
			"runs on the same disk before each pair.\n\n", strings.Join(scenarioArgs("sync-qos1"), " "))
		w.WriteString(mdRow("figure", "keel tcp", "keel tls", "mosquitto tls"))
		w.WriteString(mdSep(4))
		for _, mt := range []metric{mAckP50,
			{label: "PUBACK p99", get: func(r *result) float64 { return r.AckP99 }, fmt: fmtUS},
			mPub, mOther} {
			w.WriteString(mdRow(mt.label, summarize(rep.Sync["keel-tcp"], mt.get).format(mt.fmt),
				summarize(rep.Sync["keel-tls"], mt.get).format(mt.fmt), summarize(rep.Sync["mosquitto-tls"], mt.get).format(mt.fmt)))
		}
		fs := summarize(rep.Fsync, func(r *fsyncResult) float64 { return r.PreallocP50 })
		w.WriteString(mdRow("one fsync, p50 (probe, before keel tls)", "", fs.format(fmtUS), ""))
		p("\n")
	}
	if len(rep.Conns) > 0 {
		p("### %d connections over TLS (bench conns)\n\n", rep.N)
		p("`bench conns -n %d -transport tls -v %d`: each connection a full TLS handshake (no resumption) and CONNECT/CONNACK, "+
			"64 at once, from several loopback source addresses, then idle.\n\n", rep.N, rep.Version)
		w.WriteString(mdRow("figure", "keel tls", "mosquitto tls", "keel/mosquitto"))
		w.WriteString(mdSep(4))
		for _, f := range []struct {
			label string
			get   func(*connsResult) float64
			fmt   func(float64) string
		}{
			{"time to connect all", func(r *connsResult) float64 { return r.ConnectSeconds }, seconds},
			{"connections per second", func(r *connsResult) float64 { return r.ConnectRate }, rate},
			{"broker CPU per handshake + CONNECT", func(r *connsResult) float64 { return r.ConnectCPU }, us},
			{"broker RSS per connection", func(r *connsResult) float64 { return r.PerConn }, kb},
			{"broker RSS peak", func(r *connsResult) float64 { return float64(r.RSSPeak) }, mb},
		} {
			k, m := summarize(rep.Conns["keel-tls"], f.get), summarize(rep.Conns["mosquitto-tls"], f.get)
			w.WriteString(mdRow(f.label, k.format(f.fmt), m.format(f.fmt), ratio(k, m)))
		}
		p("\n")
	}
	w.WriteString(mdRow("target (issue 11), on the medians", "measured", "verdict"))
	w.WriteString(mdSep(3))
	verdict := func(ok, measured bool) string {
		switch {
		case !measured:
			return "not measured"
		case ok:
			return "met"
		}
		return "not met"
	}
	for _, t := range []struct{ t, label string }{{"tls", "TLS"}, {"ws", "WebSocket"}} {
		k, m := summarize(rep.Fanin["keel-"+t.t], mDel.get), summarize(rep.Fanin["mosquitto-"+t.t], mDel.get)
		measured := k.n > 0 && m.n > 0 && m.med > 0
		w.WriteString(mdRow(fmt.Sprintf("fan-in over %s: keel durable ≥ 1.3 × Mosquitto in memory", t.label), ratio(k, m),
			verdict(measured && k.med/m.med >= 1.3, measured)))
	}
	// The gap of each rep (keel's PUBACK p50 less the probe taken just
	// before it), then their median: the disk's noise moves both.
	var gaps []float64
	if len(rep.Fsync) == len(rep.Sync["keel-tls"]) {
		for i, r := range rep.Sync["keel-tls"] {
			gaps = append(gaps, r.AckP50-rep.Fsync[i].PreallocP50)
		}
	}
	g := summarize(gaps, func(v float64) float64 { return v })
	gap := "n/a"
	if g.n > 0 {
		gap = g.format(fmtUS) + " over the fsync before it"
	}
	w.WriteString(mdRow("sync QoS 1 over TLS: PUBACK p50 within 0.25 ms of one fsync (median of each rep's gap)", gap, verdict(g.n > 0 && g.med <= 250, g.n > 0)))
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
