package main

import (
	"bufio"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/keelmq/keel/engine"
)

// config is keel's configuration: flags and an optional config file of
// "key = value" lines ('#' starts a comment). Defaults and validation live
// here, in one place.
type config struct {
	Listen            string
	Data              string
	Metrics           string
	LogLevel          slog.Level
	CompressThreshold int
	Engine            engine.Options
}

func defaultConfig() config {
	return config{Listen: ":1883", Data: "./keel-data", LogLevel: slog.LevelInfo}
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
		if err := c.set(key, val); err != nil {
			return fmt.Errorf("config %s:%d: key %q: %w", path, n, key, err)
		}
	}
	return sc.Err()
}

func (c *config) set(key, val string) error {
	u16 := func(dst *uint16) error {
		v, err := strconv.ParseUint(val, 10, 16)
		if err != nil {
			return fmt.Errorf("want a number 0..65535, got %q", val)
		}
		*dst = uint16(v)
		return nil
	}
	e := &c.Engine
	switch key {
	case "listen":
		c.Listen = val
	case "data":
		c.Data = val
	case "metrics":
		c.Metrics = val
	case "log_level":
		if err := c.LogLevel.UnmarshalText([]byte(val)); err != nil {
			return fmt.Errorf("want debug, info, warn or error, got %q", val)
		}
	case "compress_threshold":
		v, err := strconv.Atoi(val)
		if err != nil {
			return fmt.Errorf("want a number of bytes, got %q", val)
		}
		c.CompressThreshold = v
	case "max_packet_size":
		v, err := strconv.ParseUint(val, 10, 32)
		if err != nil || v < 16 || v > 268435455 {
			return fmt.Errorf("want 16..268435455 bytes, got %q", val)
		}
		e.MaxPacketSize = uint32(v)
	case "max_keepalive":
		return u16(&e.MaxKeepAlive)
	case "receive_maximum":
		return u16(&e.ReceiveMaximum)
	case "max_inflight":
		return u16(&e.MaxInflight)
	case "topic_alias_maximum":
		return u16(&e.TopicAliasMaximum)
	case "queue_qos0":
		v, err := strconv.ParseBool(val)
		if err != nil {
			return fmt.Errorf("want true or false, got %q", val)
		}
		e.QueueQoS0 = v
	case "sync_completions":
		v, err := strconv.ParseBool(val)
		if err != nil {
			return fmt.Errorf("want true or false, got %q", val)
		}
		e.SyncCompletions = v
	case "completion_hold":
		d, err := time.ParseDuration(val)
		if err != nil {
			return fmt.Errorf("want a duration like 10ms (negative: no hold), got %q", val)
		}
		e.CompletionHold = d
	case "sys_interval":
		d, err := time.ParseDuration(val)
		if err != nil {
			return fmt.Errorf("want a duration like 10s, got %q", val)
		}
		e.SysInterval = d
	default:
		return fmt.Errorf("unknown key")
	}
	return nil
}
