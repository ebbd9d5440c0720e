package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/keelmq/keel/engine/packet"
	"github.com/keelmq/keel/wal"
)

// An operator's actions on one client (the admin API's): disconnect its
// connection, delete its session. Each runs on the core goroutine like any
// other event, so it is ordered with the clients' own packets; the
// deletion is a session change like a clean start's, appended to the
// drain's Txn, and DeleteSession returns only once that Txn is Done.

var (
	// ErrNotConnected: the client id has no live connection.
	ErrNotConnected = errors.New("engine: no such client connected")
	// ErrNoSession: the client id has no session, stored or live.
	ErrNoSession = errors.New("engine: no such session")
)

// Disconnect closes clientID's connection: a 5.0 client is sent
// DISCONNECT with reason 0x98 Administrative action first [MQTT-3.14.2-1]
// (the reason codes of a server's DISCONNECT); a 3.1 or 3.1.1 client,
// whose protocol has no server DISCONNECT, is closed. Its session is
// kept as at any other end of a connection without the client's
// DISCONNECT: a persistent one waits for the client, and the will is
// published (after its delay) [MQTT-3.1.2-8]. It returns once the close
// is under way, or ErrNotConnected.
func (b *Broker) Disconnect(ctx context.Context, clientID string) error {
	return b.adminDo(ctx, func() error {
		c := b.core.online[clientID]
		if c == nil {
			return fmt.Errorf("%w: %q", ErrNotConnected, clientID)
		}
		c.setEndReason("disconnected by an administrator")
		adminClose(c)
		return nil
	})
}

// DeleteSession deletes clientID's session: its subscriptions, queue,
// in-flight state and will, in memory and in the store. A connected
// client is disconnected first (as Disconnect does), and its will is
// dropped with the session, not published: the operator removed the
// client. The deletion rides the core's current Txn (one range deletion,
// as a clean start over the session does) and DeleteSession returns nil
// only after that Txn's Done(nil): the session is gone on disk too. It
// returns ErrNoSession when there is none, and the store's failure if the
// commit fails (the broker is then broken, as after any failed commit).
func (b *Broker) DeleteSession(ctx context.Context, clientID string) error {
	done := make(chan error, 1)
	err := b.adminDo(ctx, func() error {
		core := &b.core
		s := core.sessions.Sessions[clientID]
		if s == nil {
			return fmt.Errorf("%w: %q", ErrNoSession, clientID)
		}
		s.Will = nil // deleted with the session, never published
		if c := core.online[clientID]; c != nil && s.Owner == target(c) {
			c.setEndReason("session deleted by an administrator")
			adminClose(c)
			// As a takeover does: the session leaves the connection now,
			// so the connection's own end finds nothing to save. A
			// non-persistent session ends here.
			b.detach(c, true, true)
		}
		if core.sessions.Sessions[clientID] == s {
			b.endSessions(s)
		}
		// Released (or refused) with the drain that holds the deletion.
		b.emit(&commitWaiter{done: done}, outItem{pkt: &packet.Disconnect{}}, nil)
		return nil
	})
	if err != nil {
		return err
	}
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("engine: delete session %q: %w: %w", clientID, err, b.Err())
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("engine: delete session %q: %w (the deletion is submitted and will complete)", clientID, ctx.Err())
	}
}

// adminClose ends c for an operator: 5.0 gets DISCONNECT 0x98 first.
func adminClose(c *conn) {
	if c.version == packet.V5 {
		c.send(outItem{pkt: &packet.Disconnect{ReasonCode: packet.CodeAdministrativeAction}}, outItem{close: true})
	} else {
		c.kill()
	}
}

// adminDo runs fn on the core goroutine and returns its result.
func (b *Broker) adminDo(ctx context.Context, fn func() error) error {
	res := make(chan error, 1)
	ev := event{kind: evFunc, fn: func() { res <- fn() }}
	select {
	case b.events <- ev:
	case <-b.quit:
		return wal.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-res:
		return err
	case <-b.coreDone:
		select {
		case err := <-res:
			return err
		default:
			return wal.ErrClosed // the core stopped before it ran fn
		}
	case <-ctx.Done():
		return ctx.Err()
	}
}

// commitWaiter is a target that only learns the fate of its drain's Txn:
// release hands it its item once the Txn is Done(nil) (done gets nil);
// refuse kills it when the commit failed (done gets the broker's error).
// It receives no messages (window 0, fits false).
type commitWaiter struct {
	done  chan error // capacity 1
	group grouping
}

var _ target = (*commitWaiter)(nil)

func (w *commitWaiter) window() int                            { return 0 }
func (w *commitWaiter) fits(*wal.Message, byte, []uint32) bool { return false }
func (w *commitWaiter) allowRead(string) bool                  { return false }
func (w *commitWaiter) protocol() byte                         { return packet.V311 } // refuse kills it
func (w *commitWaiter) send(...outItem)                        { w.signal(nil) }
func (w *commitWaiter) sendNow([]outItem)                      { w.signal(nil) }
func (w *commitWaiter) grouping() *grouping                    { return &w.group }
func (w *commitWaiter) kill()                                  { w.signal(errCommitRefused) }
func (w *commitWaiter) signal(err error) {
	select {
	case w.done <- err:
	default:
	}
}

// errCommitRefused is what a commitWaiter reports when its Txn failed.
var errCommitRefused = errors.New("the commit failed, nothing is acknowledged (restart keel)")
