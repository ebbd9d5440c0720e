package main

import (
	"fmt"
	"strconv"
)

// The retained limits' keys (README "Limits and quotas"; the engine's
// side is engine/retainlimit.go). In the file 0 means no limit; in
// engine.Options MaxRetainedBytes' 0 is the default (1 GiB) and a
// negative value no limit.
var retainKeys = []key[config]{
	{"max_retained_messages", func(c *config, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("want a number of retained messages (0: no limit), got %q", v)
		}
		c.Engine.MaxRetainedMessages = n
		return nil
	}, func(c *config) string { return strconv.FormatInt(c.Engine.MaxRetainedMessages, 10) }},
	{"max_retained_bytes", func(c *config, v string) error {
		n, err := parseBytes(v)
		c.Engine.MaxRetainedBytes = limit(n)
		return err
	}, func(c *config) string { return fmtBytes(unlimit(c.Engine.MaxRetainedBytes, 1<<30)) }},
	{"max_retained_message_size", func(c *config, v string) error {
		n, err := parseBytes(v)
		c.Engine.MaxRetainedMessageSize = n
		return err
	}, func(c *config) string { return fmtBytes(c.Engine.MaxRetainedMessageSize) }},
}
