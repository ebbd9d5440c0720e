package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keelmq/keel/engine/client"
	"github.com/keelmq/keel/engine/packet"
)

// The burst scenario (any MQTT broker): N clients that each have a stored
// persistent session with state in it (a subscription, a few queued QoS 1
// messages) reconnect with a clean session, a few dozen at a time, while a
// synchronous QoS 1 publisher on another topic measures how long the
// broker keeps it waiting. On a durable broker every such CONNECT erases a
// stored session before its CONNACK; the question is whether the erasing
// holds up everyone else.
//
//	go run ./bench burst -addr 127.0.0.1:1883 -n 5000 -concurrency 50 -v 4
type burstConfig struct {
	addr        string
	version     byte
	n           int
	concurrency int
	queued      int           // QoS 1 messages queued in each stored session
	size        int           // payload bytes, queued and published
	idle        time.Duration // publisher alone before the burst: its normal latency
	ackTimeout  time.Duration
	label       string
	quiet       bool
}

// burstResult is the RESULT line of a burst run.
type burstResult struct {
	Label       string `json:"label,omitempty"`
	Addr        string `json:"addr"`
	Version     int    `json:"v"`
	N           int    `json:"n"`
	Concurrency int    `json:"concurrency"`
	Queued      int    `json:"queued"`

	SetupSeconds float64 `json:"setup_seconds"` // phase 1: sessions created, filled, left
	Seconds      float64 `json:"seconds"`       // phase 2: the burst's wall time
	Rate         float64 `json:"rate"`          // reconnects (CONNACK + DISCONNECT) per second
	Failed       int64   `json:"failed"`        // reconnects that got no CONNACK
	Present      int64   `json:"present"`       // CONNACKs with Session Present = 1 despite clean start

	Burst ackFigures `json:"burst"` // publishes overlapping the burst
	Idle  ackFigures `json:"idle"`  // publishes before it, the broker otherwise idle

	Err string `json:"error,omitempty"`
}

func burstMain(args []string) int {
	fs := flag.NewFlagSet("bench burst", flag.ExitOnError)
	var cfg burstConfig
	var version uint
	fs.StringVar(&cfg.addr, "addr", "127.0.0.1:1883", "broker `host:port`")
	fs.UintVar(&version, "v", 4, "MQTT protocol level: 4 (3.1.1, clean session 0) or 5 (session expiry 3600 s)")
	fs.IntVar(&cfg.n, "n", 5000, "stored sessions, each reconnected once with a clean session")
	fs.IntVar(&cfg.concurrency, "concurrency", 50, "reconnects in flight at once")
	fs.IntVar(&cfg.queued, "queued", 3, "QoS 1 messages queued in each stored session")
	fs.IntVar(&cfg.size, "size", 64, "payload `bytes`")
	fs.DurationVar(&cfg.idle, "idle", time.Second, "the publisher alone before the burst (its normal latency)")
	fs.DurationVar(&cfg.ackTimeout, "ack-timeout", 30*time.Second, "longest wait for one PUBACK")
	fs.StringVar(&cfg.label, "label", "", "name of the broker, copied into the RESULT line")
	fs.BoolVar(&cfg.quiet, "q", false, "no progress lines on stderr")
	fs.Parse(args)
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bench burst: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg.version = byte(version)
	if err := cfg.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "bench burst:", err)
		return 2
	}
	log := io.Writer(os.Stderr)
	if cfg.quiet {
		log = io.Discard
	}
	r, err := runBurst(&cfg, log)
	if r != nil {
		printBurst(os.Stdout, r)
		printResult(os.Stdout, r)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench burst:", err)
		return 2
	}
	return 0
}

func (c *burstConfig) validate() error {
	switch {
	case c.version != packet.V311 && c.version != packet.V5:
		return fmt.Errorf("-v %d: want 4 (3.1.1) or 5", c.version)
	case c.n < 1 || c.concurrency < 1 || c.queued < 0:
		return errors.New("want -n >= 1, -concurrency >= 1, -queued >= 0")
	case c.size < 1:
		return errors.New("want -size >= 1")
	}
	return nil
}

func printBurst(w io.Writer, r *burstResult) {
	fmt.Fprintf(w, "burst: %d clean-session reconnects over stored sessions (%d queued QoS 1 each), %d at a time, v%d, against %s %s\n",
		r.N, r.Queued, r.Concurrency, r.Version, r.Label, r.Addr)
	fmt.Fprintf(w, "  setup      %.2fs (sessions created, subscribed, filled, left)\n", r.SetupSeconds)
	fmt.Fprintf(w, "  burst      %.3fs, %.0f reconnects/s; %d failed, %d with session present\n", r.Seconds, r.Rate, r.Failed, r.Present)
	fmt.Fprintf(w, "  PUBACK     during the burst: %s\n", r.Burst)
	fmt.Fprintf(w, "  PUBACK     before it (idle): %s\n", r.Idle)
}

// runBurst runs both phases. The result is returned with whatever was
// measured even when err is not nil.
func runBurst(cfg *burstConfig, log io.Writer) (*burstResult, error) {
	id := newRunID()
	root := "bench/" + id
	r := &burstResult{Label: cfg.label, Addr: cfg.addr, Version: int(cfg.version), N: cfg.n, Concurrency: cfg.concurrency, Queued: cfg.queued}
	opts := func(name string) connOptions {
		return connOptions{addr: cfg.addr, version: cfg.version, clientID: "kb-" + id + "-" + name, persistent: true, expiry: 3600}
	}
	sessionID := func(i int) string { return fmt.Sprintf("b%d", i) }
	topicOf := func(i int) string { return fmt.Sprintf("%s/s/%d", root, i) }

	// Phase 1: the stored sessions.
	t0 := time.Now()
	err := parallelN(cfg.n, cfg.concurrency, func(i int) error {
		c, err := dial(opts(sessionID(i)))
		if err != nil {
			return err
		}
		if err := subscribe(c, topicOf(i), 1); err != nil {
			c.Close()
			return err
		}
		return disconnect(c, false)
	})
	if err == nil {
		err = fillTopics(cfg.n, topicOf, cfg.queued, cfg.size, cfg.ackTimeout, opts)
	}
	r.SetupSeconds = time.Since(t0).Seconds()
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	fmt.Fprintf(log, "setup: %d sessions with %d queued messages each in %.2fs\n", cfg.n, cfg.queued, r.SetupSeconds)

	// The publisher, alone first.
	pc, err := dial(connOptions{addr: cfg.addr, version: cfg.version, clientID: "kb-" + id + "-pub", cleanOnly: true})
	if err != nil {
		return nil, err
	}
	pub := newSyncPublisher(pc, root+"/pub", cfg.size)
	stop := make(chan struct{})
	pubErr := make(chan error, 1)
	idleFrom := clock()
	go func() { pubErr <- pub.run(stop, cfg.ackTimeout) }()
	select {
	case <-time.After(cfg.idle):
	case err := <-pubErr:
		pc.Close()
		return nil, err
	}

	// Phase 2, measured: every session reconnects with a clean session.
	var failed, present atomic.Int64
	var firstErr error
	var errOnce sync.Once
	from := clock()
	parallelN(cfg.n, cfg.concurrency, func(i int) error {
		o := opts(sessionID(i))
		o.cleanOnly = true
		c, err := dial(o)
		if err != nil {
			failed.Add(1)
			errOnce.Do(func() { firstErr = err })
			return nil
		}
		// [MQTT-3.2.2-1] (3.1.1), [MQTT-3.2.2-2] (5.0): clean start means
		// session present 0.
		if c.SessionPresent() {
			present.Add(1)
		}
		if err := disconnect(c, false); err != nil {
			errOnce.Do(func() { firstErr = err })
		}
		return nil
	})
	to := clock()
	close(stop)
	perr := <-pubErr
	pc.Close()

	burst := span{from, to}
	r.Seconds = burst.seconds()
	r.Rate = float64(cfg.n) / r.Seconds
	r.Failed, r.Present = failed.Load(), present.Load()
	r.Burst = figures(pub.samples, burst.overlaps, burst)
	idle := span{idleFrom, from}
	r.Idle = figures(pub.samples, idle.within, span{})
	switch {
	case perr != nil:
		r.Err = perr.Error()
		return r, perr
	case firstErr != nil:
		r.Err = firstErr.Error()
		return r, fmt.Errorf("burst: %d of %d reconnects failed: %w", r.Failed, cfg.n, firstErr)
	}
	return r, nil
}

// fillTopics publishes perTopic QoS 1 messages of size bytes on each of n
// topics, from a few publishers with a window each, and waits for every
// PUBACK (at most ackTimeout). opts names the publishers' connections.
func fillTopics(n int, topicOf func(int) string, perTopic, size int, ackTimeout time.Duration, opts func(string) connOptions) error {
	if perTopic == 0 {
		return nil
	}
	const pubs, window = 4, 64
	payload := make([]byte, size)
	return parallelN(pubs, pubs, func(j int) error {
		var acked, refused atomic.Int64
		want := int64(0)
		for i := j; i < n; i += pubs {
			want += int64(perTopic)
		}
		done := make(chan struct{})
		o := opts(fmt.Sprintf("fill%d", j))
		o.cleanOnly, o.window = true, window
		o.onAck = func(a *client.Ack) {
			if !a.Final {
				return
			}
			if a.Code >= 0x80 {
				refused.Add(1)
			}
			if acked.Add(1) == want {
				close(done)
			}
		}
		c, err := dial(o)
		if err != nil {
			return err
		}
		defer c.Close()
		if want == 0 {
			return nil
		}
		for i := j; i < n; i += pubs {
			p := packet.Publish{QoS: 1, Topic: topicOf(i), Payload: payload}
			for range perTopic {
				if err := c.Publish(context.Background(), &p); err != nil {
					return fmt.Errorf("fill: %w", err)
				}
			}
		}
		select {
		case <-done:
		case <-c.Done():
			return fmt.Errorf("fill: connection ended: %v", c.Err())
		case <-time.After(ackTimeout):
			return fmt.Errorf("fill: %d of %d PUBACKs after %v", acked.Load(), want, ackTimeout)
		}
		if refused.Load() > 0 {
			return fmt.Errorf("fill: %d publishes refused", refused.Load())
		}
		return disconnect(c, false)
	})
}
