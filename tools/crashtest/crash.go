package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// The crash controller. It alone starts and kills the broker. A crash is a
// SIGKILL of the broker process at one of these moments:
//
//	uptime       50-500 ms after the port started accepting
//	after_ack    right after the K-th acknowledgement (PUBACK/PUBREC) seen
//	             by a publisher, K from 1 to 512
//	after_deliv  right after the K-th first delivery seen by a subscriber
//	startup      replay-crash: a random moment of the expected startup
//	             time, usually before the port accepts (replay running)
//	at_ready     replay-crash: as soon as the port accepts, or 0-3 ms later
//	final        once, after the publishers finished: everything
//	             acknowledged must survive it
//
// The clients know nothing of this: they see their connections drop and
// reconnect with backoff until the port accepts again.

// crashPlan adapts the crash phase to a mode.
type crashPlan struct {
	until        <-chan struct{} // closed: the crash phase ends early
	startupKills bool
	// ackSpan, if set, makes every kill an after_ack kill with K drawn
	// from [1, ackSpan]: crashes spread over a known amount of traffic.
	ackSpan   int
	afterKill func() // right after each kill
	// side, if set, picks the broker to kill (it sets run.b) before each
	// kill and returns its name, which prefixes the moment: bridge mode.
	side func() string
	// finals is how many final crashes follow the crash phase (0: 1);
	// the crash phase leaves them room in Crashes.
	finals     int
	afterReady func(ctx context.Context) error // after each restart, once the port accepts
}

const readyTimeout = 60 * time.Second

// crashPhase kills and restarts the broker until Crashes-1 kills were made
// (the last one is the final crash), Duration passed, or plan.until closed;
// with no kill to make, it lasts Duration (or until plan.until).
// The broker is running and accepting when it returns nil.
func (r *run) crashPhase(ctx context.Context, plan *crashPlan) error {
	budget := r.cfg.Crashes - max(1, plan.finals)
	deadline := time.Now().Add(r.cfg.Duration)
	rng := r.rng(1)
	if budget <= 0 {
		// No crash before the final one: just let traffic run.
		sleepCtx(ctx, r.cfg.Duration, plan.until)
		return ctx.Err()
	}
	for r.crashCount() < budget {
		if time.Now().After(deadline) {
			r.log.Info("crash phase: duration reached", "crashes", r.crashCount())
			return nil
		}
		kind, ok := r.awaitKillMoment(ctx, rng, plan, deadline)
		if !ok {
			return ctx.Err()
		}
		if err := r.kill(kind, plan); err != nil {
			return err
		}
		if err := r.restart(ctx, rng, plan, budget); err != nil {
			return err
		}
	}
	return nil
}

// awaitKillMoment waits for the next kill moment; false means the crash
// phase is over (until closed, deadline or ctx).
func (r *run) awaitKillMoment(ctx context.Context, rng *rand.Rand, plan *crashPlan, deadline time.Time) (string, bool) {
	var kind string
	var wait <-chan time.Time
	var t *time.Timer
	choice := rng.IntN(3)
	if plan.ackSpan > 0 {
		choice = -1
	}
	switch choice {
	case 0:
		kind = "uptime"
		t = time.NewTimer(time.Duration(50+rng.IntN(451)) * time.Millisecond)
		wait = t.C
	default:
		ev := evAck
		kind = "after_ack"
		if rng.IntN(2) == 0 {
			ev, kind = evDelivery, "after_deliv"
		}
		k := uint64(1) << rng.IntN(10)
		if plan.ackSpan > 0 {
			ev, kind, k = evAck, "after_ack", 1+rng.Uint64N(uint64(plan.ackSpan))
		}
		select { // drop a stale token
		case <-r.trigger:
		default:
		}
		r.target[ev].Store(r.events[ev].Load() + k)
		defer r.target[ev].Store(0)
		t = time.NewTimer(3 * time.Second) // no traffic: kill anyway
		wait = t.C
	}
	defer t.Stop()
	end := time.NewTimer(time.Until(deadline))
	defer end.Stop()
	select {
	case <-wait:
	case <-r.trigger:
	case <-plan.until:
		return "", false
	case <-end.C:
		return "", false
	case <-ctx.Done():
		return "", false
	}
	return kind, true
}

// kill SIGKILLs the broker and counts the crash.
func (r *run) kill(kind string, plan *crashPlan) error {
	r.quota.killing.Add(1) // before the connections drop (quota.go)
	if plan.side != nil {
		kind = plan.side() + "_" + kind
	}
	if err := r.b.kill(); err != nil {
		return err
	}
	r.mu.Lock()
	r.mu.crashes++
	r.mu.kills[kind]++
	n := r.mu.crashes
	r.mu.Unlock()
	r.log.Debug("killed broker", "crash", n, "moment", kind)
	if plan.afterKill != nil {
		plan.afterKill()
	}
	return nil
}

// restart starts the broker until it is up and accepting. With
// startupKills, it may first kill it (more than once) during startup.
func (r *run) restart(ctx context.Context, rng *rand.Rand, plan *crashPlan, budget int) error {
	for {
		if err := r.b.start(); err != nil {
			return err
		}
		if plan.startupKills && r.crashCount() < budget && rng.IntN(10) < 6 {
			if rng.IntN(2) == 0 {
				d := time.Duration(rng.Int64N(int64(r.startupEst)*13/10 + 1))
				if !sleepCtx(ctx, d, nil) {
					return ctx.Err()
				}
				if err := r.kill("startup", plan); err != nil {
					return err
				}
			} else {
				if _, err := r.b.waitReady(ctx, readyTimeout); err != nil {
					return err
				}
				if d := time.Duration(rng.IntN(4)) * time.Millisecond; d > 0 {
					time.Sleep(d)
				}
				if err := r.kill("at_ready", plan); err != nil {
					return err
				}
			}
			continue
		}
		d, err := r.b.waitReady(ctx, readyTimeout)
		if err != nil {
			return fmt.Errorf("restart: %w", err)
		}
		r.startupEst = (r.startupEst*3 + d) / 4
		r.mu.Lock()
		r.mu.details["startup_ms_max"] = max(r.mu.details["startup_ms_max"], int(d.Milliseconds()))
		r.mu.Unlock()
		if plan.afterReady != nil {
			return plan.afterReady(ctx)
		}
		return nil
	}
}

// finalCrash kills the broker once more after the publishers finished (so
// exactly what was acknowledged must survive), unless crashes are off, and
// restarts it.
func (r *run) finalCrash(ctx context.Context, plan *crashPlan) error {
	if r.cfg.Crashes <= 0 {
		return nil
	}
	if err := r.kill("final", plan); err != nil {
		return err
	}
	final := *plan
	final.startupKills = false
	return r.restart(ctx, nil, &final, 0)
}
