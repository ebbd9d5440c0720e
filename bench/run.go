package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keelmq/keel/engine/packet"
)

// config is one load run, as given by the flags.
type config struct {
	addr       string
	version    byte
	pubs, subs int
	qos        byte
	size       int
	window     int
	persistent bool
	pattern    string // fanin, fanout, pairs
	topicLen   int    // pad topic names to this length; 0: no padding
	subAliases uint16 // 5.0 subscribers' Topic Alias Maximum
	duration   time.Duration
	warmup     time.Duration
	count      int64 // messages per publisher; 0: run for duration
	pid        int   // broker pid for CPU accounting; 0: none
	label      string
	drain      time.Duration // give up waiting for deliveries after this long without progress
	ackTimeout time.Duration
	quiet      bool
	// Credentials: every client logs in with user/pass (subscribers with
	// subUser/subPass when set); none when user is empty.
	user, pass       string
	subUser, subPass string
	transport        *transport // nil: plain TCP
	// msgID (5.0): every publish carries a unique message id in the user
	// property with this name (keel's dedup window, bench dedup); "": none.
	msgID string
	// subAddr, if set, is where the subscribers connect (another broker:
	// a bridge between the two, bench bridge); the publishers use addr.
	subAddr string
}

func (c *config) validate() error {
	switch {
	case c.version != packet.V311 && c.version != packet.V5:
		return fmt.Errorf("-v %d: want 4 (3.1.1) or 5", c.version)
	case c.qos > 2:
		return fmt.Errorf("-qos %d: want 0, 1 or 2", c.qos)
	case c.size < payloadHeader:
		return fmt.Errorf("-size %d: want at least %d bytes (timestamp, publisher, sequence)", c.size, payloadHeader)
	case c.pubs < 1:
		return fmt.Errorf("-pub %d: want at least 1", c.pubs)
	case c.subs < 0:
		return fmt.Errorf("-sub %d: want at least 0", c.subs)
	case c.window < 1:
		return fmt.Errorf("-window %d: want at least 1", c.window)
	case c.msgID != "" && c.version != packet.V5:
		return fmt.Errorf("-msg-id %q: a user property needs -v 5", c.msgID)
	case c.count <= 0 && c.duration <= 0:
		return errors.New("want -duration > 0 or -count > 0")
	case c.count >= 1<<32:
		return fmt.Errorf("-count %d: too large", c.count)
	case c.topicLen != 0 && (c.topicLen < minTopicLen || c.topicLen > 65535):
		return fmt.Errorf("-topic-len %d: want 0 or %d..65535", c.topicLen, minTopicLen)
	}
	switch c.pattern {
	case "fanin", "fanout":
	case "pairs":
		c.subs = c.pubs
	default:
		return fmt.Errorf("-pattern %q: want fanin, fanout or pairs", c.pattern)
	}
	return nil
}

// minTopicLen is the shortest -topic-len: the longest unpadded name
// ("bench/<run id>/p/<i>") fits in it.
const minTopicLen = 32

// control tells publishers when to stop.
type control struct {
	stop chan struct{}
	flag atomic.Bool
}

func (c *control) stopped() bool { return c.flag.Load() }

func (c *control) halt() {
	if c.flag.CompareAndSwap(false, true) {
		close(c.stop)
	}
}

// base is the origin of clock().
var base = time.Now()

// clock is nanoseconds since the process started, on the monotonic clock.
func clock() int64 { return int64(time.Since(base)) }

// measureStart is the clock() at which the warm-up ends and measurement
// starts. It is set before any load goroutine starts and never changes.
var measureStart int64

// result is one run's figures; its JSON is the RESULT line.
type result struct {
	Label      string `json:"label,omitempty"`
	Addr       string `json:"addr"`
	Version    int    `json:"v"`
	Pattern    string `json:"pattern"`
	Pubs       int    `json:"pub"`
	Subs       int    `json:"sub"`
	QoS        int    `json:"qos"`
	Size       int    `json:"size"`
	Window     int    `json:"window"` // effective: min(-window, server Receive Maximum)
	Persistent bool   `json:"persistent"`
	TopicLen   int    `json:"topic_len,omitempty"`   // bytes of each topic name
	SubAliases int    `json:"sub_aliases,omitempty"` // subscribers' Topic Alias Maximum

	Seconds   float64 `json:"seconds"` // measured window (after warm-up)
	Sent      int64   `json:"sent"`
	Acked     int64   `json:"acked"`
	Rejected  int64   `json:"rejected"`  // acks with a failure reason code
	Bogus     int64   `json:"bogus"`     // acks for unknown packet ids
	Expected  int64   `json:"expected"`  // deliveries owed: acked x subscribers
	Delivered int64   `json:"delivered"` // distinct deliveries
	Lost      int64   `json:"lost"`      // owed but never delivered
	Dups      int64   `json:"dups"`
	Reordered int64   `json:"reordered"`
	Bad       int64   `json:"bad"`

	// SubBytes is what the subscribers read from the broker, the whole
	// run; SubBytesPerMsg divides it by their deliveries.
	SubBytes       int64   `json:"sub_bytes,omitempty"`
	SubBytesPerMsg float64 `json:"sub_bytes_per_msg,omitempty"`

	PubRate float64 `json:"pub_rate"` // acknowledged publishes per second
	DelRate float64 `json:"del_rate"` // deliveries per second

	E2EP50  float64 `json:"e2e_p50_us"`
	E2EP99  float64 `json:"e2e_p99_us"`
	E2EP999 float64 `json:"e2e_p999_us"`
	AckP50  float64 `json:"ack_p50_us"`
	AckP99  float64 `json:"ack_p99_us"`
	AckMean float64 `json:"ack_mean_us"`
	// QoS 2: PUBLISH -> PUBCOMP, the whole exchange.
	DoneP50 float64 `json:"done_p50_us,omitempty"`
	DoneP99 float64 `json:"done_p99_us,omitempty"`

	BrokerCPU       float64 `json:"broker_cpu_s,omitempty"`
	BrokerCPUPerMsg float64 `json:"broker_cpu_us_per_msg,omitempty"` // per delivered message
	BrokerCores     float64 `json:"broker_cores,omitempty"`
	BenchCPU        float64 `json:"bench_cpu_s"`
	BenchCores      float64 `json:"bench_cores"`
	// OtherCores is the rest of the machine's busy time over the run:
	// other processes and the hypervisor (steal). Only with -pid.
	OtherCores float64 `json:"other_cores,omitempty"`

	// Fsync is the disk's write + fdatasync latency measured in the run's
	// data directory just before the broker started (matrix, synchronous
	// scenarios only): the floor under this run's acknowledgement latency.
	Fsync *fsyncResult `json:"fsync,omitempty"`

	Err string `json:"error,omitempty"`
}

// failed reports whether the run broke a delivery guarantee: anything
// acknowledged at QoS 1/2 and never delivered, or QoS 2 delivered twice.
func (r *result) failed() bool {
	return r.QoS >= 1 && r.Lost > 0 || r.QoS == 2 && r.Dups > 0
}

func newRunID() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// runLoad runs one load and returns its figures. Progress goes to log.
func runLoad(cfg *config, log io.Writer) (*result, error) {
	id := newRunID()
	root := "bench/" + id
	r := &result{
		Label: cfg.label, Addr: cfg.addr, Version: int(cfg.version), Pattern: cfg.pattern,
		Pubs: cfg.pubs, Subs: cfg.subs, QoS: int(cfg.qos), Size: cfg.size, Persistent: cfg.persistent,
		SubAliases: int(cfg.subAliases),
	}
	opts := func(name string) connOptions {
		o := connOptions{
			addr: cfg.addr, version: cfg.version, clientID: "kb-" + id + "-" + name,
			persistent: cfg.persistent, expiry: 3600, username: cfg.user, password: cfg.pass,
			transport: cfg.transport,
		}
		if name[0] == 's' && cfg.subUser != "" { // subscribers are s0, s1, ...
			o.username, o.password = cfg.subUser, cfg.subPass
		}
		if name[0] == 's' && cfg.subAddr != "" {
			o.addr = cfg.subAddr
		}
		return o
	}
	topicOf := func(i int) string {
		t := root + "/t"
		if cfg.pattern == "pairs" {
			t = fmt.Sprintf("%s/p/%d", root, i)
		}
		if n := cfg.topicLen - len(t); n > 0 {
			t += "/" + strings.Repeat("x", n-1)
		}
		return t
	}
	r.TopicLen = len(topicOf(0))

	// Connect: subscribers first, so that nothing is published before every
	// subscription is in place.
	subs := make([]*subscriber, cfg.subs)
	pubs := make([]*publisher, cfg.pubs)
	closeAll := func() {
		for _, s := range subs {
			if s != nil {
				s.c.Close()
			}
		}
		for _, p := range pubs {
			if p != nil {
				p.c.Close()
			}
		}
	}
	err := parallel(cfg.subs, func(i int) error {
		lo, hi := 0, cfg.pubs
		if cfg.pattern == "pairs" {
			lo, hi = i, i+1
		}
		s := newSubscriber(i, topicOf(i), lo, hi, cfg)
		c, err := dial(s.connOptions(opts(fmt.Sprintf("s%d", i))))
		if err != nil {
			return err
		}
		s.c = c
		subs[i] = s
		return subscribe(c, topicOf(i), cfg.qos)
	})
	if err == nil {
		err = parallel(cfg.pubs, func(i int) error {
			p := newPublisher(i, topicOf(i), cfg)
			c, err := dial(p.connOptions(opts(fmt.Sprintf("p%d", i))))
			if err != nil {
				return err
			}
			p.attach(c)
			pubs[i] = p
			return nil
		})
	}
	if err != nil {
		closeAll()
		return nil, err
	}
	r.Window = pubs[0].window
	for _, p := range pubs {
		r.Window = min(r.Window, p.window)
	}

	// Start. The warm-up counts for loss but not for rates or latencies.
	measureStart = clock() + int64(cfg.warmup)
	ctl := &control{stop: make(chan struct{})}
	var subsWG, writers sync.WaitGroup
	subErrs := make([]error, len(subs))
	for i, s := range subs {
		subsWG.Go(func() { subErrs[i] = s.wait() })
	}
	pubErrs := make([]error, len(pubs))
	for i, p := range pubs {
		writers.Go(func() { pubErrs[i] = p.run(ctl) })
	}

	// Sample CPU when measurement starts.
	var brokerCPU0, selfCPU0 time.Duration
	var brokerErr error
	time.Sleep(time.Until(base.Add(time.Duration(measureStart))))
	selfCPU0 = selfCPU()
	busy0, busyErr := machineBusy()
	if cfg.pid > 0 {
		brokerCPU0, brokerErr = procCPU(cfg.pid)
	}

	// Progress each second until the publishers are done.
	pubsDone := make(chan struct{})
	go func() { writers.Wait(); close(pubsDone) }()
	var stopTimer <-chan time.Time
	if cfg.duration > 0 {
		stopTimer = time.After(cfg.duration)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastSent, lastDelivered int64
	progress := func(phase string) {
		var sent, acked, deliv int64
		for _, p := range pubs {
			sent += p.sent.Load()
			acked += p.nacked.Load()
		}
		for _, s := range subs {
			deliv += s.unique.Load()
		}
		if !cfg.quiet {
			el := time.Duration(clock() - measureStart).Round(time.Second)
			fmt.Fprintf(log, "%6v %-8s sent %9d (+%d/s)  acked %9d  delivered %10d (+%d/s)\n",
				el, phase, sent, sent-lastSent, acked, deliv, deliv-lastDelivered)
		}
		lastSent, lastDelivered = sent, deliv
	}
	var unstick *time.Timer
publishing:
	for {
		select {
		case <-stopTimer:
			ctl.halt()
			// A publisher blocked writing to a broker that stopped reading
			// would never see the stop: give up on it after the ack timeout.
			unstick = time.AfterFunc(cfg.ackTimeout+5*time.Second, func() {
				for _, p := range pubs {
					p.c.Close()
				}
			})
		case <-pubsDone:
			break publishing
		case <-tick.C:
			progress("publish")
		}
	}
	ctl.halt()
	if unstick != nil {
		unstick.Stop()
	}

	// Drain: wait until every owed delivery arrived, or until deliveries
	// stop coming for cfg.drain.
	var owed int64
	for _, p := range pubs {
		owed += p.nacked.Load() // written by the publisher's loop, which returned
	}
	if cfg.pattern != "pairs" {
		owed *= int64(cfg.subs)
	}
	lastProgress := time.Now()
	last := int64(-1)
	for {
		var deliv int64
		for _, s := range subs {
			deliv += s.unique.Load()
		}
		if deliv >= owed {
			break
		}
		if deliv != last {
			last, lastProgress = deliv, time.Now()
		} else if time.Since(lastProgress) > cfg.drain {
			break
		}
		select {
		case <-tick.C:
			progress("drain")
		case <-time.After(time.Millisecond):
		}
	}
	endClock := clock()
	selfCPU1 := selfCPU()
	busy1, busyErr1 := machineBusy()
	var brokerCPU1 time.Duration
	if cfg.pid > 0 && brokerErr == nil {
		brokerCPU1, brokerErr = procCPU(cfg.pid)
	}

	// Say goodbye; once every connection is over, the subscribers'
	// figures are this goroutine's to read.
	for _, s := range subs {
		s.stop()
	}
	drop := cfg.persistent
	parallel(len(subs)+len(pubs), func(i int) error {
		if i < len(subs) {
			return disconnect(subs[i].c, drop)
		}
		return disconnect(pubs[i-len(subs)].c, drop)
	})
	subsWG.Wait()
	if cfg.persistent && cfg.version == packet.V311 {
		// 3.1.1 has no session expiry: a clean-session connect discards
		// the session.
		parallel(len(subs)+len(pubs), func(i int) error {
			name := fmt.Sprintf("s%d", i)
			if i >= len(subs) {
				name = fmt.Sprintf("p%d", i-len(subs))
			}
			o := opts(name)
			o.cleanOnly = true
			c, err := dial(o)
			if err != nil {
				return err
			}
			return disconnect(c, false)
		})
	}

	// The figures.
	var ack, done, e2e hist
	var ackedWin, lastAck, delivWin, lastDeliv int64
	for _, p := range pubs {
		r.Sent += p.sent.Load()
		r.Acked += p.nacked.Load()
		r.Rejected += p.rejected
		r.Bogus += p.bogus.Load()
		ack.merge(&p.ackHist)
		done.merge(&p.doneHist)
		ackedWin += p.ackedWin
		lastAck = max(lastAck, p.lastAck)
	}
	for _, s := range subs {
		for i := range s.recv {
			want := &pubs[s.pubLo+i].acked
			r.Expected += want.count()
			r.Lost += s.recv[i].missing(want)
		}
		r.Delivered += s.unique.Load()
		r.SubBytes += s.readBytes.Load()
		r.Dups += s.dups
		r.Reordered += s.outOfOrder
		r.Bad += s.bad
		e2e.merge(&s.e2e)
		delivWin += s.delivWin
		lastDeliv = max(lastDeliv, s.lastDeliv)
	}
	if n := r.Delivered + r.Dups; n > 0 {
		r.SubBytesPerMsg = float64(r.SubBytes) / float64(n)
	}
	if lastAck > measureStart {
		r.Seconds = float64(lastAck-measureStart) / 1e9
		r.PubRate = float64(ackedWin) / r.Seconds
	}
	if lastDeliv > measureStart {
		r.DelRate = float64(delivWin) / (float64(lastDeliv-measureStart) / 1e9)
	}
	us := func(ns float64) float64 { return ns / 1e3 }
	r.E2EP50, r.E2EP99, r.E2EP999 = us(e2e.quantile(0.50)), us(e2e.quantile(0.99)), us(e2e.quantile(0.999))
	r.AckP50, r.AckP99, r.AckMean = us(ack.quantile(0.50)), us(ack.quantile(0.99)), us(ack.mean())
	r.DoneP50, r.DoneP99 = us(done.quantile(0.50)), us(done.quantile(0.99))
	wall := time.Duration(endClock - measureStart)
	r.BenchCPU = (selfCPU1 - selfCPU0).Seconds()
	r.BenchCores = r.BenchCPU / wall.Seconds()
	if cfg.pid > 0 && brokerErr == nil {
		r.BrokerCPU = (brokerCPU1 - brokerCPU0).Seconds()
		r.BrokerCores = r.BrokerCPU / wall.Seconds()
		if busyErr == nil && busyErr1 == nil {
			r.OtherCores = max(0, (busy1-busy0).Seconds()/wall.Seconds()-r.BrokerCores-r.BenchCores)
		}
		per := delivWin
		if len(subs) == 0 {
			per = ackedWin
		}
		if per > 0 {
			r.BrokerCPUPerMsg = r.BrokerCPU * 1e6 / float64(per)
		}
	}

	errs := append(pubErrs, subErrs...)
	errs = append(errs, brokerErr)
	if err := errors.Join(errs...); err != nil {
		r.Err = err.Error()
		return r, err
	}
	return r, nil
}

// parallel runs f(0..n-1) with bounded concurrency and returns the first
// error.
func parallel(n int, f func(i int) error) error { return parallelN(n, 32, f) }

// parallelN runs f(0) ... f(n-1), at most width at a time, and joins
// their errors.
func parallelN(n, width int, f func(i int) error) error {
	sem := make(chan struct{}, max(width, 1))
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = f(i)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
