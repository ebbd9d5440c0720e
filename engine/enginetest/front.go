package enginetest

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Front is a TCP proxy on a fixed loopback port in front of a broker that
// gets a new port at each start (Retarget). Cut closes every connection
// through it at once: what the broker writes after that reaches nobody, as
// after a power cut, so a crash image (Broker.Crash) taken after Cut holds
// everything any client saw acknowledged. Crash alone lets the old broker
// write until it has stopped.
type Front struct {
	ln     net.Listener
	target atomic.Pointer[string]
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	gate   chan struct{} // guarded by mu: open (unclosed) while held
	wg     sync.WaitGroup
}

// Hold stops what the broker sends from reaching its clients (what they
// send still reaches it): acknowledgements and deliveries pile up in
// flight. Release lets them go; Cut drops them.
func (f *Front) Hold() {
	f.mu.Lock()
	f.gate = make(chan struct{})
	f.mu.Unlock()
}

// Release ends Hold: what was held goes on.
func (f *Front) Release() {
	f.mu.Lock()
	if f.gate != nil {
		close(f.gate)
		f.gate = nil
	}
	f.mu.Unlock()
}

// gated copies src to dst, waiting at the gate before each write.
func (f *Front) gated(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			f.mu.Lock()
			g := f.gate
			f.mu.Unlock()
			if g != nil {
				<-g
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// NewFront starts a Front to target until the test ends.
func NewFront(t testing.TB, target string) *Front {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &Front{ln: ln, conns: map[net.Conn]struct{}{}}
	f.target.Store(&target)
	f.wg.Add(1)
	go f.serve() // owner: f.wg
	t.Cleanup(func() { ln.Close(); f.Cut(); f.wg.Wait() })
	return f
}

// Addr is the proxy's address.
func (f *Front) Addr() string { return f.ln.Addr().String() }

// Retarget sends new connections to addr.
func (f *Front) Retarget(addr string) { f.target.Store(&addr) }

func (f *Front) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", *f.target.Load())
		if err != nil {
			c.Close()
			continue
		}
		f.mu.Lock()
		f.conns[c], f.conns[u] = struct{}{}, struct{}{}
		f.mu.Unlock()
		f.wg.Add(2)
		pipe := func(dst, src net.Conn) { // owner: f.wg
			defer f.wg.Done()
			if dst == c {
				f.gated(dst, src) // from the broker
			} else {
				io.Copy(dst, src)
			}
			dst.Close()
			src.Close()
			f.mu.Lock()
			delete(f.conns, dst)
			delete(f.conns, src)
			f.mu.Unlock()
		}
		go pipe(c, u)
		go pipe(u, c)
	}
}

// Cut closes every connection now; what was held is dropped.
func (f *Front) Cut() {
	f.mu.Lock()
	for c := range f.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		c.Close()
	}
	f.mu.Unlock()
	f.Release()
}
