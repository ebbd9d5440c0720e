package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// The operator subcommands (inspect, backup, restore) share one shape:
// a flag.FlagSet whose flags may come before, between or after the
// positional arguments (keel inspect DATA sessions --json), --help on
// stdout with status 0, a usage error on stderr with status 2, a failure
// with status 1. The standard flag package does this with the loop below;
// a CLI library (cobra, ff) would bring its own flag syntax and a rewrite
// of serve and passwd for no gain here.

// subcommand is one operator subcommand's flags and usage text.
type subcommand struct {
	name  string // "inspect"
	usage string // the full usage text, ending in a newline
	fs    *flag.FlagSet
}

func newSubcommand(name, usage string) *subcommand {
	fs := flag.NewFlagSet("keel "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported by parse, with the usage
	return &subcommand{name: name, usage: usage, fs: fs}
}

// parse parses args, flags anywhere, and returns the positional arguments.
// ok is false when the caller should return code at once: 0 after --help,
// 2 after a usage error (already reported on stderr).
func (c *subcommand) parse(args []string, stdout, stderr io.Writer) (pos []string, code int, ok bool) {
	for {
		if err := c.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(stdout, c.usage)
				return nil, 0, false
			}
			return nil, c.usageError(stderr, err.Error()), false
		}
		rest := c.fs.Args()
		if len(rest) == 0 {
			return pos, 0, true
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), 0, true // after "--", nothing is a flag
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// usageError reports msg with the usage on stderr and returns 2.
func (c *subcommand) usageError(stderr io.Writer, msg string) int {
	fmt.Fprintf(stderr, "keel %s: %s\n\n%s", c.name, msg, c.usage)
	return 2
}

// fail reports err on stderr and returns 1.
func (c *subcommand) fail(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "keel %s: %v\n", c.name, err)
	return 1
}
