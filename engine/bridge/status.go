package bridge

import (
	"strconv"
	"time"

	"github.com/keelmq/keel/engine"
)

// The phases of State.Phase.
const (
	PhaseConnecting = "connecting"
	PhaseConnected  = "connected"
	PhaseBackingOff = "backing off"
	PhaseStopped    = "stopped"
)

// Status is everything a bridge shows (metrics, $SYS, the admin API).
type Status struct {
	Name  string
	State State
	Stats Stats
	// Queue is the local session's stored queue: what waits for the
	// remote, on disk (queued and in flight). QueueKnown is false when
	// the session does not exist yet or the broker is closed.
	Queue      engine.SessionQueue
	QueueKnown bool
}

// Status is the bridge's status now. The queue is asked of the engine's
// core goroutine: not to be called from it.
func (b *Bridge) Status() Status {
	st := Status{Name: b.cfg.Name, State: b.State(), Stats: b.Stats()}
	st.Queue, st.QueueKnown = b.eng.SessionQueue(LocalClientID(b.cfg.Name))
	return st
}

// SysPrefix is the $SYS topic level under which bridge name's state is
// published.
func SysPrefix(name string) string { return "$SYS/broker/bridges/" + name + "/" }

// publishState sets the $SYS state topics: state, last_error.
func (b *Bridge) publishState(st State) {
	if b.cfg.SysInterval <= 0 {
		return
	}
	p := SysPrefix(b.cfg.Name)
	b.eng.SetSys(p+"state", st.Phase)
	b.eng.SetSys(p+"last_error", st.LastError)
}

// sysLoop publishes the counters and the queue under $SYS every
// SysInterval until the bridge stops.
func (b *Bridge) sysLoop() {
	defer close(b.sysDone)
	t := time.NewTicker(b.cfg.SysInterval)
	defer t.Stop()
	for {
		st := b.Status()
		p := SysPrefix(b.cfg.Name)
		u := func(n uint64) string { return strconv.FormatUint(n, 10) }
		b.eng.SetSys(p+"messages/forwarded", u(st.Stats.Forwarded))
		b.eng.SetSys(p+"messages/received", u(st.Stats.Received))
		b.eng.SetSys(p+"messages/dropped", u(st.Stats.Dropped))
		b.eng.SetSys(p+"messages/refused", u(st.Stats.Refused))
		if st.QueueKnown {
			b.eng.SetSys(p+"queue/messages", strconv.FormatInt(st.Queue.Entries, 10))
			b.eng.SetSys(p+"queue/bytes", strconv.FormatInt(st.Queue.Bytes, 10))
		}
		select {
		case <-t.C:
		case <-b.stop:
			return
		}
	}
}
