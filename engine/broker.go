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
//
// # Who writes a socket
//
// A connection's writeLoop writes it, and nothing else does, with one
// exception that the listener grants explicitly (ConnInfo.Direct, plain
// TCP only): when a commit's Done releases control packets (acks, SUBACK
// and the like, never deliveries) for a connection with nothing queued
// and no write in progress, Done takes the writer role (conn.mu.writing)
// and writes them itself with one non-blocking write; whatever the socket
// does not take is left to the writeLoop ahead of anything queued later,
// so the bytes keep their order (conn.sendNow). A wrapped connection
// (TLS, WebSocket, PROXY, metering) gets no grant and always goes through
// its writeLoop. The core itself only queues (conn.send) or closes.
//
// # The core never waits on I/O
//
// The core submits Txns and never waits for their syncs; ordering behind
// the Txns in flight is the store's (Done order), and a read sees every
// submitted Txn, so the core reads its own writes without a sync. Ending a
// persistent session (a clean start over it, its expiry) deletes its keys
// with one range deletion in the current Txn and leaves the release of its
// shared message bodies to the sweeper goroutine, which reads a snapshot
// and hands the ids back in small events. Its reads are bounded by a
// session's window (Refill pulls at most a window of queue entries).
// Deadlines live in a heap (timers.go), and one run ends at most
// maxExpiryPerRun sessions before the clients' waiting events are handled,
// so a mass expiry cannot starve live traffic. TestCoreNeverWaitsForASync
// holds every WAL sync at a gate and checks that the core still runs.
//
// # After a store failure
//
// A failed Txn poisons the broker rather than being undone: the memory
// effects of a failed Txn (an inbound QoS 2 id, a retained update, a queue
// entry, a subscription) stay in memory, and nothing is ever released again
// that could show them. The committer marks the broker broken (Broker.fail)
// before it counts the failed Txn done, so:
//
//   - every later Txn fails too (the store's rule), and its packets are
//     refused (refuse: 5.0 gets the negative ack with 0x80 and a CONNACK
//     refusal is followed by a close [MQTT-3.2.2-7]; 3.1.1 is disconnected);
//   - a drain that wrote nothing, which is released at once only when no
//     Txn is in flight, reads the broken flag after it saw nothing in
//     flight: if any earlier Txn failed, it is refused instead;
//   - new connections are closed at once (ServeConn), and Close does not
//     queue behind the events already waiting (run checks b.closing between
//     events).
//
// So once a commit has failed no CONNACK, SUBACK, UNSUBACK, PUBACK, PUBREC
// or PUBCOMP with a success code leaves, by any path, and no delivery
// either: what the memory holds beyond the disk is never observed. The
// owner stops the broker (Failed) and the next start replays the last
// synced state.
package engine

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/keelmq/keel/engine/auth"
	"github.com/keelmq/keel/engine/clock"
	"github.com/keelmq/keel/engine/packet"
	"github.com/keelmq/keel/engine/topics"
	"github.com/keelmq/keel/retain"
	"github.com/keelmq/keel/sessions"
	"github.com/keelmq/keel/sessions/dedup"
	"github.com/keelmq/keel/wal"
)

// Options configure a Broker. The zero value is valid: defaults are filled
// in by New.
type Options struct {
	Logger  *slog.Logger
	Version string // the build's version; $SYS/broker/version is "keel <Version>"

	MaxPacketSize     uint32 // bytes; 0: MQTT's maximum
	ReceiveMaximum    uint16 // inbound QoS 1/2 window per 5.0 client; 0: 65535
	MaxInflight       uint16 // outbound QoS 1/2 window per client; 0: 1024
	TopicAliasMaximum uint16 // aliases a 5.0 client may send us; 0: 100
	MaximumQoS        byte   // 0 means 2 (the zero value keeps the default)
	QueueQoS0         bool   // queue QoS 0 messages for offline persistent sessions

	// MaxKeepAlive is the longest keep alive a client may use, in seconds
	// (0, or above 65535: 65535, Mosquitto's default; negative: no limit).
	// A 5.0 client asking for more, or for 0 (none), is given it as Server
	// Keep Alive [MQTT-3.2.2-21]. A 3.1.1 or 3.1 client asking for more is
	// refused (return code 2, counted keep_alive), as Mosquitto does: those
	// versions cannot be told another value. One asking for 0 is taken as
	// it asks: refusing it, as Mosquitto does, turns away simple clients
	// that never ping, and the protocol lets them ask.
	MaxKeepAlive int
	// NoServerTopicAliases stops keel assigning topic aliases to the
	// PUBLISHes it sends 5.0 clients that allow them (alias.go).
	NoServerTopicAliases bool

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
	MaxMemQueue      int // per non-persistent session, messages waiting for its window; 0: 10000; negative: no limit
	ConnectTimeout   time.Duration
	WriteTimeout     time.Duration
	SysInterval      time.Duration // $SYS publish period; 0: 10 s; negative: off

	// Queue quotas (quota.go): per persistent session, its stored entries
	// (queued and in flight) and their bytes as stored, a shared body
	// counted for each session. 0: 1,000,000 entries and 1 GiB; negative:
	// no limit. QueueFull says what a full queue does, MaxMemQueue's too
	// (zero: refuse).
	MaxQueuedMessages int64
	MaxQueuedBytes    int64
	QueueFull         QueueFullPolicy

	// Topic and subscription limits (limits.go). MaxSubscriptions: per
	// session, 0: no limit. MaxTopicLevels: levels of a topic name or
	// filter, 0: 128, negative: no limit. MaxTopicLength: bytes, 0:
	// 65535 (MQTT's own limit).
	MaxSubscriptions int
	MaxTopicLevels   int
	MaxTopicLength   int

	// MaxPublishRate bounds the PUBLISH packets a connection may send per
	// second (a token bucket of MaxPublishBurst, 0: the rate, at least
	// 1); 0: no limit. Over it a 5.0 QoS 1/2 PUBLISH gets PUBACK/PUBREC
	// 0x97; anything else waits: the connection is not read until the
	// rate allows it (back-pressure, nothing dropped).
	MaxPublishRate  float64
	MaxPublishBurst int

	// Before authentication (preauth.go): MaxConnectSize bounds a
	// CONNECT's Remaining Length (0: 64 KiB); MaxPreauthBytes is the
	// bytes all connections together may hold for CONNECTs being read or
	// authenticated (0: 64 MiB; negative: no limit).
	MaxConnectSize  uint32
	MaxPreauthBytes int64

	// Flapping (flapping.go): with FlappingDetect, a client id that
	// connects more than FlappingMaxConnects times (0: 15) within
	// FlappingWindow (0: 1 minute) is refused for FlappingBan (0: 5
	// minutes). FlappingMaxTracked bounds the client ids followed at once
	// (0: 100,000).
	FlappingDetect      bool
	FlappingMaxConnects int
	FlappingWindow      time.Duration
	FlappingBan         time.Duration
	FlappingMaxTracked  int

	// QueueLimits, if set, gives a persistent session its own
	// MaxQueuedMessages and MaxQueuedBytes (same meaning, 0: the broker's)
	// from its client id and the username that created it; ok false: the
	// broker's. It is asked when a client connects to the session and for
	// each session restored at start, on the core goroutine
	// (quotaoverride.go).
	QueueLimits func(clientID, username string) (messages, bytes int64, ok bool)

	// Disk, if set, reports the filesystem holding the store: below its
	// low-water mark new QoS 1/2 publishes and new persistent sessions
	// are refused (disk.go). nil: no mark.
	Disk DiskMonitor

	// Retained limits (retainlimit.go): the clients' retained messages
	// (MaxRetainedMessages, 0: no limit), their topics and payloads
	// together (MaxRetainedBytes, 0: 1 GiB, negative: no limit) and one
	// message's (MaxRetainedMessageSize, 0: no limit).
	MaxRetainedMessages    int64
	MaxRetainedBytes       int64
	MaxRetainedMessageSize int64

	// Clock is where the core reads time: will delay, session and message
	// expiry, the completion hold, $SYS (nil: the system clock). Socket
	// deadlines (keep alive, connect and write timeouts) stay on the
	// system clock: they are the network's.
	Clock clock.Clock

	// Authenticator, if set, decides each CONNECT on the connection's
	// reader goroutine (nil: anyone may connect). A refusal is CONNACK
	// 0x86/0x87 (3.1.1: return code 4/5), counted (not_authorized).
	Authenticator auth.Authenticator
	// Authorizer, if set, decides PUBLISH (5.0: PUBACK/PUBREC 0x87; 3.1.1:
	// acknowledged and dropped, as Mosquitto does), SUBSCRIBE (0x87 / 0x80
	// per filter), every delivery and the will, per topic, through a
	// per-connection cache. nil: auth.AllowAll (no client publishes to
	// $SYS).
	Authorizer *auth.Live
	// SessionOwners holds a session to the identity that created it: a
	// CONNECT with its client id from another username (or anonymous for
	// a user's session, or the reverse) is refused with CONNACK 0x87 (3.1.1:
	// return code 5), and the session keeps its queue and its connection.
	// cmd/keel sets it when clients authenticate (a password file or
	// certificate identities). A session stored by format 1 has no owner:
	// its next client becomes it.
	SessionOwners bool

	// The dedup window (sessions/dedup): a 5.0 QoS 1/2 PUBLISH carrying
	// the user property DedupProperty (default "msg-id") whose value its
	// publisher's scope already routed within DedupWindow (default 10
	// minutes; negative: off) is acknowledged and not routed again. The
	// scope is the client id, or the username with DedupByUsername; at
	// most DedupMaxIDs ids are kept per scope (default 100,000; the oldest
	// goes first).
	DedupProperty   string
	DedupWindow     time.Duration
	DedupMaxIDs     int
	DedupByUsername bool
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
	if o.MaxKeepAlive == 0 || o.MaxKeepAlive > 65535 {
		o.MaxKeepAlive = 65535
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
	if o.MaxQueuedMessages == 0 {
		o.MaxQueuedMessages = 1_000_000
	}
	if o.MaxQueuedBytes == 0 {
		o.MaxQueuedBytes = 1 << 30
	}
	if o.MaxRetainedBytes == 0 {
		o.MaxRetainedBytes = 1 << 30
	}
	if o.MaxTopicLevels == 0 {
		o.MaxTopicLevels = 128
	}
	if o.MaxTopicLength == 0 {
		o.MaxTopicLength = 65535
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
	if o.Clock == nil {
		o.Clock = clock.System{}
	}
	if o.CompletionHold == 0 {
		o.CompletionHold = 10 * time.Millisecond
	}
	if o.DedupProperty == "" {
		o.DedupProperty = "msg-id"
	}
	if o.DedupWindow == 0 {
		o.DedupWindow = 10 * time.Minute
	}
	if o.DedupMaxIDs == 0 {
		o.DedupMaxIDs = 100_000
	}
	if o.MaxConnectSize == 0 {
		o.MaxConnectSize = 64 << 10
	}
	if o.MaxPreauthBytes == 0 {
		o.MaxPreauthBytes = 64 << 20
	}
	o.fillFlapping() // flapping.go
}

// Stats are the broker's plain counters; cmd registers them with
// Prometheus.
type Stats struct {
	Uptime           time.Duration
	ClientsConnected int64
	MessagesReceived uint64 // PUBLISH packets received
	MessagesSent     uint64 // PUBLISH packets sent
	Retained         int    // clients' retained messages ($SYS topics not counted)
	StoreBytes       uint64
	StoreSyncs       uint64        // synced commits (fsyncs of the WAL)
	StoreTxns        uint64        // Txns committed; StoreTxns/StoreSyncs is the group commit's batching
	StoreSyncLatency wal.Histogram // latency of those syncs
	// StoreMetricsReads counts the times the store read Pebble's metrics
	// (wal.Stats.MetricsReads; 0 for a store that keeps no such count).
	StoreMetricsReads uint64
	CommitFailures    uint64
	// PublishesThrottled counts PUBLISH packets a connection had to wait
	// to send, over Options.MaxPublishRate (back-pressure: none dropped).
	PublishesThrottled uint64

	SessionsPersistent int64 // stored sessions, online or not
	SessionsOffline    int64 // stored sessions with no connection
	QueuedMessages     int64 // stored queue entries (queued and in flight)
	QueuedBytes        int64 // their bytes, shared bodies counted once

	// Dropped counts messages not delivered to a session, by reason
	// (counters.go: too_large, queue_full, expired, ...); Refused counts
	// packets refused instead of acknowledged, by reason (store_failed,
	// not_authorized, queue_full, ...). Every reason is present, zero or
	// not.
	Dropped map[string]uint64
	Refused map[string]uint64

	// DedupHits counts publishes acknowledged and not routed because the
	// dedup window had their message id; DedupIDs is the ids it holds.
	DedupHits uint64
	DedupIDs  int64

	// PreauthBytes is the bytes reserved now for CONNECTs being read or
	// authenticated (Options.MaxPreauthBytes).
	PreauthBytes int64

	RetainedBytes int64 // the clients' retained topics and payloads (retainlimit.go)

	// The filesystem holding the store, as Options.Disk last measured it
	// (zero without one); DiskLow: below the mark, refusing (disk.go).
	DiskFree, DiskTotal, DiskMinFree uint64
	DiskLow                          bool
}

type stats struct {
	received, sent, recvPackets, commitFailures atomic.Uint64
	throttled, dedupHits                        atomic.Uint64 // throttled: PUBLISH packets that waited for MaxPublishRate (limits.go)
	connected, dedupIDs                         atomic.Int64
	reasons                                     reasonCounters
	sysRetained                                 atomic.Int64 // $SYS topics in the retained store
	sysRetainedBytes                            atomic.Int64 // their retain.Size
}

// Broker is a running MQTT broker on a wal.
type Broker struct {
	opts  Options
	log   *slog.Logger
	store wal.Store
	start time.Time
	stats stats

	events chan event
	quit   chan struct{} // closed once the core has stopped: posts are dropped

	pending atomic.Int64 // Txns submitted and not yet done

	closeOnce sync.Once

	// failed is closed when a commit fails; failErr says why. After that
	// the in-memory state may be ahead of the store, so the broker acks
	// nothing more (every later Txn fails too: the wal is sticky-failed)
	// and its owner should stop it: replay on the next start restores the
	// last state that was synced.
	failed   chan struct{}
	failOnce sync.Once
	failErr  error
	// broken is set by fail before the failed Txn is counted done
	// (pending), so a release-at-once that saw nothing pending and then
	// reads broken false depends on no failed Txn.
	broken atomic.Bool

	// closing is closed by Close; the core goroutine sees it between
	// events, so Close never waits behind a full event queue.
	closing  chan struct{}
	coreDone chan struct{} // closed when the core goroutine has returned

	// afterSync, if set, runs in the committer after a Txn's successful
	// sync and before its packets are released: a test seam for crashing
	// between commit and send.
	afterSync atomic.Pointer[func()]

	preauth atomic.Int64 // bytes reserved of Options.MaxPreauthBytes (preauth.go)

	sweeper    *sweeper
	connLog    connLogger
	refusedLog connLogger // publishes refused for a full queue

	// Owned by the core goroutine.
	core core
}

// core is the state owned by the core goroutine.
type core struct {
	sessions *sessions.Store[target]
	dedup    *dedup.Window // nil: off
	retained *retain.Store
	subs     *topics.Trie[subKey, subValue]
	online   map[string]*conn // client id -> its live connection
	rr       map[string]int   // round robin per shared group/filter

	// Disconnected sessions' deadlines, soonest first (timers.go).
	timers      map[*session]*timer
	timerq      timerHeap
	timersDirty bool        // timerq changed: re-arm timerT
	timerT      clock.Timer // fires at nextDeadline
	timersDue   bool        // runTimers left due work for the next turn

	// The drain being built. lazyOps counts its writes that no packet
	// waits on and whose loss is harmless (completions): they are held for
	// the next commit that writes anything else (see flush).
	txn       *wal.Txn
	lazyOps   int
	lazyTimer clock.Timer // commits held completions (flush)
	lazyArmed bool
	effects   []effect
	// groupByConn's drain number and the targets it saw.
	groupGen     uint64
	groupTargets []target
	repull       map[*session]struct{}
	dropLog      map[*session]*dropTally // sessions that lost messages to a full queue (quota.go)
	flap         flapping                // client ids followed for flapping (flapping.go)
	scratch      map[*session]*routeTarget
	targets      []*routeTarget
	sysExtra     map[string]struct{} // $SYS topics set by SetSys (sysextra.go)
}

type subKey struct {
	s     *session
	group string // shared subscription group; "" if not shared
}

type subValue struct {
	opts   sessions.Subscription
	filter string // as subscribed, $share prefix included
}

// effect is one packet to hand to a connection once the drain's Txn is
// synced. nack is what to send instead when the commit failed (nil: close).
type effect struct {
	to   target
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
	denied   []bool // PUBLISH: [0] refused by the Authorizer; SUBSCRIBE: per filter
	overRate bool   // PUBLISH: over MaxPublishRate (limits.go)
	fn       func()
}

// New opens the broker on the store st: it replays sessions and retained
// messages, and starts the core goroutine. The broker does not own st.
func New(opts Options, st wal.Store) (*Broker, error) {
	opts.fill()
	b := &Broker{
		opts:     opts,
		log:      opts.Logger,
		store:    st,
		start:    opts.Clock.Now(),
		events:   make(chan event, 4096),
		quit:     make(chan struct{}),
		failed:   make(chan struct{}),
		closing:  make(chan struct{}),
		coreDone: make(chan struct{}),
	}
	t0 := time.Now()
	if err := b.load(); err != nil {
		return nil, err
	}
	b.log.Info("state restored", "sessions", len(b.core.sessions.Sessions), "retained", b.core.retained.Len(),
		"took", time.Since(t0).Round(time.Millisecond))
	b.sweeper = newSweeper(b)
	go b.sweeper.run()
	go b.run()
	return b, nil
}

// load rebuilds the core's memory from the store.
func (b *Broker) load() error {
	now := b.now()
	st, err := sessions.Load[target](b.store, b.log, now)
	if err != nil {
		return fmt.Errorf("engine: restore sessions: %w", err)
	}
	st.MaxMemQueue = b.opts.MaxMemQueue
	rs, err := retain.Load(b.store, now.UnixMilli())
	if err != nil {
		return fmt.Errorf("engine: restore retained: %w", err)
	}
	c := &b.core
	c.sessions, c.retained = st, rs
	c.subs = topics.New[subKey, subValue]()
	c.online = make(map[string]*conn)
	c.timers = make(map[*session]*timer)
	c.rr = make(map[string]int)
	c.repull = make(map[*session]struct{})
	c.dropLog = make(map[*session]*dropTally)
	c.scratch = make(map[*session]*routeTarget)
	c.txn = &wal.Txn{}
	if b.opts.DedupWindow > 0 {
		if c.dedup, err = dedup.Load(b.store, c.txn, b.opts.DedupWindow, b.opts.DedupMaxIDs, now); err != nil {
			return fmt.Errorf("engine: restore the dedup window: %w", err)
		}
		b.stats.dedupIDs.Store(int64(c.dedup.Len()))
	}
	c.lazyTimer = b.opts.Clock.NewTimer()
	c.timerT = b.opts.Clock.NewTimer()
	st.CollectGarbage(c.txn)
	// Every subscription first: a will published at the first run of the
	// timers must reach every session that subscribed to it.
	for _, s := range st.Sessions {
		for f, o := range s.Subs {
			b.trieAdd(s, f, o)
		}
	}
	for _, s := range st.Sessions {
		b.resolveLimits(s) // quotaoverride.go
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
// commits finish, and stops the core. It does not wait behind the events
// already queued for the core: those are dropped (a waiting CONNECT is
// refused). The wal stays open (its owner closes it).
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		close(b.closing)
		<-b.coreDone
		close(b.quit)
		<-b.sweeper.done
		b.sweeper.closeAll() // any added while the core was stopping
		b.dropEvents()
		// Wait for the last Txns' Done callbacks.
		_ = wal.Commit(context.Background(), b.store, &wal.Txn{})
	})
	return nil
}

// shutdown is the core's last act: it disconnects every client (5.0:
// DISCONNECT 0x8B) and submits what the last drain holds.
func (b *Broker) shutdown() {
	for _, c := range b.core.online {
		c.setEndReason("server shutting down")
		if c.version == packet.V5 {
			c.send(outItem{pkt: &packet.Disconnect{ReasonCode: packet.CodeServerShuttingDown}}, outItem{close: true})
		} else {
			c.kill()
		}
	}
	b.flush(true)
}

// dropEvents answers what is left in the event queue after the core has
// stopped: a CONNECT waiting for its reply is refused.
func (b *Broker) dropEvents() {
	for {
		select {
		case ev := <-b.events:
			if ev.reply != nil {
				ev.reply <- false
			}
		default:
			return
		}
	}
}

// ConnInfo is what the listener knows of a connection (cmd converts
// listener.Info to it: the engine does not import the listener).
type ConnInfo struct {
	Listener string
	Remote   net.Addr
	TLS      *tls.ConnectionState
	// Direct, if non-nil, is the socket's descriptor, which the listener
	// grants only for plain TCP: acks may be written to it directly when
	// nothing else is writing (conn.sendNow). Nil: always the writeLoop.
	Direct syscall.RawConn
	// Identity is the client certificate's identity (CN or RFC 2253
	// subject) when the listener makes it the username
	// (IdentityIsUsername): it replaces the CONNECT's username, and a
	// client without one is refused (0x86 / return code 4).
	Identity           string
	IdentityIsUsername bool
	// OverLimit: the listener's or the global connection limit is
	// reached; the CONNECT is read (to know the version) and refused with
	// 0x97 (5.0) / return code 3 (3.1.1).
	OverLimit bool
	// OverRate: the connection rate limit is reached; the CONNECT is
	// refused with 0x9F (5.0) / return code 3 (3.1.1).
	OverRate bool
	// Deadline, if set, is when the CONNECT must have been read (the
	// listener's handshake deadline); it shortens ConnectTimeout.
	Deadline time.Time
	// BytesIn and BytesOut, if set, count the MQTT bytes this connection
	// reads and writes (the listener's traffic counters).
	BytesIn, BytesOut *atomic.Uint64
}

// ServeConn runs one client connection to its end. It is the listener's
// handler.
func (b *Broker) ServeConn(nc net.Conn, info ConnInfo) {
	if b.broken.Load() {
		// The store failed: nothing could be acknowledged, so no new
		// client is taken on until the owner restarts the broker.
		nc.Close()
		return
	}
	select {
	case <-b.closing:
		nc.Close()
		return
	default:
	}
	c := newConn(b, nc, info)
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

// run is the core goroutine. Every deadline it keeps is a Timer of
// Options.Clock: the next session deadline or retained expiry (timerT),
// the completion hold (lazyTimer) and $SYS.
func (b *Broker) run() {
	defer close(b.coreDone)
	c := &b.core
	var sysT clock.Timer
	var sysC <-chan time.Time
	if b.opts.SysInterval > 0 {
		sysT = b.opts.Clock.NewTimer()
		defer sysT.Stop()
		sysC = sysT.C()
		b.publishSys()
		b.flush(false)
		sysT.Reset(b.opts.SysInterval)
	}
	defer c.timerT.Stop()
	defer c.lazyTimer.Stop()
	c.timersDirty = true
	for {
		select {
		case <-b.closing: // before anything else that is ready
			b.shutdown()
			return
		default:
		}
		if c.timersDue {
			// More sessions were due than one run ends: go on after the
			// events that are waiting, not before them.
			c.timersDue = b.runTimers(b.now())
		}
		if c.timersDirty {
			c.timersDirty = false
			if at, ok := b.nextDeadline(); ok {
				c.timerT.Reset(max(at.Sub(b.now()), 0))
			} else {
				c.timerT.Stop()
			}
		}
		var due <-chan struct{}
		if c.timersDue || len(c.repull) > 0 {
			// Work left from the last turn: take what is waiting, then
			// come back to it.
			due = closedChan
		}
		select {
		case ev := <-b.events:
			b.handle(ev)
			// Drain what else is waiting into the same Txn, unless the
			// broker is closing.
			for n := 0; n < 1024; n++ {
				select {
				case <-b.closing:
				case ev := <-b.events:
					b.handle(ev)
					continue
				default:
				}
				break
			}
		case <-due:
		case <-c.timerT.C():
			c.timersDue = b.runTimers(b.now())
		case <-sysC:
			b.publishSys()
			sysT.Reset(b.opts.SysInterval)
		case <-c.lazyTimer.C():
			c.lazyArmed = false
			b.flush(true)
			continue
		case <-b.closing:
			b.shutdown()
			return
		}
		b.flush(false)
		if len(c.repull) > 0 {
			// A pull stopped at entries its drain had not submitted yet
			// (flush has submitted them, and a read sees them now), or at
			// its bound of entries read (sessions.MaxScan).
			b.retryPulls()
			b.flush(false)
		}
	}
}

func (b *Broker) now() time.Time { return b.opts.Clock.Now() }

// closedChan is always ready.
var closedChan = func() chan struct{} { ch := make(chan struct{}); close(ch); return ch }()

func (b *Broker) handle(ev event) {
	switch ev.kind {
	case evConnect:
		b.onConnect(ev.c, ev.pkt.(*packet.Connect), ev.reply)
	case evPublish:
		if ev.overRate {
			b.refuseRate(ev.c, ev.pkt.(*packet.Publish))
			return
		}
		b.onPublish(ev.c, ev.pkt.(*packet.Publish), len(ev.denied) > 0)
	case evAck:
		b.onAck(ev.c, ev.pkt.(*packet.Ack))
	case evSubscribe:
		b.onSubscribe(ev.c, ev.pkt.(*packet.Subscribe), ev.denied)
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

// emit queues a packet for to, released after the current drain commits.
func (b *Broker) emit(to target, it outItem, nack packet.Packet) {
	b.core.effects = append(b.core.effects, effect{to: to, item: it, nack: nack})
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
		// Nothing in flight: every earlier Txn is done. broken is read
		// after pending (fail sets it before the decrement), so if any of
		// them failed, these packets are refused: they may show its
		// memory effects.
		effects := b.groupByConn(c.effects)
		c.effects = make([]effect, 0, len(effects)) // the next drain is likely as big: no regrowth
		if b.broken.Load() {
			b.refuse(effects)
		} else {
			release(effects)
		}
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
	if len(effects) > 0 {
		c.effects = make([]effect, 0, len(effects)) // the next drain is likely as big: no regrowth
	}
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
			b.refuse(effects)
		} else {
			if h := b.afterSync.Load(); h != nil {
				(*h)()
			}
			release(effects)
		}
		b.pending.Add(-1)
	}
	b.store.Submit(txn)
}

func release(effects []effect) {
	for i := 0; i < len(effects); {
		// Hand each target's items over together: effects are grouped
		// by target (groupByConn).
		j := i + 1
		now := effects[i].item.pkt != nil && !effects[i].item.close
		for j < len(effects) && effects[j].to == effects[i].to {
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
			effects[i].to.sendNow(items)
		} else {
			effects[i].to.send(items...)
		}
		i = j
	}
}

// groupByConn reorders a drain's effects so that each target's are
// consecutive, keeping their order per target, the only order a client
// can observe. release then makes one send, and at most one write, per
// target. Core goroutine only (it uses the targets' grouping scratch).
func (b *Broker) groupByConn(effects []effect) []effect {
	if len(effects) < 3 {
		return effects // two effects: grouped or one of each
	}
	b.core.groupGen++
	gen := b.core.groupGen
	seen := b.core.groupTargets[:0]
	grouped := true
	for i, e := range effects {
		g := e.to.grouping()
		if g.gen != gen {
			g.gen, g.n = gen, 0
			seen = append(seen, e.to)
		} else if effects[i-1].to != e.to {
			grouped = false
		}
		g.n++
	}
	if !grouped {
		off := 0
		for _, t := range seen {
			g := t.grouping()
			g.off = off
			off += g.n
		}
		out := make([]effect, len(effects))
		for _, e := range effects {
			g := e.to.grouping()
			out[g.off] = e
			g.off++
		}
		effects = out
	}
	clear(seen)
	b.core.groupTargets = seen[:0]
	return effects
}

// refuse answers a failed commit: 5.0 clients get the negative ack (an
// error reason code), everyone else whose packet was not acknowledged is
// disconnected without an ack. A refused CONNACK closes the connection
// [MQTT-3.2.2-7] (3.1.1: return code 3, server unavailable). A refused
// QoS 1 PUBACK still gives back the client's Receive Maximum slot.
// Deliveries are dropped: the message was not stored.
func (b *Broker) refuse(effects []effect) {
	for _, e := range effects {
		if e.nack != nil || e.item.pkt != nil {
			b.stats.reasons.refuse(refuseStoreFailed)
		}
		_, connack := e.nack.(*packet.Connack)
		switch {
		case connack:
			e.to.send(outItem{pkt: e.nack}, outItem{close: true})
		case e.nack != nil && e.to.protocol() == packet.V5:
			e.to.send(outItem{pkt: e.nack, decIn: e.item.decIn})
		case e.nack != nil || e.item.pkt != nil:
			e.to.kill()
		}
	}
}

// fail records the first commit failure, marks the broker broken and
// signals Failed. It runs on the committer, before the failed Txn is
// counted done.
func (b *Broker) fail(err error) {
	b.broken.Store(true)
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
	ws := b.store.Stats()
	dropped, refused := b.stats.reasons.snapshot()
	st := Stats{
		Uptime:           b.now().Sub(b.start),
		ClientsConnected: b.stats.connected.Load(),
		MessagesReceived: b.stats.received.Load(),
		MessagesSent:     b.stats.sent.Load(),
		Retained:         b.retainedLen(),
		StoreBytes:       ws.DiskSize,
		StoreSyncs:       ws.Syncs,
		StoreTxns:        ws.Commits,
		StoreSyncLatency: ws.SyncLatency,
		CommitFailures:   b.stats.commitFailures.Load(),
		Dropped:          dropped,
		Refused:          refused,
		DedupHits:        b.stats.dedupHits.Load(),
		DedupIDs:         b.stats.dedupIDs.Load(),
	}
	st.PublishesThrottled = b.stats.throttled.Load()
	st.PreauthBytes = b.preauth.Load()
	st.RetainedBytes = b.retainedBytes()
	if b.opts.Disk != nil {
		u := b.opts.Disk.Usage()
		st.DiskFree, st.DiskTotal, st.DiskMinFree, st.DiskLow = u.Free, u.Total, u.MinFree, u.Low
	}
	st.StoreMetricsReads = ws.MetricsReads
	if ss := b.core.sessions; ss != nil {
		s := ss.Stats()
		st.SessionsPersistent, st.SessionsOffline = s.Persistent, s.Offline
		st.QueuedMessages, st.QueuedBytes = s.Queued, s.QueuedBytes
	}
	return st
}

// retainedLen is the number of clients' retained messages: the $SYS
// topics the broker retains in memory are not counted.
func (b *Broker) retainedLen() int {
	if b.core.retained == nil {
		return 0
	}
	return b.core.retained.Len() - int(b.stats.sysRetained.Load())
}
