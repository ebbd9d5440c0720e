package main

import (
	"bytes"
	"context"
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

	"github.com/keelmq/keel/engine/client"
	"github.com/keelmq/keel/engine/packet"
)

// bench bridge measures a bridge between two brokers (issue 17's
// "Speed"): an edge broker that forwards bench/# to a central one over a
// bridge at QoS 1, the matrix's fan-in load (4 publishers on the edge,
// window 64, QoS 1, persistent) and its subscriber on the central broker:
// what the central broker delivers per second and the end-to-end latency
// from the publisher's encode to the subscriber's read, both ends in one
// process. Keel bridged to Keel (each fsyncing: the edge commits a message
// and its bridge queue entry before its PUBACK, the central one before the
// PUBACK to the bridge) and Mosquitto bridged to Mosquitto (in memory:
// persistence false, its bridge's queue in memory), both over MQTT 5.0
// with a persistent bridge session, interleaved rep by rep, every run on a
// fresh pair. bridge.sh builds the binaries and puts the section into
// BENCHMARKS.md.
//
// The load saturates the edge: when the bridge forwards slower than the
// edge accepts, a backlog builds on the edge, the delivered rate is the
// bridge's, and the end-to-end latency includes the wait in that backlog.
// The run then drains it: every acknowledged message must arrive.
type bridgeConfig struct {
	keel, keelRev string
	mosquitto     string
	reps          int
	duration      time.Duration
	warmup        time.Duration
	tmp           string
	out, into     string
	save          string
	command       string
}

type bridgeRun struct {
	name       string
	mosq       bool
	res        []*result
	centralCPU []float64 // cores the central broker used over the load
}

type bridgeReport struct {
	Started    time.Time            `json:"started"`
	Elapsed    time.Duration        `json:"elapsed_ns"`
	Machine    string               `json:"machine"`
	Mosquitto  string               `json:"mosquitto_version"`
	KeelRev    string               `json:"keel_rev"`
	Command    string               `json:"command"`
	Reps       int                  `json:"reps"`
	Duration   time.Duration        `json:"duration_ns"`
	Warmup     time.Duration        `json:"warmup_ns"`
	CPUs       int                  `json:"cpus"`
	Runs       map[string][]*result `json:"runs"`
	CentralCPU map[string][]float64 `json:"central_cores"`
	Fails      []string             `json:"fails,omitempty"`
}

const (
	bridgeBegin = "<!-- bench bridge: begin (bench/bridge.sh writes this section) -->"
	bridgeEnd   = "<!-- bench bridge: end -->"
)

// mosquittoEdgeConfFmt: max_inflight_messages is 1000 here, not the
// matrix's 0 (no limit): Mosquitto 2.0.11's bridge over 5.0 is refused by
// the remote ("protocol error") with 0 or 65535, as if it sent that value
// as its Receive Maximum.
const mosquittoEdgeConfFmt = `# written by keel's bench bridge: the edge, in memory, bridged to the central broker
listener %d 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 1000000
max_queued_bytes 0
max_inflight_messages 1000
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning

connection central
address 127.0.0.1:%d
topic bench/# out 1
bridge_protocol_version mqttv50
cleansession false
remote_clientid bench-edge
`

const keelEdgeConfFmt = `# written by keel's bench bridge: the edge, bridged to the central keel
[bridge central]
address = 127.0.0.1:%d
topic = bench/# out 1
bridge_protocol_version = mqttv50
remote_clientid = bench-edge
`

func bridgeMain(args []string) int {
	fs := flag.NewFlagSet("bench bridge", flag.ExitOnError)
	var bc bridgeConfig
	fs.StringVar(&bc.keel, "keel", "", "keel binary (required)")
	fs.StringVar(&bc.keelRev, "keel-rev", "", "keel revision to quote in the report")
	fs.StringVar(&bc.mosquitto, "mosquitto", "mosquitto", "mosquitto binary")
	fs.IntVar(&bc.reps, "reps", 3, "runs of each pair, interleaved")
	fs.DurationVar(&bc.duration, "duration", 5*time.Second, "measured time per run")
	fs.DurationVar(&bc.warmup, "warmup", time.Second, "warm-up per run")
	fs.StringVar(&bc.tmp, "tmp", "", "scratch directory (default: a new temporary directory)")
	fs.StringVar(&bc.out, "out", "", "write the report's Markdown section to this `file`")
	fs.StringVar(&bc.into, "into", "", "also put the section into this Markdown `file` (bench/BENCHMARKS.md), between its markers")
	fs.StringVar(&bc.save, "save", "", "write every run's result (JSON) to this `file`")
	fs.StringVar(&bc.command, "command", "", "command line to quote in the report")
	fs.Parse(args)
	if bc.keel == "" || bc.reps < 1 || fs.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "bench bridge: want -keel BIN, -reps >= 1, no arguments")
		return 2
	}
	self, cleanup, err := driverSetup(&bc.mosquitto, &bc.tmp, "keel-bridge-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench bridge:", err)
		return 2
	}
	defer cleanup()
	var rp reaper
	defer rp.onSignal("bench bridge", syscall.SIGKILL, func() { os.RemoveAll(bc.tmp) })()

	started := time.Now()
	runs := []*bridgeRun{{name: "keel→keel"}, {name: "mosquitto→mosquitto", mosq: true}}
	rep := &bridgeReport{Started: started, Machine: machineInfo(), Mosquitto: mosquittoVersion(bc.mosquitto), KeelRev: bc.keelRev,
		Command: bc.command, Reps: bc.reps, Duration: bc.duration, Warmup: bc.warmup, CPUs: runtime.NumCPU(),
		Runs: map[string][]*result{}, CentralCPU: map[string][]float64{}}
	n, total := 0, bc.reps*len(runs)
	for range bc.reps {
		for _, r := range runs {
			n++
			fmt.Fprintf(os.Stderr, "[%d/%d] %s ... ", n, total, r.name)
			dir := filepath.Join(bc.tmp, fmt.Sprintf("run-%03d", n))
			line, err := bc.runOne(&rp, self, r, dir)
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
		rep.Runs[r.name], rep.CentralCPU[r.name] = r.res, r.centralCPU
	}
	rep.Elapsed = time.Since(started).Round(time.Second)
	md := rep.markdown()
	if rc := writeReport("bench bridge", rep, md, bc.save, bc.out, bc.into, bridgeBegin, bridgeEnd); rc != 0 {
		return rc
	}
	if len(rep.Fails) > 0 {
		return 1
	}
	return 0
}

// startBroker starts one keel or mosquitto with conf (keel: a --config
// file, possibly empty) on port in dir.
func (bc *bridgeConfig) startBroker(rp *reaper, mosq bool, name, dir string, port int, conf string) (*proc, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "broker.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(bc.keel, "serve", "--listen", addr, "--data", filepath.Join(dir, "data"), "--config", path)
	if mosq {
		cmd = exec.Command(bc.mosquitto, "-c", path)
	}
	bp, err := startProc(name, cmd, filepath.Join(dir, "broker.log"))
	if err != nil {
		return nil, err
	}
	rp.track(bp.cmd.Process, true)
	if err := bp.listening(addr, 15*time.Second); err != nil {
		bp.stop(5 * time.Second)
		rp.track(bp.cmd.Process, false)
		return nil, err
	}
	return bp, nil
}

// runOne starts the central broker, then the edge bridged to it, waits
// until a probe crosses the bridge, runs the load (publishers on the
// edge, the subscriber on the central broker) in a child, and stops both.
func (bc *bridgeConfig) runOne(rp *reaper, self string, r *bridgeRun, dir string) (string, error) {
	cport, err := freePort()
	if err != nil {
		return "", err
	}
	eport, err := freePort()
	if err != nil {
		return "", err
	}
	if eport == cport {
		return "", errors.New("the same free port twice")
	}
	cconf, econf := "", fmt.Sprintf(keelEdgeConfFmt, cport)
	if r.mosq {
		cconf, econf = fmt.Sprintf(mosquittoConfFmt, cport), fmt.Sprintf(mosquittoEdgeConfFmt, eport, cport)
	}
	central, err := bc.startBroker(rp, r.mosq, r.name+" central", filepath.Join(dir, "central"), cport, cconf)
	if err != nil {
		return "", err
	}
	defer func() { central.stop(5 * time.Second); rp.track(central.cmd.Process, false) }()
	edge, err := bc.startBroker(rp, r.mosq, r.name+" edge", filepath.Join(dir, "edge"), eport, econf)
	if err != nil {
		return "", err
	}
	defer func() { edge.stop(5 * time.Second); rp.track(edge.cmd.Process, false) }()
	eaddr, caddr := fmt.Sprintf("127.0.0.1:%d", eport), fmt.Sprintf("127.0.0.1:%d", cport)
	if err := waitBridged(eaddr, caddr, 20*time.Second); err != nil {
		return "", fmt.Errorf("%w; edge log: %s", err, edge.tail())
	}

	cpu0, err := procCPU(central.pid())
	if err != nil {
		return "", err
	}
	t0 := time.Now()
	args := []string{"-addr", eaddr, "-sub-addr", caddr, "-pid", fmt.Sprint(edge.pid()), "-label", r.name, "-q", "-v", "5",
		"-duration", bc.duration.String(), "-warmup", bc.warmup.String()}
	args = append(args, faninArgs()...)
	var res result
	err = seamsChild(rp, &res, self, args...)
	cpu1, cerr := procCPU(central.pid())
	wall := time.Since(t0)
	switch {
	case !edge.running():
		return "", fmt.Errorf("the edge exited during the run (%v); log: %s", edge.err, edge.tail())
	case !central.running():
		return "", fmt.Errorf("the central broker exited during the run (%v); log: %s", central.err, central.tail())
	case err != nil:
		return "", err
	case cerr != nil:
		return "", cerr
	case res.Delivered == 0:
		return "", errors.New("nothing crossed the bridge")
	case res.failed():
		return "", fmt.Errorf("LOSS: %d acknowledged on the edge never delivered by the central broker", res.Lost)
	}
	cc := (cpu1 - cpu0).Seconds() / wall.Seconds()
	r.res = append(r.res, &res)
	r.centralCPU = append(r.centralCPU, cc)
	return fmt.Sprintf("%.0f msg/s delivered at the central broker (%.0f/s acked at the edge), e2e p50 %s p99 %s, edge %.2f cores, central %.2f",
		res.DelRate, res.PubRate, fmtUS(res.E2EP50), fmtUS(res.E2EP99), res.BrokerCores, cc), nil
}

// waitBridged publishes QoS 1 probes on the edge until one arrives at a
// subscriber on the central broker: the bridge is up and subscribed.
func waitBridged(edge, central string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	got := make(chan struct{}, 1)
	sub, err := client.Connect(ctx, client.Options{Addr: central, Version: packet.V5, ClientID: "bench-bridge-probe-sub", CleanStart: true,
		OnMessage: func(*packet.Publish) {
			select {
			case got <- struct{}{}:
			default:
			}
		}})
	if err != nil {
		return fmt.Errorf("bridge probe: central: %w", err)
	}
	defer sub.Close()
	if _, err := sub.Subscribe(ctx, &packet.Subscribe{Subs: []packet.Subscription{{Filter: "bench/probe/#", QoS: 1}}}); err != nil {
		return fmt.Errorf("bridge probe: subscribe: %w", err)
	}
	pub, err := client.Connect(ctx, client.Options{Addr: edge, Version: packet.V5, ClientID: "bench-bridge-probe-pub", CleanStart: true})
	if err != nil {
		return fmt.Errorf("bridge probe: edge: %w", err)
	}
	defer pub.Close()
	for {
		if _, err := pub.PublishWait(ctx, &packet.Publish{QoS: 1, Topic: "bench/probe/x", Payload: []byte("probe")}); err != nil {
			return fmt.Errorf("bridge probe: publish: %w", err)
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-got:
			t.Stop()
			return nil
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return errors.New("bridge probe: nothing crossed the bridge in time")
		}
	}
}

func (rep *bridgeReport) markdown() []byte {
	var w bytes.Buffer
	p := func(format string, a ...any) { fmt.Fprintf(&w, format, a...) }
	p("## A bridge: edge → bridge → central (bench bridge)\n\n")
	cmd := rep.Command
	if cmd == "" {
		cmd = "go run ./bench bridge " + strings.Join(os.Args[2:], " ")
	}
	p("- Command: `%s`\n", cmd)
	p("- Date: %s (%s for the whole run)\n", rep.Started.UTC().Format("2006-01-02 15:04 MST"), rep.Elapsed)
	p("- Machine: %s; its %d cores run both brokers and the load, and are shared with other work: \"others' cores\" says how much of it they took. "+
		"Compare the columns of this table (one run, interleaved), not across runs.\n", rep.Machine, rep.CPUs)
	p("- keel: %s, both sides fsyncing (the edge commits each message with its bridge queue entry before its PUBACK; the central keel commits it before "+
		"its PUBACK to the bridge, and only then does the entry leave the edge's queue); mosquitto: %s, both in memory (`persistence false`, "+
		"the edge's bridge queue in memory). Both bridges: `topic bench/# out 1`, MQTT 5.0, `cleansession false`.\n",
		orUnknown(rep.KeelRev), rep.Mosquitto)
	p("- Load: `bench %s -v 5`, publishers on the edge, the subscriber on the central broker, %v measured after a %v warm-up; "+
		"the load saturates the edge, so the delivered rate is what the bridge carries and the end-to-end latency includes the wait in the edge's backlog, "+
		"which every run then drains (every message acknowledged on the edge must arrive, or the run fails).\n",
		strings.Join(faninArgs(), " "), rep.Duration, rep.Warmup)
	p("- %d repetitions, interleaved; cells are the median with min–max.\n\n", rep.Reps)
	names := []string{"keel→keel", "mosquitto→mosquitto"}
	w.WriteString(mdRow("figure", names[0], names[1], "keel/mosquitto"))
	w.WriteString(mdSep(4))
	rows := []metric{
		{label: "delivered at the central broker", get: func(r *result) float64 { return r.DelRate }, fmt: rate},
		{label: "acked by the edge", get: func(r *result) float64 { return r.PubRate }, fmt: rate},
		{label: "end-to-end p50", get: func(r *result) float64 { return r.E2EP50 }, fmt: fmtUS},
		{label: "end-to-end p99", get: func(r *result) float64 { return r.E2EP99 }, fmt: fmtUS},
		{label: "PUBACK p50 at the edge", get: func(r *result) float64 { return r.AckP50 }, fmt: fmtUS},
		{label: "edge cores", get: func(r *result) float64 { return r.BrokerCores }, fmt: cores},
		{label: "others' cores (the central broker, and noise)", get: func(r *result) float64 { return r.OtherCores }, fmt: cores},
	}
	for _, mt := range rows {
		row := []string{mt.label}
		var sums []summary
		for _, n := range names {
			s := summarize(rep.Runs[n], mt.get)
			sums = append(sums, s)
			row = append(row, s.format(mt.fmt))
		}
		row = append(row, ratio(sums[0], sums[1]))
		w.WriteString(mdRow(row...))
	}
	row := []string{"central cores"}
	var sums []summary
	for _, n := range names {
		s := summarize(rep.CentralCPU[n], func(v float64) float64 { return v })
		sums = append(sums, s)
		row = append(row, s.format(cores))
	}
	w.WriteString(mdRow(append(row, ratio(sums[0], sums[1]))...))
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
