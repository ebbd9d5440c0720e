package engine

import (
	"time"

	"github.com/keelmq/keel/engine/packet"
)

// Flapping detection (Options.FlappingDetect, off by default; EMQX's
// shape): a client id that connects more than FlappingMaxConnects times
// within FlappingWindow is banned for FlappingBan. The connect that goes
// over, and every connect of that id during the ban, is refused (counted
// flapping, logged at most 50 lines a second with the other refusals):
//
//   - 5.0: CONNACK 0x8A Banned, then close [MQTT-3.2.2-7]. 0x8A is the
//     5.0 code for a client the server will not take for a time (section
//     3.2.2.2); 0x9F Connection rate exceeded speaks of the connection
//     rate of the server, which max_connection_rate already answers with.
//   - 3.1.1 and 3.1: return code 5 Not authorized, then close (what EMQX
//     sends a banned 3.1.1 client); 3 Server unavailable would say the
//     whole server is down.
//
// A window starts at an id's first connect and lasts FlappingWindow; the
// count starts again with the first connect after it (EMQX's fixed
// window). A refused connect is not counted, so a ban ends on time
// however often the client tries meanwhile; its count then starts from
// nothing. Only connects that passed authentication count (this runs on
// the core, after the reader authenticated the CONNECT): a peer that
// cannot log in as a client cannot get that client banned. Connects with
// an empty client id (a server-assigned one, new each time) are not
// followed.
//
// Memory is bounded: at most FlappingMaxTracked ids are followed at once;
// an id whose window and ban are over is forgotten (two queues of
// deadlines, in time order, swept at each connect: no scan). When the
// table is full a new id is not followed until room is made (fail open:
// flapping protects the broker from looping clients, it is no
// authentication).

func (o *Options) fillFlapping() {
	if o.FlappingMaxConnects == 0 {
		o.FlappingMaxConnects = 15
	}
	if o.FlappingWindow == 0 {
		o.FlappingWindow = time.Minute
	}
	if o.FlappingBan == 0 {
		o.FlappingBan = 5 * time.Minute
	}
	if o.FlappingMaxTracked == 0 {
		o.FlappingMaxTracked = 100_000
	}
}

// flapping is the core's table of client ids it follows.
type flapping struct {
	ids       map[string]*flapEntry
	windows   flapQueue // window ends, in time order
	bans      flapQueue // ban ends, in time order
	untracked uint64    // connects not followed because the table was full
}

type flapEntry struct {
	start time.Time // of the current window
	n     int       // connects counted in it
	until time.Time // banned until; zero: not banned
}

// flapQueue is a FIFO of deadlines pushed in time order (now plus a fixed
// duration), so its front is always the soonest.
type flapQueue struct {
	marks []flapMark
	head  int
}

type flapMark struct {
	id string
	at time.Time
}

func (q *flapQueue) push(id string, at time.Time) { q.marks = append(q.marks, flapMark{id, at}) }

// pop returns the front mark if it is due by now.
func (q *flapQueue) pop(now time.Time) (flapMark, bool) {
	if q.head == len(q.marks) || q.marks[q.head].at.After(now) {
		return flapMark{}, false
	}
	m := q.marks[q.head]
	q.marks[q.head] = flapMark{}
	q.head++
	if q.head > 64 && q.head*2 > len(q.marks) {
		n := copy(q.marks, q.marks[q.head:])
		clear(q.marks[n:])
		q.marks, q.head = q.marks[:n], 0
	}
	return m, true
}

// sweep forgets the ids whose window and ban are over by now.
func (f *flapping) sweep(now time.Time, window time.Duration) {
	over := func(e *flapEntry) bool { return !e.until.After(now) && !e.start.Add(window).After(now) }
	for {
		m, ok := f.windows.pop(now)
		if !ok {
			break
		}
		if e := f.ids[m.id]; e != nil && over(e) {
			delete(f.ids, m.id)
		}
	}
	for {
		m, ok := f.bans.pop(now)
		if !ok {
			break
		}
		if e := f.ids[m.id]; e != nil && over(e) {
			delete(f.ids, m.id)
		}
	}
}

// flapped counts a connect of client id and reports whether it is refused
// for flapping. Core goroutine only.
func (b *Broker) flapped(c *conn, id string) bool {
	o := &b.opts
	if !o.FlappingDetect || id == "" {
		return false
	}
	f := &b.core.flap
	if f.ids == nil {
		f.ids = make(map[string]*flapEntry)
	}
	now := b.now()
	f.sweep(now, o.FlappingWindow)
	e := f.ids[id]
	if e != nil && e.until.After(now) {
		b.refuseFlapping(c, "connect refused: client id banned for flapping", e)
		return true
	}
	if e == nil || !e.until.IsZero() || !now.Before(e.start.Add(o.FlappingWindow)) {
		if e == nil {
			if len(f.ids) >= o.FlappingMaxTracked {
				f.untracked++
				return false
			}
			e = &flapEntry{}
			f.ids[id] = e
		}
		*e = flapEntry{start: now}
		f.windows.push(id, now.Add(o.FlappingWindow))
	}
	e.n++
	if e.n <= o.FlappingMaxConnects {
		return false
	}
	e.until = now.Add(o.FlappingBan)
	f.bans.push(id, e.until)
	b.refuseFlapping(c, "connect refused: client id connects too often, banned", e)
	return true
}

// refuseFlapping answers a CONNECT refused for flapping: 5.0 CONNACK 0x8A
// Banned, 3.1.1 and 3.1 return code 5 Not authorized; then close
// [MQTT-3.2.2-7].
func (b *Broker) refuseFlapping(c *conn, msg string, e *flapEntry) {
	b.stats.reasons.refuse(refuseFlapping)
	b.refusedLog.log(c.log, msg, "connects", e.n,
		"window", b.opts.FlappingWindow, "banned_until", e.until)
	c.setEndReason("banned for flapping")
	code := packet.RetNotAuthorized
	if c.version == packet.V5 {
		code = packet.CodeBanned
	}
	c.send(outItem{pkt: &packet.Connack{ReasonCode: code}}, outItem{close: true})
}
