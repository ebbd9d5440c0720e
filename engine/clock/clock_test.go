package clock

import (
	"testing"
	"time"
)

func TestFakeFiresInOrderOnlyWhenDue(t *testing.T) {
	start := time.Unix(1000, 0)
	f := NewFake(start)
	a, b := f.NewTimer(), f.NewTimer()
	a.Reset(2 * time.Second)
	b.Reset(time.Second)
	f.Advance(500 * time.Millisecond)
	select {
	case <-a.C():
		t.Fatal("a fired before its deadline")
	case <-b.C():
		t.Fatal("b fired before its deadline")
	default:
	}
	f.Advance(time.Second)
	if got := <-b.C(); !got.Equal(start.Add(1500 * time.Millisecond)) {
		t.Fatalf("b fired with %v, want the clock's time", got)
	}
	select {
	case <-a.C():
		t.Fatal("a fired at 1.5 s, want 2 s")
	default:
	}
	a.Stop()
	f.Advance(time.Hour)
	select {
	case <-a.C():
		t.Fatal("a fired after Stop")
	default:
	}
	a.Reset(0)
	select {
	case <-a.C():
	default:
		t.Fatal("Reset(0) did not fire at once")
	}
	if f.Timers() != 0 {
		t.Fatalf("%d timers armed, want 0", f.Timers())
	}
}
