package engine

import (
	"github.com/keelmq/keel/engine/packet"
)

// The disk low-water mark. Options.Disk, if set, reports the filesystem
// that holds the store as last measured; its owner (cmd/keel: a watcher
// goroutine calling statfs on the data directory) measures it, the engine
// only reads the result. While it reports Low:
//
//   - a new QoS 1/2 PUBLISH is refused before anything of it is written,
//     by the queue-full path (refuseQueueFull): 5.0 PUBACK/PUBREC 0x97
//     Quota exceeded, then DISCONNECT 0x97; 3.1 and 3.1.1 are disconnected
//     without an ack, and what the publisher pipelined after it is
//     ignored, so it resends in order once the disk has room. A resend of
//     a QoS 2 id already received, and a duplicate the dedup window holds,
//     write nothing and are acknowledged as usual. Counted disk_low.
//   - a CONNECT that would create a persistent session where none is
//     stored is refused: CONNACK 0x97 (3.1.1: return code 3, server
//     unavailable), counted disk_low. Resuming a stored session is not: it
//     is how a subscriber comes back to drain its queue.
//   - what cannot be refused and would only add to the disk is not
//     written: a QoS 0 message for an offline session (queue_qos0) is
//     dropped for it, and the retained update of a QoS 0 PUBLISH is not
//     kept (the message is still routed), counted dropped disk_low.
//
// Deliveries, acknowledgements (PUBACK, PUBREC, PUBREL, PUBCOMP), session
// ends, unsubscribes and takeovers go on: they free space. Once the owner
// reports the disk above the mark again, publishes are accepted again,
// without a restart. A write the mark did not foresee that still meets a
// full disk fails its commit and the broker stops acknowledging (broker.go,
// "After a store failure"): never a false ack.

// DiskUsage is the filesystem holding the store, as its monitor last
// measured it.
type DiskUsage struct {
	Free    uint64 // bytes available to keel
	Total   uint64 // the filesystem's size
	MinFree uint64 // the low-water mark (min_free_disk)
	Low     bool   // Free < MinFree: refusing, as above
}

// DiskMonitor reports the filesystem holding the store. Usage is called on
// the core goroutine for every QoS 1/2 PUBLISH and persistent CONNECT: it
// must not block or do I/O (return what the owner's goroutine last
// measured, from an atomic value). Safe for concurrent use.
type DiskMonitor interface {
	Usage() DiskUsage
}

// diskLow reports whether the disk is below its low-water mark.
func (b *Broker) diskLow() bool {
	return b.opts.Disk != nil && b.opts.Disk.Usage().Low
}

// DiskLow reports whether the broker is refusing for a disk below its
// low-water mark (false without Options.Disk). Safe from any goroutine.
func (b *Broker) DiskLow() bool { return b.diskLow() }

// refuseConnectDiskLow refuses a CONNECT that would create a persistent
// session while the disk is low: CONNACK 0x97 (3.1.1: return code 3).
func (b *Broker) refuseConnectDiskLow(c *conn) {
	b.stats.reasons.refuse(refuseDiskLow)
	c.setEndReason("new persistent session refused: disk below min_free_disk")
	b.refusedLog.log(c.log, "connect refused: a new persistent session while the disk is below min_free_disk",
		"reason", refuseNames[refuseDiskLow])
	c.refuseConnack(packet.CodeQuotaExceeded)
}

// refusesPublish applies, in order, the disk mark and the retained limits
// to a client's new QoS 1/2 PUBLISH (not a resend, not a duplicate: those
// write nothing) and answers it if either refuses it.
func (b *Broker) refusesPublish(c *conn, p *packet.Publish) bool {
	switch {
	case b.diskLow():
		b.refuseQueueFull(c, p, refuseDiskLow)
	case b.refusesRetained(c, p):
		b.refuseRetained(c, p)
	default:
		return false
	}
	return true
}

// wantsPersistent reports whether CONNECT cp asks for a session that
// outlives the connection: 5.0 Session Expiry above 0 [MQTT-3.1.2-11],
// 3.1.1 clean session 0.
func wantsPersistent(c *conn, cp *packet.Connect) bool {
	if c.version == packet.V5 {
		return cp.Props.SessionExpiry > 0
	}
	return !cp.CleanStart
}
