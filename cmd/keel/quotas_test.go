package main

import (
	"strings"
	"testing"

	"github.com/keelmq/keel/engine"
	"github.com/keelmq/keel/listener"
)

// The quota keys: sizes with units, 0 for no limit, the policy by name;
// a bad value names the file, the line and the key.
func TestConfigQuotaKeys(t *testing.T) {
	p := writeConfig(t, "max_queued_messages = 0\nmax_queued_bytes = 16MiB\nmax_memory_queue = 50\nqueue_full = drop_oldest\n"+
		"max_subscriptions = 10\nmax_topic_levels = 0\nmax_topic_length = 512\nmax_connection_rate = 2.5\nmax_connections_per_address = 4\nmax_publish_rate = 100\n")
	c := defaultConfig()
	if err := c.load(p); err != nil {
		t.Fatal(err)
	}
	e := c.Engine
	if e.MaxQueuedMessages >= 0 || e.MaxQueuedBytes != 16<<20 || e.MaxMemQueue != 50 || e.QueueFull != engine.QueueDropOldest {
		t.Fatalf("got %d messages, %d bytes, memory %d, %v; want no limit, 16 MiB, 50, drop_oldest",
			e.MaxQueuedMessages, e.MaxQueuedBytes, e.MaxMemQueue, e.QueueFull)
	}
	if e.MaxSubscriptions != 10 || e.MaxTopicLevels >= 0 || e.MaxTopicLength != 512 {
		t.Fatalf("got %d subscriptions, %d levels, %d bytes; want 10, no limit, 512", e.MaxSubscriptions, e.MaxTopicLevels, e.MaxTopicLength)
	}
	if e.MaxPublishRate != 100 || e.MaxPublishBurst != 0 {
		t.Fatalf("got publish rate %v burst %d, want 100 and 0", e.MaxPublishRate, e.MaxPublishBurst)
	}
	var g listener.Limit
	c.Conn.apply(&g)
	if g.Rate == nil || g.Rate.Limit() != 2.5 || g.Rate.Burst() != 3 || g.PerAddress != 4 {
		t.Fatalf("got rate %v, per address %d; want 2.5/s with a burst of 3 (the rate rounded up) and 4", g.Rate, g.PerAddress)
	}
	eff := c.effective()
	for _, want := range []string{"max_queued_messages = 0\n", "max_queued_bytes = 16MiB\n", "max_memory_queue = 50\n", "queue_full = drop_oldest\n", "max_topic_levels = 0\n", "max_connection_rate = 2.5\n", "max_connection_burst = 3\n", "max_publish_rate = 100\n", "max_publish_burst = 100\n"} {
		if !strings.Contains(eff, want) {
			t.Errorf("effective configuration lacks %q:\n%s", want, eff)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"4096", "4KiB"}, {"4097", "4097"}, {"1GiB", "1GiB"}, {"1 gib", "1GiB"}, {"1536KiB", "1536KiB"}, {"2048KiB", "2MiB"}, {"0", "0"}, {"7B", "7"},
	} {
		n, err := parseBytes(tc.in)
		if err != nil || fmtBytes(n) != tc.want {
			t.Errorf("parseBytes(%q) = %d, %v; printed %q, want %q", tc.in, n, err, fmtBytes(n), tc.want)
		}
	}
	for _, tc := range []struct{ text, want string }{
		{"\nmax_queued_bytes = 12XB\n", `:2: key "max_queued_bytes": want a number of bytes with an optional unit`},
		{"max_queued_bytes = -1\n", `:1: key "max_queued_bytes": want a number of bytes`},
		{"max_queued_messages = lots\n", `:1: key "max_queued_messages": want a number of messages (0: no limit)`},
		{"queue_full = maybe\n", `:1: key "queue_full": want refuse, drop_new or drop_oldest, got "maybe"`},
		{"max_connection_rate = fast\n", `:1: key "max_connection_rate": want new clients per second (0: no limit)`},
		{"max_topic_length = 70000\n", `:1: key "max_topic_length": want 1..65535 bytes`},
		{"max_topic_levels = -2\n", `:1: key "max_topic_levels": want a number of topic levels (0: no limit)`},
	} {
		p := writeConfig(t, tc.text)
		code, out, errOut := runIn("config", "check", p)
		if code != 1 || out != "" || !strings.Contains(errOut, p+tc.want) {
			t.Errorf("config check of %q: exit %d, stdout %q, stderr %q; want 1 and %q", tc.text, code, out, errOut, p+tc.want)
		}
	}
}
