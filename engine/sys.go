package engine

import (
	"strconv"
	"time"

	"github.com/keelmq/keel/wal"
)

// publishSys publishes the $SYS/broker/... topics as retained QoS 0
// messages. They live in memory only: the Txn they are written to is
// thrown away, so $SYS costs no disk.
func (b *Broker) publishSys() {
	st := b.Stats()
	version := "keel"
	if b.opts.Version != "" {
		version += " " + b.opts.Version
	}
	vals := []struct {
		topic string
		v     string
	}{
		{"$SYS/broker/version", version},
		{"$SYS/broker/uptime", strconv.FormatInt(int64(st.Uptime/time.Second), 10) + " seconds"},
		{"$SYS/broker/clients/connected", strconv.FormatInt(st.ClientsConnected, 10)},
		{"$SYS/broker/messages/received", strconv.FormatUint(st.MessagesReceived, 10)},
		{"$SYS/broker/messages/sent", strconv.FormatUint(st.MessagesSent, 10)},
		{"$SYS/broker/retained messages/count", strconv.Itoa(st.Retained)},
		{"$SYS/broker/store/bytes", strconv.FormatUint(st.StoreBytes, 10)},
	}
	// Every drop and refusal reason, zero or not, in the order of
	// counters.go.
	for _, r := range dropNames {
		vals = append(vals, struct{ topic, v string }{"$SYS/broker/messages/dropped/" + r, strconv.FormatUint(st.Dropped[r], 10)})
	}
	for _, r := range refuseNames {
		vals = append(vals, struct{ topic, v string }{"$SYS/broker/refused/" + r, strconv.FormatUint(st.Refused[r], 10)})
	}
	scratch := &wal.Txn{}
	var size int64
	for _, v := range vals {
		size += int64(len(v.topic) + len(v.v))
		m := &wal.Message{Topic: v.topic, Payload: []byte(v.v), Retain: true}
		b.core.retained.Set(scratch, m)
		b.admit(m, nil, false)
		b.route(m)
	}
	b.stats.sysRetained.Store(int64(len(vals) + len(b.core.sysExtra)))
	b.stats.sysRetainedBytes.Store(size)
}
