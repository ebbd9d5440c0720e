package main

import (
	"bytes"
	"fmt"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/keelmq/keel/wal"
)

func runIn(args ...string) (int, string, string) {
	var o, e bytes.Buffer
	code := run(args, &o, &e)
	return code, o.String(), e.String()
}

// Help goes to stdout, exits 0 and lists every subcommand.
func TestHelpListsSubcommands(t *testing.T) {
	for _, arg := range []string{"help", "-h", "--help"} {
		code, out, errOut := runIn(arg)
		if code != 0 || errOut != "" {
			t.Errorf("keel %s: exit %d, stderr %q; want 0 and nothing", arg, code, errOut)
		}
		for _, want := range []string{"keel [serve]", "keel config check FILE", "keel version", "keel help", "keel passwd FILE USER"} {
			if !strings.Contains(out, want) {
				t.Errorf("keel %s: output lacks %q:\n%s", arg, want, out)
			}
		}
	}
	code, out, _ := runIn("serve", "--help")
	if code != 0 || !strings.Contains(out, "-listen HOST:PORT") || !strings.Contains(out, `(default "127.0.0.1:1883")`) {
		t.Errorf("keel serve --help: exit %d, output:\n%s\nwant 0 and the flags with the loopback default", code, out)
	}
}

// Usage errors exit 2 with the usage; nothing is started.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "extra-arg", "--listen", "127.0.0.1:18833", "--data", "./d9"}, `unexpected argument "extra-arg"`},
		{[]string{"--listen", "127.0.0.1:1", "stray"}, `unexpected argument "stray"`},
		{[]string{"serve", "--no-such-flag"}, "flag provided but not defined: -no-such-flag"},
		{[]string{"srve"}, `unknown command "srve"`},
		{[]string{"version", "x"}, `unexpected argument "x"`},
		{[]string{"config"}, "want check FILE"},
		{[]string{"config", "check"}, "want check FILE"},
		{[]string{"config", "lint", "f"}, "want check FILE"},
	} {
		code, out, errOut := runIn(tc.args...)
		if code != 2 || out != "" || !strings.Contains(errOut, tc.want) || !strings.Contains(errOut, "Usage") {
			t.Errorf("keel %s: exit %d, stdout %q, stderr:\n%s\nwant exit 2, %q and the usage on stderr",
				strings.Join(tc.args, " "), code, out, errOut, tc.want)
		}
	}
}

func TestVersion(t *testing.T) {
	for _, arg := range []string{"version", "--version"} {
		code, out, _ := runIn(arg)
		if code != 0 {
			t.Errorf("keel %s: exit %d", arg, code)
		}
		for _, want := range []string{"keel " + buildVersion() + "\n", "commit:", "go:          go1.", fmt.Sprintf("data format: %d\n", wal.FormatVersion)} {
			if !strings.Contains(out, want) {
				t.Errorf("keel %s: output lacks %q:\n%s", arg, want, out)
			}
		}
	}
}

// The commit and the Pebble version come from the build information.
func TestFormatVersion(t *testing.T) {
	bi := &debug.BuildInfo{
		Deps: []*debug.Module{{Path: "github.com/klauspost/compress", Version: "v1.0.0"}, {Path: pebbleModule, Version: "v2.1.7"}},
		Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "0123abcd"}, {Key: "vcs.modified", Value: "true"},
		},
	}
	got := formatVersion("v1.2.3", bi)
	for _, want := range []string{
		"keel v1.2.3\n",
		"commit:      0123abcd (dirty: built with uncommitted changes)\n",
		"pebble:      v2.1.7\n",
		fmt.Sprintf("data format: %d\n", wal.FormatVersion),
	} {
		if !strings.Contains(got, want) {
			t.Errorf("formatVersion lacks %q:\n%s", want, got)
		}
	}
	bi.Settings[2].Value = "false"
	if got := formatVersion("v1.2.3", bi); !strings.Contains(got, "commit:      0123abcd\n") {
		t.Errorf("clean build: got\n%s\nwant the bare commit", got)
	}
	if got := formatVersion("dev", nil); !strings.Contains(got, "commit:      unknown") || !strings.Contains(got, "pebble:      unknown") {
		t.Errorf("no build info: got\n%s", got)
	}
}

// A release build's -ldflags version is what keel version prints.
func TestVersionFromLdflags(t *testing.T) {
	code, out, _ := runKeel(t, "--version")
	if code != 0 || !strings.HasPrefix(out, "keel "+testVersion+"\n") || !strings.Contains(out, "pebble:      v2.") {
		t.Errorf("keel --version: exit %d, output:\n%s\nwant 0, keel %s and the Pebble version", code, out, testVersion)
	}
}
