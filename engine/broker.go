// Package engine is Keel's broker: the per-client protocol state machine,
// topic routing, QoS flows, wills, keep alive, $SYS and counters.
//
// # Concurrency
//
// Each connection has one reader and one writer goroutine. All session and
// routing state is owned by one core goroutine (run), which takes events
// from the readers in arrival order, applies them to memory, and collects
// the durable writes of everything it took in one drain into one wal.Txn.
// The wal's committer syncs it; the Txn's Done then releases the packets
// that the drain produced (acks, deliveries), in order. So:
//
//   - no acknowledgement leaves before the state it acknowledges is synced;
//   - acks of one connection leave in the order its packets arrived (one
//     core, FIFO txns, in-order Done);
//   - readers never wait for an fsync: they hand events over and keep
//     reading, so one client's pipelined publishes share one sync.
//
// When a drain wrote nothing and no Txn is in flight, its packets are
// released at once (QoS 0 traffic costs no sync).
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keelmq/keel/engine/packet"
	"github.com/keelmq/keel/engine/topics"
	"github.com/keelmq/keel/retain"
	"github.com/keelmq/keel/sessions"
	"github.com/keelmq/keel/wal"
)

// Options configure a Broker. The zero value is valid: defaults are filled
// in by New.
type Options struct {
	Logger  *slog.Logger
	Version string // the build's version; $SYS/broker/version is "keel <Version>"

	MaxPacketSize     uint32 // bytes; 0: MQTT's maximum
	MaxKeepAlive      uint16 // seconds; 0: no limit. 5.0 clients above it get Server Keep Alive
	ReceiveMaximum    uint16 // inbound QoS 1/2 window per 5.0 client; 0: 65535
	MaxInflight       uint16 // outbound QoS 1/2 window per client; 0: 1024
	TopicAliasMaximum uint16 // 0: 100
	MaximumQoS        byte   // 0 means 2 (the zero value keeps the default)
	QueueQoS0         bool   // queue QoS 0 messages for offline persistent sessions

	// SyncCompletions makes the deletion of a completed outbound flow
	// (PUBACK or PUBCOMP from a subscriber) wait for a sync of its own.
	// By default it rides the next sync: nothing is sent after it, and if a
	// crash loses it the message is resent with DUP (QoS 1) or its PUBREL
	// is (QoS 2), which the protocol allows. Costs one fsync per
	// acknowledged delivery.
	SyncCompletions bool
	// CompletionHold is how long such a deletion may wait in memory for
	// the next commit to carry it (0: 10 ms; negative: not held, it is
	// written at once without a sync). On a busy broker the next commit
	// comes sooner, and the deletion costs no WAL write of its own. A
	// kill -9 may lose the deletions of the last CompletionHold: those
	// deliveries are resent as above.
	CompletionHold   time.Duration
	MaxOutboundBytes int // per connection before it is cut as a slow consumer; 0: 64 MiB
	MaxMemQueue      int // per non-persistent session; 0: 10000
	ConnectTimeout   time.Duration
	WriteTimeout     time.Duration
	SysInterval      time.Duration // $SYS publish period; 0: 10 s; negative: off

	// Authenticate, if set, decides CONNECT credentials.
	Authenticate func(clientID, username string, password []byte) bool
}

func (o *Options) fill() {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxPacketSize == 0 {
		o.MaxPacketSize = packet.MaxPacketSize
	}
	if o.ReceiveMaximum == 0 {
		o.ReceiveMaximum = 65535
	}
	if o.MaxInflight == 0 {
		o.MaxInflight = 1024
	}
	if o.TopicAliasMaximum == 0 {
		o.TopicAliasMaximum = 100
	}
	if o.MaximumQoS == 0 {
		o.MaximumQoS = 2
	}
	if o.MaxOutboundBytes == 0 {
		o.MaxOutboundBytes = 64 << 20
	}
	if o.MaxMemQueue == 0 {
		o.MaxMemQueue = 10000
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = 10 * time.Second
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = 30 * time.Second
	}
	if o.SysInterval == 0 {
		o.SysInterval = 10 * time.Second
	}
	if o.CompletionHold == 0 {
		o.CompletionHold = 10 * time.Millisecond
	}
}

// Stats are the broker's plain counters; cmd registers them with
// Prometheus.
type Stats struct {
	Uptime           time.Duration
	ClientsConnected int64
	MessagesReceived uint64 // PUBLISH packets received
	MessagesSent     uint64 // PUBLISH packets sent
	Retained         int
	StoreBytes       uint64
	StoreSyncs       uint64 // synced commits (fsyncs of the WAL)
	StoreTxns        uint64 // Txns committed; StoreTxns/StoreSyncs is the group commit's batching
	CommitFailures   uint64
}

type stats struct {
	received, sent, recvPackets, commitFailures atomic.Uint64
	connected                                   atomic.Int64
}

// ErrClosed is returned by Serve after Close.
var ErrClosed = errors.New("engine: broker closed")

// Broker is a running MQTT broker on a wal.
type Broker struct {
	opts  Options
	log   *slog.Logger
	wal   *wal.Log
	start time.Time
	stats stats

	events chan event
	quit   chan struct{}
	wg     sync.WaitGroup // the core goroutine and connections

	// committed is signalled (cap 1) by the wal committer after a Txn's
	// Done ran, if a pull waits for a commit (pullsWait), so the core can
	// retry it. Without a waiting pull the core is not woken at all.
	committed chan struct{}
	pullsWait atomic.Bool  // core.repull may be non-empty
	pending   atomic.Int64 // Txns submitted and not yet done

	closeOnce sync.Once

	// failed is closed when a commit fails; failErr says why. After that
	// the in-memory state may be ahead of the store, so the broker acks
	// nothing more (every later Txn fails too: the wal is sticky-failed)
	// and its owner should stop it: replay on the next start restores the
	// last state that was synced.
	failed   chan struct{}
	failOnce sync.Once
	failErr  error

	// afterSync, if set, runs in the committer after a Txn's successful
	// sync and before its packets are released: a test seam for crashing
	// between commit and send.
	afterSync atomic.Pointer[func()]

	// Owned by the core goroutine.
	core core
}

// core is the state owned by the core goroutine.
type core struct {
	store    *sessions.Store
	retained *retain.Store
	subs     *topics.Trie[subKey, subValue]
	online   map[string]*conn // client id -> its live connection
	timers   map[*sessions.Session]*timer
	seq      uint64         // last message/queue seq handed out
	rr       map[string]int // round robin per shared group/filter

	// The drain being built. lazyOps counts its writes that no packet
	// waits on and whose loss is harmless (completions): they are held for
	// the next commit that writes anything else (see flush).
	txn       *wal.Txn
	lazyOps   int
	lazyTimer *time.Timer // commits held completions (flush)
	lazyArmed bool
	effects   []effect
	// groupByConn's scratch: a drain number and the conns it saw.
	groupGen   uint64
	groupConns []*conn
	repull     map[*sessions.Session]struct{}
	scratch    map[*sessions.Session]*target
	targets    []*target
}

// timer holds a disconnected session's deadlines.
type timer struct {
	willAt   time.Time // zero: no will pending
	expireAt time.Time // zero: never
}

type subKey struct {
	s     *sessions.Session
	group string // shared subscription group; "" if not shared
}

type subValue struct {
	opts   wal.Subscription
	filter string // as subscribed, $share prefix included
}

// effect is one packet to hand to a connection once the drain's Txn is
// synced. nack is what to send instead when the commit failed (nil: close).
type effect struct {
	c    *conn
	item outItem
	nack packet.Packet
}

type evKind uint8

const (
	evConnect evKind = iota + 1
	evPublish
	evAck
	evSubscribe
	evUnsubscribe
	evClosed
	evSessionExpiry
	evFunc
)

type event struct {
	kind     evKind
	c        *conn
	pkt      packet.Packet
	reply    chan bool
	graceful bool
	will     bool
	fn       func()
}

// New opens the broker on l: it replays sessions and retained messages,
// and starts the core goroutine. The broker does not own l.
func New(opts Options, l *wal.Log) (*Broker, error) {
	opts.fill()
	b := &Broker{
		opts:      opts,
		log:       opts.Logger,
		wal:       l,
		start:     time.Now(),
		events:    make(chan event, 4096),
		quit:      make(chan struct{}),
		committed: make(chan struct{}, 1),
		failed:    make(chan struct{}),
	}
	t0 := time.Now()
	if err := b.load(); err != nil {
		return nil, err
	}
	b.log.Info("state restored", "sessions", len(b.core.store.Sessions), "retained", b.core.retained.Len(),
		"took", time.Since(t0).Round(time.Millisecond))
	b.wg.Add(1)
	go b.run()
	return b, nil
}

// load rebuilds the core's memory from the wal.
func (b *Broker) load() error {
	st, err := sessions.Load(b.wal, b.log)
	if err != nil {
		return fmt.Errorf("engine: restore sessions: %w", err)
	}
	rs, err := retain.Load(b.wal)
	if err != nil {
		return fmt.Errorf("engine: restore retained: %w", err)
	}
	c := &b.core
	c.store, c.retained = st, rs
	c.subs = topics.New[subKey, subValue]()
	c.online = make(map[string]*conn)
	c.timers = make(map[*sessions.Session]*timer)
	c.rr = make(map[string]int)
	c.repull = make(map[*sessions.Session]struct{})
	c.scratch = make(map[*sessions.Session]*target)
	c.seq = st.MaxSeq
	if now := uint64(time.Now().UnixMicro()); now > c.seq {
		// Seqs only need to grow; starting from the clock keeps them
		// growing even if the newest entries were deleted before a crash.
		c.seq = now
	}
	c.txn = &wal.Txn{}
	c.lazyTimer = time.NewTimer(time.Hour)
	c.lazyTimer.Stop()
	for _, k := range st.Garbage {
		c.txn.Delete(k)
	}
	now := time.Now()
	// Every subscription first: a will published below must reach every
	// session that subscribed to it, whatever the map order.
	for _, s := range st.Sessions {
		for f, o := range s.Subs {
			b.trieAdd(s, f, o)
		}
	}
	for _, s := range st.Sessions {
		// Every restored session is offline now. One that was connected
		// when the broker stopped lost its connection without DISCONNECT:
		// its clocks start now, and its will is due [MQTT-3.1.2-8].
		if s.DisconnectedAt.IsZero() {
			s.DisconnectedAt = now
		}
		b.armTimers(s, s.DisconnectedAt)
	}
	return nil
}

// Close stops the broker: it closes every connection, lets in-flight
// commits finish, and stops the core. The wal stays open (its owner
// closes it).
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		done := make(chan struct{})
		b.post(event{kind: evFunc, fn: func() {
			for _, c := range b.core.online {
				if c.version == packet.V5 {
					c.send(outItem{pkt: &packet.Disconnect{ReasonCode: packet.CodeServerShuttingDown}}, outItem{close: true})
				} else {
					c.kill()
				}
			}
			close(done)
		}})
		<-done
		close(b.quit)
		b.wg.Wait()
		// Wait for the last Txns' Done callbacks.
		t := &wal.Txn{}
		_ = b.wal.Commit(context.Background(), t)
	})
	return nil
}

// ServeConn runs one client connection to its end. It is the listener's
// handler.
func (b *Broker) ServeConn(nc net.Conn) {
	select {
	case <-b.quit:
		nc.Close()
		return
	default:
	}
	c := newConn(b, nc)
	c.serve()
}

// post hands an event to the core. It blocks when the core is behind
// (back-pressure onto the sockets) and drops the event after Close.
func (b *Broker) post(ev event) {
	select {
	case b.events <- ev:
	case <-b.quit:
		if ev.reply != nil {
			ev.reply <- false
		}
	}
}

// run is the core goroutine.
func (b *Broker) run() {
	defer b.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var sysTick <-chan time.Time
	if b.opts.SysInterval > 0 {
		t := time.NewTicker(b.opts.SysInterval)
		defer t.Stop()
		sysTick = t.C
		b.publishSys()
		b.flush(false)
	}
	for {
		select {
		case ev := <-b.events:
			b.handle(ev)
			// Drain what else is waiting into the same Txn.
			for n := 0; n < 1024; n++ {
				select {
				case ev := <-b.events:
					b.handle(ev)
					continue
				default:
				}
				break
			}
		case <-b.committed:
			b.retryPulls()
		case now := <-tick.C:
			b.runTimers(now)
		case <-sysTick:
			b.publishSys()
		case <-b.core.lazyTimer.C:
			b.core.lazyArmed = false
			b.flush(true)
			continue
		case <-b.quit:
			b.flush(true)
			return
		}
		b.flush(false)
		if len(b.core.repull) > 0 && b.pending.Load() == 0 {
			// The Done such a pull waited for may have run before it
			// asked (see pullsWait): nothing is in flight, retry now.
			b.retryPulls()
			b.flush(false)
		}
	}
}

func (b *Broker) handle(ev event) {
	switch ev.kind {
	case evConnect:
		b.onConnect(ev.c, ev.pkt.(*packet.Connect), ev.reply)
	case evPublish:
		b.onPublish(ev.c, ev.pkt.(*packet.Publish))
	case evAck:
		b.onAck(ev.c, ev.pkt.(*packet.Ack))
	case evSubscribe:
		b.onSubscribe(ev.c, ev.pkt.(*packet.Subscribe))
	case evUnsubscribe:
		b.onUnsubscribe(ev.c, ev.pkt.(*packet.Unsubscribe))
	case evClosed:
		b.onClosed(ev.c, ev.graceful, ev.will)
	case evSessionExpiry:
		b.onSessionExpiry(ev.c, ev.pkt.(*packet.Disconnect))
	case evFunc:
		ev.fn()
	}
}

// emit queues a packet for c, released after the current drain commits.
func (b *Broker) emit(c *conn, it outItem, nack packet.Packet) {
	b.core.effects = append(b.core.effects, effect{c: c, item: it, nack: nack})
}

// Completions (lazyOps) are held in the core's Txn rather than committed on
// their own: the next drain that writes anything carries them, and a drain
// of only completions commits nothing. On a busy broker that spares a WAL
// write and a trip through the committer per completion, in the middle of
// the next PUBLISH's path. The hold is bounded in time (Options.
// CompletionHold) and size; after that they are committed without a sync
// (they ride the next sync).
const lazyHoldOps = 8192

// flush ends the current drain: it submits its Txn, or, if the drain wrote
// nothing that a packet waits on and nothing is in flight, releases its
// packets at once. force submits held completions too.
func (b *Broker) flush(force bool) {
	c := &b.core
	lazy := c.lazyOps
	if b.opts.SyncCompletions {
		lazy = 0
	}
	writes := c.txn.Len() - lazy // what the drain's packets may wait on
	hold := writes == 0 && !force && lazy < lazyHoldOps && b.opts.CompletionHold > 0
	if len(c.effects) > 0 && writes == 0 && b.pending.Load() == 0 {
		effects := b.groupByConn(c.effects)
		c.effects = nil
		release(effects)
	}
	if len(c.effects) == 0 && (c.txn.Len() == 0 || hold) {
		if c.txn.Len() > 0 && !c.lazyArmed {
			c.lazyTimer.Reset(b.opts.CompletionHold)
			c.lazyArmed = true
		}
		return
	}
	if c.lazyArmed {
		c.lazyTimer.Stop()
		c.lazyArmed = false
	}
	effects := b.groupByConn(c.effects)
	c.effects = nil
	c.lazyOps = 0
	txn := c.txn
	c.txn = &wal.Txn{}
	// Deleting a completed flow (after PUBACK or PUBCOMP) sends nothing:
	// it may ride the next sync. Lost in a crash, the message is resent
	// (QoS 1, allowed) or its PUBREL is (answered with PUBCOMP). The
	// packets of a drain that wrote nothing else need nothing synced:
	// their Done still comes after every earlier Txn's.
	txn.NoSync = writes == 0
	b.pending.Add(1)
	txn.Done = func(err error) {
		if err != nil {
			b.stats.commitFailures.Add(1)
			b.fail(err)
			refuse(effects)
		} else {
			if h := b.afterSync.Load(); h != nil {
				(*h)()
			}
			release(effects)
		}
		// After the decrement: a pull that asked after this load sees
		// pending at 0 and retries by itself (run).
		b.pending.Add(-1)
		if b.pullsWait.Load() {
			select {
			case b.committed <- struct{}{}:
			default:
			}
		}
	}
	b.wal.Submit(txn)
}

func release(effects []effect) {
	for i := 0; i < len(effects); {
		// Hand each connection's items over together: effects are grouped
		// by connection (groupByConn).
		j := i + 1
		now := effects[i].item.pkt != nil && !effects[i].item.close
		for j < len(effects) && effects[j].c == effects[i].c {
			now = now && effects[j].item.pkt != nil && !effects[j].item.close
			j++
		}
		var items []outItem
		if j == i+1 {
			items = []outItem{effects[i].item}
		} else {
			items = make([]outItem, 0, j-i)
			for _, e := range effects[i:j] {
				items = append(items, e.item)
			}
		}
		if now {
			effects[i].c.sendNow(items)
		} else {
			effects[i].c.send(items...)
		}
		i = j
	}
}

// groupByConn reorders a drain's effects so that each connection's are
// consecutive, keeping their order per connection, the only order a client
// can observe. release then makes one send, and at most one write, per
// connection. Core goroutine only (it uses the conns' group fields).
func (b *Broker) groupByConn(effects []effect) []effect {
	if len(effects) < 3 {
		return effects // two effects: grouped or one of each
	}
	b.core.groupGen++
	gen := b.core.groupGen
	conns := b.core.groupConns[:0]
	grouped := true
	for i, e := range effects {
		c := e.c
		if c.groupGen != gen {
			c.groupGen, c.groupN = gen, 0
			conns = append(conns, c)
		} else if effects[i-1].c != c {
			grouped = false
		}
		c.groupN++
	}
	if !grouped {
		off := 0
		for _, c := range conns {
			c.groupOff = off
			off += c.groupN
		}
		out := make([]effect, len(effects))
		for _, e := range effects {
			out[e.c.groupOff] = e
			e.c.groupOff++
		}
		effects = out
	}
	clear(conns)
	b.core.groupConns = conns[:0]
	return effects
}

// refuse answers a failed commit: 5.0 clients get the negative ack (an
// error reason code), everyone else whose packet was not acknowledged is
// disconnected without an ack. Deliveries are dropped: the message was not
// stored.
func refuse(effects []effect) {
	for _, e := range effects {
		switch {
		case e.nack != nil && e.c.version == packet.V5:
			e.c.send(outItem{pkt: e.nack})
		case e.nack != nil || e.item.pkt != nil:
			e.c.kill()
		}
	}
}

// fail records the first commit failure and signals Failed.
func (b *Broker) fail(err error) {
	b.failOnce.Do(func() {
		b.failErr = err
		b.log.Error("store failed: nothing more is acknowledged; stop and restart keel to recover from the last synced state", "err", err)
		close(b.failed)
	})
}

// Failed is closed once a commit has failed. The broker then refuses every
// acknowledgement (5.0 clients get reason 0x80, others are disconnected);
// its owner should Close it and reopen the store.
func (b *Broker) Failed() <-chan struct{} { return b.failed }

// Err is the first commit failure, or nil.
func (b *Broker) Err() error {
	select {
	case <-b.failed:
		return b.failErr
	default:
		return nil
	}
}

// Stats returns the broker's counters. Safe to call from any goroutine.
func (b *Broker) Stats() Stats {
	ws := b.wal.Stats()
	return Stats{
		Uptime:           time.Since(b.start),
		ClientsConnected: b.stats.connected.Load(),
		MessagesReceived: b.stats.received.Load(),
		MessagesSent:     b.stats.sent.Load(),
		Retained:         b.retainedLen(),
		StoreBytes:       ws.DiskSize,
		StoreSyncs:       ws.Syncs,
		StoreTxns:        ws.Commits,
		CommitFailures:   b.stats.commitFailures.Load(),
	}
}

func (b *Broker) retainedLen() int {
	if b.core.retained == nil {
		return 0
	}
	return b.core.retained.Len()
}
