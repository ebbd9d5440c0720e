package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/keelmq/keel/engine/client"
	"github.com/keelmq/keel/engine/packet"
)

// The expiry scenario (Keel only: it needs a crash): N persistent 5.0
// sessions with a short Session Expiry Interval, each subscribed and
// holding an unacknowledged QoS 1 message, are connected when keel is
// killed with SIGKILL. keel restarts on the same data directory; every
// restored session's expiry clock starts then, so they all expire
// together E seconds later. Four synchronous QoS 1 publishers (fan-in to
// one subscriber) run from the restart until well after that moment.
//
// The window is the expected expiry moment, from -before it to -after it
// (the moment is known to within the restart's replay time: sessions are
// restored after the process starts and before it listens). It grows to
// the last PUBACK of a publish sent in it, so a stall that outlasts it is
// counted whole. Fsyncs are keel_store_syncs_total from keel's /metrics.
//
//	go run ./bench expiry -keel ./keel -n 10000 -expiry 5
type expiryConfig struct {
	keel       string
	tmp        string
	n          int
	expiry     uint // seconds
	pubs       int
	size       int
	before     time.Duration
	after      time.Duration
	post       time.Duration
	ackTimeout time.Duration
	profile    string // broker CPU profile over the window
	label      string
	quiet      bool
}

type expiryResult struct {
	Label  string `json:"label,omitempty"`
	N      int    `json:"n"`
	Expiry uint   `json:"expiry_s"`
	Pubs   int    `json:"pub"`

	SetupSeconds   float64 `json:"setup_seconds"`
	RestartSeconds float64 `json:"restart_seconds"` // process start to listening (replay)
	// Window, in seconds from the restart (process start).
	WindowFrom float64 `json:"window_from_s"`
	WindowTo   float64 `json:"window_to_s"`

	In  ackFigures `json:"in"`  // publishes overlapping the window
	Out ackFigures `json:"out"` // publishes wholly outside it, after the restart

	Syncs int64 `json:"syncs"` // in the window
	// SyncsPerSecOut is the sync rate outside the window (the publishers'
	// own commits); SyncsExcess is the window's syncs beyond that rate:
	// what the expiry cost.
	SyncsPerSecOut float64 `json:"syncs_per_s_out"`
	SyncsExcess    float64 `json:"syncs_excess"`

	Checked   int   `json:"checked"`   // sessions looked for after the window
	Present   int   `json:"present"`   // of which still there (want 0)
	Delivered int64 `json:"delivered"` // to the fan-in subscriber

	Err string `json:"error,omitempty"`
}

func expiryMain(args []string) int {
	fs := flag.NewFlagSet("bench expiry", flag.ExitOnError)
	var cfg expiryConfig
	fs.StringVar(&cfg.keel, "keel", "", "keel `binary` to start (required)")
	fs.StringVar(&cfg.tmp, "tmp", "", "scratch directory for keel's data and log (default: a new temporary directory)")
	fs.IntVar(&cfg.n, "n", 10000, "persistent sessions")
	fs.UintVar(&cfg.expiry, "expiry", 5, "their Session Expiry Interval, `seconds`")
	fs.IntVar(&cfg.pubs, "pub", 4, "synchronous QoS 1 publishers (fan-in to one subscriber)")
	fs.IntVar(&cfg.size, "size", 64, "payload `bytes`")
	fs.DurationVar(&cfg.before, "before", time.Second, "the window starts this long before the expected expiry")
	fs.DurationVar(&cfg.after, "after", 3*time.Second, "and ends this long after it")
	fs.DurationVar(&cfg.post, "post", 2*time.Second, "publishing after the window (and after the last stall)")
	fs.DurationVar(&cfg.ackTimeout, "ack-timeout", 60*time.Second, "longest wait for one PUBACK")
	fs.StringVar(&cfg.profile, "broker-profile", "", "write keel's CPU profile over the window to `file` (needs pprof on the metrics address)")
	fs.StringVar(&cfg.label, "label", "", "name of the keel, copied into the RESULT line")
	fs.BoolVar(&cfg.quiet, "q", false, "no progress lines on stderr")
	fs.Parse(args)
	if fs.NArg() > 0 || cfg.keel == "" || cfg.n < 1 || cfg.expiry < 1 || cfg.pubs < 1 || cfg.size < 1 {
		fmt.Fprintln(os.Stderr, "bench expiry: want -keel BIN, -n >= 1, -expiry >= 1, -pub >= 1, -size >= 1 and no arguments")
		return 2
	}
	if cfg.tmp == "" {
		d, err := os.MkdirTemp("", "keel-expiry-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench expiry:", err)
			return 2
		}
		defer os.RemoveAll(d)
		cfg.tmp = d
	}
	log := io.Writer(os.Stderr)
	if cfg.quiet {
		log = io.Discard
	}
	var rp reaper
	defer rp.onSignal("bench expiry", syscall.SIGKILL, nil)()
	r, err := runExpiry(&cfg, &rp, log)
	if r != nil {
		printExpiry(os.Stdout, r)
		printResult(os.Stdout, r)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench expiry:", err)
		return 2
	}
	return 0
}

func printExpiry(w io.Writer, r *expiryResult) {
	fmt.Fprintf(w, "expiry: %d persistent 5.0 sessions (expiry %d s) restored after kill -9, %d sync QoS 1 publishers, against %s\n",
		r.N, r.Expiry, r.Pubs, r.Label)
	fmt.Fprintf(w, "  setup      %.2fs; restart (replay) %.2fs\n", r.SetupSeconds, r.RestartSeconds)
	fmt.Fprintf(w, "  window     %.2fs to %.2fs after the restart\n", r.WindowFrom, r.WindowTo)
	fmt.Fprintf(w, "  PUBACK     in the window:  %s\n", r.In)
	fmt.Fprintf(w, "  PUBACK     outside it:     %s\n", r.Out)
	fmt.Fprintf(w, "  fsyncs     %d in the window, %.0f/s outside it: %.0f beyond that rate\n", r.Syncs, r.SyncsPerSecOut, r.SyncsExcess)
	fmt.Fprintf(w, "  sessions   %d of %d looked for after the window still there; %d messages delivered to the subscriber\n", r.Present, r.Checked, r.Delivered)
}

// keelProc starts keel on the given ports and data directory.
func keelProc(bin, dir string, port, metricsPort int, extra ...string) (*proc, error) {
	args := append([]string{"serve", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--data", filepath.Join(dir, "data"),
		"--metrics", fmt.Sprintf("127.0.0.1:%d", metricsPort)}, extra...)
	return startProc("keel", exec.Command(bin, args...), filepath.Join(dir, "keel.log"))
}

// hasPprofFlag reports whether keel serve needs --pprof for /debug/pprof
// (older revisions served it on the metrics address unasked).
func hasPprofFlag(bin string) bool {
	out, _ := exec.Command(bin, "serve", "-h").CombinedOutput()
	return strings.Contains(string(out), "-pprof")
}

func runExpiry(cfg *expiryConfig, rp *reaper, log io.Writer) (*expiryResult, error) {
	r := &expiryResult{Label: cfg.label, N: cfg.n, Expiry: cfg.expiry, Pubs: cfg.pubs}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	mport, err := freePort()
	if err != nil {
		return nil, err
	}
	var extra []string
	if cfg.profile != "" && hasPprofFlag(cfg.keel) {
		extra = append(extra, "--pprof")
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	start := func() (*proc, error) {
		p, err := keelProc(cfg.keel, cfg.tmp, port, mport, extra...)
		if err != nil {
			return nil, err
		}
		rp.track(p.cmd.Process, true)
		if err := p.listening(addr, 60*time.Second); err != nil {
			p.kill()
			rp.track(p.cmd.Process, false)
			return nil, err
		}
		return p, nil
	}
	stopKeel := func(p *proc) {
		p.stop(5 * time.Second)
		rp.track(p.cmd.Process, false)
	}

	// Setup: N sessions, connected, each with an unacknowledged message.
	t0 := time.Now()
	k, err := start()
	if err != nil {
		return nil, err
	}
	id := newRunID()
	root := "bench/" + id
	opts := func(name string) connOptions {
		return connOptions{addr: addr, version: packet.V5, clientID: "kb-" + id + "-" + name, persistent: true, expiry: uint32(cfg.expiry)}
	}
	sessionID := func(i int) string { return fmt.Sprintf("e%d", i) }
	topicOf := func(i int) string { return fmt.Sprintf("%s/s/%d", root, i) }
	held := make(chan struct{}) // closed: the sessions' readers may go on
	var holding atomic.Int64
	allHeld := make(chan struct{})
	clients := make([]*client.Client, cfg.n)
	release := sync.OnceFunc(func() {
		close(held)
		parallel(len(clients), func(i int) error {
			if clients[i] != nil {
				clients[i].Close()
			}
			return nil
		})
	})
	defer release()
	err = parallelN(cfg.n, 64, func(i int) error {
		o := opts(sessionID(i))
		// The session's message stays unacknowledged: its reader waits
		// here until keel has been killed.
		o.onMessage = func(*packet.Publish) {
			if holding.Add(1) == int64(cfg.n) {
				close(allHeld)
			}
			<-held
		}
		c, err := dial(o)
		if err != nil {
			return err
		}
		clients[i] = c
		return subscribe(c, topicOf(i), 1)
	})
	if err == nil {
		err = fillTopics(cfg.n, topicOf, 1, cfg.size, cfg.ackTimeout, func(name string) connOptions {
			o := opts(name)
			o.cleanOnly = true
			return o
		})
	}
	if err == nil {
		select {
		case <-allHeld:
		case <-time.After(cfg.ackTimeout):
			err = fmt.Errorf("%d of %d sessions got their message", holding.Load(), cfg.n)
		}
	}
	r.SetupSeconds = time.Since(t0).Seconds()
	if err != nil {
		stopKeel(k)
		return nil, fmt.Errorf("setup: %w", err)
	}
	fmt.Fprintf(log, "setup: %d sessions, each holding an unacknowledged message, in %.2fs; kill -9\n", cfg.n, r.SetupSeconds)

	// The crash, and the restart on the same data directory.
	k.kill()
	rp.track(k.cmd.Process, false)
	release()
	spawned := clock()
	if k, err = start(); err != nil {
		return nil, fmt.Errorf("restart: %w", err)
	}
	defer stopKeel(k)
	listening := clock()
	r.RestartSeconds = float64(listening-spawned) / 1e9
	expect := int64(cfg.expiry) * int64(time.Second)
	win := span{spawned + expect - int64(cfg.before), listening + expect + int64(cfg.after)}
	fmt.Fprintf(log, "restart: listening after %.2fs; expiry expected %.1fs to %.1fs from now\n",
		r.RestartSeconds, float64(spawned+expect-listening)/1e9, float64(expect)/1e9)

	// Load: a subscriber and the publishers, from right after the restart.
	var delivered atomic.Int64
	so := opts("sub")
	so.cleanOnly = true
	so.onMessage = func(*packet.Publish) { delivered.Add(1) }
	sc, err := dial(so)
	if err != nil {
		return nil, err
	}
	defer sc.Close()
	if err := subscribe(sc, root+"/load", 1); err != nil {
		return nil, err
	}
	poll := newSyncPoller(fmt.Sprintf("http://127.0.0.1:%d/metrics", mport))
	defer poll.close()
	pubs := make([]*syncPublisher, cfg.pubs)
	for i := range pubs {
		o := opts(fmt.Sprintf("p%d", i))
		o.cleanOnly = true
		c, err := dial(o)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		pubs[i] = newSyncPublisher(c, root+"/load", cfg.size)
	}
	if err := poll.ready(10 * time.Second); err != nil {
		return nil, err
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	pubErrs := make([]error, len(pubs))
	loadFrom := clock()
	for i, p := range pubs {
		wg.Go(func() { pubErrs[i] = p.run(stop, cfg.ackTimeout) })
	}
	var profErr error
	var profWG sync.WaitGroup
	if cfg.profile != "" {
		profWG.Go(func() {
			time.Sleep(time.Duration(win.from - clock())) // a moment on the clock, not a condition
			profErr = fetchProfile(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", mport, max(1, int(win.seconds()+0.5))), cfg.profile)
		})
	}

	// Publish until -post after the window, and after the last stall: a
	// publisher waiting more than 100 ms for its PUBACK pushes the end on.
	end := win.to + int64(cfg.post)
	hard := end + int64(cfg.ackTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	for now := clock(); now < end && now < hard; now = clock() {
		<-tick.C
		for _, p := range pubs {
			if now-p.lastAck.Load() > int64(100*time.Millisecond) && now-loadFrom > int64(100*time.Millisecond) {
				end = max(end, now+int64(cfg.post))
			}
		}
	}
	tick.Stop()
	close(stop)
	wg.Wait()
	loadTo := clock()
	profWG.Wait()
	if err := errors.Join(pubErrs...); err != nil {
		return r, err
	}

	var all []ackSample
	for _, p := range pubs {
		all = append(all, p.samples...)
	}
	// The window grows to the last PUBACK of a publish that overlaps it.
	for _, a := range all {
		if win.overlaps(a) && a.acked > win.to {
			win.to = a.acked
		}
	}
	r.WindowFrom, r.WindowTo = float64(win.from-spawned)/1e9, float64(win.to-spawned)/1e9
	r.In = figures(all, win.overlaps, win)
	pre, post := span{loadFrom, win.from}, span{win.to, loadTo}
	r.Out = figures(all, func(a ackSample) bool { return pre.within(a) || post.within(a) }, span{})
	r.Delivered = delivered.Load()

	syncs := poll.close()
	inWin, ok1 := syncsBetween(syncs, win)
	preSyncs, ok2 := syncsBetween(syncs, pre)
	postSyncs, ok3 := syncsBetween(syncs, post)
	if !ok1 || !ok2 || !ok3 {
		return r, fmt.Errorf("metrics: too few samples of keel_store_syncs_total (%d)", len(syncs))
	}
	r.Syncs = inWin
	r.SyncsPerSecOut = float64(preSyncs+postSyncs) / (pre.seconds() + post.seconds())
	r.SyncsExcess = float64(r.Syncs) - r.SyncsPerSecOut*win.seconds()

	// The sessions must be gone: taking one over finds nothing.
	for _, i := range []int{0, cfg.n / 2, cfg.n - 1} {
		o := opts(sessionID(i))
		o.resume = true
		c, err := dial(o)
		if err != nil {
			return r, err
		}
		r.Checked++
		if c.SessionPresent() {
			r.Present++
		}
		disconnect(c, true)
	}
	if profErr != nil {
		return r, fmt.Errorf("broker profile: %w", profErr)
	}
	if !k.running() {
		return r, fmt.Errorf("keel exited: %v; log: %s", k.err, k.tail())
	}
	return r, nil
}

// syncSample is keel_store_syncs_total as read at clock() at.
type syncSample struct {
	at    int64
	syncs int64
}

// syncPoller reads keel_store_syncs_total every 100 ms, and once more
// when stopped.
type syncPoller struct {
	stop    chan struct{}
	first   chan struct{} // closed at the first sample
	done    chan struct{}
	samples []syncSample // owned by the polling goroutine until done
}

func newSyncPoller(url string) *syncPoller {
	p := &syncPoller{stop: make(chan struct{}), first: make(chan struct{}), done: make(chan struct{})}
	hc := &http.Client{Timeout: 30 * time.Second}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for stopped := false; !stopped; {
			select {
			case <-p.stop:
				stopped = true
			default:
			}
			if v, err := scrapeCounter(hc, url, "keel_store_syncs_total"); err == nil {
				if len(p.samples) == 0 {
					close(p.first)
				}
				p.samples = append(p.samples, syncSample{clock(), v})
			}
			if !stopped {
				select {
				case <-p.stop:
				case <-tick.C:
				}
			}
		}
	}()
	return p
}

// ready waits for the first sample.
func (p *syncPoller) ready(timeout time.Duration) error {
	select {
	case <-p.first:
		return nil
	case <-time.After(timeout):
		return errors.New("metrics: keel_store_syncs_total could not be read")
	}
}

// close stops the poller (once) and returns its samples.
func (p *syncPoller) close() []syncSample {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
	return p.samples
}

// syncsBetween is the counter's growth over s: from the last sample at or
// before s.from to the first at or after s.to.
func syncsBetween(samples []syncSample, s span) (int64, bool) {
	lo, hi := -1, -1
	for i, x := range samples {
		if x.at <= s.from {
			lo = i
		}
		if x.at >= s.to && hi < 0 {
			hi = i
		}
	}
	if lo < 0 || hi < 0 {
		return 0, false
	}
	return samples[hi].syncs - samples[lo].syncs, true
}

func scrapeCounter(hc *http.Client, url, name string) (int64, error) {
	resp, err := hc.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int64(f), err
		}
	}
	return 0, fmt.Errorf("%s: no %s", url, name)
}

func fetchProfile(url, path string) error {
	resp, err := (&http.Client{Timeout: 2 * time.Minute}).Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
