//go:build darwin || dragonfly || freebsd || linux || netbsd || openbsd || solaris

package wal

import (
	"io"
	"os"
	"syscall"
)

// lockHolder returns the PID of the process holding an fcntl write lock on
// path (how Pebble locks its LOCK file on Unix), or 0 if it cannot tell.
// F_GETLK never reports this process's own locks.
func lockHolder(path string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: io.SeekStart}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_GETLK, &lk); err != nil || lk.Type == syscall.F_UNLCK {
		return 0
	}
	return int(lk.Pid)
}
