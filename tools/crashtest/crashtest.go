package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keelmq/keel/engine/packet"
)

// Modes.
const (
	ModeOnline       = "online"        // subscribers always online, reconnecting after crashes
	ModeOffline      = "offline"       // subscribers come and go while crashes happen
	ModeReplayCrash  = "replay-crash"  // also kill during startup/replay, and as the port opens
	ModeManySessions = "many-sessions" // many offline sessions with small queues
	ModeRetainWill   = "retain-will"   // retained values and wills across crashes
)

var modes = []string{ModeOnline, ModeOffline, ModeReplayCrash, ModeManySessions, ModeRetainWill, ModeDedup}

// Brokers.
const (
	BrokerKeel      = "keel"      // KeelPath, or ./cmd/keel built into the work dir
	BrokerMosquitto = "mosquitto" // mosquitto without persistence: must fail
	BrokerCmd       = "cmd"       // BrokerCmd
)

// Config configures one run. The zero value (plus a Mode) is valid: every
// zero field takes the default in withDefaults.
type Config struct {
	Mode        string
	Crashes     int           // kills in all, the final one (after publishers finish) included; default 20; <0: none
	Duration    time.Duration // bound on the crash phase; default 60s
	Publishers  int           // default 2
	Subscribers int           // default 2
	QoS         byte          // 1 or 2; default 1
	Version     byte          // 4 (3.1.1) or 5; default 4 (dedup: 5, the only one)
	Seed        uint64        // default: time-based
	Rate        float64       // messages/s per publisher; 0: the mode's default; <0: unlimited
	Window      int           // outbound messages in flight per publisher; default 32
	PayloadSize int           // bytes; default (and minimum) 18

	Sessions   int // many-sessions: sessions; default 10,000
	PerSession int // many-sessions: messages per session; default 3
	Topics     int // retain-will: retained topics; default 20
	Wills      int // retain-will: clients with a will; default 3

	Timeout      time.Duration // hard bound on the whole run; default 10m
	DrainTimeout time.Duration // bound on the final drain; default 60s

	// Auth runs the broker with a password file and an ACL file and has
	// every client log in (auth.go). BrokerCmd gets the files' paths as
	// {passwd} and {acl}.
	Auth bool
	// Quota runs keel with small queue quotas and queue_full = refuse
	// (quota.go): refused publishes are not acknowledged, and must not
	// be delivered.
	Quota bool
	// TLS serves the broker's listener over TLS and has every client
	// connect over it (tls.go). BrokerCmd gets the files' paths as
	// {cafile}, {certfile} and {keyfile}.
	TLS bool
	// WebSocket serves MQTT over WebSocket (path /mqtt) and has every
	// client dial it so (tls.go); with TLS, wss://.
	WebSocket bool

	// DedupWindow is the dedup mode's dedup_window for keel (dedup.go);
	// default 10m; < 0: the window off, the control run that must find
	// duplicates.
	DedupWindow time.Duration
	// Bridge runs two keel processes, A bridged to B (bridge.go): publishers
	// and subscribers on both, each message crossing the bridge; the kills
	// alternate between A and B.
	Bridge bool
	// BridgeConf are extra key = value lines for A's [bridge] section
	// (bridge mode): cleansession = true must make the run fail.
	BridgeConf []string

	Broker    string   // BrokerKeel (default), BrokerMosquitto or BrokerCmd
	KeelPath  string   // keel binary; default: build ./cmd/keel
	BrokerCmd []string // BrokerCmd: argv with {addr} {port} {data} {work} {passwd} {acl} replaced
	DataDir   string   // default: a fresh directory in the work dir
	WorkDir   string   // default: a temporary directory, removed at the end unless Keep
	Keep      bool

	Logger *slog.Logger // default: discard
}

func (c Config) withDefaults() (Config, error) {
	if c.Mode == "" {
		c.Mode = ModeOnline
	}
	if !slices.Contains(modes, c.Mode) {
		return c, fmt.Errorf("crashtest: unknown mode %q (want one of %s)", c.Mode, strings.Join(modes, ", "))
	}
	setDefault(&c.Crashes, 20)
	setDefault(&c.Duration, 60*time.Second)
	setDefault(&c.Publishers, 2)
	setDefault(&c.Subscribers, 2)
	setDefault(&c.QoS, 1)
	if c.Mode == ModeDedup {
		setDefault(&c.Version, packet.V5)
		setDefault(&c.DedupWindow, 10*time.Minute)
	}
	setDefault(&c.Version, packet.V311)
	setDefault(&c.Window, 32)
	setDefault(&c.Sessions, 10000)
	setDefault(&c.PerSession, 3)
	setDefault(&c.Topics, 20)
	setDefault(&c.Wills, 3)
	setDefault(&c.Timeout, 10*time.Minute)
	setDefault(&c.DrainTimeout, 60*time.Second)
	setDefault(&c.Broker, BrokerKeel)
	if c.Seed == 0 {
		c.Seed = uint64(time.Now().UnixNano())
	}
	if c.Rate == 0 {
		switch c.Mode {
		case ModeManySessions:
			c.Rate = -1
		case ModeRetainWill:
			c.Rate = 200
		default:
			c.Rate = 500
		}
	}
	c.PayloadSize = max(c.PayloadSize, payloadHeader)
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	switch {
	case c.QoS != 1 && c.QoS != 2:
		return c, fmt.Errorf("crashtest: qos %d: want 1 or 2", c.QoS)
	case c.Version != packet.V311 && c.Version != packet.V5:
		return c, fmt.Errorf("crashtest: protocol version %d: want 4 or 5", c.Version)
	case c.Publishers < 1 || c.Subscribers < 1 || c.Sessions < 1 || c.PerSession < 1 || c.Topics < 1 || c.Wills < 1:
		return c, errors.New("crashtest: publishers, subscribers, sessions, per-session, topics and wills must be >= 1")
	case c.Mode == ModeDedup && c.Version != packet.V5:
		return c, fmt.Errorf("crashtest: dedup mode: the message id is a 5.0 user property: want protocol version 5, not %d", c.Version)
	case c.Window < 1 || c.Window > 60000:
		return c, fmt.Errorf("crashtest: window %d: want 1..60000", c.Window)
	case c.Broker == BrokerCmd && len(c.BrokerCmd) == 0:
		return c, errors.New("crashtest: broker cmd needs a command line")
	case c.Quota && (c.Broker != BrokerKeel || c.Mode == ModeManySessions || c.Mode == ModeRetainWill || c.Mode == ModeDedup):
		return c, errors.New("crashtest: quota mode runs keel in the online, offline or replay-crash mode")
	case c.Broker != BrokerKeel && c.Broker != BrokerMosquitto && c.Broker != BrokerCmd:
		return c, fmt.Errorf("crashtest: unknown broker %q", c.Broker)
	}
	if c.Bridge {
		if err := c.checkBridge(); err != nil {
			return c, err
		}
	}
	return c, nil
}

func setDefault[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

// Result is what a run observed.
//
// Accepted counts messages the broker acknowledged (PUBACK for QoS 1,
// PUBREC for QoS 2), each once; Delivered counts distinct (receiver,
// message) pairs received; Lost counts (receiver, accepted message) pairs
// never received; Duplicated counts deliveries beyond the first;
// Reordered counts first deliveries with a lower sequence number than an
// earlier first delivery from the same publisher. In retain-will mode,
// each retained topic checked after a restart counts as one accepted
// value (lost if missing or older than the last acknowledged one), and
// each will whose connection was lost counts as one accepted message. In
// the dedup mode Duplicated counts only copies routed twice (transmissions
// of one message beyond the first that reached a subscriber), not
// redeliveries of one copy (dedup.go).
type Result struct {
	Mode    string
	QoS     byte
	Version byte
	Auth    bool
	Quota   bool
	TLS     bool
	WS      bool
	Bridge  bool
	Seed    uint64
	// DedupWindow is the dedup mode's window (< 0: off); 0 in other modes.
	DedupWindow time.Duration

	Crashes      int
	Kills        map[string]int // crashes by moment
	Accepted     int
	Delivered    int
	Lost         int
	Duplicated   int
	Reordered    int
	SessionsLost int

	Details   map[string]int // mode-specific counters (retained checks, wills, ...)
	Anomalies map[string]int // protocol oddities seen by the clients
	Examples  []string       // a few examples of each violation
	Problems  []string       // failures outside the counters: the broker died by itself, a phase timed out, ...

	WorkDir string // kept work directory (broker.log, data/), if any
}

// Summary is the one-line result.
func (r Result) Summary() string {
	auth := ""
	if r.Auth {
		auth = " auth=1"
	}
	if r.TLS {
		auth += " tls=1"
	}
	if r.WS {
		auth += " ws=1"
	}
	if r.Mode == ModeDedup {
		w := "off"
		if r.DedupWindow > 0 {
			w = r.DedupWindow.String()
		}
		auth += " window=" + w
	}
	if r.Quota {
		auth += " quota=1"
	}
	if r.Bridge {
		auth += " bridge=1"
	}
	return fmt.Sprintf("mode=%s qos=%d v=%d%s crashes=%d accepted=%d delivered=%d lost=%d duplicated=%d reordered=%d sessions_lost=%d",
		r.Mode, r.QoS, r.Version, auth, r.Crashes, r.Accepted, r.Delivered, r.Lost, r.Duplicated, r.Reordered, r.SessionsLost)
}

// Violations lists what breaks Keel's promise; empty means the run passed.
func (r Result) Violations() []string {
	var v []string
	if r.Lost > 0 {
		v = append(v, fmt.Sprintf("lost=%d", r.Lost))
	}
	if r.QoS == 2 && r.Duplicated > 0 {
		v = append(v, fmt.Sprintf("duplicated=%d at QoS 2", r.Duplicated))
	} else if r.Mode == ModeDedup && r.Duplicated > 0 {
		// Only copies routed twice are counted here (dedup.go).
		v = append(v, fmt.Sprintf("duplicated=%d: a retry routed again despite the dedup window", r.Duplicated))
	}
	if r.Reordered > 0 {
		v = append(v, fmt.Sprintf("reordered=%d", r.Reordered))
	}
	if r.SessionsLost > 0 {
		v = append(v, fmt.Sprintf("sessions_lost=%d", r.SessionsLost))
	}
	for _, p := range r.Problems {
		v = append(v, "problem: "+p)
	}
	return v
}

// run is the state of one Run.
type run struct {
	cfg    Config
	log    *slog.Logger
	nonce  uint64
	prefix string // of client ids
	addr   string
	b      *broker
	// Bridge mode: A (the bridge's side, also run.b at the start) and B.
	sides [2]*broker
	// passwords by user, when Config.Auth; read-only once the run starts.
	passwords map[string]string
	quota     quotaState // Config.Quota (quota.go)
	// tls is the clients' TLS configuration when Config.TLS, else nil.
	tls *tls.Config

	events  [2]atomic.Uint64 // by evAck, evDelivery
	target  [2]atomic.Uint64 // kill once events[i] reaches it; 0: off
	trigger chan struct{}

	startupEst time.Duration // owned by the crash controller

	mu struct {
		sync.Mutex
		crashes      int
		kills        map[string]int
		sessionsLost int
		anomalies    map[string]int
		examples     []string
		problems     []string
		extra        tally // retained checks
		details      map[string]int
	}
}

const (
	evAck      = 0
	evDelivery = 1
)

func (r *run) bump(ev int) {
	n := r.events[ev].Add(1)
	if t := r.target[ev].Load(); t != 0 && n >= t && r.target[ev].CompareAndSwap(t, 0) {
		select {
		case r.trigger <- struct{}{}:
		default:
		}
	}
}

func (r *run) sessionLost(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mu.sessionsLost++
	if r.mu.sessionsLost <= maxExamples {
		r.mu.examples = append(r.mu.examples, fmt.Sprintf("session lost: %s reconnected to session present = 0", id))
	}
}

func (r *run) anomaly(kind, format string, args ...any) {
	r.mu.Lock()
	r.mu.anomalies[kind]++
	n := r.mu.anomalies[kind]
	r.mu.Unlock()
	if n <= 3 {
		r.log.Warn("anomaly", "kind", kind, "detail", fmt.Sprintf(format, args...))
	}
}

func (r *run) problem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.log.Error("problem", "detail", msg)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mu.problems = append(r.mu.problems, msg)
}

func (r *run) crashCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mu.crashes
}

func (r *run) clientID(role string, i int) string {
	return fmt.Sprintf("%s-%s%d", r.prefix, role, i)
}

// rng returns a generator for one goroutine, derived from the seed.
func (r *run) rng(stream uint64) *rand.Rand {
	return rand.New(rand.NewPCG(r.cfg.Seed, stream))
}

// deliverTo records this run's messages into l.
func (r *run) deliverTo(l *ledger) func(*conn, *packet.Publish, msgKey, bool) {
	return func(cn *conn, p *packet.Publish, k msgKey, ok bool) {
		if ok && l.record(k, via{cn.n, p.PacketID, p.Dup}) {
			r.bump(evDelivery)
		}
	}
}

// Run runs one crash test. It returns an error only when the test could
// not run (bad config, no broker); a broker that breaks the promise
// yields a Result whose Violations are not empty. Every process it starts
// is killed and waited for before it returns.
func Run(ctx context.Context, cfg Config) (res Result, err error) {
	cfg, err = cfg.withDefaults()
	if err != nil {
		return Result{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	r := &run{cfg: cfg, log: cfg.Logger, trigger: make(chan struct{}, 1)}
	r.nonce = rand.New(rand.NewPCG(cfg.Seed, 0)).Uint64() ^ uint64(time.Now().UnixNano())
	r.prefix = fmt.Sprintf("ct%06x", r.nonce&0xFFFFFF)
	r.mu.kills = make(map[string]int)
	r.mu.anomalies = make(map[string]int)
	r.mu.details = make(map[string]int)

	work := cfg.WorkDir
	if work == "" {
		work, err = os.MkdirTemp("", "crashtest-")
		if err != nil {
			return Result{}, fmt.Errorf("crashtest: %w", err)
		}
		defer func() {
			// Keep the broker's log and data directory for a post-mortem.
			if cfg.Keep || len(res.Violations()) > 0 {
				res.WorkDir = work
				return
			}
			os.RemoveAll(work)
		}()
	} else {
		defer func() { res.WorkDir = work }()
	}
	data := cfg.DataDir
	if data == "" {
		data = filepath.Join(work, "data")
	}
	if r.addr, err = freeAddr(); err != nil {
		return Result{}, fmt.Errorf("crashtest: %w", err)
	}
	if cfg.Auth {
		if r.passwords, err = writeAuthFiles(work, r.nonce); err != nil {
			return Result{}, fmt.Errorf("crashtest: auth files: %w", err)
		}
	}
	if cfg.TLS {
		if r.tls, err = writeTLSFiles(work); err != nil {
			return Result{}, fmt.Errorf("crashtest: TLS files: %w", err)
		}
	}
	var argv []string
	switch cfg.Broker {
	case BrokerKeel:
		bin := cfg.KeelPath
		if bin == "" {
			r.log.Info("building ./cmd/keel")
			if bin, err = buildKeel(ctx, work); err != nil {
				return Result{}, fmt.Errorf("crashtest: %w", err)
			}
		}
		argv = []string{bin, "serve", "--listen", "{addr}", "--data", "{data}"}
		if cfg.Auth {
			argv = append(argv, "--password-file", "{passwd}", "--acl-file", "{acl}")
		}
		if text := keelListenerConf(cfg.TLS, cfg.WebSocket, work) + dedupConf(cfg) + quotaConf(cfg); text != "" {
			conf := filepath.Join(work, "keel.conf")
			err := os.WriteFile(conf, []byte("# crashtest (tools/crashtest): the run's keel configuration\n"+text), 0o644)
			if err != nil {
				return Result{}, fmt.Errorf("crashtest: %w", err)
			}
			argv = append(argv, "--config", conf)
		}
	case BrokerMosquitto:
		conf := filepath.Join(work, "mosquitto.conf")
		if err := writeMosquittoConf(conf, r.addr, cfg.Auth, cfg.TLS, cfg.WebSocket, work); err != nil {
			return Result{}, fmt.Errorf("crashtest: %w", err)
		}
		argv = []string{"mosquitto", "-c", conf}
	case BrokerCmd:
		argv = cfg.BrokerCmd
	}
	if err := os.MkdirAll(data, 0o755); err != nil {
		return Result{}, fmt.Errorf("crashtest: %w", err)
	}
	r.b = &broker{args: expandArgs(argv, r.addr, data, work), addr: r.addr, logPath: filepath.Join(work, "broker.log")}
	defer r.b.stop()
	if cfg.Bridge {
		if err := r.prepareBridge(ctx, work); err != nil {
			return Result{}, fmt.Errorf("crashtest: %w", err)
		}
		defer r.sides[1].stop()
	}
	r.log.Info("starting broker", "argv", r.b.args, "work", work)

	if err := r.b.start(); err != nil {
		return Result{}, fmt.Errorf("crashtest: %w", err)
	}
	if r.startupEst, err = r.b.waitReady(ctx, 30*time.Second); err != nil {
		return Result{}, fmt.Errorf("crashtest: %w", err)
	}
	if cfg.Auth && cfg.Broker != BrokerCmd {
		// What a command does with the files is its own business; keel
		// and mosquitto are started with them here and must use them.
		if err := r.checkAnonymousRefused(ctx); err != nil {
			r.problem("%v", err)
		}
	}

	if (cfg.TLS || cfg.WebSocket) && cfg.Broker != BrokerCmd {
		if err := r.checkPlainRefused(ctx); err != nil {
			r.problem("%v", err)
		}
	}

	var phaseErr error
	switch {
	case cfg.Bridge:
		phaseErr = r.runBridge(ctx)
	case cfg.Mode == ModeManySessions:
		phaseErr = r.runMany(ctx)
	case cfg.Mode == ModeRetainWill:
		phaseErr = r.runRetainWill(ctx)
	case cfg.Mode == ModeDedup:
		phaseErr = r.runDedup(ctx)
	default:
		phaseErr = r.runStandard(ctx)
	}
	if phaseErr != nil {
		r.problem("%v", phaseErr)
	}
	if err := r.b.alive(); err != nil {
		r.problem("%v", err)
	}
	if ctx.Err() != nil {
		r.problem("run stopped before the end: %v", context.Cause(ctx))
	}
	return r.result(), nil
}

func (r *run) result() Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.mu.extra
	res := Result{
		Mode:         r.cfg.Mode,
		QoS:          r.cfg.QoS,
		Version:      r.cfg.Version,
		Auth:         r.cfg.Auth,
		Quota:        r.cfg.Quota,
		TLS:          r.cfg.TLS,
		WS:           r.cfg.WebSocket,
		DedupWindow:  r.cfg.DedupWindow,
		Bridge:       r.cfg.Bridge,
		Seed:         r.cfg.Seed,
		Crashes:      r.mu.crashes,
		Kills:        maps.Clone(r.mu.kills),
		Accepted:     t.accepted,
		Delivered:    t.delivered,
		Lost:         t.lost,
		Duplicated:   t.duplicated,
		Reordered:    t.reordered,
		SessionsLost: r.mu.sessionsLost,
		Details:      maps.Clone(r.mu.details),
		Anomalies:    maps.Clone(r.mu.anomalies),
		Examples:     append(slices.Clone(r.mu.examples), t.examples...),
		Problems:     slices.Clone(r.mu.problems),
	}
	return res
}

// addTally adds a verification's counts to the result, and to the
// details under name (if not empty).
func (r *run) addTally(name string, t tally) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if name != "" {
		r.mu.details[name+"_accepted"] += t.accepted
		r.mu.details[name+"_lost"] += t.lost
	}
	e := &r.mu.extra
	e.accepted += t.accepted
	e.delivered += t.delivered
	e.lost += t.lost
	e.duplicated += t.duplicated
	e.reordered += t.reordered
	for _, x := range t.examples {
		if len(e.examples) < 4*maxExamples {
			e.examples = append(e.examples, x)
		}
	}
}

// waitSubscribed waits until every client has its first SUBACK.
func (r *run) waitSubscribed(ctx context.Context, cs []*client) error {
	return waitAll(ctx, cs, "subscribed", func(c *client) <-chan struct{} { return c.subscribed })
}

// waitConnected waits until every client has had its first connection:
// with -auth a login takes a password verification, and a crash phase
// that began before the publishers were in could end with nothing
// published.
func (r *run) waitConnected(ctx context.Context, cs []*client) error {
	return waitAll(ctx, cs, "connected", func(c *client) <-chan struct{} { return c.connected })
}

func waitAll(ctx context.Context, cs []*client, what string, ch func(*client) <-chan struct{}) error {
	t := time.NewTimer(60 * time.Second)
	defer t.Stop()
	for _, c := range cs {
		select {
		case <-ch(c):
		case <-t.C:
			return fmt.Errorf("setup: %s not %s after 60s", c.id, what)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// waitDone waits for done to close, at most d.
func waitDone(ctx context.Context, done <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

const (
	finishTimeout = 60 * time.Second // publishers getting their last acks
	drainIdle     = 5 * time.Second  // no new delivery for this long ends the drain
	drainGrace    = 500 * time.Millisecond
)

// missingFrom is drain's missing when every subscriber owes every
// accepted message: the accepted messages the ledgers lack.
func missingFrom(accepted *acceptSet, ledgers []*ledger) func() int {
	return func() int {
		acc := accepted.snapshot()
		n := 0
		for _, l := range ledgers {
			n += l.missing(acc)
		}
		return n
	}
}

// distinctIn is drain's progress: the distinct deliveries the ledgers
// hold.
func distinctIn(ledgers []*ledger) func() int {
	return func() int {
		n := 0
		for _, l := range ledgers {
			n += l.distinct()
		}
		return n
	}
}

// drain waits until missing reports 0 (then a short grace, so late
// duplicates are seen too), or nothing new arrived for drainIdle, or
// DrainTimeout passed.
func (r *run) drain(ctx context.Context, missing, progress func() int) {
	start := time.Now()
	last, lastChange := progress(), start
	for {
		if missing() == 0 {
			sleepCtx(ctx, drainGrace, nil)
			return
		}
		now := time.Now()
		if now.Sub(start) > r.cfg.DrainTimeout || now.Sub(lastChange) > drainIdle {
			r.log.Info("drain ended incomplete", "missing", missing(), "after", now.Sub(start).Round(time.Millisecond))
			return
		}
		if !sleepCtx(ctx, 100*time.Millisecond, nil) {
			return
		}
		if p := progress(); p != last {
			last, lastChange = p, time.Now()
		}
	}
}

// seqSource publishes 1, 2, 3, ... on one topic.
type seqSource struct {
	pub   uint32
	topic string
	seq   uint32
}

func (s *seqSource) next() (msgKey, string, bool, bool) {
	s.seq++
	return msgKey{s.pub, s.seq}, s.topic, false, true
}

// runStandard runs the online, offline and replay-crash modes: P
// publishers each publishing a sequence on crash/p{N}, S subscribers on
// crash/#.
func (r *run) runStandard(ctx context.Context) error {
	cfg := r.cfg
	churn := cfg.Mode != ModeOnline
	cctx, cancelClients := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancelClients(); wg.Wait() }()

	stayOnline := make(chan struct{})
	ledgers := make([]*ledger, cfg.Subscribers)
	subs := make([]*client, cfg.Subscribers)
	for i := range subs {
		l := newLedger(r.clientID("s", i))
		ledgers[i] = l
		c := r.newClient(clientOpts{id: r.clientID("s", i), subs: []string{"crash/#"}, deliver: r.deliverTo(l)})
		subs[i] = c
		rng := r.rng(uint64(100 + i))
		wg.Go(func() { c.runSubscriber(cctx, churn, stayOnline, rng) })
	}
	if err := r.waitSubscribed(ctx, subs); err != nil {
		close(stayOnline)
		return err
	}

	accepted := newAcceptSet()
	stopPub := make(chan struct{})
	pubsDone := make(chan struct{})
	var pubWG sync.WaitGroup
	pubs := make([]*client, cfg.Publishers)
	for i := range cfg.Publishers {
		c := r.newClient(clientOpts{id: r.clientID("p", i), onAccept: accepted.add})
		pubs[i] = c
		src := &seqSource{pub: uint32(i), topic: fmt.Sprintf("crash/p%d", i)}
		pubWG.Add(1)
		wg.Go(func() {
			defer pubWG.Done()
			c.runPublisher(cctx, src, stopPub, cfg.Rate)
		})
	}
	wg.Go(func() { pubWG.Wait(); close(pubsDone) })

	plan := crashPlan{startupKills: cfg.Mode == ModeReplayCrash}
	err := r.waitConnected(ctx, pubs)
	if err == nil {
		err = r.crashPhase(ctx, &plan)
	}
	close(stopPub)
	close(stayOnline)
	if err != nil {
		return err
	}
	r.log.Info("crash phase over; publishers finishing", "crashes", r.crashCount(), "accepted", len(accepted.snapshot()))
	if !waitDone(ctx, pubsDone, finishTimeout) {
		r.problem("publishers still had unacknowledged messages %v after the crash phase", finishTimeout)
	}
	if err := r.finalCrash(ctx, &plan); err != nil {
		return err
	}

	all := make([]int, len(ledgers))
	for i := range all {
		all[i] = i
	}
	r.drain(ctx, missingFrom(accepted, ledgers), distinctIn(ledgers))
	cancelClients()
	wg.Wait()
	r.addTally("", verify(accepted.snapshot(), ledgers, func(msgKey) []int { return all }))
	r.quotaCheck(ledgers) // quota.go
	return nil
}
