package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"golang.org/x/time/rate"

	"github.com/keelmq/keel/engine"
	"github.com/keelmq/keel/listener"
)

// connLimits are the connection limits of all listeners together.
type connLimits struct {
	Rate       float64 // new clients per second; 0: no limit
	Burst      int     // clients at once above the rate; 0: the rate, at least 1
	PerAddress int     // clients from one IP address at once; 0: no limit
}

func (l connLimits) burst() int {
	if l.Burst > 0 {
		return l.Burst
	}
	return max(1, int(math.Ceil(l.Rate)))
}

// apply sets g's rate and per-address limits.
func (l connLimits) apply(g *listener.Limit) {
	g.PerAddress = l.PerAddress
	if l.Rate > 0 {
		g.Rate = rate.NewLimiter(rate.Limit(l.Rate), l.burst())
	}
}

// The keys of the queue quotas (README "Limits and quotas"). In the file
// 0 means no limit; in engine.Options 0 is the default and a negative
// value no limit.

// byteUnits are the units a size may carry, largest first.
var byteUnits = []struct {
	name string
	n    int64
}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}

// parseBytes reads a size: a whole number of bytes with an optional unit
// B, KiB, MiB, GiB or TiB ("16MiB", "1 GiB", "4096").
func parseBytes(val string) (int64, error) {
	num, mult := strings.TrimSpace(val), int64(1)
	for _, u := range byteUnits {
		if len(num) > len(u.name) && strings.EqualFold(num[len(num)-len(u.name):], u.name) {
			num, mult = strings.TrimSpace(num[:len(num)-len(u.name)]), u.n
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("want a number of bytes with an optional unit (B, KiB, MiB, GiB, TiB), like 16MiB or 1GiB, got %q", val)
	}
	return n * mult, nil
}

// fmtBytes prints n in the largest unit that divides it.
func fmtBytes(n int64) string {
	for _, u := range byteUnits {
		if n != 0 && n%u.n == 0 && u.n > 1 {
			return strconv.FormatInt(n/u.n, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

// limit turns a file's value (0: no limit) into an engine.Options one
// (negative: no limit).
func limit(v int64) int64 {
	if v == 0 {
		return -1
	}
	return v
}

// unlimit is limit's inverse for printing, with d for the default.
func unlimit(v, d int64) int64 {
	switch {
	case v < 0:
		return 0
	case v == 0:
		return d
	}
	return v
}

var quotaKeys = []key[config]{
	{"max_queued_messages", func(c *config, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("want a number of messages (0: no limit), got %q", v)
		}
		c.Engine.MaxQueuedMessages = limit(n)
		return nil
	}, func(c *config) string { return strconv.FormatInt(unlimit(c.Engine.MaxQueuedMessages, 1_000_000), 10) }},
	{"max_queued_bytes", func(c *config, v string) error {
		n, err := parseBytes(v)
		c.Engine.MaxQueuedBytes = limit(n)
		return err
	}, func(c *config) string { return fmtBytes(unlimit(c.Engine.MaxQueuedBytes, 1<<30)) }},
	{"max_memory_queue", func(c *config, v string) error {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil || n < 0 {
			return fmt.Errorf("want a number of messages (0: no limit), got %q", v)
		}
		c.Engine.MaxMemQueue = int(limit(n))
		return nil
	}, func(c *config) string { return strconv.FormatInt(unlimit(int64(c.Engine.MaxMemQueue), 10000), 10) }},
	{"queue_full", func(c *config, v string) error {
		p, err := engine.ParseQueueFull(v)
		c.Engine.QueueFull = p
		return err
	}, func(c *config) string { return c.Engine.QueueFull.String() }},
	{"max_subscriptions", func(c *config, v string) error {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil || n < 0 {
			return fmt.Errorf("want a number of subscriptions per client (0: no limit), got %q", v)
		}
		c.Engine.MaxSubscriptions = int(n)
		return nil
	}, func(c *config) string { return strconv.Itoa(c.Engine.MaxSubscriptions) }},
	{"max_topic_levels", func(c *config, v string) error {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil || n < 0 {
			return fmt.Errorf("want a number of topic levels (0: no limit), got %q", v)
		}
		c.Engine.MaxTopicLevels = int(limit(n))
		return nil
	}, func(c *config) string { return strconv.FormatInt(unlimit(int64(c.Engine.MaxTopicLevels), 128), 10) }},
	{"max_topic_length", func(c *config, v string) error {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("want 1..65535 bytes, got %q", v)
		}
		c.Engine.MaxTopicLength = int(n)
		return nil
	}, func(c *config) string { return strconv.Itoa(int(orInt(c.Engine.MaxTopicLength, 65535))) }},
	{"max_connection_rate", func(c *config, v string) error {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || r < 0 || math.IsInf(r, 0) || math.IsNaN(r) {
			return fmt.Errorf("want new clients per second (0: no limit), got %q", v)
		}
		c.Conn.Rate = r
		return nil
	}, func(c *config) string { return strconv.FormatFloat(c.Conn.Rate, 'g', -1, 64) }},
	{"max_connection_burst", func(c *config, v string) error {
		n, err := strconv.ParseUint(v, 10, 31)
		if err != nil {
			return fmt.Errorf("want a number of clients (0: the rate, at least 1), got %q", v)
		}
		c.Conn.Burst = int(n)
		return nil
	}, func(c *config) string {
		if c.Conn.Rate == 0 && c.Conn.Burst == 0 {
			return "0"
		}
		return strconv.Itoa(c.Conn.burst())
	}},
	{"max_connections_per_address", func(c *config, v string) error { return parseCount(v, &c.Conn.PerAddress) },
		func(c *config) string { return strconv.Itoa(c.Conn.PerAddress) }},
	{"max_publish_rate", func(c *config, v string) error {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || r < 0 || math.IsInf(r, 0) || math.IsNaN(r) {
			return fmt.Errorf("want PUBLISH packets per second per client (0: no limit), got %q", v)
		}
		c.Engine.MaxPublishRate = r
		return nil
	}, func(c *config) string { return strconv.FormatFloat(c.Engine.MaxPublishRate, 'g', -1, 64) }},
	{"max_publish_burst", func(c *config, v string) error {
		n, err := strconv.ParseUint(v, 10, 31)
		if err != nil {
			return fmt.Errorf("want a number of PUBLISH packets (0: the rate, at least 1), got %q", v)
		}
		c.Engine.MaxPublishBurst = int(n)
		return nil
	}, func(c *config) string {
		l := connLimits{Rate: c.Engine.MaxPublishRate, Burst: c.Engine.MaxPublishBurst}
		if l.Rate == 0 && l.Burst == 0 {
			return "0"
		}
		return strconv.Itoa(l.burst())
	}},
}
