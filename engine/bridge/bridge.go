// Package bridge connects a Keel broker to another MQTT broker (Keel,
// Mosquitto, any 3.1.1 or 5.0 server) and carries Keel's promise across
// the hop: an acknowledgement means the state is on disk, on each side.
//
// # Design: a relay between two MQTT connections
//
// A bridge is two MQTT client connections and a relay between them:
//
//	local broker  <--net.Pipe, MQTT 5.0-->  bridge  <--TCP, 3.1.1 or 5.0-->  remote broker
//	(engine.ServeConn, client id "$bridge/NAME")       (client id remote_clientid)
//
// The local connection is an ordinary persistent session (Session Expiry
// "never") that the engine serves like any client's: its subscriptions are
// the out topics, its queue is the bridge's queue (on disk, in order,
// surviving restarts), and its QoS 1/2 flows are bound to packet ids
// stored as for any outbound flow. The relay forwards every PUBLISH,
// PUBACK, PUBREC, PUBREL and PUBCOMP from one connection to the other,
// keeping its packet id: the local broker's server-to-client ids become the
// bridge's client-to-server ids on the remote, and the remote's
// server-to-client ids become the bridge's client-to-server ids here. The
// bridge itself chooses no id and holds no flow state, so there is none of
// its own to lose in a crash; each broker owns the state of the direction
// it sends, durably, and the brokers' own rules make the hop exactly once:
//
//   - Out (local to remote). The engine binds message M to packet id P in
//     the bridge's session and sends PUBLISH P; the relay sends it to the
//     remote as PUBLISH P. The remote's PUBACK P (QoS 1) or PUBREC P (QoS 2)
//     is relayed back as if the bridge's client had sent it: the engine
//     deletes the queue entry (QoS 2: marks the binding released, then sends
//     PUBREL P, which is relayed), and the remote's PUBCOMP P ends the
//     binding. An entry leaves the queue only on the remote's
//     acknowledgement. After a crash of either side, the engine resends
//     every binding with DUP and the same id, a released one as PUBREL
//     [MQTT-4.4.0-1], and a remote with the persistent session (remote
//     cleansession = false) recognises a QoS 2 id it holds and does not
//     route it again [MQTT-4.3.3-10].
//   - In (remote to local). A PUBLISH P from the remote is relayed to the
//     engine as the bridge client's PUBLISH P; the engine commits the
//     message and, for QoS 2, "packet id P of $bridge/NAME received" before
//     it sends PUBACK/PUBREC P, and only then is that ack relayed to the
//     remote (commit-before-send row "bridge in"). A resend after a crash of
//     either side finds the id stored and is not routed twice.
//
// So the bridge needs no Session seam of its own, which is why it does not
// use engine/client: that client owns its packet ids and flow state (a
// Session), and acknowledges inbound publishes by itself; here both belong
// to the brokers at the ends, and the relay must forward acks only when
// the broker behind it has sent them.
//
// # Rounds
//
// The bridge runs in rounds: connect the remote (its addresses in turn),
// connect the local session, subscribe, relay until either connection
// ends, close both, wait restart_timeout (growing, with jitter), again.
// Both connections end together, so every round starts with both sides
// resuming their sessions and resending what is unacknowledged.
//
// Two cases need care, both when one side kept its session and the other
// did not:
//
//   - The remote lost the bridge's session (Session Present 0: a clean
//     session, or a remote that restarted without persistence) while the
//     local one is kept: the QoS 2 ids the local session holds from the
//     remote's old flows would make new messages with those ids look like
//     resends. The round first releases every id (PUBREL 1..65535 to the
//     local broker, whose PUBCOMPs the relay swallows) before anything from
//     the remote is relayed.
//   - The local session is new (the first start, or a wiped data
//     directory) while the remote kept one: that session's QoS 2 ids were
//     the old local state's. The round reconnects the remote with a clean
//     start.
//
// # No loops
//
// Messages the bridge publishes locally are not sent back out: its local
// subscriptions have No Local. On the remote, 5.0 subscriptions have No
// Local; over 3.1.1, try_private marks the connection as a bridge's
// (Mosquitto then sends nothing back), and without it in and out topics
// that overlap on the remote are refused (Config.Validate).
package bridge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keelmq/keel/engine"
	"github.com/keelmq/keel/engine/packet"
)

// Listener is the listener name of the bridges' local connections: an
// authenticator lets them in (they come from the process itself, over a
// pipe), and no configured listener can bear it.
const Listener = "$bridge"

// ClientIDPrefix starts the local client id of every bridge; no client may
// take such an id (Reserved).
const ClientIDPrefix = "$bridge/"

// LocalClientID is the client id of bridge name's local session.
func LocalClientID(name string) string { return ClientIDPrefix + name }

// Reserved reports whether a client id belongs to a bridge: a client
// connecting with it from a listener is to be refused.
func Reserved(clientID string) bool { return strings.HasPrefix(clientID, ClientIDPrefix) }

// window311 is how many QoS 1/2 messages the bridge keeps in flight to a
// 3.1.1 remote, which announces no Receive Maximum: Mosquitto's own
// max_inflight_messages default, which its 3.1.1 clients' inbound queue
// is sized by.
const window311 = 20

// sweepIDs is every packet id: released at once when the remote lost the
// session (see the package doc).
const sweepIDs = 65535

// State is what a bridge is doing, for logs, metrics and tests.
type State struct {
	// Connected: both sides are connected and have acknowledged the
	// bridge's subscriptions.
	Connected bool
	// Phase is one of "connecting", "connected", "backing off" (waiting
	// until RetryAt after a failed or ended round) and "stopped".
	Phase     string
	RetryAt   time.Time // when backing off: the next attempt
	Address   string    // the remote address of the current or last connection
	LastError string    // why the last round ended, or why it could not start
	Rounds    uint64    // connections made
}

// Stats are a bridge's counters.
type Stats struct {
	Forwarded uint64 // PUBLISH packets relayed to the remote
	Received  uint64 // PUBLISH packets relayed from the remote
	// Dropped counts PUBLISH packets from the remote on a topic outside the
	// in topics (acknowledged there, not published here), and local ones
	// outside the out topics (from a subscription of an older
	// configuration: acknowledged here, not forwarded).
	Dropped uint64
	// Refused counts acknowledgements with a failure reason (5.0): the
	// remote refused a message, or the local broker did.
	Refused uint64
}

// Bridge is one running bridge.
type Bridge struct {
	cfg Config
	eng *engine.Broker
	log *slog.Logger

	stop    chan struct{}
	stopped sync.Once
	abrupt  atomic.Bool // kill: no DISCONNECT, as a crash
	done    chan struct{}
	sysDone chan struct{} // sysLoop's end; nil: no $SYS

	mu struct {
		sync.Mutex
		state State
	}
	pub struct { // what $SYS shows of the state (setState)
		sync.Mutex
		phase, lastError string
	}
	forwarded, received, dropped, refused atomic.Uint64
}

// New checks cfg (Config.Validate) and returns the bridge to eng; Start
// runs it.
func New(cfg Config, eng *engine.Broker) (*Bridge, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &Bridge{cfg: cfg, eng: eng, stop: make(chan struct{}), done: make(chan struct{})}
	b.log = cfg.Logger.With("bridge", cfg.Name)
	return b, nil
}

// Start runs the bridge until Close.
func (b *Bridge) Start() {
	go b.run() // owner: b.done, waited for by Close
	if b.cfg.SysInterval > 0 {
		b.sysDone = make(chan struct{})
		go b.sysLoop() // owner: b.sysDone, waited for by Close
	}
}

// Close disconnects both sides (a normal DISCONNECT: both sessions are
// kept) and waits for the bridge to stop.
func (b *Bridge) Close() {
	b.stopped.Do(func() { close(b.stop) })
	<-b.done
	if b.sysDone != nil {
		<-b.sysDone
	}
}

// kill stops the bridge as a crash would: both connections are cut, with
// nothing more sent. For tests.
func (b *Bridge) kill() {
	b.abrupt.Store(true)
	b.Close()
}

// State is the bridge's state now.
func (b *Bridge) State() State {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.mu.state
}

// Stats are the bridge's counters now.
func (b *Bridge) Stats() Stats {
	return Stats{Forwarded: b.forwarded.Load(), Received: b.received.Load(), Dropped: b.dropped.Load(), Refused: b.refused.Load()}
}

// Name is the bridge's name.
func (b *Bridge) Name() string { return b.cfg.Name }

func (b *Bridge) setState(f func(s *State)) {
	b.mu.Lock()
	f(&b.mu.state)
	b.mu.Unlock()
	// $SYS gets the state as it is now, serialised, so that two changes
	// from two goroutines cannot leave the older one published.
	b.pub.Lock()
	defer b.pub.Unlock()
	if st := b.State(); st.Phase != b.pub.phase || st.LastError != b.pub.lastError {
		b.pub.phase, b.pub.lastError = st.Phase, st.LastError
		b.publishState(st)
	}
}

func (b *Bridge) run() {
	defer close(b.done)
	defer b.setState(func(s *State) { s.Connected, s.Phase = false, PhaseStopped })
	fails := 0
	next := 0 // the address to try first
	fresh := false
	for {
		b.setState(func(s *State) { s.Phase, s.RetryAt = PhaseConnecting, time.Time{} })
		connected, err := b.round(&next, fresh)
		fresh = false
		var again *freshStart
		if errors.As(err, &again) {
			fresh = true
			b.log.Warn("the remote holds a session from an earlier local state: starting it afresh", "client_id", b.cfg.ClientID)
			continue
		}
		if errors.Is(err, errStopped) {
			return
		}
		if errors.Is(err, ErrSelf) {
			b.setState(func(s *State) { s.LastError = err.Error() })
			b.log.Error("bridge stopped: it would loop", "err", err)
			return
		}
		if connected {
			fails = 0
		}
		wait := b.backoff(fails)
		b.setState(func(s *State) {
			s.Connected, s.LastError, s.Phase, s.RetryAt = false, err.Error(), PhaseBackingOff, time.Now().Add(wait)
		})
		fails++
		b.log.Warn("bridge down: reconnecting", "err", err, "in", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-b.stop:
			t.Stop()
			return
		}
	}
}

// backoff is the wait before reconnection after fails failed rounds:
// restart_timeout's BASE, doubling up to CAP, drawn at random between BASE
// and that bound (jitter, so that bridges that failed together do not
// retry together).
func (b *Bridge) backoff(fails int) time.Duration {
	base, limit := b.cfg.RestartBase, b.cfg.RestartCap
	if limit == 0 {
		return base
	}
	hi := base
	for i := 0; i < fails && hi < limit; i++ {
		hi *= 2
	}
	hi = min(hi, limit)
	if hi <= base {
		return base
	}
	return base + rand.N(hi-base)
}

// ErrSelf is a bridge whose remote is the broker it runs in: it stops
// for good, with State.LastError saying so.
var ErrSelf = errors.New("bridge to itself")

// freshStart asks for the round again with a clean remote session.
type freshStart struct{}

func (*freshStart) Error() string { return "remote session must start afresh" }

// round is one connection of both sides, relayed until one ends.
// connected reports that both sides were connected.
func (b *Bridge) round(next *int, fresh bool) (connected bool, err error) {
	select {
	case <-b.stop:
		return false, errStopped
	default:
	}
	remote, rca, addr, err := b.dialRemote(next, b.cfg.CleanSession || fresh)
	if err != nil {
		return false, err
	}
	if b.eng.ConnectedFrom(b.cfg.ClientID, remote.nc.LocalAddr().String()) {
		// The remote is this broker: every message out would come back
		// in, and out again. A 5.0 session it made here is ended.
		if b.cfg.Version == packet.V5 {
			d := &packet.Disconnect{}
			d.Props.SessionExpiry = 0
			d.Props.Set(packet.PropSessionExpiry)
			remote.start()
			remote.send(d)
			remote.flush(time.Second)
		}
		remote.close(nil)
		return false, fmt.Errorf("%w: %s is one of this broker's own listeners (its CONNECT arrived here as client %q)", ErrSelf, addr, b.cfg.ClientID)
	}
	window := window311
	if b.cfg.window311 > 0 {
		window = b.cfg.window311
	}
	if b.cfg.Version == packet.V5 {
		window = 65535
		if rca.Props.Has(packet.PropReceiveMaximum) && rca.Props.ReceiveMaximum > 0 {
			window = int(rca.Props.ReceiveMaximum) // [MQTT-3.3.4-7]
		}
		if rca.Props.Has(packet.PropMaximumQoS) {
			for _, t := range b.cfg.Topics {
				if t.Dir&Out != 0 && t.QoS > rca.Props.MaximumQoS {
					remote.close(nil)
					return false, fmt.Errorf("remote %s: its Maximum QoS is %d, topic %q forwards at QoS %d", addr, rca.Props.MaximumQoS, t.Pattern, t.QoS)
				}
			}
		}
		if rca.Props.Has(packet.PropServerKeepAlive) {
			remote.keepAlive = time.Duration(rca.Props.ServerKeepAlive) * time.Second // [MQTT-3.2.2-21]
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()   // the local connection's ServeConn
	var maxOut uint32 // the remote's Maximum Packet Size, less what the prefixes add
	if b.cfg.Version == packet.V5 && rca.Props.Has(packet.PropMaximumPacketSize) {
		grow := 0
		for _, t := range b.cfg.Topics {
			if t.Dir&Out != 0 {
				grow = max(grow, len(t.RemotePrefix)-len(t.LocalPrefix))
			}
		}
		maxOut = uint32(max(int(rca.Props.MaximumPacketSize)-grow, 16))
	}
	r := &relay{b: b, ended: make(chan error, 2)}
	r.noRetain = b.cfg.Version == packet.V5 && rca.Props.Has(packet.PropRetainAvailable) && rca.Props.RetainAvailable == 0
	local, lca, err := b.dialLocal(&wg, window, maxOut)
	if err != nil {
		remote.close(nil)
		return false, err
	}
	if !lca.SessionPresent && rca.SessionPresent && !fresh && !b.cfg.CleanSession {
		local.close(nil)
		remote.close(nil)
		return false, &freshStart{}
	}
	b.log.Info("bridge connected", "remote", addr, "client_id", b.cfg.ClientID, "protocol", b.cfg.Version,
		"remote_session_present", rca.SessionPresent, "local_session_present", lca.SessionPresent, "window", window)
	b.setState(func(s *State) { s.Address, s.LastError = addr, ""; s.Rounds++ })
	r.local, r.remote = local, remote
	defer b.setState(func(s *State) {
		s.Connected = false
		if s.Phase == PhaseConnected {
			s.Phase = PhaseConnecting
		}
	})
	local.start()
	remote.start()
	if lca.SessionPresent && !rca.SessionPresent {
		r.sweepLeft = sweepIDs
	}
	go r.fromLocal() // owner: r.ended, received below
	if r.sweepLeft > 0 {
		b.log.Info("the remote has no session for the bridge: releasing the QoS 2 ids the local session holds from the remote's old flows")
		for id := 1; id <= sweepIDs; id++ {
			if local.send(&packet.Ack{Kind: packet.PUBREL, PacketID: uint16(id)}) != nil {
				break
			}
		}
	}
	r.subscribe()
	go r.fromRemote() // owner: r.ended, received below
	pending := 2      // readers still to end
	select {
	case err = <-r.ended:
		pending--
	case <-b.stop:
		err = errStopped
	}
	if errors.Is(err, errStopped) && !b.abrupt.Load() {
		// A normal disconnection: both sessions stay, and neither will is
		// published (the bridge sets none).
		local.send(&packet.Disconnect{})
		remote.send(&packet.Disconnect{})
		local.flush(5 * time.Second)
		remote.flush(5 * time.Second)
	}
	local.close(err)
	remote.close(err)
	for ; pending > 0; pending-- {
		<-r.ended
	}
	return true, err
}

// dialRemote connects to the remote, trying each address in turn from
// *next; *next becomes the one that answered.
func (b *Bridge) dialRemote(next *int, clean bool) (*link, *packet.Connack, string, error) {
	c := &b.cfg
	cp := &packet.Connect{ProtocolLevel: c.Version, CleanStart: clean, KeepAlive: uint16(c.KeepAlive / time.Second),
		ClientID: c.ClientID, Username: c.Username, UsernameFlag: c.Username != "",
		Password: c.Password, PasswordFlag: c.Password != nil}
	if c.Version == packet.V5 {
		if !clean {
			cp.Props.SessionExpiry = 0xFFFFFFFF // never: the remote keeps the bridge's session [MQTT-3.1.2-23]
			cp.Props.Set(packet.PropSessionExpiry)
		}
		cp.Props.ReceiveMaximum = c.LocalReceiveMaximum
		cp.Props.Set(packet.PropReceiveMaximum)
	}
	raw, err := connectBytes(cp, c.TryPrivate)
	if err != nil {
		return nil, nil, "", fmt.Errorf("CONNECT: %w", err)
	}
	var errs []string
	for i := range c.Addresses {
		n := (*next + i) % len(c.Addresses)
		addr := c.Addresses[n]
		l, ca, err := b.dialOne(addr, raw)
		if err == nil {
			*next = n
			l.keepAlive = c.KeepAlive
			return l, ca, addr, nil
		}
		var re *RefusedError
		if errors.As(err, &re) && c.TryPrivate && re.Code == packet.RetUnacceptableVersion {
			err = fmt.Errorf("%w (try_private sends Mosquitto's bridge flag in the protocol level, which this remote does not take: set try_private = false, or bridge_protocol_version = mqttv50)", err)
		}
		errs = append(errs, fmt.Sprintf("%s: %v", addr, err))
		select {
		case <-b.stop:
			return nil, nil, "", errStopped
		default:
		}
	}
	return nil, nil, "", errors.New(strings.Join(errs, "; "))
}

func (b *Bridge) dialOne(addr string, raw []byte) (*link, *packet.Connack, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() { // ends with ctx, at the latest when dialOne returns
		select {
		case <-b.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	var nc net.Conn
	var err error
	if b.cfg.Dial != nil {
		nc, err = b.cfg.Dial(ctx, addr)
	} else {
		var d net.Dialer
		nc, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, nil, err
	}
	if b.cfg.TLS != nil {
		tc := b.cfg.TLS.Clone()
		if tc.ServerName == "" {
			tc.ServerName, _, _ = net.SplitHostPort(addr)
		}
		tn := tls.Client(nc, tc)
		if err := tn.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, nil, fmt.Errorf("TLS: %w", err)
		}
		nc = tn
	}
	dl, _ := ctx.Deadline()
	// Close during the handshake ends it at once, not at its deadline.
	watch := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	l, ca, err := handshake("remote", nc, b.cfg.Version, raw, dl)
	if !watch() && err == nil {
		l.nc.Close()
		return nil, nil, errStopped
	}
	return l, ca, err
}

// pipeAddr names the local end of a bridge in the broker's logs.
type pipeAddr string

func (a pipeAddr) Network() string { return "pipe" }
func (a pipeAddr) String() string  { return string(a) }

// dialLocal connects the bridge's local session over a pipe that the
// engine serves as any connection; wg waits for ServeConn.
// The engine sends no more in flight than window, and no packet larger
// than maxOut (0: no limit): it discards those for the bridge's session
// and counts them (too_large) [MQTT-3.1.2-25], as the remote would not
// take them [MQTT-3.2.2-15].
func (b *Bridge) dialLocal(wg *sync.WaitGroup, window int, maxOut uint32) (*link, *packet.Connack, error) {
	cli, srv := net.Pipe()
	wg.Add(1)
	go func() { // owner: wg, waited for by round
		defer wg.Done()
		b.eng.ServeConn(srv, engine.ConnInfo{Listener: Listener, Remote: pipeAddr("bridge " + b.cfg.Name)})
	}()
	cp := &packet.Connect{ProtocolLevel: packet.V5, ClientID: LocalClientID(b.cfg.Name)}
	cp.Props.SessionExpiry = 0xFFFFFFFF // never: the queue outlives every connection
	cp.Props.Set(packet.PropSessionExpiry)
	cp.Props.ReceiveMaximum = uint16(min(window, 65535)) // the engine keeps no more in flight than the remote takes
	cp.Props.Set(packet.PropReceiveMaximum)
	if maxOut > 0 {
		cp.Props.MaximumPacketSize = maxOut
		cp.Props.Set(packet.PropMaximumPacketSize)
	}
	raw, err := connectBytes(cp, false)
	if err != nil {
		cli.Close()
		return nil, nil, err
	}
	return handshake("local", cli, packet.V5, raw, time.Now().Add(30*time.Second))
}

// relay is one round's forwarding between the two links. fromLocal and
// fromRemote each own their maps.
type relay struct {
	b             *Bridge
	local, remote *link
	ended         chan error // each reader's end

	// fromLocal only.
	sweepLeft int                 // PUBCOMPs of the sweep still to swallow
	localOnly map[uint16]struct{} // local QoS 2 flows ended here (not forwarded)
	// fromRemote only.
	remoteOnly map[uint16]struct{} // remote QoS 2 flows ended here (dropped)

	subacks  atomic.Int32 // SUBACKs still awaited
	noRetain bool         // the remote has Retain Available 0: forward without RETAIN [MQTT-3.3.1-8]
}

// subacked counts one SUBACK; the last makes the bridge Connected.
func (r *relay) subacked() {
	if r.subacks.Add(-1) == 0 {
		r.b.setState(func(s *State) { s.Connected, s.Phase = true, PhaseConnected })
		r.b.log.Info("bridge subscribed")
	}
}

// subscribe sends the local SUBSCRIBE (the out topics) and the remote one
// (the in topics). Their SUBACKs are checked by the readers.
func (r *relay) subscribe() {
	cfg := &r.b.cfg
	merge := func(dir Direction, filter func(Topic) string) []packet.Subscription {
		var subs []packet.Subscription
		idx := map[string]int{}
		for _, t := range cfg.Topics {
			if t.Dir&dir == 0 {
				continue
			}
			f := filter(t)
			if i, ok := idx[f]; ok {
				subs[i].QoS = max(subs[i].QoS, t.QoS)
				continue
			}
			idx[f] = len(subs)
			subs = append(subs, packet.Subscription{Filter: f, QoS: t.QoS})
		}
		return subs
	}
	out, in := merge(Out, Topic.LocalFilter), merge(In, Topic.RemoteFilter)
	r.subacks.Store(1) // released below, once both are sent
	if len(out) > 0 {
		r.subacks.Add(1)
	}
	if len(in) > 0 {
		r.subacks.Add(1)
	}
	if len(out) > 0 {
		for i := range out {
			// No Local: what the bridge brings in does not go back out
			// [MQTT-3.8.3-3]; the retain flag as published; retained
			// messages only for a subscription that is new.
			out[i].NoLocal, out[i].RetainAsPublished, out[i].RetainHandling = true, true, 1
		}
		r.local.send(&packet.Subscribe{PacketID: 1, Subs: out})
	}
	if len(in) > 0 {
		if cfg.Version == packet.V5 {
			for i := range in {
				in[i].NoLocal, in[i].RetainAsPublished, in[i].RetainHandling = true, true, 1
			}
		}
		r.remote.send(&packet.Subscribe{PacketID: 1, Subs: in})
	}
	r.subacked()
}

// fromLocal relays what the local broker sends: the out direction's
// PUBLISH and PUBREL, and its answers to the in direction.
func (r *relay) fromLocal() {
	b := r.b
	for {
		p, err := r.local.next()
		if err != nil {
			r.ended <- err
			return
		}
		switch p := p.(type) {
		case *packet.Publish:
			topic, ok := b.mapOut(p.Topic)
			if !ok {
				// A subscription of an older configuration: done here.
				b.dropped.Add(1)
				b.log.Debug("dropped: no out topic matches", "topic", p.Topic)
				switch p.QoS {
				case 1:
					err = r.local.send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
				case 2:
					if r.localOnly == nil {
						r.localOnly = map[uint16]struct{}{}
					}
					r.localOnly[p.PacketID] = struct{}{}
					err = r.local.send(&packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID})
				}
				break
			}
			p.Topic = topic
			forwardProps(&p.Props)
			if r.noRetain {
				p.Retain = false
			}
			b.forwarded.Add(1)
			err = r.remote.send(p)
		case *packet.Ack:
			switch p.Kind {
			case packet.PUBREL:
				if _, ok := r.localOnly[p.PacketID]; ok {
					delete(r.localOnly, p.PacketID)
					err = r.local.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: p.PacketID})
					break
				}
				err = r.remote.send(ackFor(p, r.b.cfg.Version))
			case packet.PUBCOMP:
				if r.sweepLeft > 0 {
					r.sweepLeft--
					break
				}
				err = r.remote.send(ackFor(p, r.b.cfg.Version))
			default: // PUBACK, PUBREC: the local broker has committed the message
				if p.ReasonCode >= 0x80 {
					b.refused.Add(1)
					b.log.Warn("the local broker refused a message from the remote", "kind", p.Kind, "reason", p.ReasonCode)
				}
				err = r.remote.send(ackFor(p, r.b.cfg.Version))
			}
		case *packet.Suback:
			b.checkSuback("local", p, Out, Topic.LocalFilter)
			r.subacked()
		case *packet.Pingresp:
		case *packet.Disconnect:
			err = fmt.Errorf("local broker sent DISCONNECT: %v", p.ReasonCode)
		default:
			err = fmt.Errorf("local broker sent %v", p.Type())
		}
		if err != nil {
			r.local.fail(err)
			r.ended <- err
			return
		}
	}
}

// fromRemote relays what the remote sends: the in direction's PUBLISH and
// PUBREL, and its answers to the out direction.
func (r *relay) fromRemote() {
	b := r.b
	for {
		p, err := r.remote.next()
		if err != nil {
			r.ended <- err
			return
		}
		switch p := p.(type) {
		case *packet.Publish:
			topic, ok := b.mapIn(p.Topic)
			if !ok {
				// Outside the in topics: acknowledged, not published.
				b.dropped.Add(1)
				b.log.Debug("dropped: no in topic matches", "topic", p.Topic)
				switch p.QoS {
				case 1:
					err = r.remote.send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
				case 2:
					if r.remoteOnly == nil {
						r.remoteOnly = map[uint16]struct{}{}
					}
					r.remoteOnly[p.PacketID] = struct{}{}
					err = r.remote.send(&packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID})
				}
				break
			}
			p.Topic = topic
			forwardProps(&p.Props)
			b.received.Add(1)
			err = r.local.send(p)
		case *packet.Ack:
			if p.Kind == packet.PUBREL {
				if _, ok := r.remoteOnly[p.PacketID]; ok {
					delete(r.remoteOnly, p.PacketID)
					err = r.remote.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: p.PacketID})
					break
				}
			} else if p.ReasonCode >= 0x80 {
				// The remote refused the message [MQTT-4.4.0-2]: the flow is
				// over, and the local session's entry with it.
				b.refused.Add(1)
				b.log.Warn("the remote refused a message", "kind", p.Kind, "reason", p.ReasonCode)
			}
			err = r.local.send(ackFor(p, packet.V5))
		case *packet.Suback:
			b.checkSuback("remote", p, In, Topic.RemoteFilter)
			r.subacked()
		case *packet.Pingresp:
		case *packet.Disconnect:
			err = fmt.Errorf("remote sent DISCONNECT: %v", p.ReasonCode)
			if p.Props.ReasonString != "" {
				err = fmt.Errorf("%w: %s", err, p.Props.ReasonString)
			}
		default:
			err = fmt.Errorf("remote sent %v", p.Type())
		}
		if err != nil {
			r.remote.fail(err)
			r.ended <- err
			return
		}
	}
}

// ackFor is a for the other link: 3.1.1 has no reason codes or
// properties.
func ackFor(a *packet.Ack, version byte) *packet.Ack {
	if version != packet.V5 {
		return &packet.Ack{Kind: a.Kind, PacketID: a.PacketID}
	}
	return a
}

// forwardProps keeps a PUBLISH's message properties and drops the ones
// that belonged to the connection it came on [MQTT-3.3.2-*]: topic alias,
// subscription identifiers.
func forwardProps(pr *packet.Properties) {
	pr.Clear(packet.PropTopicAlias)
	pr.TopicAlias = 0
	pr.Clear(packet.PropSubscriptionID)
	pr.SubscriptionIDs = nil
}

func (b *Bridge) checkSuback(side string, sa *packet.Suback, dir Direction, filter func(Topic) string) {
	var filters []string
	seen := map[string]bool{}
	for _, t := range b.cfg.Topics {
		if f := filter(t); t.Dir&dir != 0 && !seen[f] {
			seen[f] = true
			filters = append(filters, f)
		}
	}
	for i, c := range sa.Codes {
		if c >= 0x80 && i < len(filters) {
			b.log.Error("subscription refused", "side", side, "filter", filters[i], "reason", c)
			b.setState(func(s *State) {
				s.LastError = fmt.Sprintf("%s refused the subscription to %q: %v", side, filters[i], c)
			})
		}
	}
}

// mapOut is the remote topic of a local one.
func (b *Bridge) mapOut(topic string) (string, bool) {
	for _, t := range b.cfg.Topics {
		if t.Dir&Out != 0 && strings.HasPrefix(topic, t.LocalPrefix) && packet.Match(t.LocalFilter(), topic) {
			return t.RemotePrefix + topic[len(t.LocalPrefix):], true
		}
	}
	return "", false
}

// mapIn is the local topic of a remote one.
func (b *Bridge) mapIn(topic string) (string, bool) {
	for _, t := range b.cfg.Topics {
		if t.Dir&In != 0 && strings.HasPrefix(topic, t.RemotePrefix) && packet.Match(t.RemoteFilter(), topic) {
			return t.LocalPrefix + topic[len(t.RemotePrefix):], true
		}
	}
	return "", false
}
