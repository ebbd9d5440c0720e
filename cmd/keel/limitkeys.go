package main

import (
	"fmt"
	"strconv"
	"time"
)

// limitKeys are the keys of the limits before authentication and of
// flapping detection (README "Limits and quotas"); they follow quotaKeys.
var limitKeys = []key[config]{
	{"max_connect_size", func(c *config, v string) error {
		n, err := parseBytes(v)
		if err == nil && (n < 16 || n > 268435455) {
			err = fmt.Errorf("want 16B..268435455B (256MiB - 1B), got %q", v)
		}
		c.Engine.MaxConnectSize = uint32(n)
		return err
	}, func(c *config) string { return fmtBytes(int64(orU32(c.Engine.MaxConnectSize, 64<<10))) }},
	{"max_preauth_bytes", func(c *config, v string) error {
		n, err := parseBytes(v)
		c.Engine.MaxPreauthBytes = limit(n)
		return err
	}, func(c *config) string { return fmtBytes(unlimit(c.Engine.MaxPreauthBytes, 64<<20)) }},
	{"flapping_detect", func(c *config, v string) error { return parseBool(v, &c.Engine.FlappingDetect) },
		func(c *config) string { return fmtBool(c.Engine.FlappingDetect) }},
	{"flapping_max_connects", func(c *config, v string) error {
		n, err := strconv.ParseUint(v, 10, 31)
		if err != nil || n == 0 {
			return fmt.Errorf("want a number of connects, at least 1, got %q", v)
		}
		c.Engine.FlappingMaxConnects = int(n)
		return nil
	}, func(c *config) string { return strconv.Itoa(orInt(c.Engine.FlappingMaxConnects, 15)) }},
	{"flapping_window", func(c *config, v string) error { return parsePositive(v, "1m", &c.Engine.FlappingWindow) },
		func(c *config) string { return orDur(c.Engine.FlappingWindow, time.Minute).String() }},
	{"flapping_ban", func(c *config, v string) error { return parsePositive(v, "5m", &c.Engine.FlappingBan) },
		func(c *config) string { return orDur(c.Engine.FlappingBan, 5*time.Minute).String() }},
}

// parsePositive reads a duration above zero.
func parsePositive(val, example string, dst *time.Duration) error {
	if err := parseDuration(val, example, dst); err != nil {
		return err
	}
	if *dst <= 0 {
		return fmt.Errorf("want a positive duration like %s, got %q", example, val)
	}
	return nil
}
