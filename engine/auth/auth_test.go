package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keelmq/keel/engine/packet"
)

func testPasswords(t testing.TB, lines ...string) *Passwords {
	t.Helper()
	var b strings.Builder
	for i := 0; i+1 < len(lines); i += 2 {
		h, err := hashPBKDF2(lines[i+1], 101)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s:%s\n", lines[i], h)
	}
	p, err := ParsePasswords("t", strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFilesAuthenticate(t *testing.T) {
	f := &Files{}
	f.SetPasswords(testPasswords(t, "alice", "pw"))
	ctx := context.Background()
	for _, c := range []struct {
		name string
		anon bool
		req  Request
		want packet.ReasonCode
		id   Identity
	}{
		{"right", false, Request{Username: "alice", HasUsername: true, Password: []byte("pw"), HasPassword: true}, packet.CodeSuccess, user("alice")},
		{"wrong", false, Request{Username: "alice", HasUsername: true, Password: []byte("pW"), HasPassword: true}, packet.CodeBadUsernameOrPassword, Identity{}},
		{"unknown", false, Request{Username: "bob", HasUsername: true, Password: []byte("pw"), HasPassword: true}, packet.CodeBadUsernameOrPassword, Identity{}},
		{"no password", false, Request{Username: "alice", HasUsername: true}, packet.CodeBadUsernameOrPassword, Identity{}},
		{"anonymous refused", false, Request{}, packet.CodeNotAuthorized, Identity{}},
		{"anonymous allowed", true, Request{}, packet.CodeSuccess, anonymous},
		{"empty username is a username", true, Request{HasUsername: true}, packet.CodeBadUsernameOrPassword, Identity{}},
	} {
		f.AllowAnonymous = c.anon
		id, code := f.Authenticate(ctx, c.req)
		if code != c.want || !id.Same(c.id) {
			t.Errorf("%s: got (%+v, %#x), want (%+v, %#x)", c.name, id, code, c.id, c.want)
		}
	}
	// No password file: any username is let in, as Mosquitto does.
	f.SetPasswords(nil)
	if id, code := f.Authenticate(ctx, Request{Username: "x", HasUsername: true}); code != packet.CodeSuccess || !id.Same(user("x")) {
		t.Errorf("no password file: got (%+v, %#x)", id, code)
	}
	// Certificate identity.
	cf := &Files{UseIdentityAsUsername: true}
	if _, code := cf.Authenticate(ctx, Request{Username: "alice", HasUsername: true}); code != packet.CodeNotAuthorized {
		t.Errorf("no certificate: got %#x, want 0x87", code)
	}
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: "device-7"}}
	req := Request{TLS: &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}}}
	if id, code := cf.Authenticate(ctx, req); code != packet.CodeSuccess || !id.Same(user("device-7")) {
		t.Errorf("certificate: got (%+v, %#x), want device-7", id, code)
	}
}

// countingAZ counts its calls.
type countingAZ struct {
	calls atomic.Int64
	allow bool
}

func (c *countingAZ) Allow(Identity, string, string, Access) bool {
	c.calls.Add(1)
	return c.allow
}

func TestCache(t *testing.T) {
	az := &countingAZ{allow: true}
	live := NewLive(az)
	c := NewCache(live, user("u"), "c", 2)
	for range 3 {
		if !c.Allow("a", Write) {
			t.Fatal("Allow = false")
		}
	}
	if n := az.calls.Load(); n != 1 {
		t.Fatalf("3 asks of one topic called the authorizer %d times, want 1", n)
	}
	c.Allow("a", Read) // another access is another decision
	if n := az.calls.Load(); n != 2 {
		t.Fatalf("got %d calls, want 2", n)
	}
	// A reload: the new rules answer, not the cached verdict.
	deny := &countingAZ{allow: false}
	if gen := live.Swap(deny); gen != 2 {
		t.Fatalf("Swap returned generation %d, want 2", gen)
	}
	if c.Allow("a", Write) {
		t.Fatal("after Swap the cache still allowed a")
	}
	if deny.calls.Load() != 1 {
		t.Fatalf("new authorizer called %d times, want 1", deny.calls.Load())
	}
	// Bounded: past its size it starts again.
	c.Allow("b", Write)
	c.Allow("c", Write)
	c.mu.Lock()
	n := len(c.mu.m)
	c.mu.Unlock()
	if n > 2 {
		t.Fatalf("cache of size 2 holds %d", n)
	}
}

// Many goroutines share one cache (reader and delivery) and one ACL while
// it is swapped: under -race.
func TestCacheConcurrent(t *testing.T) {
	a1 := mustACL(t, "topic readwrite a/#\n")
	a2 := mustACL(t, "topic deny a/#\n")
	live := NewLive(a1)
	c := NewCache(live, anonymous, "c", 8)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 500 {
				c.Allow(fmt.Sprintf("a/%d", (g+i)%16), Read)
			}
		})
	}
	wg.Go(func() {
		for i := range 50 {
			if i%2 == 0 {
				live.Swap(a2)
			} else {
				live.Swap(a1)
			}
		}
	})
	wg.Wait()
	live.Swap(a2)
	for i := range 16 {
		if c.Allow(fmt.Sprintf("a/%d", i), Read) {
			t.Fatalf("a/%d allowed after the swap to a deny-all ACL", i)
		}
	}
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (f *fakeClock) Now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.now }
func (f *fakeClock) add(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

func TestLimiterBackoff(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1000, 0)}
	l := NewLimiter(LimiterOptions{Concurrent: 4, Backoff: time.Second, MaxBackoff: 4 * time.Second, Now: clk.Now})
	ctx := context.Background()
	bad := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 5000}
	badMapped := &net.TCPAddr{IP: net.ParseIP("::ffff:10.0.0.1"), Port: 6000}
	good := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 2), Port: 5000}
	fail := func(a net.Addr) {
		t.Helper()
		done, code := l.Acquire(ctx, a)
		if code != packet.CodeSuccess {
			t.Fatalf("Acquire(%v) = %#x, want success", a, code)
		}
		done(false)
	}
	refused := func(a net.Addr) bool {
		done, code := l.Acquire(ctx, a)
		if code == packet.CodeSuccess {
			done(true)
			return false
		}
		if code != packet.CodeConnectionRateExceeded {
			t.Fatalf("Acquire(%v) = %#x, want 0x9F", a, code)
		}
		return true
	}
	fail(bad)
	if !refused(bad) || !refused(badMapped) {
		t.Fatal("an address was not refused right after a failure (IPv4 and its IPv6-mapped form)")
	}
	if refused(good) {
		t.Fatal("another address was refused")
	}
	// Backoffs double: 1s, 2s, 4s, then capped at 4s.
	for _, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		clk.add(want - time.Millisecond)
		if !refused(bad) {
			t.Fatalf("not refused %v into a %v backoff", want-time.Millisecond, want)
		}
		clk.add(time.Millisecond)
		fail(bad)
	}
	clk.add(4 * time.Second)
	done, code := l.Acquire(ctx, bad)
	if code != packet.CodeSuccess {
		t.Fatalf("after the backoff: %#x", code)
	}
	done(true) // a success forgets the address
	if refused(bad) {
		t.Fatal("refused after a success")
	}
}

func TestLimiterConcurrent(t *testing.T) {
	l := NewLimiter(LimiterOptions{Concurrent: 2})
	ctx := context.Background()
	d1, _ := l.Acquire(ctx, nil)
	d2, _ := l.Acquire(ctx, nil)
	short, cancel := context.WithCancel(ctx)
	cancel()
	if _, code := l.Acquire(short, nil); code != packet.CodeServerBusy {
		t.Fatalf("third Acquire with 2 slots taken: %#x, want 0x89", code)
	}
	got := make(chan packet.ReasonCode)
	go func() {
		d, code := l.Acquire(ctx, nil)
		if d != nil {
			d(true)
		}
		got <- code
	}()
	d1(true)
	d1(true) // a second call is a no-op, not a second release
	if code := <-got; code != packet.CodeSuccess {
		t.Fatalf("Acquire after a release: %#x", code)
	}
	d2(true)
	if len(l.slots) != 0 {
		t.Fatalf("%d slots still taken", len(l.slots))
	}
}

func TestLimiterMaxAddresses(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1000, 0)}
	l := NewLimiter(LimiterOptions{MaxAddresses: 2, Now: clk.Now})
	for i := range 3 {
		d, _ := l.Acquire(context.Background(), &net.TCPAddr{IP: net.IPv4(10, 0, 0, byte(i))})
		d(false)
	}
	if n := len(l.mu.addrs); n != 2 {
		t.Fatalf("%d addresses remembered, want the cap of 2", n)
	}
	clk.add(time.Hour)
	d, _ := l.Acquire(context.Background(), &net.TCPAddr{IP: net.IPv4(10, 0, 0, 9)})
	d(false)
	if n := len(l.mu.addrs); n != 1 {
		t.Fatalf("%d addresses after the old ones' backoff ended, want 1", n)
	}
}

// The default cap is half of GOMAXPROCS, at least 1: a login storm leaves
// the other half to the rest of the broker.
func TestLimiterDefaultConcurrent(t *testing.T) {
	for procs, want := range map[int]int{1: 1, 2: 1, 3: 1, 4: 2, 8: 4} {
		if got := defaultConcurrent(procs); got != want {
			t.Errorf("GOMAXPROCS %d: %d verifications at once, want %d", procs, got, want)
		}
	}
	if got, want := cap(NewLimiter(LimiterOptions{}).slots), defaultConcurrent(runtime.GOMAXPROCS(0)); got != want {
		t.Errorf("NewLimiter's default: %d slots, want %d", got, want)
	}
}
