package wal

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"syscall"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// ErrLocked is wrapped by Open's error when another process (or another
// Open in this one) holds the data directory.
var ErrLocked = errors.New("wal: data directory in use")

// ErrNotDataDir is wrapped by Open's error when the directory holds files
// but is not a Keel data directory.
var ErrNotDataDir = errors.New("wal: not a Keel data directory")

// What Open does with a directory before Pebble opens it (the checks and
// the lock) is specified in the package doc (doc.go, "Opening").

// checkDataDir creates dir if it is missing and refuses a non-empty
// directory that is not a Keel data directory.
func checkDataDir(fs vfs.FS, dir string) error {
	names, err := fs.List(dir)
	if errors.Is(err, os.ErrNotExist) {
		if err := fs.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("wal: open: create data directory %s: %w", dir, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("wal: open: data directory %s: %w", dir, err)
	}
	var foreign []string
	for _, n := range names {
		switch {
		case n == "lost+found":
		case n == "CURRENT" || strings.HasPrefix(n, "MANIFEST-") || strings.HasPrefix(n, "OPTIONS-"):
			return nil // a Pebble store
		case isPebbleLeftover(n):
		default:
			foreign = append(foreign, n)
		}
	}
	if len(foreign) == 0 {
		return nil
	}
	sort.Strings(foreign)
	const show = 3
	list := strings.Join(foreign[:min(show, len(foreign))], ", ")
	if len(foreign) > show {
		list += fmt.Sprintf(" and %d more", len(foreign)-show)
	}
	return fmt.Errorf("%w: %s holds %s and no Pebble store (no MANIFEST, CURRENT or OPTIONS file); "+
		"keel will not write its files among them: give it an empty or new directory",
		ErrNotDataDir, dir, list)
}

// isPebbleLeftover reports whether name is a file Pebble creates in a new
// store before its MANIFEST exists.
func isPebbleLeftover(name string) bool {
	if name == "LOCK" || strings.HasPrefix(name, "marker.") || strings.HasSuffix(name, ".dbtmp") {
		return true
	}
	num, ext, ok := strings.Cut(name, ".")
	if !ok || ext != "log" || num == "" {
		return false
	}
	return strings.Trim(num, "0123456789") == ""
}

// lockDataDir takes Pebble's lock on dir. A lock held elsewhere is reported
// as ErrLocked, with the holder's PID when it can be known.
func lockDataDir(fs vfs.FS, dir string) (*pebble.Lock, error) {
	lock, err := pebble.LockDirectory(dir, fs)
	if err == nil {
		return lock, nil
	}
	// fcntl(F_SETLK) fails with EAGAIN or EACCES when another process
	// holds the lock; Pebble refuses a second lock in its own process with
	// this message (vfs/file_lock_unix.go).
	inProcess := strings.Contains(err.Error(), "lock held by current process")
	if !inProcess && !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EACCES) {
		return nil, fmt.Errorf("wal: open: lock data directory %s: %w", dir, err)
	}
	lockFile := fs.PathJoin(dir, "LOCK")
	pid := 0
	if inProcess {
		pid = os.Getpid()
	} else if fs == vfs.Default {
		pid = lockHolder(lockFile)
	}
	switch {
	case pid == os.Getpid():
		return nil, fmt.Errorf("%w: data directory %s is already open in this process (pid %d)", ErrLocked, dir, pid)
	case pid > 0:
		return nil, fmt.Errorf("%w: another keel (pid %d) holds data directory %s: "+
			"stop it, or give this one another --data", ErrLocked, pid, dir)
	}
	return nil, fmt.Errorf("%w: another process holds data directory %s (its %s is locked): "+
		"stop it, or give this one another --data", ErrLocked, dir, lockFile)
}
