package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/keelmq/keel/wal"
)

// version is the release version, set at build time with
//
//	go build -ldflags "-X main.version=v1.2.3" ./cmd/keel
//
// Left empty, the version is the module version the go command stamped
// into the binary (from the VCS), or "dev".
var version string

const pebbleModule = "github.com/cockroachdb/pebble/v2"

// buildVersion is the version keel reports: in `keel version`, in its
// start log line and in $SYS/broker/version.
func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// versionText is what `keel version` prints.
func versionText() string {
	bi, _ := debug.ReadBuildInfo()
	return formatVersion(buildVersion(), bi)
}

// formatVersion formats `keel version` from the build information (nil
// if the binary has none).
func formatVersion(v string, bi *debug.BuildInfo) string {
	commit, pebble := "unknown (built without VCS information)", "unknown"
	if bi != nil {
		var rev string
		var dirty bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" {
			commit = rev
			if dirty {
				commit += " (dirty: built with uncommitted changes)"
			}
		}
		for _, d := range bi.Deps {
			if d.Path == pebbleModule {
				if d.Replace != nil {
					d = d.Replace
				}
				pebble = d.Version
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "keel %s\n", v)
	fmt.Fprintf(&b, "commit:      %s\n", commit)
	fmt.Fprintf(&b, "go:          %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(&b, "pebble:      %s\n", pebble)
	fmt.Fprintf(&b, "data format: %d\n", wal.FormatVersion)
	return b.String()
}
