package main

import (
	"bufio"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/keelmq/keel/engine"
)

// config is keel's configuration: flags and an optional config file of
// "key = value" lines ('#' starts a comment). Defaults and validation live
// here, in one place: defaultConfig, configKeys and validate.
type config struct {
	Listen            string
	Data              string
	Metrics           string
	Pprof             bool
	LogLevel          slog.Level
	CompressThreshold int
	Engine            engine.Options

	// origin says where each key was set ("config FILE:LINE" or
	// "flag --NAME"), for errors found after parsing.
	origin map[string]string
}

func defaultConfig() config {
	return config{Listen: "127.0.0.1:1883", Data: "./keel-data", LogLevel: slog.LevelInfo}
}

// configKeys are the keys a config file may set, in the order the README's
// table and keel.conf.example list them (a test holds all three equal).
var configKeys = []struct {
	name string
	set  func(c *config, val string) error
}{
	{"listen", func(c *config, v string) error { c.Listen = v; return nil }},
	{"data", func(c *config, v string) error { c.Data = v; return nil }},
	{"metrics", func(c *config, v string) error { c.Metrics = v; return nil }},
	{"pprof", func(c *config, v string) error { return parseBool(v, &c.Pprof) }},
	{"log_level", func(c *config, v string) error {
		if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
			return fmt.Errorf("want debug, info, warn or error, got %q", v)
		}
		return nil
	}},
	{"max_packet_size", func(c *config, v string) error {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n < 16 || n > 268435455 {
			return fmt.Errorf("want 16..268435455 bytes, got %q", v)
		}
		c.Engine.MaxPacketSize = uint32(n)
		return nil
	}},
	{"max_keepalive", func(c *config, v string) error { return parseU16(v, &c.Engine.MaxKeepAlive) }},
	{"receive_maximum", func(c *config, v string) error { return parseU16(v, &c.Engine.ReceiveMaximum) }},
	{"max_inflight", func(c *config, v string) error { return parseU16(v, &c.Engine.MaxInflight) }},
	{"topic_alias_maximum", func(c *config, v string) error { return parseU16(v, &c.Engine.TopicAliasMaximum) }},
	{"queue_qos0", func(c *config, v string) error { return parseBool(v, &c.Engine.QueueQoS0) }},
	{"sync_completions", func(c *config, v string) error { return parseBool(v, &c.Engine.SyncCompletions) }},
	{"completion_hold", func(c *config, v string) error {
		return parseDuration(v, "10ms (negative: no hold)", &c.Engine.CompletionHold)
	}},
	{"compress_threshold", func(c *config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("want a number of bytes, got %q", v)
		}
		c.CompressThreshold = n
		return nil
	}},
	{"sys_interval", func(c *config, v string) error {
		return parseDuration(v, "10s (negative: off)", &c.Engine.SysInterval)
	}},
}

func parseU16(val string, dst *uint16) error {
	v, err := strconv.ParseUint(val, 10, 16)
	if err != nil {
		return fmt.Errorf("want a number 0..65535, got %q", val)
	}
	*dst = uint16(v)
	return nil
}

func parseDuration(val, example string, dst *time.Duration) error {
	d, err := time.ParseDuration(val)
	if err != nil {
		return fmt.Errorf("want a duration like %s, got %q", example, val)
	}
	*dst = d
	return nil
}

func parseBool(val string, dst *bool) error {
	v, err := strconv.ParseBool(val)
	if err != nil {
		return fmt.Errorf("want true or false, got %q", val)
	}
	*dst = v
	return nil
}

// load reads a config file; an error names the file, the line and the key.
func (c *config) load(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if line == "" {
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			return fmt.Errorf("config %s:%d: want key = value, got %q", path, n, line)
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if err := c.set(key, val, fmt.Sprintf("config %s:%d", path, n)); err != nil {
			return fmt.Errorf("config %s:%d: key %q: %w", path, n, key, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// set sets key to val; origin says where, for later errors.
func (c *config) set(key, val, origin string) error {
	for _, k := range configKeys {
		if k.name == key {
			if err := k.set(c, val); err != nil {
				return err
			}
			if c.origin == nil {
				c.origin = map[string]string{}
			}
			c.origin[key] = origin
			return nil
		}
	}
	return fmt.Errorf("unknown key")
}

// validate checks what no single key can: the configuration as a whole.
// An error names where the key was set.
func (c *config) validate() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("%s: want HOST:PORT, got %q", c.where("listen"), c.Listen)
	}
	if c.Metrics != "" {
		if _, _, err := net.SplitHostPort(c.Metrics); err != nil {
			return fmt.Errorf("%s: want HOST:PORT, got %q", c.where("metrics"), c.Metrics)
		}
	}
	if c.Data == "" {
		return fmt.Errorf("%s: want a directory, got nothing", c.where("data"))
	}
	if c.Pprof && c.Metrics == "" {
		return fmt.Errorf("%s: /debug/pprof/ is served on the metrics address: set metrics too", c.where("pprof"))
	}
	return nil
}

// where names the origin of key for an error: `config FILE:LINE: key "k"`,
// `flag --k`, or `key "k"` for a default.
func (c *config) where(key string) string {
	o, ok := c.origin[key]
	switch {
	case !ok:
		return fmt.Sprintf("key %q", key)
	case strings.HasPrefix(o, "flag "):
		return o
	}
	return fmt.Sprintf("%s: key %q", o, key)
}
