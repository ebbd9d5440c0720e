package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "keel.conf")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigLoads(t *testing.T) {
	p := writeConfig(t, "# a comment\nlisten = 127.0.0.1:1999\n\ndata = /var/lib/keel  # trailing comment\nmax_inflight = 32\nqueue_qos0 = true\nsync_completions = true\ncompletion_hold = 2ms\nsys_interval = 5s\n")
	c := defaultConfig()
	if err := c.load(p); err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:1999" || c.Data != "/var/lib/keel" || c.Engine.MaxInflight != 32 ||
		!c.Engine.QueueQoS0 || !c.Engine.SyncCompletions || c.Engine.SysInterval.Seconds() != 5 ||
		c.Engine.CompletionHold != 2*time.Millisecond {
		t.Fatalf("got %+v", c)
	}
}

// A bad config file is refused with the file, the line and the key.
func TestConfigErrorsNameLineAndKey(t *testing.T) {
	for _, tc := range []struct {
		text, want string
	}{
		{"listen = :1\nmax_inflght = 3\n", `:2: key "max_inflght": unknown key`},
		{"\n\nmax_inflight = lots\n", `:3: key "max_inflight": want a number 0..65535, got "lots"`},
		{"queue_qos0 = maybe\n", `:1: key "queue_qos0": want true or false`},
		{"data /tmp\n", `:1: want key = value`},
		{"max_packet_size = 3\n", `:1: key "max_packet_size"`},
	} {
		p := writeConfig(t, tc.text)
		c := defaultConfig()
		err := c.load(p)
		if err == nil || !strings.Contains(err.Error(), p+tc.want) {
			t.Errorf("config %q: got error %v, want it to contain %q", tc.text, err, p+tc.want)
		}
	}
}
