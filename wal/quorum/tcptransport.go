package quorum

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// The TCP transport's wire format (package doc, "Transport"): a
// connection opens with tcpMagic and the sender's node id (8 bytes, BE);
// then each message is a 4-byte BE length and a raftpb.Message in
// protobuf. One connection per direction and peer: a node dials each peer
// for what it sends and reads what the peers' dials bring.
var tcpMagic = [4]byte{'K', 'Q', 'R', '1'}

const (
	maxFrame      = 64 << 20 // bytes; a longer frame closes the connection
	peerQueue     = 4096     // messages waiting for one peer; more are dropped
	dialTimeout   = time.Second
	writeTimeout  = 5 * time.Second
	redialBackoff = 100 * time.Millisecond
)

// TCP is a Transport over TCP.
type TCP struct {
	id     uint64
	ln     net.Listener
	logger *slog.Logger
	peers  map[uint64]*tcpPeer
	recv   func(*pb.Message)

	done chan struct{}
	wg   sync.WaitGroup
	mu   struct {
		sync.Mutex
		conns  map[net.Conn]struct{} // accepted
		closed bool
	}
}

type tcpPeer struct {
	id, from uint64
	addr     string
	out      chan []byte
}

// NewTCP is node id's transport: it accepts peers' connections on ln and
// dials peers[id] (host:port) for what it sends them. Start begins both.
func NewTCP(id uint64, ln net.Listener, peers map[uint64]string, logger *slog.Logger) *TCP {
	if logger == nil {
		logger = slog.Default()
	}
	t := &TCP{id: id, ln: ln, logger: logger.With("component", "quorum-tcp", "node", id),
		peers: map[uint64]*tcpPeer{}, done: make(chan struct{})}
	t.mu.conns = map[net.Conn]struct{}{}
	for pid, addr := range peers {
		if pid != id {
			t.peers[pid] = &tcpPeer{id: pid, from: id, addr: addr, out: make(chan []byte, peerQueue)}
		}
	}
	return t
}

// Start implements Transport.
func (t *TCP) Start(recv func(*pb.Message)) error {
	t.recv = recv
	t.wg.Go(t.accept)
	for _, p := range t.peers {
		t.wg.Go(func() { t.write(p) })
	}
	return nil
}

// Send implements Transport: each message is encoded now and queued for
// its peer's writer; a full queue or an unknown peer drops it.
func (t *TCP) Send(msgs []*pb.Message) {
	for _, m := range msgs {
		p := t.peers[m.GetTo()]
		if p == nil {
			continue
		}
		b, err := proto.Marshal(m)
		if err != nil || len(b) > maxFrame {
			t.logger.Error("raft message not sent", "to", m.GetTo(), "bytes", len(b), "err", err)
			continue
		}
		select {
		case p.out <- b:
		default:
		}
	}
}

// Close implements Transport.
func (t *TCP) Close() error {
	t.mu.Lock()
	if t.mu.closed {
		t.mu.Unlock()
		return nil
	}
	t.mu.closed = true
	close(t.done)
	err := t.ln.Close()
	for c := range t.mu.conns {
		_ = c.Close()
	}
	t.mu.Unlock()
	t.wg.Wait()
	return err
}

func (t *TCP) accept() {
	for {
		c, err := t.ln.Accept()
		if err != nil {
			select {
			case <-t.done:
				return
			default:
			}
			t.logger.Warn("accept", "err", err)
			select {
			case <-t.done:
				return
			case <-time.After(redialBackoff):
			}
			continue
		}
		t.mu.Lock()
		if t.mu.closed {
			t.mu.Unlock()
			_ = c.Close()
			return
		}
		t.mu.conns[c] = struct{}{}
		t.mu.Unlock()
		t.wg.Go(func() {
			if err := t.read(c); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				t.logger.Warn("peer connection closed", "remote", c.RemoteAddr().String(), "err", err)
			}
			t.mu.Lock()
			delete(t.mu.conns, c)
			t.mu.Unlock()
			_ = c.Close()
		})
	}
}

// read reads one peer's connection until it fails or is closed.
func (t *TCP) read(c net.Conn) error {
	r := bufio.NewReaderSize(c, 64<<10)
	var hello [12]byte
	if _, err := io.ReadFull(r, hello[:]); err != nil {
		return err
	}
	if [4]byte(hello[:4]) != tcpMagic {
		return errors.New("not a keel raft connection")
	}
	from := binary.BigEndian.Uint64(hello[4:])
	if t.peers[from] == nil {
		return fmt.Errorf("connection from unknown node %d", from)
	}
	var hdr [4]byte
	var buf []byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return err
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n > maxFrame {
			return fmt.Errorf("frame of %d bytes exceeds %d", n, maxFrame)
		}
		if cap(buf) < int(n) {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			return err
		}
		m := &pb.Message{}
		if err := proto.Unmarshal(buf, m); err != nil {
			return fmt.Errorf("bad message: %w", err)
		}
		if m.GetFrom() != from || m.GetTo() != t.id {
			return fmt.Errorf("message from %d to %d on node %d's connection to %d", m.GetFrom(), m.GetTo(), from, t.id)
		}
		t.recv(m)
	}
}

// write is peer p's writer: it dials, writes what is queued, flushes when
// the queue is empty, and redials after a failure (dropping what it held:
// Raft resends).
func (t *TCP) write(p *tcpPeer) {
	var c net.Conn
	var w *bufio.Writer
	defer func() {
		if c != nil {
			_ = c.Close()
		}
	}()
	for {
		var b []byte
		select {
		case <-t.done:
			return
		case b = <-p.out:
		}
		if c == nil {
			var err error
			d := net.Dialer{Timeout: dialTimeout}
			if c, err = d.Dial("tcp", p.addr); err != nil {
				c = nil
				t.backoff(p)
				continue
			}
			w = bufio.NewWriterSize(c, 64<<10)
			var hello [12]byte
			copy(hello[:], tcpMagic[:])
			binary.BigEndian.PutUint64(hello[4:], p.from)
			_, _ = w.Write(hello[:])
		}
		err := writeFrame(w, b)
		// Take everything queued, then flush once.
		for more := true; more && err == nil; {
			select {
			case b = <-p.out:
				err = writeFrame(w, b)
			default:
				more = false
			}
		}
		if err == nil {
			_ = c.SetWriteDeadline(time.Now().Add(writeTimeout))
			err = w.Flush()
		}
		if err != nil {
			t.logger.Debug("write to peer failed", "peer", p.id, "err", err)
			_ = c.Close()
			c = nil
			t.backoff(p)
		}
	}
}

// backoff waits before the next dial, dropping what queued meanwhile.
func (t *TCP) backoff(p *tcpPeer) {
	select {
	case <-t.done:
	case <-time.After(redialBackoff):
	}
	for {
		select {
		case <-p.out:
		default:
			return
		}
	}
}

func writeFrame(w *bufio.Writer, b []byte) error {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(b)))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := w.Write(b)
	return err
}
