package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	mqtt "github.com/keelmq/keel/engine/client"
	"github.com/keelmq/keel/engine/packet"
)

// Bridge mode (Config.Bridge, -bridge): the promise across a hop between
// two brokers. Two keel processes on loopback, A and B, each on its own
// data directory; A has a bridge to B (bridgeConf):
//
//	topic = crash/ab/# out QOS    A's messages forwarded to B
//	topic = crash/ba/# in QOS     B's messages published on A
//
// at the run's QoS and protocol version, with a persistent session on B.
// Publisher i publishes on side i%2 (even: A, topic crash/ab/p{i}; odd: B,
// crash/ba/p{i}); subscriber j lives on the other side of the publishers
// with the same parity (even: on B, crash/ab/+; odd: on A, crash/ba/+), so
// every message crosses the bridge, both ways. The kills alternate between
// A and B (moments named a_... and b_...); after the publishers finish,
// both are killed once more (a_final, b_final). The oracle is the
// standard one: every message a publisher's broker acknowledged reaches
// every subscriber of its direction (QoS 2: once), in order per
// publisher, and no session is lost, the bridge's included (its own
// sessions are not seen by the tester: a loss there shows as lost
// messages).
//
// The run waits for the bridge to carry a probe each way (crash/ab/probe/1,
// crash/ba/probe/1, outside the subscribers' filters) before it publishes:
// a message published before the bridge's subscriptions exist is not the
// bridge's to carry.

// bridgeName is the [bridge NAME] of A's configuration.
const bridgeName = "crashtest"

func (c Config) checkBridge() error {
	switch {
	case c.Broker != BrokerKeel:
		return errors.New("crashtest: bridge mode runs two keel processes: no -mosquitto or -broker-cmd")
	case c.Mode != ModeOnline && c.Mode != ModeOffline:
		return fmt.Errorf("crashtest: bridge mode takes mode %s or %s, not %q", ModeOnline, ModeOffline, c.Mode)
	case c.Auth:
		return errors.New("crashtest: bridge mode does not take -auth")
	case c.TLS || c.WebSocket || c.Quota:
		return errors.New("crashtest: bridge mode does not take -tls, -ws or -quota")
	case c.Publishers < 2 || c.Subscribers < 2:
		return errors.New("crashtest: bridge mode needs at least 2 publishers and 2 subscribers (one each way)")
	case c.DataDir != "":
		return errors.New("crashtest: bridge mode makes its own data directories in the work dir: no -data")
	}
	return nil
}

// bridgeConf is A's configuration file: the bridge to B.
func (r *run) bridgeConf(addrB string) string {
	version := "mqttv311"
	if r.cfg.Version == packet.V5 {
		version = "mqttv50"
	}
	return fmt.Sprintf(`# crashtest bridge mode (tools/crashtest/bridge.go)
[bridge %s]
address = %s
topic = crash/ab/# out %d
topic = crash/ba/# in %d
remote_clientid = %s-bridge
bridge_protocol_version = %s
try_private = false
restart_timeout = 1
keepalive_interval = 10
`, bridgeName, addrB, r.cfg.QoS, r.cfg.QoS, r.prefix, version) + strings.Join(append(r.cfg.BridgeConf, ""), "\n")
}

// prepareBridge makes B (started here, and accepting when it returns) and
// gives A (run.b, not started yet) its configuration.
func (r *run) prepareBridge(ctx context.Context, work string) error {
	addrB, err := freeAddr()
	if err != nil {
		return err
	}
	dataB := filepath.Join(work, "data-b")
	if err := os.MkdirAll(dataB, 0o755); err != nil {
		return err
	}
	conf := filepath.Join(work, "a.conf")
	if err := os.WriteFile(conf, []byte(r.bridgeConf(addrB)), 0o644); err != nil {
		return err
	}
	a := r.b
	a.args = append(a.args, "--config", conf)
	b := &broker{args: []string{a.args[0], "serve", "--listen", addrB, "--data", dataB}, addr: addrB,
		logPath: filepath.Join(work, "broker-b.log")}
	r.sides = [2]*broker{a, b}
	r.log.Info("starting broker B", "argv", b.args)
	if err := b.start(); err != nil {
		return err
	}
	if _, err := b.waitReady(ctx, 30*time.Second); err != nil {
		return fmt.Errorf("B: %w", err)
	}
	return nil
}

// bridgeTopic is publisher i's topic; its side is i%2.
func bridgeTopic(i int) string {
	if i%2 == 0 {
		return fmt.Sprintf("crash/ab/p%d", i)
	}
	return fmt.Sprintf("crash/ba/p%d", i)
}

// runBridge runs the online and offline modes across the bridge.
func (r *run) runBridge(ctx context.Context) error {
	cfg := r.cfg
	a, b := r.sides[0], r.sides[1]
	churn := cfg.Mode != ModeOnline
	cctx, cancelClients := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancelClients(); wg.Wait() }()

	stayOnline := make(chan struct{})
	ledgers := make([]*ledger, cfg.Subscribers)
	subs := make([]*client, cfg.Subscribers)
	for j := range subs {
		o := clientOpts{id: r.clientID("s", j), addr: b.addr, subs: []string{"crash/ab/+"}}
		if j%2 == 1 {
			o.addr, o.subs = a.addr, []string{"crash/ba/+"}
		}
		l := newLedger(o.id)
		ledgers[j] = l
		o.deliver = r.deliverTo(l)
		c := r.newClient(o)
		subs[j] = c
		rng := r.rng(uint64(100 + j))
		wg.Go(func() { c.runSubscriber(cctx, churn, stayOnline, rng) })
	}
	if err := r.waitSubscribed(ctx, subs); err != nil {
		close(stayOnline)
		return err
	}
	for _, dir := range []struct{ from, to, topic string }{{a.addr, b.addr, "crash/ab/probe/1"}, {b.addr, a.addr, "crash/ba/probe/1"}} {
		if err := r.probeBridge(ctx, dir.from, dir.to, dir.topic); err != nil {
			close(stayOnline)
			return err
		}
	}

	accepted := newAcceptSet()
	stopPub := make(chan struct{})
	pubsDone := make(chan struct{})
	var pubWG sync.WaitGroup
	pubs := make([]*client, cfg.Publishers)
	for i := range cfg.Publishers {
		addr := a.addr
		if i%2 == 1 {
			addr = b.addr
		}
		c := r.newClient(clientOpts{id: r.clientID("p", i), addr: addr, onAccept: accepted.add})
		pubs[i] = c
		src := &seqSource{pub: uint32(i), topic: bridgeTopic(i)}
		pubWG.Add(1)
		wg.Go(func() {
			defer pubWG.Done()
			c.runPublisher(cctx, src, stopPub, cfg.Rate)
		})
	}
	wg.Go(func() { pubWG.Wait(); close(pubsDone) })

	turn := 0
	plan := crashPlan{finals: 2, side: func() string {
		i := turn % 2
		turn++
		r.b = r.sides[i]
		return [2]string{"a", "b"}[i]
	}}
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
	if r.cfg.Crashes > 0 {
		turn = 0 // A, then B
		for range 2 {
			if err := r.finalCrash(ctx, &plan); err != nil {
				return err
			}
		}
	}
	// Run checks run.b: A. B is checked here.
	r.b = a
	defer func() {
		if err := b.alive(); err != nil {
			r.problem("B: %v", err)
		}
	}()

	missing := func() int {
		acc := accepted.snapshot()
		n := 0
		for j, l := range ledgers {
			var mine []msgKey
			for _, k := range acc {
				if int(k.pub)%2 == j%2 {
					mine = append(mine, k)
				}
			}
			n += l.missing(mine)
		}
		return n
	}
	r.drain(ctx, missing, distinctIn(ledgers))
	cancelClients()
	wg.Wait()
	r.addTally("", verify(accepted.snapshot(), ledgers, func(k msgKey) []int {
		var to []int
		for j := range ledgers {
			if j%2 == int(k.pub)%2 {
				to = append(to, j)
			}
		}
		return to
	}))
	return nil
}

// probeBridge waits until a QoS 1 message published on topic at from
// reaches a subscriber at to: the bridge is connected and subscribed on
// both sides. It publishes again every 250 ms, for at most 60 s.
func (r *run) probeBridge(ctx context.Context, from, to, topic string) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	got := make(chan struct{}, 1)
	sub, err := mqtt.Connect(ctx, mqtt.Options{Addr: to, Version: r.cfg.Version, ClientID: r.clientID("probe-sub-", len(topic)),
		CleanStart: true, Session: mqtt.NewMemorySession(), ConnectTimeout: connectTimeout,
		OnMessage: func(p *packet.Publish) {
			select {
			case got <- struct{}{}:
			default:
			}
		}})
	if err != nil {
		return fmt.Errorf("bridge probe: subscriber at %s: %w", to, err)
	}
	defer sub.Close()
	if _, err := sub.Subscribe(ctx, &packet.Subscribe{Subs: []packet.Subscription{{Filter: topic, QoS: 1}}}); err != nil {
		return fmt.Errorf("bridge probe: subscribe at %s: %w", to, err)
	}
	pub, err := mqtt.Connect(ctx, mqtt.Options{Addr: from, Version: r.cfg.Version, ClientID: r.clientID("probe-pub-", len(topic)),
		CleanStart: true, Session: mqtt.NewMemorySession(), ConnectTimeout: connectTimeout})
	if err != nil {
		return fmt.Errorf("bridge probe: publisher at %s: %w", from, err)
	}
	defer pub.Close()
	start := time.Now()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := pub.Publish(ctx, &packet.Publish{QoS: 1, Topic: topic, Payload: []byte("probe")}); err != nil {
			return fmt.Errorf("bridge probe: publish at %s: %w", from, err)
		}
		select {
		case <-got:
			r.log.Info("bridge carries messages", "topic", topic, "after", time.Since(start).Round(time.Millisecond))
			return nil
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("bridge probe: nothing on %s reached %s from %s in 60 s (see broker.log)", topic, to, from)
		}
	}
}
