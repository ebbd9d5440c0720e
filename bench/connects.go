package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keelmq/keel/engine/client"
	"github.com/keelmq/keel/engine/packet"
)

// The connects scenario (any MQTT broker): new clients log in at an
// offered rate (open loop: an attempt is started on schedule whether or
// not the ones before it were answered, up to -inflight waiting at once),
// each a clean-session CONNECT with a username and password, then
// DISCONNECT. It measures the rate of successful CONNACKs, their latency,
// the broker's CPU, and, with -probe, what the storm does to a
// synchronous QoS 1 publisher that was connected before it.
//
//	go run ./bench connects -addr 127.0.0.1:1883 -rate 1000 -duration 5s \
//	    -username u -password p -pid $(pidof keel)
type connectsConfig struct {
	addr     string
	version  byte
	rate     float64       // attempts per second offered
	duration time.Duration // offering time
	inflight int           // attempts waiting for their CONNACK at once, at most
	timeout  time.Duration // one attempt's wait for its CONNACK
	user     string
	pass     string
	probe    bool
	idle     time.Duration // the probe publisher alone before the storm
	pid      int
	label    string
	quiet    bool
}

// connectsResult is the RESULT line of a connects run.
type connectsResult struct {
	Label    string  `json:"label,omitempty"`
	Addr     string  `json:"addr"`
	Version  int     `json:"v"`
	Offered  float64 `json:"offered_rate"`
	Seconds  float64 `json:"seconds"` // the offering window
	Inflight int     `json:"inflight"`

	Attempts int64 `json:"attempts"` // started in the window
	// Skipped were due while -inflight attempts were already waiting: the
	// broker was that far behind, so the generator did not start them.
	Skipped  int64            `json:"skipped"`
	OK       int64            `json:"ok"`        // CONNACK 0, whenever it came
	InWindow int64            `json:"in_window"` // of those, answered within the window
	Refused  map[string]int64 `json:"refused,omitempty"`
	Failed   int64            `json:"failed"` // no CONNACK: timeout or connection error
	FirstErr string           `json:"first_error,omitempty"`

	// Rate is the successful CONNACKs per second in the window: what the
	// broker sustained.
	Rate float64 `json:"rate"`
	P50  float64 `json:"connack_p50_us"` // TCP connect + CONNECT -> CONNACK, successes
	P99  float64 `json:"connack_p99_us"`
	Max  float64 `json:"connack_max_us"`

	BrokerCPU   float64 `json:"broker_cpu_s,omitempty"`
	BrokerCores float64 `json:"broker_cores,omitempty"`
	BenchCores  float64 `json:"bench_cores"`
	OtherCores  float64 `json:"other_cores,omitempty"`

	// The probe: a synchronous QoS 1 publisher, during the window and
	// before the storm.
	Probe     *ackFigures `json:"probe,omitempty"`
	ProbeIdle *ackFigures `json:"probe_idle,omitempty"`
	// ProbeErr is why the probe stopped early: a PUBACK that did not come
	// within -timeout is a finding (the broker kept a connected client
	// waiting that long), not a failure of the run. The figures then
	// cover the PUBACKs that came; the longest wait runs to the window's
	// end.
	ProbeErr string `json:"probe_error,omitempty"`

	Err string `json:"error,omitempty"`
}

func connectsMain(args []string) int {
	fs := flag.NewFlagSet("bench connects", flag.ExitOnError)
	var cfg connectsConfig
	var version uint
	fs.StringVar(&cfg.addr, "addr", "127.0.0.1:1883", "broker `host:port`")
	fs.UintVar(&version, "v", 5, "MQTT protocol level: 4 (3.1.1) or 5")
	fs.Float64Var(&cfg.rate, "rate", 1000, "connect attempts per second offered")
	fs.DurationVar(&cfg.duration, "duration", 5*time.Second, "how long attempts are offered (and measured)")
	fs.IntVar(&cfg.inflight, "inflight", 500, "attempts waiting for a CONNACK at once, at most; one due beyond it is skipped")
	fs.DurationVar(&cfg.timeout, "timeout", 15*time.Second, "one attempt's wait for its CONNACK")
	fs.StringVar(&cfg.user, "username", "", "log in as this user")
	fs.StringVar(&cfg.pass, "password", "", "with -username: its password")
	fs.BoolVar(&cfg.probe, "probe", true, "measure a synchronous QoS 1 publisher (same credentials) beside the storm")
	fs.DurationVar(&cfg.idle, "idle", time.Second, "with -probe: the publisher alone before the storm")
	fs.IntVar(&cfg.pid, "pid", 0, "broker process id, for its CPU time from /proc")
	fs.StringVar(&cfg.label, "label", "", "name of the broker, copied into the RESULT line")
	fs.BoolVar(&cfg.quiet, "q", false, "no progress lines on stderr")
	fs.Parse(args)
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bench connects: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg.version = byte(version)
	if err := cfg.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "bench connects:", err)
		return 2
	}
	log := io.Writer(os.Stderr)
	if cfg.quiet {
		log = io.Discard
	}
	r, err := runConnects(&cfg, log)
	if r != nil {
		printConnects(os.Stdout, r)
		printResult(os.Stdout, r)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench connects:", err)
		return 2
	}
	return 0
}

func (c *connectsConfig) validate() error {
	switch {
	case c.version != packet.V311 && c.version != packet.V5:
		return fmt.Errorf("-v %d: want 4 (3.1.1) or 5", c.version)
	case c.rate <= 0 || c.rate > 100000:
		return fmt.Errorf("-rate %v: want 0 < rate <= 100000", c.rate)
	case c.duration <= 0 || c.inflight < 1 || c.timeout <= 0:
		return errors.New("want -duration > 0, -inflight >= 1, -timeout > 0")
	case c.pass != "" && c.user == "":
		return errors.New("-password needs -username")
	}
	return nil
}

func printConnects(w io.Writer, r *connectsResult) {
	fmt.Fprintf(w, "connects: %.0f/s offered for %.1fs (at most %d waiting), v%d, against %s %s\n",
		r.Offered, r.Seconds, r.Inflight, r.Version, r.Label, r.Addr)
	fmt.Fprintf(w, "  attempts   %d started, %d skipped (the broker was %d behind)\n", r.Attempts, r.Skipped, r.Inflight)
	fmt.Fprintf(w, "  CONNACK    %d ok (%d in the window: %.1f/s), refused %v, %d failed\n", r.OK, r.InWindow, r.Rate, r.Refused, r.Failed)
	fmt.Fprintf(w, "  latency    p50 %s  p99 %s  max %s\n", fmtUS(r.P50), fmtUS(r.P99), fmtUS(r.Max))
	if r.BrokerCores > 0 {
		fmt.Fprintf(w, "  broker CPU %.2fs (%.2f cores); others %.2f cores\n", r.BrokerCPU, r.BrokerCores, r.OtherCores)
	}
	fmt.Fprintf(w, "  bench      %.2f cores\n", r.BenchCores)
	if r.Probe != nil {
		fmt.Fprintf(w, "  PUBACK     during the storm: %s\n", r.Probe)
		fmt.Fprintf(w, "  PUBACK     before it (idle): %s\n", r.ProbeIdle)
	}
	if r.ProbeErr != "" {
		fmt.Fprintf(w, "  probe stopped: %s\n", r.ProbeErr)
	}
	if r.FirstErr != "" {
		fmt.Fprintf(w, "  first error: %s\n", r.FirstErr)
	}
}

// runConnects runs one storm. The result is returned with whatever was
// measured even when err is not nil.
func runConnects(cfg *connectsConfig, log io.Writer) (*connectsResult, error) {
	id := newRunID()
	r := &connectsResult{Label: cfg.label, Addr: cfg.addr, Version: int(cfg.version), Offered: cfg.rate,
		Inflight: cfg.inflight, Refused: map[string]int64{}}
	opts := func(name string) connOptions {
		return connOptions{addr: cfg.addr, version: cfg.version, clientID: "kb-" + id + "-" + name, cleanOnly: true,
			username: cfg.user, password: cfg.pass, connectTimeout: cfg.timeout}
	}

	// The probe publisher, alone first.
	var pub *syncPublisher
	var pc *client.Client
	stop := make(chan struct{})
	pubErr := make(chan error, 1)
	var idleFrom int64
	if cfg.probe {
		var err error
		if pc, err = dial(opts("probe")); err != nil {
			return nil, fmt.Errorf("probe: %w", err)
		}
		defer pc.Close()
		pub = newSyncPublisher(pc, "bench/"+id+"/t", 64)
		idleFrom = clock()
		go func() { pubErr <- pub.run(stop, cfg.timeout) }()
		select {
		case <-time.After(cfg.idle):
		case err := <-pubErr:
			return nil, fmt.Errorf("probe: %w", err)
		}
	}

	// The storm: attempt k is due at from + k/rate.
	var (
		waiting          atomic.Int64
		ok, inWin, fails atomic.Int64
		mu               sync.Mutex // guards lat, refused, firstErr
		lat              []int64
		firstErr         error
		wg               sync.WaitGroup
	)
	interval := time.Duration(float64(time.Second) / cfg.rate)
	n := int64(cfg.duration / interval)
	selfCPU0 := selfCPU()
	busy0, busyErr0 := machineBusy()
	var brokerCPU0 time.Duration
	var brokerErr error
	if cfg.pid > 0 {
		brokerCPU0, brokerErr = procCPU(cfg.pid)
	}
	from := clock()
	end := from + int64(cfg.duration)
	attempt := func(k int64) {
		defer wg.Done()
		defer waiting.Add(-1)
		t0 := clock()
		c, err := dial(opts(fmt.Sprintf("c%d", k)))
		t1 := clock()
		if err != nil {
			var ce *client.ConnectError
			mu.Lock()
			if errors.As(err, &ce) {
				r.Refused[ce.Code.String()]++
			} else {
				fails.Add(1)
			}
			if firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
			return
		}
		ok.Add(1)
		if t1 <= end {
			inWin.Add(1)
		}
		mu.Lock()
		lat = append(lat, t1-t0)
		mu.Unlock()
		disconnect(c, false)
	}
	var next int64
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for next < n {
		now := clock()
		for ; next < n && from+next*int64(interval) <= now; next++ {
			if waiting.Load() >= int64(cfg.inflight) {
				r.Skipped++
				continue
			}
			waiting.Add(1)
			r.Attempts++
			wg.Add(1)
			go attempt(next)
		}
		select {
		case <-tick.C:
			fmt.Fprintf(log, "%6v attempts %6d  skipped %6d  ok %6d  waiting %4d\n",
				time.Duration(now-from).Round(time.Second), r.Attempts, r.Skipped, ok.Load(), waiting.Load())
		default:
		}
		if next < n {
			time.Sleep(time.Until(base.Add(time.Duration(from + next*int64(interval)))))
		}
	}
	time.Sleep(time.Until(base.Add(time.Duration(end))))
	wall := time.Duration(clock() - from)
	selfCPU1 := selfCPU()
	busy1, busyErr1 := machineBusy()
	if cfg.pid > 0 && brokerErr == nil {
		var c1 time.Duration
		if c1, brokerErr = procCPU(cfg.pid); brokerErr == nil {
			r.BrokerCPU = (c1 - brokerCPU0).Seconds()
			r.BrokerCores = r.BrokerCPU / wall.Seconds()
		}
	}
	r.BenchCores = (selfCPU1 - selfCPU0).Seconds() / wall.Seconds()
	if cfg.pid > 0 && busyErr0 == nil && busyErr1 == nil {
		r.OtherCores = max(0, (busy1-busy0).Seconds()/wall.Seconds()-r.BrokerCores-r.BenchCores)
	}
	storm := span{from, end}
	// The attempts still waiting are answered (or time out) after the
	// window; the probe keeps running until they are, but only the window
	// is measured.
	fmt.Fprintf(log, "window over: %d attempts still waiting (at most %v)\n", waiting.Load(), cfg.timeout)
	wg.Wait()
	if cfg.probe {
		close(stop)
		if err := <-pubErr; err != nil {
			r.ProbeErr = err.Error()
		}
		f := figures(pub.samples, storm.overlaps, storm)
		r.Probe = &f
		fi := figures(pub.samples, span{idleFrom, from}.within, span{})
		r.ProbeIdle = &fi
	}

	r.Seconds = cfg.duration.Seconds()
	r.OK, r.InWindow, r.Failed = ok.Load(), inWin.Load(), fails.Load()
	r.Rate = float64(r.InWindow) / r.Seconds
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) > 0 {
		q := func(p float64) float64 { return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))]) / 1e3 }
		r.P50, r.P99, r.Max = q(0.50), q(0.99), float64(lat[len(lat)-1])/1e3
	}
	if firstErr != nil {
		r.FirstErr = firstErr.Error()
	}
	if len(r.Refused) == 0 {
		r.Refused = nil
	}
	if brokerErr != nil {
		r.Err = brokerErr.Error()
		return r, brokerErr
	}
	return r, nil
}
