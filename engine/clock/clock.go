// Package clock is the broker's time: an interface for the deadlines the
// engine keeps, the system clock, and a fake one that tests set and
// advance instead of sleeping.
package clock

import (
	"sort"
	"sync"
	"time"
)

// Clock is where the engine reads time.
type Clock interface {
	Now() time.Time
	// NewTimer returns a stopped timer on this clock.
	NewTimer() Timer
}

// Timer is a one-shot timer of a Clock. Only its owner's goroutine calls
// Reset and Stop.
type Timer interface {
	C() <-chan time.Time
	// Reset (re)arms the timer to fire once, d from now; a firing not yet
	// received is dropped.
	Reset(d time.Duration)
	Stop()
}

// System is the real clock.
type System struct{}

func (System) Now() time.Time { return time.Now() }

func (System) NewTimer() Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return sysTimer{t}
}

type sysTimer struct{ t *time.Timer }

func (t sysTimer) C() <-chan time.Time { return t.t.C }

// Reset and Stop drop a pending value (Go 1.23 timers).
func (t sysTimer) Reset(d time.Duration) { t.t.Reset(d) }
func (t sysTimer) Stop()                 { t.t.Stop() }

// Fake is a clock that moves only when told to. Its timers fire (in
// deadline order) from Advance and Set. The zero value is not usable: use
// NewFake.
type Fake struct {
	mu     sync.Mutex
	now    time.Time
	timers map[*fakeTimer]struct{}
}

// NewFake returns a fake clock reading start.
func NewFake(start time.Time) *Fake {
	return &Fake{now: start, timers: make(map[*fakeTimer]struct{})}
}

func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Advance moves the clock forward by d.
func (f *Fake) Advance(d time.Duration) { f.Set(f.Now().Add(d)) }

// Set moves the clock to t (never backwards) and fires every timer due by
// then.
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	if t.After(f.now) {
		f.now = t
	}
	var due []*fakeTimer
	for ft := range f.timers {
		if !ft.at.After(f.now) {
			due = append(due, ft)
		}
	}
	sort.Slice(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	for _, ft := range due {
		delete(f.timers, ft)
	}
	now := f.now
	f.mu.Unlock()
	for _, ft := range due {
		select {
		case ft.c <- now:
		default: // one firing pending at most, as with time.Timer
		}
	}
}

// Timers is the number of armed timers (for tests that wait until the
// code under test has armed one).
func (f *Fake) Timers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.timers)
}

func (f *Fake) NewTimer() Timer { return &fakeTimer{f: f, c: make(chan time.Time, 1)} }

type fakeTimer struct {
	f  *Fake
	c  chan time.Time
	at time.Time
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Reset(d time.Duration) {
	t.drain()
	t.f.mu.Lock()
	t.at = t.f.now.Add(d)
	fire := d <= 0
	if !fire {
		t.f.timers[t] = struct{}{}
	} else {
		delete(t.f.timers, t)
	}
	now := t.f.now
	t.f.mu.Unlock()
	if fire {
		t.c <- now
	}
}

func (t *fakeTimer) Stop() {
	t.f.mu.Lock()
	delete(t.f.timers, t)
	t.f.mu.Unlock()
	t.drain()
}

func (t *fakeTimer) drain() {
	select {
	case <-t.c:
	default:
	}
}
