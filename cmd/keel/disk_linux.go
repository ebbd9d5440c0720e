package main

import (
	"fmt"
	"syscall"
)

// statfs measures the filesystem holding dir: the bytes available to an
// unprivileged process (keel does not count on the blocks reserved for
// root) and its size.
func statfs(dir string) (free, total uint64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	bs := uint64(st.Frsize) // the unit of the block counts
	if bs == 0 {
		bs = uint64(st.Bsize)
	}
	return st.Bavail * bs, st.Blocks * bs, nil
}
