package main

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/keelmq/keel/engine/packet"
)

// Quota mode (Config.Quota, -quota): keel runs with small queue quotas and
// queue_full = refuse (quotaConf), so the persistent subscribers' queues
// fill while they are offline or behind, and publishes are refused as the
// README says: 5.0 PUBACK/PUBREC 0x97 then DISCONNECT 0x97; 3.1.1 a
// disconnect without an acknowledgement, after which the publisher's
// session resends the message. A refused publish is not acknowledged, so
// it is not in the accepted set: the oracle is unchanged, every accepted
// message delivered (QoS 2: exactly once), in order, none lost. On top of
// it:
//
//   - a 5.0 QoS 2 message refused with PUBREC 0x97 must never be delivered
//     (all or nothing: nothing of a refused publish is routed). At QoS 1
//     this is not checked: a resend of a message whose PUBACK a crash lost
//     is a new message to the broker, and may be refused while the first
//     copy was stored and delivered;
//   - the run must have seen refusals (refused_0x97 for 5.0,
//     publisher_closed_by_broker for 3.1.1: publisher connections that
//     ended with no kill since they were made), or the quotas were not
//     exercised and the run proves nothing about them.

// quotaMessages is max_queued_messages in quota mode: below the
// subscribers' offline spells at the default rate (500 messages/s per
// publisher, offline for up to 800 ms), above a window of 32 in flight.
const quotaMessages = 10

// quotaConf is quota mode's part of keel's config file.
func quotaConf(cfg Config) string {
	if !cfg.Quota {
		return ""
	}
	return fmt.Sprintf("# -quota (quota.go)\nmax_queued_messages = %d\nqueue_full = refuse\n", quotaMessages)
}

// quotaState is what quota mode tracks besides the ledgers.
type quotaState struct {
	killing atomic.Uint64 // kills started: bumped before each SIGKILL
	mu      struct {
		sync.Mutex
		refused map[msgKey]struct{} // 5.0 QoS 2 messages refused with PUBREC 0x97
	}
}

// quotaRefusal classifies a refused acknowledgement in quota mode: 0x97 is
// the expected answer of a full queue (counted refused_0x97), anything
// else is left to the caller (an anomaly).
func (r *run) quotaRefusal(a *ackInfo) bool {
	if !r.cfg.Quota || a.code != packet.CodeQuotaExceeded {
		return false
	}
	r.detail("refused_0x97", 1)
	if a.ok && r.cfg.QoS == 2 {
		q := &r.quota
		q.mu.Lock()
		if q.mu.refused == nil {
			q.mu.refused = make(map[msgKey]struct{})
		}
		q.mu.refused[a.key] = struct{}{}
		q.mu.Unlock()
	}
	return true
}

// ackInfo is what quotaRefusal needs of a refused acknowledgement.
type ackInfo struct {
	code packet.ReasonCode
	key  msgKey
	ok   bool // key decoded
}

// quotaDisconnect classifies a DISCONNECT from the broker in quota mode:
// 0x97 follows a refused publish (counted server_disconnect_0x97).
func (r *run) quotaDisconnect(code packet.ReasonCode) bool {
	if !r.cfg.Quota || code != packet.CodeQuotaExceeded {
		return false
	}
	r.detail("server_disconnect_0x97", 1)
	return true
}

// quotaPublisherClosed counts a publisher connection that ended with no
// kill since it was made (killsAtConnect): in quota mode with 3.1.1 that
// is the broker refusing a publish.
func (r *run) quotaPublisherClosed(killsAtConnect uint64) {
	if r.cfg.Quota && r.quota.killing.Load() == killsAtConnect {
		r.detail("publisher_closed_by_broker", 1)
	}
}

// quotaCheck runs after the verification: refused messages delivered are
// a violation, and so is a run in which nothing was refused.
func (r *run) quotaCheck(ledgers []*ledger) {
	if !r.cfg.Quota {
		return
	}
	q := &r.quota
	q.mu.Lock()
	refused := q.mu.refused
	q.mu.Unlock()
	n := 0
	for k := range refused {
		for _, l := range ledgers {
			if l.has(k) {
				n++
				if n <= maxExamples {
					r.problem("quota: %s got %v, which the broker refused with PUBREC 0x97", l.name, k)
				}
			}
		}
	}
	if n > maxExamples {
		r.problem("quota: %d deliveries of refused messages in all", n)
	}
	r.mu.Lock()
	seen := r.mu.details["refused_0x97"] + r.mu.details["publisher_closed_by_broker"]
	r.mu.Unlock()
	if seen == 0 {
		r.problem("quota: no publish was refused: the quotas were not exercised")
	}
}

// detail adds n to a detail counter.
func (r *run) detail(name string, n int) {
	r.mu.Lock()
	r.mu.details[name] += n
	r.mu.Unlock()
}
