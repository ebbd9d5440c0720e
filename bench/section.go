package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// driverSetup begins a side-by-side driver: it finds *mosquitto on PATH
// (replacing it with the path), makes *tmp a new temporary directory when
// it is empty (cleanup removes it), and returns the running binary, whose
// subcommands run the loads as child processes.
func driverSetup(mosquitto, tmp *string, prefix string) (self string, cleanup func(), err error) {
	cleanup = func() {}
	bin, err := exec.LookPath(*mosquitto)
	if err != nil {
		return "", cleanup, fmt.Errorf("mosquitto: %w", err)
	}
	*mosquitto = bin
	if *tmp == "" {
		d, err := os.MkdirTemp("", prefix)
		if err != nil {
			return "", cleanup, err
		}
		*tmp, cleanup = d, func() { os.RemoveAll(d) }
	}
	if self, err = os.Executable(); err != nil {
		cleanup()
		return "", func() {}, err
	}
	return self, cleanup, nil
}

// writeReport ends a side-by-side driver (bench auth, bridge, dedup,
// transports): it prints md, writes every run's result as JSON to save,
// md to out, and md between begin and end into the Markdown file into
// (each when not empty). It returns 2 on a write error, else 0.
func writeReport(who string, rep any, md []byte, save, out, into, begin, end string) int {
	fmt.Printf("\n%s", md)
	if save != "" {
		b, _ := json.MarshalIndent(rep, "", "\t")
		if err := os.WriteFile(save, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "%s: -save: %v\n", who, err)
			return 2
		}
	}
	if out != "" {
		if err := os.WriteFile(out, md, 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", who, err)
			return 2
		}
	}
	if into != "" {
		if err := spliceMarked(into, begin, end, md); err != nil {
			fmt.Fprintf(os.Stderr, "%s: -into: %v\n", who, err)
			return 2
		}
		fmt.Fprintf(os.Stderr, "wrote the section into %s\n", into)
	}
	return 0
}

// spliceMarked puts md between begin and end in the file at path: in
// place of what is there, or before "## Details" (or at the end) the
// first time.
func spliceMarked(path, begin, end string, md []byte) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	block := begin + "\n" + strings.TrimSpace(string(md)) + "\n" + end + "\n"
	s := string(b)
	if i := strings.Index(s, begin); i >= 0 {
		j := strings.Index(s[i:], end)
		if j < 0 {
			return fmt.Errorf("%s: %q without %q", path, begin, end)
		}
		j += i + len(end)
		s = s[:i] + strings.TrimSuffix(block, "\n") + s[j:]
	} else if i := strings.Index(s, "\n## Details\n"); i >= 0 {
		s = s[:i+1] + block + "\n" + s[i+1:]
	} else {
		s += "\n" + block
	}
	return os.WriteFile(path, []byte(s), 0o644)
}
