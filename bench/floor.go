package main

import (
	"bufio"
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"

	"github.com/cockroachdb/pebble/v2"

	"github.com/keelmq/keel/engine/packet"
)

// The floor: the least work any durable broker must do for a synchronous
// QoS 1 publish, to measure what the "PUBACK within 0.15 ms of one fsync"
// target leaves for the broker itself on this machine.
//
//	go run ./bench floor -listen 127.0.0.1:1884 -dir /tmp/floor
//
// It is not a broker. One goroutine per connection reads a PUBLISH,
// appends it to a log file preallocated as Pebble preallocates its WAL,
// calls fdatasync, writes the PUBACK and forwards the message to the
// subscribers of that exact topic, all on the reading goroutine: no
// hand-off, no batching, no index, no session state (subscriber acks are
// read and dropped, nothing is queued for anyone offline, no wildcards, no
// QoS 2). A real broker has to do more than this between the PUBLISH and
// its PUBACK; it cannot do less. With -pebble the write is a synced
// Pebble DB.Set from the reading goroutine instead: the least a broker
// that keeps its log in Pebble can do. With -handoff the reader hands the
// record to one goroutine that writes and syncs it and waits for the
// answer: the two goroutine hand-offs of Pebble's WAL writer (commit ->
// flushLoop -> waiter), without the rest of Pebble. bench/syncfloor.sh runs it side by side
// with Keel, Mosquitto and the fsync probes.

type floorServer struct {
	mu   sync.Mutex // the log file and the subscriber table
	log  *os.File
	db   *pebble.DB // -pebble: a synced Pebble write instead of the log file
	pdir string
	seq  uint64
	subs map[string][]*floorConn
	// -handoff: the goroutine that writes and syncs.
	syncer chan syncReq
}

type syncReq struct {
	rec  []byte
	done chan error
}

func (s *floorServer) syncLoop() {
	for r := range s.syncer {
		_, err := s.log.Write(r.rec)
		if err == nil {
			err = syscall.Fdatasync(int(s.log.Fd()))
		}
		r.done <- err
	}
}

type floorConn struct {
	nc      net.Conn
	version byte
	wmu     sync.Mutex
	buf     []byte
	nextID  uint16
}

func (c *floorConn) send(p packet.Packet) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var err error
	if c.buf, err = p.Append(c.buf[:0], c.version); err != nil {
		return err
	}
	_, err = c.nc.Write(c.buf)
	return err
}

func floorMain(args []string) int {
	fs := flag.NewFlagSet("bench floor", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:1884", "`host:port` to serve")
	dir := fs.String("dir", os.TempDir(), "`directory` for the log file (the disk being measured)")
	usePebble := fs.Bool("pebble", false, "store each message with a synced Pebble write (DB.Set with pebble.Sync) instead of write + fdatasync")
	handoff := fs.Bool("handoff", false, "write + fdatasync on a dedicated goroutine, as Pebble's WAL writer does: the reader hands each record over and waits")
	fs.Parse(args)

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench floor:", err)
		return 2
	}
	s, err := newFloor(*dir, *usePebble, *handoff)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench floor:", err)
		return 2
	}
	defer s.close()
	fmt.Fprintf(os.Stderr, "bench floor: serving %s, log in %s\n", ln.Addr(), *dir)
	if err := s.acceptLoop(ln); err != nil {
		fmt.Fprintln(os.Stderr, "bench floor:", err)
		return 2
	}
	return 0
}

// newFloor prepares the floor's storage in dir.
func newFloor(dir string, usePebble, handoff bool) (*floorServer, error) {
	f, err := os.CreateTemp(dir, "keel-floor-*.log")
	if err != nil {
		return nil, err
	}
	// As Pebble does with a new WAL: reserve the blocks, keep the size.
	_ = syscall.Fallocate(int(f.Fd()), 1 /* FALLOC_FL_KEEP_SIZE */, 0, 64<<20)
	s := &floorServer{log: f, subs: make(map[string][]*floorConn)}
	if handoff {
		s.syncer = make(chan syncReq)
		go s.syncLoop()
	}
	if usePebble {
		if s.pdir, err = os.MkdirTemp(dir, "keel-floor-pebble-*"); err == nil {
			s.db, err = pebble.Open(s.pdir, &pebble.Options{})
		}
		if err != nil {
			s.close()
			return nil, err
		}
	}
	return s, nil
}

// close removes what newFloor created. Connections still served may fail.
func (s *floorServer) close() {
	if s.syncer != nil {
		close(s.syncer)
	}
	if s.db != nil {
		s.db.Close()
	}
	if s.pdir != "" {
		os.RemoveAll(s.pdir)
	}
	s.log.Close()
	os.Remove(s.log.Name())
}

// acceptLoop serves ln until it fails (or is closed).
func (s *floorServer) acceptLoop(ln net.Listener) error {
	for {
		nc, err := ln.Accept()
		if err != nil {
			return err
		}
		go s.serve(nc)
	}
}

func (s *floorServer) serve(nc net.Conn) {
	defer nc.Close()
	br := bufio.NewReaderSize(nc, 64<<10)
	p, err := packet.Read(br, 0, 0)
	if err != nil {
		return
	}
	cp, ok := p.(*packet.Connect)
	if !ok {
		return
	}
	c := &floorConn{nc: nc, version: cp.ProtocolLevel}
	if c.send(&packet.Connack{}) != nil {
		return
	}
	defer s.drop(c)
	var rec []byte
	done := make(chan error, 1)
	for {
		p, err := packet.Read(br, c.version, 0)
		if err != nil {
			return
		}
		switch p := p.(type) {
		case *packet.Publish:
			if p.QoS > 0 {
				rec = append(append(rec[:0], p.Topic...), p.Payload...)
				var err error
				s.mu.Lock()
				if s.syncer != nil {
					s.mu.Unlock()
					r := syncReq{rec: rec, done: done}
					s.syncer <- r
					err = <-done
				} else if s.db != nil {
					s.seq++
					k := binary.BigEndian.AppendUint64(nil, s.seq)
					s.mu.Unlock()
					err = s.db.Set(k, rec, pebble.Sync)
				} else {
					if _, err = s.log.Write(rec); err == nil {
						err = syscall.Fdatasync(int(s.log.Fd()))
					}
					s.mu.Unlock()
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, "bench floor:", err)
					return
				}
				if c.send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID}) != nil {
					return
				}
			}
			s.mu.Lock()
			subs := s.subs[p.Topic]
			s.mu.Unlock()
			for _, sc := range subs {
				out := packet.Publish{QoS: p.QoS, Topic: p.Topic, Payload: p.Payload}
				if out.QoS > 0 {
					sc.wmu.Lock()
					sc.nextID++
					if sc.nextID == 0 {
						sc.nextID = 1
					}
					out.PacketID = sc.nextID
					sc.wmu.Unlock()
				}
				_ = sc.send(&out)
			}
		case *packet.Subscribe:
			sa := &packet.Suback{PacketID: p.PacketID}
			s.mu.Lock()
			for _, sub := range p.Subs {
				s.subs[sub.Filter] = append(s.subs[sub.Filter], c)
				sa.Codes = append(sa.Codes, packet.ReasonCode(min(sub.QoS, 1)))
			}
			s.mu.Unlock()
			if c.send(sa) != nil {
				return
			}
		case *packet.Unsubscribe:
			s.drop(c)
			ua := &packet.Unsuback{PacketID: p.PacketID}
			if c.version == packet.V5 {
				ua.Codes = make([]packet.ReasonCode, len(p.Filters))
			}
			if c.send(ua) != nil {
				return
			}
		case *packet.Pingreq:
			if c.send(&packet.Pingresp{}) != nil {
				return
			}
		case *packet.Disconnect:
			return
		}
	}
}

// drop removes c from every subscription.
func (s *floorServer) drop(c *floorConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for t, cs := range s.subs {
		kept := cs[:0:0]
		for _, x := range cs {
			if x != c {
				kept = append(kept, x)
			}
		}
		s.subs[t] = kept
	}
}
