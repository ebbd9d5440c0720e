package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const readmePath = "../../README.md"

// readmeSection returns the lines of README.md that follow the marker line
// "<!-- test: NAME ...", up to the first line for which stop is true.
func readmeSection(t *testing.T, name string, stop func(line string) bool) []string {
	t.Helper()
	b, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	marker := "<!-- test: " + name + " "
	for i, l := range lines {
		if !strings.HasPrefix(l, marker) {
			continue
		}
		var out []string
		for _, l := range lines[i+1:] {
			if stop(l) {
				return out
			}
			out = append(out, l)
		}
		t.Fatalf("README.md: the section after %q does not end", marker)
	}
	t.Fatalf("README.md has no line starting %q", marker)
	return nil
}

// readmeBlock returns the fenced code block right after the marker.
func readmeBlock(t *testing.T, name, lang string) string {
	t.Helper()
	fence := false
	lines := readmeSection(t, name, func(l string) bool {
		if !fence {
			fence = true
			return false
		}
		return l == "```"
	})
	if len(lines) == 0 || lines[0] != "```"+lang {
		t.Fatalf("README.md: the marker %q is not followed by a ```%s block", name, lang)
	}
	return strings.Join(lines[1:], "\n") + "\n"
}

// needTools finds the programs the README's commands use. Outside CI a
// missing one skips the test (saying what to install); in CI (CI=true,
// which .ci/run sets) it fails it, so the test cannot rot unnoticed.
func needTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			msg := fmt.Sprintf("%s is not on PATH (apt-get install bash mosquitto-clients): %v", n, err)
			if os.Getenv("CI") == "true" {
				t.Fatal(msg + "; .ci/run installs it")
			}
			t.Skip(msg + "; with CI=true this is a failure")
		}
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// clone makes a directory that looks like a fresh clone of the repository
// (every top-level entry symlinked, none of the build's or a run's
// leftovers), so README commands run there as a new user's would.
func clone(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, e := range ents {
		switch e.Name() {
		case ".git", "keel", "keel-data":
			continue
		}
		if err := os.Symlink(filepath.Join(root, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
