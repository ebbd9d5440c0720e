package engine

import (
	"bufio"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/keelmq/keel/engine/packet"
)

var (
	seedFlag   = flag.Uint64("seed", 0, "randomized tests (TestFaultRandomized, TestPowerLossRandomized): replay this seed")
	faultSeeds = flag.Int("fault.seeds", 0, "TestFaultRandomized: number of seeds (0: 40, or 10 with -short)")
)

// testSeed is -seed if given, else a new seed; the test logs it, so a
// failure can be replayed with -seed.
func testSeed(t *testing.T) uint64 {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay: go test -run '^%s$' -seed %d ./engine/)", seed, t.Name(), seed)
	return seed
}

// TestFaultRandomized runs mixed traffic (3.1.1 and 5.0, QoS 0/1/2,
// retained, persistent and clean sessions, subscribe and unsubscribe) and
// switches on EIO or ENOSPC on every write and sync at a random moment. It
// records every packet each client receives and checks that:
//
//   - no QoS 1/2 PUBLISH, and no SUBSCRIBE or UNSUBSCRIBE of a persistent
//     session, sent after the fault began gets a success ack (each of them
//     needs a write, since a persistent session subscribes to everything);
//   - nothing sent after Failed() was seen gets a success ack of any kind
//     (CONNACK, SUBACK, UNSUBACK, PUBACK, PUBREC, PUBCOMP);
//   - no message is delivered whose publisher got a failure reason;
//   - after a power cut on the image and a restart, every message acked
//     with success is in the offline persistent session's queue, a QoS 2
//     one exactly once, and each retained topic holds the last acked
//     value or a later one whose fate was unknown.
//
// Long run: go test -run TestFaultRandomized -fault.seeds 500 ./engine/
// Replay one: go test -run TestFaultRandomized -seed N ./engine/
func TestFaultRandomized(t *testing.T) {
	var seeds []uint64
	switch {
	case *seedFlag != 0:
		seeds = []uint64{*seedFlag}
	default:
		n := *faultSeeds
		if n == 0 {
			n = 40
			if testing.Short() {
				n = 10
			}
		}
		base := uint64(time.Now().UnixNano())
		for i := 0; i < n; i++ {
			seeds = append(seeds, base+uint64(i))
		}
	}
	for _, seed := range seeds {
		t.Run("seed="+strconv.FormatUint(seed, 10), func(t *testing.T) {
			runFaultScenario(t, seed)
		})
	}
}

// fop is one packet the driver sent that expects an answer.
type fop struct {
	kind         packet.Type // PUBLISH, SUBSCRIBE, UNSUBSCRIBE, CONNECT
	qos          byte
	payload      string
	topic        string
	retain       bool
	persistent   bool // sent on a persistent session
	afterFault   bool
	afterFailed  bool
	success      bool // got a success answer (for QoS 2: the PUBREC)
	failure      bool // got an answer with a failure reason
	answered     bool
	pubrelFailed bool // its PUBREL was sent after Failed() was seen
	pubcompOK    bool
}

// fclient is a test client with its own reader goroutine, which answers
// the broker's QoS flows and records everything it receives.
type fclient struct {
	name    string
	version byte
	nc      net.Conn
	tb      *testBroker

	mu      sync.Mutex
	pending map[uint16]*fop // by packet id
	connect *fop
	subs    map[uint16]*fop
	got     []string // payloads delivered to it, in order
	closed  bool
	done    chan struct{} // the reader has exited
	nextPID uint16
}

func dialF(t *testing.T, tb *testBroker, name string, version byte, clean bool, failedSeen func() bool) *fclient {
	t.Helper()
	nc, err := net.DialTimeout("tcp", tb.addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	fc := &fclient{name: name, version: version, nc: nc, tb: tb, pending: map[uint16]*fop{}, subs: map[uint16]*fop{}, done: make(chan struct{})}
	cp := &packet.Connect{ProtocolName: "MQTT", ProtocolLevel: version, CleanStart: clean, KeepAlive: 60, ClientID: name}
	if version == packet.V5 && !clean {
		cp.Props.SessionExpiry = 0xFFFFFFFF
		cp.Props.Set(packet.PropSessionExpiry)
	}
	fc.connect = &fop{kind: packet.CONNECT, persistent: !clean, afterFailed: failedSeen()}
	fc.write(cp)
	go fc.read(failedSeen)
	return fc
}

func (fc *fclient) write(p packet.Packet) {
	buf, err := p.Append(nil, fc.version)
	if err != nil {
		panic(err)
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if !fc.closed {
		fc.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := fc.nc.Write(buf); err != nil {
			fc.closed = true
		}
	}
}

func (fc *fclient) read(failedSeen func() bool) {
	defer close(fc.done)
	br := bufio.NewReader(fc.nc)
	for {
		fc.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		p, err := packet.Read(br, fc.version, 0)
		if err != nil {
			fc.mu.Lock()
			fc.closed = true
			fc.mu.Unlock()
			fc.nc.Close()
			return
		}
		switch p := p.(type) {
		case *packet.Connack:
			fc.answer(fc.connect, p.ReasonCode == 0) // 3.1.1 refusals are 1-5
		case *packet.Suback:
			fc.answerSub(p.PacketID, p.Codes)
		case *packet.Unsuback:
			fc.answerSub(p.PacketID, p.Codes)
		case *packet.Publish:
			fc.mu.Lock()
			fc.got = append(fc.got, string(p.Payload))
			fc.mu.Unlock()
			switch p.QoS {
			case 1:
				fc.write(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
			case 2:
				fc.write(&packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID})
			}
		case *packet.Ack:
			switch p.Kind {
			case packet.PUBREL:
				fc.write(&packet.Ack{Kind: packet.PUBCOMP, PacketID: p.PacketID})
			case packet.PUBACK:
				fc.mu.Lock()
				op := fc.pending[p.PacketID]
				delete(fc.pending, p.PacketID)
				fc.mu.Unlock()
				fc.answer(op, p.ReasonCode < 0x80)
			case packet.PUBREC:
				fc.mu.Lock()
				op := fc.pending[p.PacketID]
				if p.ReasonCode >= 0x80 {
					delete(fc.pending, p.PacketID)
				}
				fc.mu.Unlock()
				fc.answer(op, p.ReasonCode < 0x80)
				if op != nil && p.ReasonCode < 0x80 {
					fc.mu.Lock()
					op.pubrelFailed = failedSeen()
					fc.mu.Unlock()
					fc.write(&packet.Ack{Kind: packet.PUBREL, PacketID: p.PacketID})
				}
			case packet.PUBCOMP:
				fc.mu.Lock()
				if op := fc.pending[p.PacketID]; op != nil {
					delete(fc.pending, p.PacketID)
					op.pubcompOK = p.ReasonCode == 0
				}
				fc.mu.Unlock()
			}
		}
	}
}

// answerSub records a SUBACK's or UNSUBACK's codes for its SUBSCRIBE or
// UNSUBSCRIBE: success only if every code is below 0x80.
func (fc *fclient) answerSub(pid uint16, codes []packet.ReasonCode) {
	fc.mu.Lock()
	op := fc.subs[pid]
	delete(fc.subs, pid)
	fc.mu.Unlock()
	ok := true
	for _, c := range codes {
		ok = ok && c < 0x80
	}
	fc.answer(op, ok)
}

func (fc *fclient) answer(op *fop, ok bool) {
	if op == nil {
		return
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	op.answered = true
	if ok {
		op.success = true
	} else {
		op.failure = true
	}
}

func (fc *fclient) pid() uint16 {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	fc.nextPID++
	return fc.nextPID
}

// quiet reports whether everything the client sent has its final answer,
// or the connection is gone.
func (fc *fclient) quiet() bool {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.closed || (len(fc.pending) == 0 && len(fc.subs) == 0 && fc.connect.answered)
}

func runFaultScenario(t *testing.T, seed uint64) {
	t.Logf("seed %d (replay: -seed %d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 19))
	fault := syscall.EIO
	if rng.IntN(2) == 1 {
		fault = syscall.ENOSPC
	}
	tb, toggle, mem := startFaulty(t, Options{CompletionHold: -1}, fault)
	failedSeen := func() bool {
		select {
		case <-tb.b.Failed():
			return true
		default:
			return false
		}
	}

	// Before the fault: an offline persistent session subscribed to
	// everything (checked after the restart), so that every QoS 1/2
	// PUBLISH writes a queue entry.
	off := dialRaw(t, tb.addr, packet.V311)
	off.connect("offline", false, nil)
	off.subscribe(1, "t/#", 2)
	off.send(&packet.Disconnect{})
	waitFor(t, "offline session detached", func() bool {
		done := make(chan bool, 1)
		tb.b.post(event{kind: evFunc, fn: func() { done <- tb.b.core.online["offline"] == nil }})
		return <-done
	})

	var mu sync.Mutex
	var clients []*fclient
	newClient := func(name string, v byte, clean bool) *fclient {
		fc := dialF(t, tb, name, v, clean, failedSeen)
		mu.Lock()
		clients = append(clients, fc)
		mu.Unlock()
		return fc
	}
	pubs := []*fclient{newClient("pub5", packet.V5, true), newClient("pub3", packet.V311, true)}
	persist := newClient("pers5", packet.V5, false) // online persistent: subscribes and unsubscribes
	live := newClient("live5", packet.V5, true)     // online clean subscriber
	live.sub(failedSeen, "t/#", 1)
	waitFor(t, "clients connected", func() bool {
		for _, c := range clients {
			if !c.quiet() {
				return false
			}
		}
		return true
	})

	var ops []*fop
	retainedOrder := map[string][]*fop{} // per topic, pub5's retained publishes in order
	persistSubs := map[string]bool{}
	nOps := 80 + rng.IntN(80)
	faultAt := 5 + rng.IntN(nOps-5)
	faulty := false
	for i := 0; i < nOps; i++ {
		if i == faultAt {
			toggle.On()
			faulty = true
		}
		switch r := rng.IntN(100); {
		case r < 70:
			pi := rng.IntN(len(pubs))
			fc := pubs[pi]
			if fc.isClosed() {
				// Reconnect; after the failure it must be refused.
				fc = newClient(fmt.Sprintf("pub%d-%d", pi, i), fc.version, true)
				pubs[pi] = fc
				continue
			}
			qos := byte(rng.IntN(3))
			retain := pi == 0 && qos > 0 && rng.IntN(4) == 0 // retained: pub5 only, so its order is known
			topic := "t/" + strconv.Itoa(rng.IntN(4))
			op := &fop{kind: packet.PUBLISH, qos: qos, topic: topic, retain: retain,
				payload: fmt.Sprintf("m%d", i), afterFault: faulty, afterFailed: failedSeen()}
			p := &packet.Publish{QoS: qos, Retain: retain, Topic: topic, Payload: []byte(op.payload)}
			if qos > 0 {
				p.PacketID = fc.pid()
				fc.mu.Lock()
				fc.pending[p.PacketID] = op
				fc.mu.Unlock()
				ops = append(ops, op)
				if retain {
					retainedOrder[topic] = append(retainedOrder[topic], op)
				}
			}
			fc.write(p)
		case r < 80:
			// A new clean subscriber: gets retained messages.
			v := byte(packet.V5)
			if rng.IntN(2) == 0 {
				v = packet.V311
			}
			fc := newClient(fmt.Sprintf("new%d", i), v, true)
			ops = append(ops, fc.connect)
			ops = append(ops, fc.sub(failedSeen, "t/#", byte(rng.IntN(3))))
		default:
			if persist.isClosed() {
				continue
			}
			f := "t/" + strconv.Itoa(rng.IntN(4))
			var op *fop
			if persistSubs[f] {
				op = persist.unsub(failedSeen, f)
			} else {
				op = persist.sub(failedSeen, f, byte(1+rng.IntN(2)))
			}
			// Memory follows the request whatever the outcome (a failed
			// Txn's effects stay, unobservable): an unsubscribe is sent
			// only for a filter in memory, so that it always writes.
			persistSubs[f] = !persistSubs[f]
			op.persistent = true
			op.afterFault = faulty
			ops = append(ops, op)
		}
	}
	if !faulty {
		toggle.On()
		// Make sure the fault is hit: one more write.
		fc := pubs[0]
		if fc.isClosed() {
			fc = newClient("last", packet.V5, true)
		}
		op := &fop{kind: packet.PUBLISH, qos: 1, topic: "t/0", payload: "last", afterFault: true, afterFailed: failedSeen()}
		p := &packet.Publish{QoS: 1, Topic: "t/0", Payload: []byte(op.payload), PacketID: fc.pid()}
		fc.mu.Lock()
		fc.pending[p.PacketID] = op
		fc.mu.Unlock()
		ops = append(ops, op)
		fc.write(p)
	}
	waitFailed(t, tb)
	waitFor(t, "every client answered or closed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range clients {
			if !c.quiet() {
				return false
			}
		}
		return true
	})

	// The oracle, part 1: acks and deliveries before the restart.
	mu.Lock()
	all := append([]*fclient(nil), clients...)
	mu.Unlock()
	for _, c := range all {
		c.mu.Lock()
	}
	failedPayload := map[string]bool{}
	for _, op := range ops {
		if op.kind == packet.PUBLISH && op.failure {
			failedPayload[op.payload] = true
		}
		needsWrite := (op.kind == packet.PUBLISH && op.qos > 0) || op.persistent
		if op.afterFault && needsWrite && op.success {
			t.Errorf("%s %q (QoS %d) sent after the fault got a success ack", op.kind, op.payload+op.topic, op.qos)
		}
		if op.afterFailed && op.success {
			t.Errorf("%s %q sent after Failed() got a success ack", op.kind, op.payload+op.topic)
		}
		if op.pubrelFailed && op.pubcompOK {
			t.Errorf("PUBREL of %q sent after Failed() got PUBCOMP success", op.payload)
		}
	}
	for _, c := range all {
		if c.connect.afterFailed && c.connect.success {
			t.Errorf("%s: CONNECT after Failed() got CONNACK success", c.name)
		}
		for _, p := range c.got {
			if failedPayload[p] {
				t.Errorf("%s received %q, whose publisher got a failure reason", c.name, p)
			}
		}
	}
	delivered := 0 // counted under the lock: readers may still be running
	for _, c := range all {
		delivered += len(c.got)
		c.mu.Unlock()
	}

	// Part 2: a power cut, a restart on what was synced.
	tb.stop()
	toggle.Off()
	tb.fs = mem.CrashClone(vfs.CrashCloneCfg{})
	tb.start()

	rc := dialRaw(t, tb.addr, packet.V311)
	if !rc.connect("offline", false, nil).SessionPresent {
		t.Fatal("the offline persistent session was lost")
	}
	// A marker published now is queued behind everything stored.
	p := dialRaw(t, tb.addr, packet.V5)
	p.connect("marker", true, nil)
	p.publish(1, "t/end", 1, "END")
	p.expectAck(packet.PUBACK, 1)
	count := map[string]int{}
	for done := false; !done; {
		switch pk := rc.recv().(type) {
		case *packet.Publish:
			if string(pk.Payload) == "END" {
				done = true
				break
			}
			count[string(pk.Payload)]++
			switch pk.QoS {
			case 1:
				rc.send(&packet.Ack{Kind: packet.PUBACK, PacketID: pk.PacketID})
			case 2:
				rc.send(&packet.Ack{Kind: packet.PUBREC, PacketID: pk.PacketID})
			}
		case *packet.Ack:
			if pk.Kind == packet.PUBREL {
				rc.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: pk.PacketID})
			}
		default:
			t.Fatalf("offline session got %T %+v", pk, pk)
		}
	}
	for _, op := range ops {
		if op.kind != packet.PUBLISH || !op.success {
			continue
		}
		switch n := count[op.payload]; {
		case n == 0:
			t.Errorf("acknowledged QoS %d message %q lost after the restart", op.qos, op.payload)
		case n > 1 && op.qos == 2:
			t.Errorf("QoS 2 message %q delivered %d times after the restart", op.payload, n)
		}
	}

	// Retained: the last acked value, or a later one of unknown fate.
	for topic, seq := range retainedOrder {
		last := -1
		for i, op := range seq {
			if op.success {
				last = i
			}
		}
		if last < 0 {
			continue
		}
		s := dialRaw(t, tb.addr, packet.V5)
		s.connect("r"+topic, true, nil)
		s.subscribe(1, topic, 1)
		s.send(&packet.Pingreq{})
		var got string
		for {
			pk := s.recv()
			if pub, ok := pk.(*packet.Publish); ok {
				got = string(pub.Payload)
				continue
			}
			if pk.Type() == packet.PINGRESP {
				break
			}
		}
		ok := false
		for _, op := range seq[last:] {
			ok = ok || got == op.payload
		}
		if !ok {
			t.Errorf("retained %s = %q after the restart, want %q or a later unacknowledged value", topic, got, seq[last].payload)
		}
	}
	var acked, refused int
	for _, op := range ops {
		if op.success {
			acked++
		}
		if op.failure {
			refused++
		}
	}
	t.Logf("%s at op %d of %d: %d answers ok, %d refused, %d deliveries before, %d after the restart",
		fault, faultAt, nOps, acked, refused, delivered, len(count))
	if t.Failed() {
		fmt.Fprintf(os.Stderr, "TestFaultRandomized: replay with -seed %d\n", seed)
	}
}

func (fc *fclient) isClosed() bool {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.closed
}

func (fc *fclient) sub(failedSeen func() bool, filter string, qos byte) *fop {
	pid := fc.pid()
	op := &fop{kind: packet.SUBSCRIBE, topic: filter, afterFailed: failedSeen()}
	fc.mu.Lock()
	fc.subs[pid] = op
	fc.mu.Unlock()
	fc.write(&packet.Subscribe{PacketID: pid, Subs: []packet.Subscription{{Filter: filter, QoS: qos}}})
	return op
}

func (fc *fclient) unsub(failedSeen func() bool, filter string) *fop {
	pid := fc.pid()
	op := &fop{kind: packet.UNSUBSCRIBE, topic: filter, afterFailed: failedSeen()}
	fc.mu.Lock()
	fc.subs[pid] = op
	fc.mu.Unlock()
	fc.write(&packet.Unsubscribe{PacketID: pid, Filters: []string{filter}})
	return op
}
