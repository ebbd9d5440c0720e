package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/keelmq/keel/engine/packet"
)

// manySource publishes round by round: seq r to every session's topic,
// then seq r+1. Its keys use the session as pub.
type manySource struct {
	sessions, per int
	i, round      int
}

func (s *manySource) next() (msgKey, string, bool, bool) {
	if s.round >= s.per {
		return msgKey{}, "", false, false
	}
	k := msgKey{uint32(s.i), uint32(s.round + 1)}
	s.i++
	if s.i == s.sessions {
		s.i, s.round = 0, s.round+1
	}
	return k, manyTopic(int(k.pub)), false, true
}

func manyTopic(i int) string { return fmt.Sprintf("crash/m/%d", i) }

const manyWorkers = 32

// idleWait is how long a check waits for one more expected message before
// it counts the rest missing. It costs time only when something is
// missing; it is generous so that a loaded machine (CI runs every package
// at once) does not turn a slow broker into a lost message.
const idleWait = 3 * time.Second

// forEach runs f(i) for i in [0, n) on a few workers and returns the first
// error.
func forEach(ctx context.Context, n, workers int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(workers, n) {
		wg.Go(func() {
			for i := range next {
				if err := f(ctx, i); err != nil {
					cancel(err)
				}
			}
		})
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	return context.Cause(ctx)
}

// runMany: Sessions persistent sessions, each subscribed to its own topic
// and then offline; one publisher sends PerSession messages to each while
// the broker crashes; then each session is connected in turn and drained.
func (r *run) runMany(ctx context.Context) error {
	cfg := r.cfg
	ledgers := make([]*ledger, cfg.Sessions)
	clients := make([]*client, cfg.Sessions)
	for i := range clients {
		id := r.clientID("m", i)
		ledgers[i] = newLedger(id)
		clients[i] = r.newClient(clientOpts{id: id, subs: []string{manyTopic(i)}, deliver: r.deliverTo(ledgers[i])})
	}
	start := time.Now()
	err := forEach(ctx, cfg.Sessions, manyWorkers, func(ctx context.Context, i int) error {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		cn, err := clients[i].connect(cctx)
		if err != nil {
			return fmt.Errorf("setup: session %d: %w", i, err)
		}
		clients[i].disconnect(cn)
		return nil
	})
	if err != nil {
		return err
	}
	r.log.Info("sessions created", "sessions", cfg.Sessions, "took", time.Since(start).Round(time.Millisecond))

	cctx, cancelPub := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancelPub(); wg.Wait() }()
	accepted := newAcceptSet()
	pub := r.newClient(clientOpts{id: r.clientID("p", 0), onAccept: accepted.add})
	src := &manySource{sessions: cfg.Sessions, per: cfg.PerSession}
	stopPub := make(chan struct{})
	pubDone := make(chan struct{})
	wg.Go(func() {
		defer close(pubDone)
		pub.runPublisher(cctx, src, stopPub, cfg.Rate)
	})

	// Kills spread over the publisher's acks; it publishes everything
	// (stopPub stays open), whenever the crashes end.
	total := cfg.Sessions * cfg.PerSession
	// K averages half the span: a span of total/Crashes leaves room for
	// every kill before the publisher is done.
	plan := crashPlan{until: pubDone, ackSpan: max(1, total/max(1, cfg.Crashes))}
	err = r.crashPhase(ctx, &plan)
	defer close(stopPub)
	if err != nil {
		return err
	}
	select {
	case <-pubDone:
	case <-ctx.Done():
		return fmt.Errorf("publisher not done: %w", ctx.Err())
	}
	if err := r.finalCrash(ctx, &plan); err != nil {
		return err
	}

	acc := accepted.snapshot()
	want := make([][]msgKey, cfg.Sessions)
	for _, k := range acc {
		want[k.pub] = append(want[k.pub], k)
	}
	start = time.Now()
	err = forEach(ctx, cfg.Sessions, manyWorkers, func(ctx context.Context, i int) error {
		r.drainSession(ctx, clients[i], ledgers[i], want[i])
		return nil
	})
	if err != nil {
		return err
	}
	r.log.Info("sessions drained", "took", time.Since(start).Round(time.Millisecond))
	r.addTally("", verify(acc, ledgers, func(k msgKey) []int { return []int{int(k.pub)} }))
	return nil
}

// drainSession connects one offline session and waits for its messages:
// until it has want, or nothing new came for idleWait, or 10 s.
func (r *run) drainSession(ctx context.Context, c *client, l *ledger, want []msgKey) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cn, err := c.connect(ctx)
	if err != nil {
		return
	}
	defer c.disconnect(cn)
	c.mu.Lock()
	lost := c.mu.lastLost
	c.mu.Unlock()
	if lost {
		return // counted; its messages are gone with it
	}
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	idle := time.NewTimer(idleWait)
	defer idle.Stop()
	for l.missing(want) > 0 {
		select {
		case <-l.changed:
			idle.Reset(idleWait)
		case <-idle.C:
			return
		case <-deadline.C:
			return
		case <-cn.dead:
			return
		case <-ctx.Done():
			return
		}
	}
}

// retained tracks, per retained topic, the highest version the broker
// acknowledged.
type retained struct {
	mu struct {
		sync.Mutex
		accepted []uint32
	}
}

func (t *retained) accept(k msgKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.mu.accepted[k.pub] = max(t.mu.accepted[k.pub], k.seq)
}

func (t *retained) snapshot() []uint32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]uint32(nil), t.mu.accepted...)
}

// retSource sets crash/r/{k} to versions 1, 2, 3, ... round-robin over the
// topics, always retained.
type retSource struct {
	versions []uint32
	k        int
}

func (s *retSource) next() (msgKey, string, bool, bool) {
	k := s.k
	s.k = (s.k + 1) % len(s.versions)
	s.versions[k]++
	return msgKey{uint32(k), s.versions[k]}, retTopic(k), true, true
}

func retTopic(k int) string { return fmt.Sprintf("crash/r/%d", k) }

// runRetainWill: one publisher keeps updating retained values on Topics
// topics; after every restart a fresh clean client subscribes crash/r/#
// and each topic's retained value must be at least the last version
// acknowledged before the kill. Wills clients stay connected with a will
// each; whenever a connection is lost without DISCONNECT (the broker was
// killed), a persistent watcher on crash/will/# must get that will.
func (r *run) runRetainWill(ctx context.Context) error {
	cfg := r.cfg
	cctx, cancelClients := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancelClients(); wg.Wait() }()

	watchLedger := newLedger(r.clientID("w", 0))
	watcher := r.newClient(clientOpts{id: r.clientID("w", 0), subs: []string{"crash/will/#"}, deliver: r.deliverTo(watchLedger)})
	wg.Go(func() { watcher.runSubscriber(cctx, false, nil, r.rng(100)) })
	if err := r.waitSubscribed(ctx, []*client{watcher}); err != nil {
		return err
	}

	wills := newAcceptSet()
	stopWills := make(chan struct{})
	for i := range cfg.Wills {
		c := r.newClient(clientOpts{id: r.clientID("l", i), will: &willSpec{pub: uint32(i), topic: fmt.Sprintf("crash/will/%d", i)}})
		wg.Go(func() { c.runWill(cctx, stopWills, watchLedger, wills) })
	}

	ret := &retained{}
	ret.mu.accepted = make([]uint32, cfg.Topics)
	pub := r.newClient(clientOpts{id: r.clientID("p", 0), onAccept: ret.accept})
	stopPub := make(chan struct{})
	pubDone := make(chan struct{})
	wg.Go(func() {
		defer close(pubDone)
		pub.runPublisher(cctx, &retSource{versions: make([]uint32, cfg.Topics)}, stopPub, cfg.Rate)
	})

	var snap []uint32
	checks := 0
	plan := crashPlan{
		afterKill: func() { snap = ret.snapshot() },
		afterReady: func(ctx context.Context) error {
			checks++
			r.checkRetained(ctx, snap, checks)
			return nil
		},
	}
	err := r.crashPhase(ctx, &plan)
	close(stopPub)
	close(stopWills)
	if err != nil {
		return err
	}
	if !waitDone(ctx, pubDone, finishTimeout) {
		r.problem("retained publisher still had unacknowledged messages %v after the crash phase", finishTimeout)
	}
	if r.cfg.Crashes > 0 {
		if err := r.finalCrash(ctx, &plan); err != nil {
			return err
		}
	} else {
		checks++
		r.checkRetained(ctx, ret.snapshot(), checks)
	}

	r.drain(ctx,
		func() int { return watchLedger.missing(wills.snapshot()) },
		watchLedger.distinct)
	cancelClients()
	wg.Wait()
	r.addTally("wills", verify(wills.snapshot(), []*ledger{watchLedger}, func(msgKey) []int { return []int{0} }))
	return nil
}

// checkRetained subscribes a fresh clean client to crash/r/# and checks
// that each topic with an acknowledged version has a retained value at
// least that new.
func (r *run) checkRetained(ctx context.Context, snap []uint32, n int) {
	want := 0
	for _, v := range snap {
		if v > 0 {
			want++
		}
	}
	if want == 0 {
		return
	}
	var mu sync.Mutex
	got := make(map[uint32]uint32)
	changed := make(chan struct{}, 1)
	c := r.newClient(clientOpts{id: r.clientID("k", n), clean: true, subs: []string{"crash/r/#"},
		deliver: func(_ *conn, p *packet.Publish, k msgKey, ok bool) {
			if !ok || !p.Retain {
				return // a live update, not the stored value
			}
			mu.Lock()
			got[k.pub] = max(got[k.pub], k.seq)
			mu.Unlock()
			select {
			case changed <- struct{}{}:
			default:
			}
		}})
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cn, err := c.connect(cctx)
	if err != nil {
		r.problem("retained check %d: cannot connect: %v", n, err)
		return
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(got)
	}
	idle := time.NewTimer(idleWait)
	defer idle.Stop()
wait:
	for count() < want {
		select {
		case <-changed:
			idle.Reset(idleWait)
		case <-idle.C:
			break wait
		case <-cn.dead:
			break wait
		case <-cctx.Done():
			break wait
		}
	}
	c.disconnect(cn)

	var t tally
	mu.Lock()
	defer mu.Unlock()
	for k, v := range snap {
		if v == 0 {
			continue
		}
		t.accepted++
		switch g, ok := got[uint32(k)]; {
		case !ok:
			t.lost++
			t.example("retained check %d: %s has no retained value; version %d was acknowledged", n, retTopic(k), v)
		case g < v:
			t.lost++
			t.example("retained check %d: %s holds version %d; version %d was acknowledged", n, retTopic(k), g, v)
		default:
			t.delivered++
		}
	}
	r.addTally("retained", t)
}

// willWait bounds how long a will client waits, after losing its
// connection, for the watcher to see its will before connecting again (a
// broker that publishes a will only when its client returns would
// otherwise never be caught: the final crash catches it anyway).
const willWait = 5 * time.Second

// runWill keeps the client connected with a will whose payload carries a
// fresh generation on every CONNECT. When a connection it had a CONNACK
// for is lost (it never sends DISCONNECT), that will must be published: it
// is added to wills, and the client waits (at most 5 s) for the watcher to
// see it before connecting again. After stop it connects no more.
func (c *client) runWill(ctx context.Context, stop <-chan struct{}, watcher *ledger, wills *acceptSet) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		cn, err := c.connect(ctx)
		if err != nil {
			return
		}
		select {
		case <-cn.dead:
		case <-ctx.Done():
			c.close(cn)
			return
		}
		c.close(cn)
		k := msgKey{c.will.pub, cn.willGen}
		wills.add(k)
		lostAt := time.Now()
		for !watcher.has(k) {
			if time.Since(lostAt) > willWait {
				c.r.log.Info("will not seen yet; reconnecting anyway", "client", c.id, "will", k, "waited", willWait)
				break
			}
			if !sleepCtx(ctx, 5*time.Millisecond, stop) {
				break
			}
		}
		if watcher.has(k) {
			c.r.log.Debug("will seen", "client", c.id, "will", k, "after", time.Since(lostAt).Round(time.Millisecond))
		}
	}
}
