package engine

import "sync/atomic"

// Why a message was not delivered to a session (Stats.Dropped). Every one
// is counted: none is silent.
type dropReason uint8

const (
	dropTooLarge           dropReason = iota // over the client's Maximum Packet Size [MQTT-3.1.2-25]
	dropQueueFull                            // a persistent session's queue is full: the new message (quota.go)
	dropExpired                              // its Message Expiry Interval passed while it waited [MQTT-3.3.2-5]
	dropOfflineQoS0                          // QoS 0 for an offline persistent session (Options.QueueQoS0 off)
	dropNotAuthorized                        // the subscriber may not read the topic (Options.Authorizer)
	dropQueueFullOldest                      // a persistent session's queue is full: its oldest queued message (drop_oldest)
	dropMemQueueFull                         // a non-persistent session's memory queue is full: the new message
	dropMemQueueFullOldest                   // a non-persistent session's memory queue is full: its oldest (drop_oldest)
	dropDiskLow                              // not written while the disk is below min_free_disk: QoS 0 for an offline session, a QoS 0 retained update (disk.go)
	dropRetainedFull                         // a retained update over the retained limits, routed as a non-retained message (retainlimit.go)
	numDropReasons
)

var dropNames = [numDropReasons]string{"too_large", "queue_full", "expired", "offline_qos0", "not_authorized",
	"queue_full_oldest", "memory_queue_full", "memory_queue_full_oldest", "disk_low", "retained_full"}

// Why a packet that asked for an ack was refused (Stats.Refused).
type refuseReason uint8

const (
	refuseStoreFailed      refuseReason = iota // the commit failed (I/O error, disk full), or an earlier one did
	refuseNotAuthorized                        // authentication or the ACL said no
	refuseKeepAlive                            // a 3.1.1 CONNECT asking a keep alive over Options.MaxKeepAlive
	refuseQueueFull                            // a QoS 1/2 PUBLISH for a full persistent queue (queue_full = refuse)
	refuseMemQueueFull                         // a QoS 1/2 PUBLISH for a full memory queue (queue_full = refuse)
	refuseTopicLimits                          // a PUBLISH topic or SUBSCRIBE filter over max_topic_levels / max_topic_length
	refuseMaxSubscriptions                     // a SUBSCRIBE filter beyond the session's max_subscriptions
	refusePublishRate                          // a 5.0 QoS 1/2 PUBLISH over max_publish_rate
	refuseConnectSize                          // a CONNECT over max_connect_size (preauth.go)
	refusePreauthBudget                        // a CONNECT the pre-authentication budget could not hold (preauth.go)
	refuseFlapping                             // a CONNECT of a client id banned for flapping (flapping.go)
	refuseDiskLow                              // a QoS 1/2 PUBLISH or a new persistent session while the disk is below min_free_disk (disk.go)
	refuseRetainedFull                         // a 5.0 QoS 1/2 retained PUBLISH over the retained limits (retainlimit.go)
	numRefuseReasons
)

var refuseNames = [numRefuseReasons]string{"store_failed", "not_authorized", "keep_alive", "queue_full", "memory_queue_full",
	"topic_limits", "max_subscriptions", "publish_rate", "connect_size", "preauth_budget", "flapping", "disk_low", "retained_full"}

type reasonCounters struct {
	dropped [numDropReasons]atomic.Uint64
	refused [numRefuseReasons]atomic.Uint64
}

func (r *reasonCounters) drop(why dropReason)     { r.dropped[why].Add(1) }
func (r *reasonCounters) refuse(why refuseReason) { r.refused[why].Add(1) }

func (r *reasonCounters) snapshot() (dropped, refused map[string]uint64) {
	dropped = make(map[string]uint64, numDropReasons)
	for i := range r.dropped {
		dropped[dropNames[i]] = r.dropped[i].Load()
	}
	refused = make(map[string]uint64, numRefuseReasons)
	for i := range r.refused {
		refused[refuseNames[i]] = r.refused[i].Load()
	}
	return dropped, refused
}
