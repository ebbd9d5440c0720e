package engine

import (
	"container/heap"
	"time"

	"github.com/keelmq/keel/sessions"
)

// maxExpiryPerRun bounds the sessions ended by one run of the timers, so
// that a mass expiry (every session restored after a crash starts its
// clock at the same moment) is spread over several turns of the core loop,
// with the clients' events handled between them.
const maxExpiryPerRun = 512

// timer is a disconnected session's deadlines, kept in a heap by the
// earlier of the two.
type timer struct {
	s        *session
	willAt   time.Time // zero: no will pending
	expireAt time.Time // zero: never
	i        int       // index in the heap
}

func (t *timer) next() time.Time {
	switch {
	case t.willAt.IsZero():
		return t.expireAt
	case t.expireAt.IsZero() || t.willAt.Before(t.expireAt):
		return t.willAt
	}
	return t.expireAt
}

type timerHeap []*timer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].next().Before(h[j].next()) }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].i = i; h[j].i = j }
func (h *timerHeap) Push(x any)        { t := x.(*timer); t.i = len(*h); *h = append(*h, t) }
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.i = -1
	return t
}

// armTimers schedules a disconnected session's will and expiry from at.
func (b *Broker) armTimers(s *session, at time.Time) {
	b.cancelTimer(s)
	t := &timer{s: s}
	if s.Expiry != sessions.NeverExpire {
		t.expireAt = at.Add(time.Duration(s.Expiry) * time.Second)
	}
	if s.Will != nil {
		t.willAt = at.Add(time.Duration(s.Will.DelaySeconds) * time.Second)
		if !t.expireAt.IsZero() && t.expireAt.Before(t.willAt) {
			t.willAt = t.expireAt
		}
	}
	if t.willAt.IsZero() && t.expireAt.IsZero() {
		return
	}
	b.core.timers[s] = t
	heap.Push(&b.core.timerq, t)
	b.core.timersDirty = true
}

// cancelTimer drops s's deadlines (it reconnected, or ended).
func (b *Broker) cancelTimer(s *session) {
	c := &b.core
	if t := c.timers[s]; t != nil {
		delete(c.timers, s)
		heap.Remove(&c.timerq, t.i)
		c.timersDirty = true
	}
}

// runTimers publishes due wills and ends expired sessions, at most
// maxExpiryPerRun of them; it reports whether more are due already.
func (b *Broker) runTimers(now time.Time) (more bool) {
	c := &b.core
	if at, ok := c.retained.NextExpiry(); ok && at <= now.UnixMilli() {
		// Expired retained messages leave the store too [MQTT-3.3.2-5].
		c.retained.Expire(c.txn, now.UnixMilli())
	}
	var ending []*session
	for c.timerq.Len() > 0 {
		t := c.timerq[0]
		if t.next().After(now) {
			break
		}
		if len(ending) == maxExpiryPerRun {
			more = true
			break
		}
		s := t.s
		if !t.willAt.IsZero() && !now.Before(t.willAt) {
			t.willAt = time.Time{}
			if s.Will != nil {
				b.publishWill(s, now)
				c.sessions.Save(c.txn, s)
			}
		}
		if !t.expireAt.IsZero() && !now.Before(t.expireAt) {
			// Row "session expiry": its state is deleted.
			ending = append(ending, s)
			t.expireAt = time.Time{}
		}
		if t.willAt.IsZero() && t.expireAt.IsZero() {
			heap.Pop(&c.timerq)
			delete(c.timers, s)
		} else {
			heap.Fix(&c.timerq, 0)
		}
	}
	if len(ending) > 0 {
		b.endSessions(ending...)
	}
	c.timersDirty = true
	return more
}

// nextDeadline is when runTimers has work next: the earliest session
// deadline or retained expiry; ok is false when there is none.
func (b *Broker) nextDeadline() (at time.Time, ok bool) {
	c := &b.core
	if c.timerq.Len() > 0 {
		at, ok = c.timerq[0].next(), true
	}
	if ms, rok := c.retained.NextExpiry(); rok {
		r := time.UnixMilli(ms)
		if !ok || r.Before(at) {
			at, ok = r, true
		}
	}
	return at, ok
}
