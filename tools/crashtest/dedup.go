package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keelmq/keel/engine/packet"
)

// The dedup mode (ModeDedup, -mode dedup): Keel's dedup window (README,
// "The dedup window") under kill -9. Publishers are 5.0 producers that
// retry the way a timeout-retry producer does: every message carries a
// message id in the user property msg-id, and
//
//   - each connection is a clean start (the client library never resends
//     by itself), and on every reconnect the producer resends, with new
//     packet ids, every message it has no PUBACK for, and also about a
//     quarter of the last 64 it has one for (the PUBACK came after its
//     timeout had fired);
//   - while connected, after about one new message in 16 it resends one of
//     its last Window messages at once, acknowledged or still in flight
//     (a timeout shorter than the commit).
//
// Without the window each of those resends is a new message to MQTT and is
// routed again; with it (keel started with dedup_window, DedupWindow) none
// may be. Subscribers are persistent 5.0 sessions at the test's QoS that
// come and go as in the offline mode.
//
// The oracle has to tell a copy routed twice from one copy delivered
// twice: a QoS 1 subscriber legitimately gets a redelivery (DUP=1, the
// same packet id) of a copy it had not acknowledged, or whose PUBACK the
// kill undid, after its own reconnect [MQTT-4.4.0-1]. So every
// transmission of a message carries its own marker, a second user
// property ct-attempt numbering the publisher's transmissions, which the
// broker forwards unchanged [MQTT-3.3.2-18] and which no redelivery can
// change: a redelivery repeats the routed PUBLISH, attempt included. For
// each subscriber and message:
//
//   - deliveries carrying two or more attempts mean the broker routed two
//     transmissions of one message id: counted as duplicated, a violation
//     at QoS 1 too (attempts beyond the first);
//   - further deliveries of the same attempt are redeliveries, which
//     QoS 1 allows: counted in the detail redelivered (an anomaly if one
//     of them is not marked DUP).
//
// Attempts are never transmitted twice (no library resend, TCP does not
// duplicate), so the count is exact: a broker that routes a retry shows
// it, whatever packet id or DUP flag the copy arrives with. The control
// run, DedupWindow < 0 (keel with the window off), must report duplicates:
// the proof that the tester sees them (dedup_test.go).
//
// Every acknowledged message must reach every subscriber (lost), and the
// first deliveries of each publisher must be in order (reordered): resends
// go out in sequence order before anything new.
//
// keel is started with --config FILE holding dedup_window (dedupConf);
// a -broker-cmd broker is on its own: it must dedup by the user property
// msg-id for the run to pass.
const ModeDedup = "dedup"

const (
	dedupProperty   = "msg-id"     // keel's default dedup_property
	attemptProperty = "ct-attempt" // this tester's per-transmission marker
	dedupRecent     = 64           // acknowledged messages a reconnect may resend
)

// dedupConf writes the keel config file of a dedup run: the window, or
// the window off (DedupWindow < 0).
func dedupConf(cfg Config) string {
	if cfg.Mode != ModeDedup {
		return ""
	}
	return fmt.Sprintf("# -mode dedup (dedup.go)\ndedup_window = %s\ndedup_property = %s\n", cfg.DedupWindow, dedupProperty)
}

// producer is one retrying publisher's memory of what it sent.
type producer struct {
	c     *client
	pub   uint32
	topic string
	rng   *rand.Rand
	stop  <-chan struct{}

	// Owned by the publishing goroutine.
	seq       uint32 // the last new message
	attempt   uint32 // the last transmission
	exhausted bool
	interval  time.Duration
	nextAt    time.Time

	changed chan struct{} // a token after an acknowledgement

	resentUnacked, resentAcked, retried atomic.Int64

	mu struct {
		sync.Mutex
		unacked map[uint32]struct{} // sent (or about to be), no PUBACK yet
		recent  []uint32            // the last dedupRecent acknowledged, a ring
		next    int                 // the ring's next slot
	}
}

// acked is called (on the client's reader) for each acknowledged message.
func (p *producer) acked(k msgKey) {
	p.mu.Lock()
	if _, ok := p.mu.unacked[k.seq]; ok {
		delete(p.mu.unacked, k.seq)
		if len(p.mu.recent) < dedupRecent {
			p.mu.recent = append(p.mu.recent, k.seq)
		} else {
			p.mu.recent[p.mu.next] = k.seq
			p.mu.next = (p.mu.next + 1) % dedupRecent
		}
	}
	p.mu.Unlock()
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

func (p *producer) pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.mu.unacked)
}

// resends is what a reconnect sends first, in sequence order: every
// unacknowledged message, and a quarter of the recent acknowledged ones.
func (p *producer) resends() []uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var seqs []uint32
	for s := range p.mu.unacked {
		seqs = append(seqs, s)
	}
	p.resentUnacked.Add(int64(len(seqs)))
	for _, s := range p.mu.recent {
		if p.rng.IntN(4) == 0 {
			seqs = append(seqs, s)
			p.resentAcked.Add(1)
		}
	}
	slices.Sort(seqs)
	return seqs
}

// send transmits message seq once more, as a new PUBLISH with a new
// packet id and the next attempt number; false: the connection is gone
// (the message stays unacknowledged, resent on the next one).
func (p *producer) send(ctx context.Context, cn *conn, seq uint32) bool {
	c := p.c
	p.attempt++
	pk := &packet.Publish{QoS: c.r.cfg.QoS, Topic: p.topic,
		Payload: encodePayload(nil, c.r.nonce, msgKey{p.pub, seq}, c.r.cfg.PayloadSize)}
	pk.Props.User = []packet.UserProperty{
		{Key: dedupProperty, Value: "m" + strconv.FormatUint(uint64(seq), 10)},
		{Key: attemptProperty, Value: strconv.FormatUint(uint64(p.attempt), 10)},
	}
	return cn.c.Publish(ctx, pk) == nil
}

// run publishes on cn until the producer is done (true: stop closed and
// every message acknowledged) or cn dies (false).
func (p *producer) run(ctx context.Context, cn *conn) bool {
	for _, s := range p.resends() {
		if !p.send(ctx, cn, s) {
			return false
		}
	}
	for {
		if !p.exhausted {
			select {
			case <-p.stop:
				p.exhausted = true
			default:
			}
		}
		if p.exhausted {
			if p.pending() == 0 {
				return true
			}
			select {
			case <-p.changed:
			case <-cn.dead:
				return false
			case <-ctx.Done():
				return false
			}
			continue
		}
		if p.interval > 0 {
			if d := time.Until(p.nextAt); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-p.stop:
					t.Stop()
					continue
				case <-cn.dead:
					t.Stop()
					return false
				case <-ctx.Done():
					t.Stop()
					return false
				}
			}
			p.nextAt = p.nextAt.Add(p.interval)
			if time.Since(p.nextAt) > time.Second {
				p.nextAt = time.Now() // do not burst after an outage
			}
		}
		p.seq++
		p.mu.Lock()
		p.mu.unacked[p.seq] = struct{}{} // before its PUBACK can come
		p.mu.Unlock()
		if !p.send(ctx, cn, p.seq) {
			return false
		}
		if p.rng.IntN(16) == 0 {
			// A timeout shorter than the commit: one of the last Window
			// messages again, acknowledged or not.
			back := uint32(p.rng.IntN(p.c.r.cfg.Window))
			if back < p.seq {
				p.retried.Add(1)
				if !p.send(ctx, cn, p.seq-back) {
					return false
				}
			}
		}
	}
}

// runProducer keeps the producer connected, a clean start each time, until
// it is done or ctx ends.
func (p *producer) runProducer(ctx context.Context, rate float64) {
	if rate > 0 {
		p.interval = time.Duration(float64(time.Second) / rate)
		p.nextAt = time.Now()
	}
	for {
		cn, err := p.c.connect(ctx)
		if err != nil {
			return
		}
		if p.run(ctx, cn) {
			p.c.disconnect(cn)
			return
		}
		p.c.close(cn)
		if ctx.Err() != nil {
			return
		}
	}
}

// copies records, for one subscriber, which attempts of each message it
// got.
type copies struct {
	name string
	mu   struct {
		sync.Mutex
		byKey       map[msgKey]*keyCopies
		rerouted    int // attempts beyond the first, all keys
		redelivered int // deliveries of an attempt already delivered
		examples    []string
	}
}

type keyCopies struct {
	attempts []uint32
	vias     []via
}

func newCopies(name string) *copies {
	c := &copies{name: name}
	c.mu.byKey = make(map[msgKey]*keyCopies)
	return c
}

// record notes one delivery of attempt of k; it reports whether the
// delivery repeated an attempt already delivered.
func (c *copies) record(k msgKey, attempt uint32, v via) (redelivery bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	kc := c.mu.byKey[k]
	if kc == nil {
		kc = &keyCopies{}
		c.mu.byKey[k] = kc
	}
	if slices.Contains(kc.attempts, attempt) {
		c.mu.redelivered++
		return true
	}
	if len(kc.attempts) > 0 {
		c.mu.rerouted++
		if len(c.mu.examples) < maxExamples {
			c.mu.examples = append(c.mu.examples, fmt.Sprintf(
				"duplicated: %s got %v as attempt %d (%v) after attempt %d (%v): the broker routed two transmissions of one message id",
				c.name, k, attempt, v, kc.attempts[0], kc.vias[0]))
		}
	}
	kc.attempts = append(kc.attempts, attempt)
	kc.vias = append(kc.vias, v)
	return false
}

// attemptOf is the ct-attempt property of p.
func attemptOf(p *packet.Publish) (uint32, bool) {
	for _, u := range p.Props.User {
		if u.Key == attemptProperty {
			n, err := strconv.ParseUint(u.Value, 10, 32)
			return uint32(n), err == nil
		}
	}
	return 0, false
}

// runDedup runs the dedup mode: P retrying producers on crash/p{N}, S
// churning subscribers on crash/#.
func (r *run) runDedup(ctx context.Context) error {
	cfg := r.cfg
	cctx, cancelClients := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancelClients(); wg.Wait() }()

	stayOnline := make(chan struct{})
	ledgers := make([]*ledger, cfg.Subscribers)
	cps := make([]*copies, cfg.Subscribers)
	subs := make([]*client, cfg.Subscribers)
	for i := range subs {
		id := r.clientID("s", i)
		l, cp := newLedger(id), newCopies(id)
		ledgers[i], cps[i] = l, cp
		deliver := func(cn *conn, p *packet.Publish, k msgKey, ok bool) {
			if !ok {
				return
			}
			att, found := attemptOf(p)
			if !found {
				r.anomaly("no_attempt_property", "%s: %v arrived without its %s user property", id, k, attemptProperty)
			}
			v := via{cn.n, p.PacketID, p.Dup}
			if cp.record(k, att, v) && !p.Dup {
				r.anomaly("redelivery_without_dup", "%s: %v attempt %d again (%v) without DUP", id, k, att, v)
			}
			if l.record(k, v) {
				r.bump(evDelivery)
			}
		}
		c := r.newClient(clientOpts{id: id, subs: []string{"crash/#"}, deliver: deliver})
		subs[i] = c
		rng := r.rng(uint64(100 + i))
		wg.Go(func() { c.runSubscriber(cctx, true, stayOnline, rng) })
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
	prods := make([]*producer, cfg.Publishers)
	for i := range cfg.Publishers {
		p := &producer{pub: uint32(i), topic: fmt.Sprintf("crash/p%d", i), rng: r.rng(uint64(200 + i)),
			stop: stopPub, changed: make(chan struct{}, 1)}
		p.mu.unacked = make(map[uint32]struct{})
		p.c = r.newClient(clientOpts{id: r.clientID("p", i), clean: true,
			onAccept: func(k msgKey) { accepted.add(k); p.acked(k) }})
		pubs[i], prods[i] = p.c, p
		pubWG.Add(1)
		wg.Go(func() {
			defer pubWG.Done()
			p.runProducer(cctx, cfg.Rate)
		})
	}
	wg.Go(func() { pubWG.Wait(); close(pubsDone) })

	plan := crashPlan{}
	err := r.waitConnected(ctx, pubs)
	if err == nil {
		err = r.crashPhase(ctx, &plan)
	}
	close(stopPub)
	close(stayOnline)
	if err != nil {
		return err
	}
	r.log.Info("crash phase over; producers finishing", "crashes", r.crashCount(), "accepted", len(accepted.snapshot()))
	if !waitDone(ctx, pubsDone, finishTimeout) {
		r.problem("producers still had unacknowledged messages %v after the crash phase", finishTimeout)
	}
	if err := r.finalCrash(ctx, &plan); err != nil {
		return err
	}

	r.drain(ctx, missingFrom(accepted, ledgers), distinctIn(ledgers))
	cancelClients()
	wg.Wait()

	all := make([]int, len(ledgers))
	for i := range all {
		all[i] = i
	}
	t := verify(accepted.snapshot(), ledgers, func(msgKey) []int { return all })
	// The ledgers' duplicates are redeliveries and reroutes together: the
	// attempts tell them apart.
	t.duplicated = 0
	redelivered := 0
	for _, cp := range cps {
		cp.mu.Lock()
		t.duplicated += cp.mu.rerouted
		redelivered += cp.mu.redelivered
		for _, e := range cp.mu.examples {
			t.example("%s", e)
		}
		cp.mu.Unlock()
	}
	r.addTally("", t)
	var sent, resentUnacked, resentAcked, retried int64
	for _, p := range prods {
		sent += int64(p.attempt) // the producers are done: no race
		resentUnacked += p.resentUnacked.Load()
		resentAcked += p.resentAcked.Load()
		retried += p.retried.Load()
	}
	r.mu.Lock()
	r.mu.details["redelivered"] += redelivered
	r.mu.details["transmissions"] += int(sent)
	r.mu.details["resent_unacked"] += int(resentUnacked)
	r.mu.details["resent_acked"] += int(resentAcked)
	r.mu.details["retried_connected"] += int(retried)
	r.mu.Unlock()
	return nil
}
