package auth

import (
	"context"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"github.com/keelmq/keel/engine/packet"
)

// LimiterOptions configure a Limiter. The zero value is valid: see each
// field's default.
type LimiterOptions struct {
	// Concurrent is the most password verifications running at once
	// (default GOMAXPROCS): a reconnect storm waits for a slot instead
	// of taking every core.
	Concurrent int
	// Backoff is how long an address is refused after its first failed
	// verification (default 1s); it doubles with each further failure up
	// to MaxBackoff (default 1m), and a success forgets the address.
	Backoff    time.Duration
	MaxBackoff time.Duration
	// MaxAddresses bounds the addresses remembered (default 65,536): past
	// it, those whose backoff has ended are forgotten, and if none has,
	// a new address is not remembered (the cap on concurrent
	// verifications still holds for it).
	MaxAddresses int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Limiter bounds password verifications: at most Concurrent at once, and
// none from an address still in its backoff after failures. It is safe
// for concurrent use.
type Limiter struct {
	opt   LimiterOptions
	slots chan struct{}

	mu struct {
		sync.Mutex
		addrs map[netip.Addr]*backoff
	}
}

type backoff struct {
	failures int
	until    time.Time // refused before this
}

// NewLimiter returns a Limiter with opt's settings (defaults filled in).
func NewLimiter(opt LimiterOptions) *Limiter {
	if opt.Concurrent <= 0 {
		opt.Concurrent = runtime.GOMAXPROCS(0)
	}
	if opt.Backoff <= 0 {
		opt.Backoff = time.Second
	}
	if opt.MaxBackoff <= 0 {
		opt.MaxBackoff = time.Minute
	}
	if opt.MaxBackoff < opt.Backoff {
		opt.MaxBackoff = opt.Backoff
	}
	if opt.MaxAddresses <= 0 {
		opt.MaxAddresses = 1 << 16
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	l := &Limiter{opt: opt, slots: make(chan struct{}, opt.Concurrent)}
	l.mu.addrs = make(map[netip.Addr]*backoff)
	return l
}

// Acquire takes a verification slot for a client at remote. It returns
// CodeSuccess and done, which the caller must call once with the
// verification's outcome; or, taking nothing, CodeConnectionRateExceeded
// (0x9F; 3.1.1: server unavailable) while remote is in its backoff, or
// CodeServerBusy (0x89) if ctx ends before a slot is free.
func (l *Limiter) Acquire(ctx context.Context, remote net.Addr) (done func(ok bool), code packet.ReasonCode) {
	addr, hasAddr := addrOf(remote)
	if hasAddr {
		l.mu.Lock()
		b := l.mu.addrs[addr]
		refused := b != nil && l.opt.Now().Before(b.until)
		l.mu.Unlock()
		if refused {
			return nil, packet.CodeConnectionRateExceeded
		}
	}
	select {
	case l.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, packet.CodeServerBusy
	}
	var once sync.Once
	return func(ok bool) {
		once.Do(func() {
			<-l.slots
			if hasAddr {
				l.record(addr, ok)
			}
		})
	}, packet.CodeSuccess
}

// InBackoff says whether remote is refused for its failures: for
// verifications that take no slot (SCRAM, whose cost is the client's).
func (l *Limiter) InBackoff(remote net.Addr) bool {
	addr, ok := addrOf(remote)
	if !ok {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.mu.addrs[addr]
	return b != nil && l.opt.Now().Before(b.until)
}

// Record notes the outcome of a verification made without Acquire.
func (l *Limiter) Record(remote net.Addr, ok bool) {
	if addr, has := addrOf(remote); has {
		l.record(addr, ok)
	}
}

// record notes a verification's outcome for addr.
func (l *Limiter) record(addr netip.Addr, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ok {
		delete(l.mu.addrs, addr)
		return
	}
	now := l.opt.Now()
	b := l.mu.addrs[addr]
	if b == nil {
		if len(l.mu.addrs) >= l.opt.MaxAddresses {
			l.sweepLocked(now)
			if len(l.mu.addrs) >= l.opt.MaxAddresses {
				return
			}
		}
		b = &backoff{}
		l.mu.addrs[addr] = b
	}
	b.failures++
	d := l.opt.Backoff
	for i := 1; i < b.failures && d < l.opt.MaxBackoff; i++ {
		d *= 2
	}
	b.until = now.Add(min(d, l.opt.MaxBackoff))
}

// sweepLocked forgets the addresses whose backoff has ended.
//
// REQUIRES: l.mu is held.
func (l *Limiter) sweepLocked(now time.Time) {
	for a, b := range l.mu.addrs {
		if !now.Before(b.until) {
			delete(l.mu.addrs, a)
		}
	}
}

// addrOf is the IP address of remote (an IPv4-mapped IPv6 address as
// IPv4), if it has one.
func addrOf(remote net.Addr) (netip.Addr, bool) {
	switch a := remote.(type) {
	case *net.TCPAddr:
		ip, ok := netip.AddrFromSlice(a.IP)
		return ip.Unmap(), ok
	case nil:
		return netip.Addr{}, false
	}
	ap, err := netip.ParseAddrPort(remote.String())
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}
