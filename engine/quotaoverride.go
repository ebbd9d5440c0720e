package engine

// Per-client queue quotas. Options.MaxQueuedMessages and MaxQueuedBytes are
// every persistent session's bounds unless Options.QueueLimits gives the
// session its own (cmd/keel: the [quota NAME] sections, first match
// wins). The override is looked up, on the core, when a client connects to
// the session (after its Creator is known) and for every session restored
// at start, from the session's client id and the username that created it
// (Session.Creator), so the same session gets the same bounds before and
// after a restart whoever resumes it; the result is kept in the session
// (Session.MaxQueued, MaxQueuedBytes), so the publish path reads two fields
// and matches nothing. A session's bounds change only at those points: a
// change of the rules applies to a session at its next connect or at the
// next start.

// queueLimits returns s's queue bounds (0 or negative: no limit).
func (b *Broker) queueLimits(s *session) (messages, bytes int64) {
	messages, bytes = b.opts.MaxQueuedMessages, b.opts.MaxQueuedBytes
	if s.MaxQueued != 0 {
		messages = s.MaxQueued
	}
	if s.MaxQueuedBytes != 0 {
		bytes = s.MaxQueuedBytes
	}
	return messages, bytes
}

// resolveLimits sets s's own bounds from Options.QueueLimits. Core
// goroutine only.
func (b *Broker) resolveLimits(s *session) {
	s.MaxQueued, s.MaxQueuedBytes = 0, 0
	f := b.opts.QueueLimits
	if f == nil || !s.Persistent && s.Expiry == 0 {
		return
	}
	user := ""
	if s.Creator != nil && !s.Creator.Anonymous {
		user = s.Creator.Username
	}
	if n, bytes, ok := f(s.ClientID, user); ok {
		s.MaxQueued, s.MaxQueuedBytes = n, bytes
	}
}
