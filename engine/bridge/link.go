package bridge

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/keelmq/keel/engine/packet"
)

// link is one MQTT client connection of the bridge: to the remote broker,
// or to the local one over a pipe. It is not a client with a session of
// its own (engine/client is): the bridge chooses no packet id and keeps no
// flow state, it relays packets whose ids and state the brokers at either
// end own. So a link is a framed packet connection with the CONNECT
// handshake and keep alive, and nothing else.
//
// Goroutines: the bridge's relay reads (next); one writer goroutine
// (writeLoop) is the only one that writes after the handshake. send
// appends encoded packets to a buffer under mu; past maxQueued it waits for
// the writer, so a slow far side slows the near side's reader down rather
// than growing memory.
type link struct {
	name      string // "remote" or "local", for errors
	nc        net.Conn
	rd        *bufio.Reader
	version   byte // how packets are encoded and decoded
	keepAlive time.Duration
	maxIn     uint32 // inbound Maximum Packet Size; 0: MQTT's

	mu struct {
		sync.Mutex
		out    []byte
		closed bool
		err    error
	}
	wake    chan struct{} // cap 1: something to write
	written chan struct{} // cap 1: a write finished
	dead    chan struct{} // closed when the link is over
	once    sync.Once
	wg      sync.WaitGroup
}

// maxQueued bounds what waits for the writer before send blocks.
const maxQueued = 1 << 20

// handshake sends cp (raw, when the CONNECT bytes need a patch) and reads
// the CONNACK on the bare connection, with a deadline.
func handshake(name string, nc net.Conn, version byte, raw []byte, deadline time.Time) (*link, *packet.Connack, error) {
	l := &link{name: name, nc: nc, rd: bufio.NewReaderSize(nc, 64<<10), version: version,
		wake: make(chan struct{}, 1), written: make(chan struct{}, 1), dead: make(chan struct{})}
	nc.SetDeadline(deadline)
	if _, err := nc.Write(raw); err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("%s: CONNECT: %w", name, err)
	}
	p, err := packet.Read(l.rd, version, 0)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("%s: CONNACK: %w", name, err)
	}
	nc.SetDeadline(time.Time{})
	ca, ok := p.(*packet.Connack)
	if !ok {
		nc.Close()
		return nil, nil, fmt.Errorf("%s: got %v before CONNACK", name, p.Type())
	}
	if ca.ReasonCode != 0 {
		nc.Close()
		return nil, ca, &RefusedError{Link: name, Version: version, Code: ca.ReasonCode, Reason: ca.Props.ReasonString}
	}
	return l, ca, nil
}

// RefusedError is a CONNACK that refused the bridge.
type RefusedError struct {
	Link    string
	Version byte
	Code    packet.ReasonCode
	Reason  string
}

func (e *RefusedError) Error() string {
	s := fmt.Sprintf("%s refused the connection: %v", e.Link, e.Code)
	if e.Version != packet.V5 {
		s = fmt.Sprintf("%s refused the connection: return code %d", e.Link, byte(e.Code))
		switch e.Code {
		case packet.RetUnacceptableVersion:
			s += " (unacceptable protocol version)"
		case packet.RetIdentifierRejected:
			s += " (identifier rejected)"
		case packet.RetServerUnavailable:
			s += " (server unavailable)"
		case packet.RetBadUsernameOrPassword:
			s += " (bad user name or password)"
		case packet.RetNotAuthorized:
			s += " (not authorized)"
		}
	}
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// start runs the writer.
func (l *link) start() {
	l.wg.Add(1)
	go l.writeLoop() // owner: l.wg, waited for by close
}

// next reads one packet. With keep alive on, a silence of one and a half
// keep alive periods ends the link [MQTT-3.1.2-24].
func (l *link) next() (packet.Packet, error) {
	if l.keepAlive > 0 {
		l.nc.SetReadDeadline(time.Now().Add(l.keepAlive * 3 / 2))
	}
	p, err := packet.Read(l.rd, l.version, l.maxIn)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			err = fmt.Errorf("%s: keep alive: nothing received for %v", l.name, l.keepAlive*3/2)
		} else {
			err = fmt.Errorf("%s: %w", l.name, err)
		}
		l.fail(err)
		return nil, l.err()
	}
	return p, nil
}

// send queues p; it waits while too much is queued. An error means the
// link is over.
func (l *link) send(p packet.Packet) error {
	for {
		l.mu.Lock()
		if l.mu.closed {
			err := l.mu.err
			l.mu.Unlock()
			return err
		}
		if len(l.mu.out) < maxQueued {
			var err error
			l.mu.out, err = p.Append(l.mu.out, l.version)
			l.mu.Unlock()
			if err != nil {
				return fmt.Errorf("%s: encode %v: %w", l.name, p.Type(), err)
			}
			l.signal()
			return nil
		}
		l.mu.Unlock()
		l.signal()
		select {
		case <-l.written:
		case <-l.dead:
		}
	}
}

func (l *link) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *link) writeLoop() {
	defer l.wg.Done()
	var tick <-chan time.Time
	if l.keepAlive > 0 {
		t := time.NewTicker(l.keepAlive / 2)
		defer t.Stop()
		tick = t.C
	}
	last := time.Now()
	var buf []byte
	for {
		select {
		case <-l.wake:
		case <-l.dead:
			return
		case now := <-tick:
			if now.Sub(last) >= l.keepAlive/2 {
				// Nothing sent for half the keep alive: PINGREQ keeps
				// the connection alive [MQTT-3.1.2-23].
				l.mu.Lock()
				l.mu.out = append(l.mu.out, byte(packet.PINGREQ)<<4, 0)
				l.mu.Unlock()
			}
		}
		l.mu.Lock()
		buf, l.mu.out = l.mu.out, buf[:0]
		l.mu.Unlock()
		if len(buf) == 0 {
			continue
		}
		last = time.Now()
		l.nc.SetWriteDeadline(last.Add(30 * time.Second))
		if _, err := l.nc.Write(buf); err != nil {
			l.fail(fmt.Errorf("%s: write: %w", l.name, err))
			return
		}
		if cap(buf) > 4*maxQueued {
			buf = nil
		}
		select {
		case l.written <- struct{}{}:
		default:
		}
	}
}

// flush waits until what is queued has been written, or the link is over.
func (l *link) flush(timeout time.Duration) {
	deadline := time.After(timeout)
	for {
		l.mu.Lock()
		empty := len(l.mu.out) == 0
		l.mu.Unlock()
		if empty {
			return
		}
		l.signal()
		select {
		case <-l.written:
		case <-l.dead:
			return
		case <-deadline:
			return
		}
	}
}

// fail ends the link with err (the first reason wins): the socket is
// closed at once, what is queued is dropped.
func (l *link) fail(err error) {
	l.once.Do(func() {
		l.mu.Lock()
		l.mu.closed, l.mu.err, l.mu.out = true, err, nil
		l.mu.Unlock()
		l.nc.Close()
		close(l.dead)
	})
}

func (l *link) err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mu.err
}

// close ends the link and waits for its writer.
func (l *link) close(err error) {
	l.fail(err)
	l.wg.Wait()
}

// connectBytes encodes cp; with private, the protocol level byte carries
// Mosquitto's bridge flag (0x80) [try_private].
func connectBytes(cp *packet.Connect, private bool) ([]byte, error) {
	b, err := cp.Append(nil, cp.ProtocolLevel)
	if err != nil {
		return nil, err
	}
	if private {
		// Fixed header, remaining length (1..4 bytes), then the protocol
		// name "MQTT" (2+4 bytes) and the level.
		i := 1
		for b[i]&0x80 != 0 {
			i++
		}
		b[i+1+6] |= 0x80
	}
	return b, nil
}

var errStopped = errors.New("bridge stopped")
