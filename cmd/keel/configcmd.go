package main

import (
	"fmt"
	"io"
)

const configUsage = `Usage: keel config check FILE

Reads FILE as keel serve --config would, TLS certificates and keys
included, and prints "FILE: ok" and the configuration keel would run with
(defaults included), or the first error with its file, line and key (exit
status 1).
`

// configCmd runs `keel config ...`.
func configCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprint(stdout, configUsage)
		return 0
	}
	if len(args) != 2 || args[0] != "check" {
		fmt.Fprintf(stderr, "keel config: want check FILE, got %q\n\n%s", args, configUsage)
		return 2
	}
	path := args[1]
	cfg := defaultConfig()
	err := cfg.load(path)
	if err == nil {
		err = cfg.validate()
	}
	if err != nil {
		fmt.Fprintln(stderr, "keel:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n\n%s", path, cfg.effective())
	return 0
}
