package engine

import (
	"sync"

	"github.com/keelmq/keel/sessions"
	"github.com/keelmq/keel/wal"
)

// sweep is the reference release left by ending persistent sessions: the
// shared bodies their queues referenced, read from a snapshot taken before
// their keys were deleted.
type sweep struct {
	snap    wal.Snapshot
	clients []string
}

// sweepChunk is how many body references one core event releases.
const sweepChunk = 256

// sweeper reads sweeps off the core goroutine and hands the ids it finds
// to the core in chunks, as events: the core never scans an ended
// session's queue. Its goroutine is started by New and ended by Close.
type sweeper struct {
	b    *Broker
	wake chan struct{} // cap 1
	done chan struct{} // closed when run returns
	mu   struct {
		sync.Mutex
		queue []sweep
	}
}

func newSweeper(b *Broker) *sweeper {
	return &sweeper{b: b, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// add queues sw; it never blocks.
func (w *sweeper) add(sw sweep) {
	w.mu.Lock()
	w.mu.queue = append(w.mu.queue, sw)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// run sweeps until the broker closes. What it has not released by then is
// collected by the next start (sessions.Load drops unreferenced bodies).
func (w *sweeper) run() {
	defer close(w.done)
	defer w.closeAll()
	for {
		select {
		case <-w.wake:
		case <-w.b.closing:
			return
		}
		for {
			w.mu.Lock()
			if len(w.mu.queue) == 0 {
				w.mu.Unlock()
				break
			}
			sw := w.mu.queue[0]
			w.mu.queue = w.mu.queue[1:]
			w.mu.Unlock()
			w.sweep(sw)
		}
	}
}

func (w *sweeper) sweep(sw sweep) {
	defer sw.snap.Close()
	b := w.b
	for _, client := range sw.clients {
		err := sessions.SharedRefs(sw.snap, client, sweepChunk, func(ids []uint64) {
			b.post(event{kind: evFunc, fn: func() {
				// A body deletion sends nothing and, lost in a crash, is
				// collected by the next Load: it rides the next commit,
				// as completions do (lazyOps).
				c := &b.core
				n := c.txn.Len()
				for _, id := range ids {
					c.sessions.Unref(c.txn, id)
				}
				c.lazyOps += c.txn.Len() - n
			}})
		})
		if err != nil {
			b.log.Error("releasing an ended session's messages", "client", client, "err", err)
		}
		select {
		case <-b.closing:
			return
		default:
		}
	}
}

func (w *sweeper) closeAll() {
	w.mu.Lock()
	q := w.mu.queue
	w.mu.queue = nil
	w.mu.Unlock()
	for _, sw := range q {
		sw.snap.Close()
	}
}
