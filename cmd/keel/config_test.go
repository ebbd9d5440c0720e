package main

import (
	"os"
	"path/filepath"
	"slices"
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

// configKeyNames are the keys keel reads, in order.
func configKeyNames() []string {
	var names []string
	for _, k := range configKeys {
		names = append(names, k.name)
	}
	return names
}

// readmeConfigTable returns the README's config table: key -> default,
// and the keys in order.
func readmeConfigTable(t *testing.T) (map[string]string, []string) {
	t.Helper()
	rows := readmeSection(t, "config-keys", func(l string) bool { return !strings.HasPrefix(l, "|") })
	if len(rows) < 3 || rows[0] != "| key | default | what it does |" {
		t.Fatalf("README.md: the config-keys marker is not followed by the key | default | what it does table: %q", rows)
	}
	defaults := map[string]string{}
	var keys []string
	for _, r := range rows[2:] {
		cells := strings.Split(strings.Trim(r, "|"), "|")
		if len(cells) != 3 {
			t.Fatalf("README.md config table: row %q does not have 3 cells", r)
		}
		key := strings.Trim(strings.TrimSpace(cells[0]), "`")
		keys = append(keys, key)
		defaults[key] = strings.Trim(strings.TrimSpace(cells[1]), "`")
	}
	return defaults, keys
}

// The README's table lists exactly the keys the parser knows, in its order.
func TestReadmeConfigTableMatchesParser(t *testing.T) {
	_, keys := readmeConfigTable(t)
	if want := configKeyNames(); !slices.Equal(keys, want) {
		t.Errorf("README.md config table lists\n  %v\nthe parser knows\n  %v", keys, want)
	}
}

// keel.conf.example names every key, with the README's default for each
// key it sets, and keel config check accepts it.
func TestConfigExample(t *testing.T) {
	const example = "keel.conf.example"
	code, out, errOut := runIn("config", "check", example)
	if code != 0 || out != example+": ok\n" {
		t.Fatalf("keel config check %s: exit %d, stdout %q, stderr %q; want 0 and ok", example, code, out, errOut)
	}
	b, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	defaults, _ := readmeConfigTable(t)
	var keys []string
	for _, l := range strings.Split(string(b), "\n") {
		l, commented := strings.CutPrefix(l, "# ")
		key, val, ok := strings.Cut(l, " = ")
		if !ok || strings.ContainsAny(key, " #") {
			continue // prose
		}
		keys = append(keys, key)
		if !commented && val != defaults[key] {
			t.Errorf("%s: %s = %s, the README's default is %q", example, key, val, defaults[key])
		}
	}
	if want := configKeyNames(); !slices.Equal(keys, want) {
		t.Errorf("%s names\n  %v\nthe parser knows\n  %v", example, keys, want)
	}
}

// keel config check names the file, line and key; and whole-config
// errors name where the key was set.
func TestConfigCheck(t *testing.T) {
	for _, tc := range []struct {
		text, want string
	}{
		{"listen = 127.0.0.1:1\n\nmax_inflight = -1\n", `:3: key "max_inflight": want a number 0..65535`},
		{"listen = 1883\n", `:1: key "listen": want HOST:PORT, got "1883"`},
		{"# metrics off\npprof = true\n", `:2: key "pprof": /debug/pprof/ is served on the metrics address: set metrics too`},
	} {
		p := writeConfig(t, tc.text)
		code, out, errOut := runIn("config", "check", p)
		if code != 1 || out != "" || !strings.Contains(errOut, p+tc.want) {
			t.Errorf("config check of %q: exit %d, stdout %q, stderr %q; want 1 and %q", tc.text, code, out, errOut, p+tc.want)
		}
	}
	code, _, errOut := runIn("config", "check", filepath.Join(t.TempDir(), "missing.conf"))
	if code != 1 || !strings.Contains(errOut, "missing.conf: no such file") {
		t.Errorf("config check of a missing file: exit %d, stderr %q", code, errOut)
	}
}
